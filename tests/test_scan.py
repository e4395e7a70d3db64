import json

import pytest

from lora_studio.data.scan import (DatasetError, caption_path_for, count_text_records, is_image_file,
                                   normalize_caption_extension, parse_repeat_folder, scan_images,
                                   text_record_files)


def _touch(path, data=b"img"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


@pytest.fixture
def kohya(tmp_path):
    root = tmp_path / "my dataset"
    _touch(root / "root.png")
    _touch(root / "root.txt", b"a root image")
    _touch(root / "10_sks dog" / "Ä photo.JPG")
    _touch(root / "10_sks dog" / "Ä photo.txt", b"\xef\xbb\xbfsks dog, grass\r\n")
    _touch(root / "10_sks dog" / "b.webp")  # no caption
    _touch(root / "10_sks dog" / "deeper" / "c.jpeg")
    _touch(root / "10_sks dog" / "deeper" / "c.txt", b"   \r\n")  # blank caption
    _touch(root / "style" / "d.bmp")
    _touch(root / "style" / "d.txt", b"style")
    _touch(root / "style" / "notes.md")
    _touch(root / "0_unused" / "e.png")
    _touch(root / ".cache" / "f.png")
    _touch(root / "10_sks dog" / ".hidden.png")
    return root


def test_kohya_folders_repeats_and_captions(kohya):
    data = scan_images(kohya, ".txt", default_repeats=2)
    names = [(i.image_path.name, i.folder, i.repeats) for i in data.items]
    assert names == [("root.png", "", 2), ("b.webp", "10_sks dog", 10), ("Ä photo.JPG", "10_sks dog", 10),
                     ("c.jpeg", "10_sks dog", 10), ("d.bmp", "style", 2)]
    assert (data.images, data.captioned, data.uncaptioned) == (5, 4, 1)
    assert data.samples_per_epoch == 2 + 10 * 3 + 2
    assert [i.image_path.name for i in data.uncaptioned_items] == ["b.webp"]
    assert [i.caption_path.name for i in data.empty_caption_items] == ["c.txt"]
    assert data.skipped_folders == ("0_unused",)
    assert [(f.name, f.repeats, f.images) for f in data.folders] == [
        ("", 2, 1), ("10_sks dog", 10, 3), ("style", 2, 1)]
    photo = next(i for i in data.items if i.image_path.name == "Ä photo.JPG")
    assert photo.caption_path == kohya / "10_sks dog" / "Ä photo.txt" and not photo.caption_empty


def test_scan_writes_nothing(kohya):
    before = {p: p.read_bytes() for p in kohya.rglob("*") if p.is_file()}
    scan_images(kohya)
    assert {p: p.read_bytes() for p in kohya.rglob("*") if p.is_file()} == before


def test_caption_extension_is_configurable_and_case_insensitive(tmp_path):
    _touch(tmp_path / "A.PNG")
    _touch(tmp_path / "a.Caption", b"x")
    data = scan_images(tmp_path, "caption")
    assert data.caption_extension == ".caption"
    assert data.items[0].caption_path.name == "a.Caption"
    assert scan_images(tmp_path, ".txt").uncaptioned == 1


def test_missing_and_file_roots_raise_clear_errors(tmp_path):
    with pytest.raises(DatasetError, match="does not exist") as err:
        scan_images(tmp_path / "nope")
    assert err.value.reason == "missing"
    with pytest.raises(DatasetError) as err:
        scan_images(_touch(tmp_path / "x.png"))
    assert err.value.reason == "not_a_folder" and "folder" in err.value.hint


def test_helpers():
    assert is_image_file("x.WebP") and is_image_file("x.GIF") and not is_image_file("x.psd")
    assert normalize_caption_extension(" txt ") == ".txt"
    assert parse_repeat_folder("5_cat girl", 1) == (5, "cat girl")
    assert parse_repeat_folder("cats", 3) == (3, "cats")
    assert caption_path_for("/d/a.b.png", "txt").name == "a.b.txt"


def test_count_text_records(tmp_path):
    jsonl = tmp_path / "a.jsonl"
    jsonl.write_bytes(b'{"text": "1"}\r\n\r\n{"text": "2"}\n   \n{"text": "3"}')
    assert count_text_records(jsonl) == 3
    listed = tmp_path / "b.json"
    listed.write_text(json.dumps([{"prompt": "p", "response": "r"}] * 4), encoding="utf-8-sig")
    assert count_text_records(listed) == 4
    wrapped = tmp_path / "c.json"
    wrapped.write_text(json.dumps({"data": [{}, {}]}))
    assert count_text_records(wrapped) == 2
    plain = tmp_path / "d.txt"
    plain.write_text("one\nstill one\n\r\n\ntwo\n")
    assert count_text_records(plain) == 2
    assert count_text_records(tmp_path) == 3 + 4 + 2 + 2


@pytest.mark.parametrize("content,reason,needle", [
    (b'[{"a": 1},', "unreadable", "line 1"),
    (b'{"a": 1}', "wrong_format", "list of records"),
    (b"\xff\xfe[]", "unreadable", "UTF-8")])
def test_bad_json_files_name_the_problem(tmp_path, content, reason, needle):
    path = tmp_path / "bad.json"
    path.write_bytes(content)
    with pytest.raises(DatasetError, match=needle) as err:
        count_text_records(path)
    assert err.value.reason == reason and "bad.json" in err.value.message


def test_text_record_files_wrong_kinds(tmp_path):
    with pytest.raises(DatasetError) as err:
        text_record_files(_touch(tmp_path / "data.xlsx"))
    assert err.value.reason == "wrong_format"
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no .jsonl"):
        text_record_files(tmp_path / "empty")
    with pytest.raises(DatasetError) as err:
        text_record_files(tmp_path / "gone.jsonl")
    assert err.value.reason == "missing"
