from PIL import Image

from lora_studio.data.health import ImageCheck
from lora_studio.data.image_facts import (BucketSettings, filter_summary, human_size, image_facts,
                                          opened_message)
from lora_studio.data.scan import scan_images
from lora_studio.data.session import CaptionSession


def _session(tmp_path):
    folder = tmp_path / "2_cat"
    folder.mkdir()
    Image.new("RGB", (400, 300)).save(folder / "a.png")
    (folder / "a.txt").write_bytes(b"cat, sitting\r\n")
    Image.new("RGB", (64, 64)).save(folder / "b.png")
    dataset = scan_images(tmp_path)
    caps = [i.caption_path or i.image_path.with_suffix(".txt") for i in dataset.items]
    return dataset, CaptionSession([i.image_path for i in dataset.items], caps)


def test_facts_before_and_after_the_health_check(tmp_path):
    dataset, session = _session(tmp_path)
    facts = image_facts(session, dataset.items[0], 0, BucketSettings(512, 256, 1024, 64))
    assert facts["dimensions"] == "400 × 300" and facts["bucket"] == "576 × 448"  # from the header
    assert (facts["folder"], facts["repeats"]) == ("2_cat", 2)
    assert facts["caption"] == "a.txt (utf-8, CRLF)" and facts["problems"] == ""
    assert image_facts(session, dataset.items[1], 1)["caption"] == "no caption file yet"
    session.set_image_checks({0: ImageCheck(error="truncated")})
    facts = image_facts(session, dataset.items[0], 0)
    assert facts["error"] == "truncated" and facts["dimensions"] == "400 × 300"  # header still reads


def test_messages(tmp_path):
    dataset, _session_ = _session(tmp_path)
    assert opened_message(dataset, 0, 0) == f"2 images in {dataset.root}, 4 samples per epoch."
    assert "Not used: 3 file(s)" in opened_message(dataset, 3, 1)
    assert "Removed 1 leftover" in opened_message(dataset, 3, 1)
    assert filter_summary(3, 9, None, None) == "3 of 9 shown"
    assert filter_summary(3, 9, "sks", "empty_caption") == "3 of 9 shown: tag “sks”, empty caption"
    assert human_size(512) == "512 B" and human_size(2048) == "2.0 KB"
