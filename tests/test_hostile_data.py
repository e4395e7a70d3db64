"""Datasets packed by strangers: pipes, devices, link loops, unreadable folders, odd
encodings, oversized captions, absurd repeat prefixes and uncommon picture formats are
each named, never a hang, a flood or a silent drop (issue 12, points 1-3)."""
import os
import signal
import sys
from pathlib import Path

import pytest
from PIL import Image

from lora_studio.config.schema import DatasetConfig
from lora_studio.data import walk
from lora_studio.data.captions import (CAPTION_MAX_BYTES, CaptionFile, CaptionReadError,
                                       read_caption, write_caption)
from lora_studio.data.health import passed_over_groups
from lora_studio.data.images import check_images, load_rgb
from lora_studio.data.scan import (MAX_REPEATS, RepeatPrefixError, parse_repeat_folder,
                                   scan_images, scan_text_files)
from lora_studio.data.session import CaptionSession
from lora_studio.data.text_records import load_text_records
from lora_studio.data.text_table import TextTable, TextTableError

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="FIFOs and /dev/zero are POSIX")


def _hung(signum, frame):
    raise AssertionError("a read blocked for 20 s: a pipe or a device was opened")


@pytest.fixture(autouse=True)
def watchdog():
    previous = signal.signal(signal.SIGALRM, _hung)
    signal.alarm(20)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def _png(path: Path, size=(64, 48), colour="red") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)
    return path


@pytest.fixture
def traps(tmp_path):
    """A concept folder whose caption and image names hide a pipe and a device."""
    root = tmp_path / "data set ü"
    folder = root / "3_sks"
    _png(folder / "good.png")
    (folder / "good.txt").write_text("sks, good")
    _png(folder / "piped.png")
    os.mkfifo(folder / "piped.txt")
    _png(folder / "zero.png")
    (folder / "zero.txt").symlink_to("/dev/zero")
    os.mkfifo(folder / "fifo.png")
    (folder / "gone.png").symlink_to(folder / "nowhere.png")
    return root


def test_pipes_and_devices_are_refused_unopened(traps):
    folder = traps / "3_sks"
    for name in ("piped.txt", "zero.txt"):
        with pytest.raises(CaptionReadError, match="pipe, a device or a socket") as err:
            read_caption(folder / name)
        assert err.value.path == folder / name
    with pytest.raises(walk.RefusedFile):
        walk.read_regular(folder / "piped.txt")
    sizes, skipped = check_images([folder / "fifo.png"])
    assert not sizes and "not a regular file" in skipped[0].message


def test_scan_names_pipes_devices_and_broken_links(traps):
    data = scan_images(traps)
    assert sorted(i.image_path.name for i in data.items) == ["good.png", "piped.png", "zero.png"]
    by_name = {i.image_path.name: i for i in data.items}
    assert by_name["good.png"].caption_path is not None
    assert by_name["piped.png"].caption_path is None and by_name["zero.png"].caption_path is None
    named = {(p.path.name, p.kind) for p in data.problems}
    assert named == {("piped.txt", "not_a_file"), ("zero.txt", "not_a_file"),
                     ("fifo.png", "not_a_file"), ("gone.png", "broken_link")}
    groups = {g.label: g for g in passed_over_groups(data.problems)}
    assert len(groups["Not a regular file"].paths) == 3
    assert "or delete it" in groups["Broken link"].detail


def test_folder_loops_and_twice_linked_folders_are_walked_once(tmp_path):
    root = tmp_path / "ds"
    concept = root / "2_cat"
    _png(concept / "a.png")
    _png(concept / "inner" / "b.png")
    (concept / "inner" / "up").symlink_to(concept, target_is_directory=True)   # a loop
    (concept / "self").symlink_to(".", target_is_directory=True)              # itself
    (root / "again").symlink_to(concept / "inner", target_is_directory=True)  # a second way in
    data = scan_images(root)
    assert sorted(i.image_path.name for i in data.items) == ["a.png", "b.png"]
    assert data.samples_per_epoch == 4
    loops = [p for p in data.problems if p.kind == "folder_loop"]
    assert {p.path.name for p in loops} == {"up", "self", "again"}
    assert "already part of the dataset" in str(loops[0])


