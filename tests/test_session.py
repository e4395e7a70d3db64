import multiprocessing as mp
import time
from pathlib import Path

from lora_studio.data.captions import _BATCH
from lora_studio.data.health import ImageCheck
from lora_studio.data.session import CaptionSession
from lora_studio.data.tags import batch_preview, find_replace_preview, remove_tag


def _make(tmp_path, captions):
    imgs, caps = [], []
    for i, text in enumerate(captions):
        img = tmp_path / f"img {i}.png"
        img.write_bytes(b"x")
        cap = img.with_suffix(".txt")
        if text is not None:
            cap.write_text(text, encoding="utf-8")
        imgs.append(img)
        caps.append(cap)
    return CaptionSession(imgs, caps), caps


def test_edit_save_undo_across_images(tmp_path):
    s, caps = _make(tmp_path, ["a, b", "b, c", None])
    assert s.counts == {"a": 1, "b": 2, "c": 1}
    assert s.set_text(0, "a, b, d")
    assert s.set_text(2, "new")
    assert s.dirty == {0, 2}
    assert s.counts["d"] == 1 and s.counts["new"] == 1
    assert s.undo() == [2] and s.texts[2] == "" and s.dirty == {0}
    assert s.undo() == [0] and s.texts[0] == "a, b" and not s.dirty
    assert "d" not in s.counts
    assert s.redo() == [0]
    report = s.save()
    assert report.ok and report.saved == [0]
    assert caps[0].read_text() == "a, b, d" and not caps[2].exists()


def test_batch_and_replace_are_one_command(tmp_path):
    s, caps = _make(tmp_path, ["a, b", "b, c", "c"])
    s.apply(batch_preview(s.items(), remove_tag, "b"), "Remove tag b")
    assert s.texts == ["a", "c", "c"] and s.counts == {"a": 1, "c": 2}
    s.apply(find_replace_preview(s.items(), "c", "x"), "Replace")
    assert s.texts == ["a", "x", "x"]
    s.undo()
    s.undo()
    assert s.texts == ["a, b", "b, c", "c"] and not s.dirty
    assert s.filter(tag="b") == [0, 1]
    assert s.filter(text="C") == [1, 2]


def test_conflict_keep_mine_or_take_disk(tmp_path):
    s, caps = _make(tmp_path, ["a", "b"])
    s.set_text(0, "mine0")
    s.set_text(1, "mine1")
    caps[0].write_text("theirs0")
    caps[1].write_text("theirs1")
    report = s.save()
    assert set(report.conflicts) == {0, 1} and not report.saved
    assert caps[0].read_text() == "theirs0"
    assert s.keep_mine(0).saved == [0] and caps[0].read_text() == "mine0"
    s.take_disk(1)
    assert s.texts[1] == "theirs1" and not s.dirty and not s.conflicts


def test_unedited_caption_follows_the_disk(tmp_path):
    s, caps = _make(tmp_path, ["a, b", "c"])
    assert not s.reload_if_changed(0)
    caps[0].write_text("a, tagger output")
    assert s.reload_if_changed(0)
    assert s.texts[0] == "a, tagger output" and s.counts["tagger output"] == 1 and "b" not in s.counts
    s.set_text(1, "mine")
    caps[1].write_text("theirs")
    assert not s.reload_if_changed(1)  # an unsaved edit is never replaced silently
    assert s.texts[1] == "mine"


def test_problems_and_filters(tmp_path):
    s, caps = _make(tmp_path, [None, "  ", "ok", "ok2"])
    s.set_image_checks({2: ImageCheck(error="broken"), 3: ImageCheck(100, 900)})
    s.set_duplicate_groups([[2, 3]])
    assert s.problem_counts() == {"no_caption": 1, "empty_caption": 1, "caption_unreadable": 0,
                                  "unreadable": 1,
                                  "too_small": 1, "duplicate": 2, "over_clip": 0}
    assert s.filter(problem="no_caption") == [0]
    s.set_text(0, "now captioned")
    assert s.filter(problem="no_caption") == []


def _save_forever(folder: str, n: int, ready) -> None:
    paths = [Path(folder) / f"cap {i} é.txt" for i in range(n)]
    s = CaptionSession([p.with_suffix(".png") for p in paths], paths)
    for i in range(n):
        s.set_text(i, "NEW " * 50 + str(i))
    ready.set()
    while True:  # save the same new text over and over until killed
        s.save()
        for i in range(n):
            s.set_text(i, s.texts[i] + "!" if len(s.texts[i]) < 400 else "NEW " * 50 + str(i))


def test_killed_while_saving_leaves_old_or_new_never_cut(tmp_path):
    n = 200
    old = {i: f"old caption {i}, " + "tag, " * 30 for i in range(n)}
    for i in range(n):
        (tmp_path / f"cap {i} é.txt").write_text(old[i], encoding="utf-8")
    ctx = mp.get_context("spawn")
    ready = ctx.Event()
    proc = ctx.Process(target=_save_forever, args=(str(tmp_path), n, ready))
    proc.start()
    try:
        assert ready.wait(60)
        first = tmp_path / "cap 0 é.txt"
        deadline = time.monotonic() + 30
        while first.read_text(encoding="utf-8") == old[0] and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(0.05)  # now it is somewhere in the middle of a save pass
    finally:
        proc.kill()
        proc.join(10)
    texts = [(tmp_path / f"cap {i} é.txt").read_text(encoding="utf-8") for i in range(n)]
    changed = 0
    for i, text in enumerate(texts):
        new_base = "NEW " * 50 + str(i)
        assert text == old[i] or (text.startswith(new_base) and set(text[len(new_base):]) <= {"!"}), text
        changed += text != old[i]
    assert changed > 0
    leftovers = [p for p in tmp_path.iterdir() if p.suffix == ".tmp"]
    assert len(leftovers) <= _BATCH  # at most the one batch of temp files being committed


def test_unwritable_caption_is_reported_not_raised(tmp_path):
    s, caps = _make(tmp_path, ["a", "b"])
    s.files[1] = type(s.files[1])(tmp_path / "gone folder" / "x.txt", "b")
    s.set_text(0, "a2")
    s.set_text(1, "b2")
    report = s.save()
    assert report.saved == [0] and list(report.errors) == [1]
    assert "gone folder" in report.errors[1] and s.dirty == {1}
    assert caps[0].read_text() == "a2"


def test_captions_written_by_another_process_are_one_undo_that_restores_missing_files(tmp_path):
    s, caps = _make(tmp_path, ["a", None, None])
    caps[0].write_text("a, auto")
    caps[1].write_text("auto")  # what the captioning process wrote meanwhile
    assert s.adopt_written([0, 1], "Auto-caption") == [0, 1]
    assert s.texts == ["a, auto", "auto", ""] and not s.dirty and s.counts["auto"] == 2
    assert s.undo() == [0, 1] and s.texts == ["a", "", ""]
    assert s.save().ok
    assert caps[0].read_text() == "a" and not caps[1].exists() and not caps[2].exists()
    assert s.redo() == [0, 1] and s.save().ok and caps[1].read_text() == "auto"


def test_a_created_caption_changed_on_disk_is_not_removed(tmp_path):
    s, caps = _make(tmp_path, [None])
    caps[0].write_text("auto")
    s.adopt_written([0], "Auto-caption")
    s.undo()
    caps[0].write_text("someone else's")
    report = s.save()
    assert list(report.conflicts) == [0] and caps[0].read_text() == "someone else's"
