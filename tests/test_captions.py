import os
import time

import pytest

from lora_studio.data.captions import (CaptionConflict, read_caption, write_caption)


@pytest.fixture
def folder(tmp_path):
    d = tmp_path / "my dätaset ü"
    d.mkdir()
    return d


def test_missing_caption_is_empty_and_new(folder):
    cf = read_caption(folder / "a.txt")
    assert cf.text == "" and not cf.exists
    cf2 = write_caption(cf, "1girl, smile")
    assert (folder / "a.txt").read_bytes() == b"1girl, smile"
    assert cf2.exists and cf2.encoding == "utf-8"


@pytest.mark.parametrize("raw,encoding,newline", [
    (b"\xef\xbb\xbfcaf\xc3\xa9, tag\r\nsecond line\r\n", "utf-8-sig", "\r\n"),
    (b"caf\xe9, na\xefve, \x93quoted\x94", "cp1252", "\n"),
    ("猫, 日本語 tag\n".encode("utf-8"), "utf-8", "\n"),
])
def test_round_trip_preserves_encoding_and_line_endings(folder, raw, encoding, newline):
    p = folder / "c a.txt"
    p.write_bytes(raw)
    cf = read_caption(p)
    assert cf.encoding == encoding and cf.newline == newline
    assert "\r" not in cf.text and not cf.text.endswith("\n")
    # unchanged text writes the very same bytes
    write_caption(cf, cf.text)
    assert p.read_bytes() == raw
    cf = read_caption(p)
    write_caption(cf, cf.text + ", extra")
    back = p.read_bytes()
    assert back.startswith(b"\xef\xbb\xbf") == (encoding == "utf-8-sig")
    assert (b"\r\n" in back) == (newline == "\r\n")
    assert read_caption(p).text == cf.text + ", extra"


def test_cp1252_text_upgraded_to_utf8_when_needed(folder):
    p = folder / "x.txt"
    p.write_bytes(b"caf\xe9")
    cf = write_caption(read_caption(p), "café, 猫")
    assert cf.encoding == "utf-8"
    assert p.read_bytes().decode("utf-8") == "café, 猫"


def test_undecodable_bytes_fall_back_to_latin1(folder):
    p = folder / "x.txt"
    p.write_bytes(b"a\x81b")  # 0x81 is undefined in cp1252
    cf = read_caption(p)
    assert cf.encoding == "latin-1" and cf.text == "a\x81b"
    write_caption(cf, cf.text)
    assert p.read_bytes() == b"a\x81b"


def test_external_change_is_a_conflict_not_an_overwrite(folder):
    p = folder / "x.txt"
    p.write_text("original")
    cf = read_caption(p)
    p.write_text("changed elsewhere!")
    with pytest.raises(CaptionConflict) as err:
        write_caption(cf, "mine")
    assert err.value.disk_text == "changed elsewhere!"
    assert p.read_text() == "changed elsewhere!"
    write_caption(cf, "mine", force=True)
    assert p.read_text() == "mine"


def test_touch_without_content_change_is_not_a_conflict(folder):
    p = folder / "x.txt"
    p.write_text("same")
    cf = read_caption(p)
    t = time.time() + 10
    os.utime(p, (t, t))
    write_caption(cf, "new")
    assert p.read_text() == "new"


def test_deleted_file_is_a_conflict(folder):
    p = folder / "x.txt"
    p.write_text("x")
    cf = read_caption(p)
    p.unlink()
    with pytest.raises(CaptionConflict) as err:
        write_caption(cf, "y")
    assert err.value.disk_text is None and not p.exists()


def test_file_created_meanwhile_is_a_conflict(folder):
    cf = read_caption(folder / "new.txt")
    (folder / "new.txt").write_text("someone else")
    with pytest.raises(CaptionConflict):
        write_caption(cf, "mine")


def test_no_temp_files_left(folder):
    p = folder / "x.txt"
    cf = read_caption(p)
    for i in range(3):
        cf = write_caption(cf, f"v{i}")
    assert sorted(f.name for f in folder.iterdir()) == ["x.txt"]