def test_an_unreadable_sub_folder_is_named_and_the_rest_loads(tmp_path, monkeypatch):
    root = tmp_path / "ds"
    _png(root / "1_ok" / "a.png")
    _png(root / "1_locked" / "b.png")
    real = os.scandir

    def scandir(path):  # root ignores permission bits, so refuse the way Windows ACLs do
        if Path(path).name == "1_locked":
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)
    monkeypatch.setattr(walk.os, "scandir", scandir)
    data = scan_images(root)
    assert [i.image_path.name for i in data.items] == ["a.png"]
    [problem] = data.problems
    assert (problem.kind, problem.path.name) == ("unreadable_folder", "1_locked")
    assert "Permission denied" in str(problem) and "its files are not used" in str(problem)


def test_text_folders_name_pipes_and_still_load_the_rest(tmp_path):
    (tmp_path / "a.jsonl").write_text('{"prompt": "q", "response": "a"}\n', encoding="utf-8")
    os.mkfifo(tmp_path / "b.jsonl")
    (tmp_path / "c.jsonl").symlink_to("/dev/zero")
    found = scan_text_files(tmp_path)
    assert [f.name for f in found.files] == ["a.jsonl"]
    assert {p.path.name for p in found.problems} == {"b.jsonl", "c.jsonl"}
    loaded = load_text_records(tmp_path)
    assert len(loaded.records) == 1
    assert {p.source.name for p in loaded.problems} == {"b.jsonl", "c.jsonl"}
    fifo = load_text_records(tmp_path / "b.jsonl")  # the pipe picked as the dataset itself
    assert not fifo.records and "not a regular file" in str(fifo.problems[0])
    with pytest.raises(TextTableError, match="b.jsonl"):
        TextTable(tmp_path / "b.jsonl")


@pytest.mark.parametrize("encoding,bom", [("utf-16-le", b"\xff\xfe"), ("utf-16-be", b"\xfe\xff")])
def test_utf16_captions_with_a_bom_are_read_and_written_back_as_they_were(tmp_path, encoding, bom):
    path = tmp_path / "img.txt"
    path.write_bytes(bom + "sks, Café\r\nsecond".encode(encoding))
    cf = read_caption(path)
    assert (cf.text, cf.encoding, cf.newline) == ("sks, Café\nsecond", encoding, "\r\n")
    write_caption(cf, "sks, Café\nedited")
    assert path.read_bytes() == bom + "sks, Café\r\nedited".encode(encoding)


@pytest.mark.parametrize("data,why", [
    ("no BOM".encode("utf-16-le"), "NUL characters"),
    (b"\xff\xfe" + b"\x00\xd8", "byte-order mark"),  # a lone surrogate breaks its own BOM
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "NUL characters"),
])
def test_undecodable_captions_are_named_and_never_written_over(tmp_path, data, why):
    path = tmp_path / "img.txt"
    path.write_bytes(data)
    with pytest.raises(CaptionReadError, match=why) as err:
        read_caption(path)
    assert "img.txt" in str(err.value) and "save it as UTF-8" in str(err.value)
    session = CaptionSession([tmp_path / "img.png"], [path])
    assert session.problems(0) == {"caption_unreadable"}
    session.set_text(0, "typed over it")
    report = session.save([0])
    assert path.read_bytes() == data and 0 in report.errors


def test_captions_over_the_cap_are_refused_before_reading(tmp_path):
    path = tmp_path / "img.txt"
    with open(path, "wb") as fh:  # sparse: 64 MB on paper, nothing on disk
        fh.truncate(64 << 20)
    with pytest.raises(CaptionReadError, match="more than the 1,048,576"):
        read_caption(path)
    _png(tmp_path / "img.png")
    data = scan_images(tmp_path)
    assert [p.kind for p in data.problems] == ["caption_too_large"]
    ok = tmp_path / "ok.txt"
    ok.write_bytes(b"x" * CAPTION_MAX_BYTES)
    assert len(read_caption(ok).text) == CAPTION_MAX_BYTES


