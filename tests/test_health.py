import io

import pytest
from PIL import Image

from lora_studio.data.health import (caption_problems, check_image, check_images,
                                     duplicate_groups, image_problems, image_size,
                                     problem_counts)


def _jpeg(size=(320, 300), color="red") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "JPEG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def bad_folder(tmp_path_factory):
    d = tmp_path_factory.mktemp("health")
    good = _jpeg()
    files = {
        "good": good,
        "dup": good,
        "other": _jpeg(color="blue"),
        "zero": b"",
        "garbage": b"not an image at all" * 5,
        "truncated": good[: len(good) // 2],
        "tiny": _jpeg((40, 500)),
    }
    paths = {}
    for name, data in files.items():
        p = d / f"{name} ü.jpg"
        p.write_bytes(data)
        paths[name] = p
    buf = io.BytesIO()
    Image.new("RGB", (300, 300)).save(buf, "PNG")
    png = buf.getvalue()
    (d / "badcrc.png").write_bytes(png[:40] + bytes([png[40] ^ 0xFF]) + png[41:])
    paths["badcrc"] = d / "badcrc.png"
    return paths


def test_each_bad_file_is_reported_never_raised(bad_folder):
    checks = check_images(bad_folder)
    problems = {k: image_problems(c, min_side=64) for k, c in checks.items()}
    assert problems["good"] == problems["dup"] == problems["other"] == set()
    for bad in ("zero", "garbage", "truncated", "badcrc"):
        assert problems[bad] == {"unreadable"}, bad
        assert checks[bad].error
    assert problems["tiny"] == {"too_small"}
    assert (checks["good"].width, checks["good"].height) == (320, 300)
    assert "0 bytes" in checks["zero"].error


def test_duplicates_by_content(bad_folder):
    groups = duplicate_groups(bad_folder)
    assert [sorted(g) for g in groups] == [["dup", "good"]]


def test_image_size_header_only(bad_folder):
    assert image_size(bad_folder["tiny"]) == (40, 500)
    assert image_size(bad_folder["garbage"]) is None
    assert check_image(bad_folder["tiny"] .parent / "missing.jpg").error


def test_caption_problems_and_counts():
    found = [caption_problems(False, ""), caption_problems(True, "  \n"),
             caption_problems(True, "a, b"), {"too_small", "duplicate"}]
    assert found[:3] == [{"no_caption"}, {"empty_caption"}, set()]
    counts = problem_counts(found)
    assert counts == {"no_caption": 1, "empty_caption": 1, "caption_unreadable": 0, "unreadable": 0,
                      "too_small": 1, "duplicate": 1, "over_clip": 0}
