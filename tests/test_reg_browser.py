"""The Dataset tab shows the job's regularisation images as a group of their own:
the folder list separates training and regularisation folders, a reg image says its
class, and the status line counts both. The grouping is plain data (image_facts.py)."""
from pathlib import Path

import pytest
from PIL import Image

from lora_studio.data.browse_scan import browse_scan, reg_for_browser
from lora_studio.data.image_facts import folder_choices, in_group
from lora_studio.data.scan import scan_images


def _folder(root: Path, names: list[str], color: str, captions: bool = True) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for name in names:
        Image.new("RGB", (96, 64), color).save(root / f"{name}.png")
        if captions:
            (root / f"{name}.txt").write_text(f"sks, {name}", encoding="utf-8")


@pytest.fixture
def project(tmp_path):
    img, reg = tmp_path / "projekt ü" / "img", tmp_path / "projekt ü" / "reg"
    _folder(img / "5_sks dog", ["a", "b"], "red")
    _folder(reg / "1_dog", ["d1", "d2", "d3"], "brown", captions=False)
    _folder(reg / "2_animal", ["x"], "gray", captions=False)
    return img, reg


def test_folder_choices_group_training_and_reg_folders(project):
    img, reg = project
    train, regs = scan_images(img), scan_images(reg, is_reg=True)
    choices = folder_choices(train, regs)
    assert [label for label, _ in choices] == [
        "All images (6)", "Training images (2)", "  5_sks dog — ×5 repeats, 2 images",
        "Regularisation images (4)", "  reg · 1_dog — ×1 repeats, 3 images",
        "  reg · 2_animal — ×2 repeats, 1 image"]
    items = train.items + regs.items
    shown = {label: [i.image_path.name for i in items if in_group(i, group)]
             for label, group in choices}
    assert shown["Regularisation images (4)"] == ["d1.png", "d2.png", "d3.png", "x.png"]
    assert shown["  reg · 2_animal — ×2 repeats, 1 image"] == ["x.png"]
    assert shown["Training images (2)"] == ["a.png", "b.png"]
    # without reg images the list is as before
    assert [label for label, _ in folder_choices(train, None)] == [
        "All images (2)", "5_sks dog — ×5 repeats, 2 images"]


def test_reg_for_browser_says_why_nothing_is_shown(project, tmp_path):
    img, reg = project
    assert reg_for_browser([img], "", ".txt") == (None, "")
    assert "was not found" in reg_for_browser([img], str(tmp_path / "nope"), ".txt")[1]
    assert "hold one another" in reg_for_browser([img], str(img), ".txt")[1]
    found, problem = reg_for_browser([img], str(reg), ".txt")
    assert found.images == 4 and problem == ""


def test_browser_shows_reg_images_as_their_own_group(qtbot, project):
    pytest.importorskip("pytestqt")
    from tests.shown_browser import shown_browser

    img, reg = project
    b = shown_browser(qtbot, size=(1100, 600))
    b.reg_path = str(reg)
    assert b.open_folder(img)
    assert b.wait_for_captions()
    assert b.grid_model.rowCount() == 6
    assert "Regularisation: 4 images" in b.status.text()
    assert "10 samples per epoch" in b.status.text()  # 2 images x 5 repeats, and as many reg
    labels = [b.folder_combo.itemText(i) for i in range(b.folder_combo.count())]
    b.folder_combo.setCurrentIndex(labels.index("Regularisation images (4)"))
    assert b.grid_model.rowCount() == 4
    assert all(b.grid_model.names[k].startswith("reg · ") for k in b.grid_model.keys)
    key = b.grid_model.keys[0]
    b.grid.show_key(key)
    facts = b.image_facts(key)
    assert facts["group"] == "regularisation image of class 'dog'"
    assert facts["caption"] == "no caption file: trains as its class 'dog'"
    # it trains on its class, so Health does not count it uncaptioned
    assert b.session.problem_counts()["no_caption"] == 0
    assert b.session.problems(key) == set()
    qtbot.waitUntil(lambda: len(b.grid_model.cache) >= 4, timeout=10000)
    b.grab().save(str(Path("/tmp") / "reg_browser.png"))
    # the job's reg folder changing shows the folder again without it
    b.set_job_folders("", [])
    assert b.grid_model.rowCount() == 2
    assert "Regularisation" not in b.status.text()
    b.shutdown()


def test_image_facts_show_the_bucket_the_job_trains_at(project):
    from lora_studio.data.image_facts import BucketSettings, image_facts
    from lora_studio.data.session import CaptionSession

    img, _ = project
    dataset = scan_images(img)
    session = CaptionSession([i.image_path for i in dataset.items],
                             [i.caption_path for i in dataset.items])
    item = dataset.items[0]  # 96 x 64
    plain = image_facts(session, item, 0, BucketSettings(512, 256, 1024, 64))
    kept = image_facts(session, item, 0, BucketSettings(512, 256, 1024, 64, no_upscale=True))
    square = image_facts(session, item, 0, BucketSettings(512, 256, 1024, 64, enable=False))
    assert (plain["bucket"], kept["bucket"], square["bucket"]) == (
        "640 × 384", "64 × 64", "512 × 512")


def test_browse_scan_shows_the_jobs_concept_folders_with_their_settings(project):
    img, reg = project
    _folder(img / "style", ["s"], "blue", captions=False)
    _folder(img / "unlisted", ["u"], "green")
    found = browse_scan(img, ".txt", 1, ["5_sks dog; keep_tokens=1",
                                         "style; repeats=2; caption_extension=.caption",
                                         "../reg/1_dog; is_reg=true"], str(reg / "2_animal"))
    assert [i.image_path.name for i in found.items] == ["a.png", "b.png", "s.png", "d1.png",
                                                         "d2.png", "d3.png", "x.png"]
    labels = [label for label, _ in folder_choices(found.train, found.reg, found.folder_notes())]
    assert "  5_sks dog — ×5 repeats, 2 images · keep_tokens=1" in labels
    assert "  style — ×2 repeats, 1 image · caption_extension=.caption" in labels
    # a new caption of s.png goes where training reads it
    assert found.caption_paths()[2].name == "s.caption"
    assert found.note == ""
    bad = browse_scan(img, ".txt", 1, ["nowhere"], "")
    assert "concept folders are not shown" in bad.note and "'nowhere'" in bad.note
    assert {i.image_path.name for i in bad.items} == {"a.png", "b.png", "s.png", "u.png"}


def test_browser_shows_the_jobs_concept_folders(qtbot, project):
    pytest.importorskip("pytestqt")
    from lora_studio.ui.dataset_browser import DatasetBrowser

    img, reg = project
    _folder(img / "style", ["s"], "blue", captions=False)
    b = DatasetBrowser()
    qtbot.addWidget(b)
    b.resize(1100, 600)
    assert b.open_folder(img)
    assert b.grid_model.rowCount() == 3
    b.set_job_folders(str(reg), ["style; repeats=2; caption_extension=.caption"])
    assert b.wait_for_captions()
    assert [b.grid_model.names[k] for k in b.grid_model.keys] == [
        "s.png", "reg · d1.png", "reg · d2.png", "reg · d3.png", "reg · x.png"]
    labels = [b.folder_combo.itemText(i) for i in range(b.folder_combo.count())]
    assert "  style — ×2 repeats, 1 image · caption_extension=.caption" in labels
    b.show()
    qtbot.waitExposed(b)
    qtbot.waitUntil(lambda: len(b.grid_model.cache) >= 5, timeout=10000)
    b.grab().save("/tmp/reg_browser_concepts.png")
    b.shutdown()