@pytest.mark.parametrize("name,expected", [("1000_x", (1000, "x")), ("0001000_x", (1000, "x")),
                                           ("1_x", (1, "x")), ("0_x", (0, "x"))])
def test_repeat_prefixes_up_to_the_limit_are_read(name, expected):
    assert parse_repeat_folder(name, 1) == expected


@pytest.mark.parametrize("name", ["1001_x", "30000000_x", "9" * 5000 + "_x", "0" * 300 + "1001_x"])
def test_repeat_prefixes_past_the_limit_are_a_named_error_not_an_overflow(name):
    with pytest.raises(RepeatPrefixError, match="more than the 1000 allowed"):
        parse_repeat_folder(name, 1)


def test_the_prefix_limit_is_the_repeats_setting_limit():
    limit = next(m.le for m in DatasetConfig.model_fields["repeats"].metadata if hasattr(m, "le"))
    assert MAX_REPEATS == limit


def test_a_huge_prefix_folder_is_listed_not_scanned(tmp_path):
    _png(tmp_path / "30000000_x" / "a.png")
    _png(tmp_path / "2_ok" / "b.png")
    data = scan_images(tmp_path)
    assert data.samples_per_epoch == 2
    assert [p.path.name for p in data.bad_repeat_folders] == ["30000000_x"]
    assert "asks for 30000000 repeats" in str(data.bad_repeat_folders[0])


def test_gif_tiff_and_avif_train_other_pictures_are_counted(tmp_path):
    frames = [Image.new("RGB", (40, 30), c) for c in ("red", "blue")]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:], duration=50)
    Image.new("RGB", (30, 20), "green").save(tmp_path / "scan.tif")
    Image.new("RGB", (32, 32), "blue").save(tmp_path / "photo.avif")
    for name in ("layers.psd", "a.psd", "shot.heic"):
        (tmp_path / name).write_bytes(b"not trained")
    data = scan_images(tmp_path)
    assert sorted(i.image_path.name for i in data.items) == ["anim.gif", "photo.avif", "scan.tif"]
    assert data.unsupported_formats == {".heic": 1, ".psd": 2}
    sizes, skipped = check_images([i.image_path for i in data.items])
    assert not skipped and sizes[tmp_path / "anim.gif"] == (40, 30)
    assert load_rgb(tmp_path / "anim.gif").getpixel((0, 0)) == (255, 0, 0)  # the first frame


def test_the_run_log_names_what_was_skipped_with_counts_in_one_event(tmp_path):
    pytest.importorskip("torch")
    from lora_studio.engine.image.data import (SKIPPED_LOG_LINES, refuse_bad_repeats, scan_warnings,
                                               skipped_log)
    from lora_studio.engine.core.control import EngineError
    _png(tmp_path / "ok" / "a.png")
    for i in range(3):
        (tmp_path / "ok" / f"l{i}.psd").write_bytes(b"x")
    os.mkfifo(tmp_path / "ok" / "a.txt")
    data = scan_images(tmp_path)
    lines = [w.message for w in scan_warnings(data)]
    assert any("3 file(s) skipped (unsupported format .psd)" in m for m in lines)
    assert any("a.txt" in m and "pipe" in m for m in lines)
    from lora_studio.data.images import SkippedImage
    many = tuple(SkippedImage(Path(f"x{i}.png"), f"x{i}.png is broken") for i in range(500))
    ev = skipped_log(many)
    assert ev["skipped"] == 500 and ev["message"].count("\n") == SKIPPED_LOG_LINES + 1
    assert "and 450 more" in ev["message"]
    _png(tmp_path / "30000000_x" / "b.png")
    with pytest.raises(EngineError, match="30000000_x") as err:
        refuse_bad_repeats(scan_images(tmp_path))
    assert err.value.kind == "data" and "from 1 to 1000" in err.value.hint
