"""A run's per-item losses in the Dataset tab: the model that orders the items worst
first (no window), and the browser showing the numbers on the thumbnails and in the
text table, picked from the runs of the open dataset."""
import json
from pathlib import Path

import pytest
from PIL import Image

from lora_studio.runs.item_loss import ItemLoss, ItemLosses, write_item_losses
from lora_studio.ui.loss_state import LossOverlay

pytest.importorskip("pytestqt")
from PySide6.QtCore import Qt  # noqa: E402

from lora_studio.ui.thumbnails import ThumbnailDelegate  # noqa: E402
from tests.shown_browser import shown_browser  # noqa: E402


def losses(items, root=Path("/data"), kind="image"):
    return ItemLosses(Path("/runs/r1"), kind, root, 40,
                      {k: ItemLoss(v, 2) for k, v in items.items()})


def test_worst_first_puts_the_highest_loss_first_and_unknown_items_last():
    overlay = LossOverlay(losses({"a.png": 0.2, "b.png": 0.9, "c.png": 0.5}),
                          ["a.png", "new.png", "b.png", "c.png", "other.png"])
    assert overlay.worst_first([0, 1, 2, 3, 4]) == [2, 3, 0, 1, 4]
    assert overlay.worst_first([4, 0, 3]) == [3, 0, 4]  # a filtered selection keeps its own
    assert overlay.badge(1) is None and overlay.matched == 3
    assert overlay.badge(2).heat == 1.0 and overlay.badge(0).heat == 0.0
    assert overlay.badge(3).heat == pytest.approx(0.5)
    assert overlay.badge(2).text == "0.9000" and "seen" in overlay.badge(2).tip


def test_images_and_records_are_matched_by_their_path_under_the_dataset(tmp_path):
    root = tmp_path / "set ü"
    (root / "2_cat").mkdir(parents=True)
    run = losses({"2_cat/x y.png": 0.3, "chat.jsonl:7": 1.5}, root=root)
    images = LossOverlay.for_images(run, [root / "2_cat" / "x y.png", root / "z.png"])
    assert images.badge(0).text == "0.3000" and images.badge(1) is None
    records = LossOverlay.for_records(run, root / "chat.jsonl", [3, 7])
    assert records.worst_first([0, 1]) == [1, 0]


def fake_run(runs: Path, name: str, kind: str, root: Path, items: dict) -> Path:
    run = runs / name
    run.mkdir(parents=True)
    (run / "job.toml").write_text("", encoding="utf-8")
    write_item_losses(run, kind, root, 12, {k: ItemLoss(v, 3) for k, v in items.items()})
    return run


@pytest.fixture
def browser(qtbot):
    b = shown_browser(qtbot, size=(1200, 700))
    yield b
    b.shutdown()


def test_the_browser_shows_and_sorts_image_losses_from_a_run(browser, tmp_path, qtbot):
    root = tmp_path / "my set ü"
    folder = root / "1_shapes"
    folder.mkdir(parents=True)
    for i, colour in enumerate(["red", "green", "blue", "gray"]):
        Image.new("RGB", (96, 96), colour).save(folder / f"img {i}.png")
        (folder / f"img {i}.txt").write_text(f"sks, {colour}", encoding="utf-8")
    runs = tmp_path / "runs"
    run = fake_run(runs, "shapes-1", "image", root, {"1_shapes/img 0.png": 0.05,
                                                     "1_shapes/img 1.png": 0.31,
                                                     "1_shapes/img 2.png": 0.12})
    fake_run(runs, "other", "image", tmp_path / "elsewhere", {"a.png": 1.0})
    browser.set_runs_folder(runs)
    assert browser.open_folder(root) and browser.wait_for_captions()
    picker = browser.loss_picker
    assert [picker.combo.itemData(i) for i in range(picker.combo.count())] == ["", str(run)]
    picker.combo.setCurrentIndex(1)
    picker.combo.activated.emit(1)
    model = browser.grid_model
    names = {k: p.name for k, p in enumerate(model.image_paths)}
    shown = {names[k]: model.data(model.index(r), ThumbnailDelegate.LOSS_ROLE)
             for r, k in enumerate(model.keys)}
    assert shown["img 1.png"].text == "0.3100" and shown["img 3.png"] is None
    assert "3 of 4" in browser.status.text()
    picker.worst_first.setChecked(True)
    assert [names[k] for k in model.keys] == ["img 1.png", "img 2.png", "img 0.png", "img 3.png"]
    browser.grid.show_key(model.keys[0])
    assert browser.caption_pane.editor.toPlainText() == "sks, green"  # its caption, to fix
    browser.loader.wait()
    browser.grab().save(str(Path("/tmp") / "loss_browser_images.png"))
    picker.worst_first.setChecked(False)
    assert [names[k] for k in model.keys] == sorted(names[k] for k in model.keys)


def test_the_text_table_shows_and_sorts_record_losses(browser, tmp_path, qtbot):
    data = tmp_path / "chat data"
    data.mkdir()
    lines = [{"prompt": f"question {i}", "response": f"answer {i}"} for i in range(4)]
    path = data / "chat.jsonl"
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n", encoding="utf-8")
    runs = tmp_path / "runs"
    run = fake_run(runs, "chat-1", "text", data, {"chat.jsonl:2": 2.5, "chat.jsonl:4": 0.7,
                                                  "chat.jsonl:1": 1.1})
    browser.set_runs_folder(runs)
    assert browser.open_text_dataset(path)
    assert browser.show_losses(run)
    view = browser.text_view
    model = view.model
    assert model.headerData(2, Qt.Orientation.Horizontal) == "Loss"
    column = [model.data(model.index(r, 2)) for r in range(model.rowCount())]
    assert column == ["1.1000", "2.5000", "–", "0.7000"]
    browser.loss_picker.worst_first.setChecked(True)
    assert [model.data(model.index(r, 0)) for r in range(model.rowCount())] == [2, 1, 4, 3]
    view.view.selectRow(0)
    assert view.table.rows[view._row].line == 2  # the form shows the worst record
    browser.grab().save(str(Path("/tmp") / "loss_browser_text.png"))


def test_a_damaged_run_file_is_a_message_not_a_crash(browser, tmp_path):
    run = tmp_path / "bad run"
    run.mkdir()
    (run / "item_loss.json").write_text("{", encoding="utf-8")
    assert not browser.show_losses(run)
    assert "item_loss.json" in browser.status.text()



from ui_fixtures import window  # noqa: E402,F401  (fixture)


def test_losses_in_dataset_from_the_runs_tab_opens_the_runs_dataset_sorted(window, tmp_path,
                                                                          qtbot):
    root = tmp_path / "pets"
    root.mkdir()
    for i in range(3):
        Image.new("RGB", (64, 64), "white").save(root / f"p{i}.png")
        (root / f"p{i}.txt").write_text(f"pet {i}", encoding="utf-8")
    runs = tmp_path / "runs"
    run = fake_run(runs, "pets-1", "image", root, {"p0.png": 0.1, "p1.png": 0.2, "p2.png": 0.9})
    (run / "job.toml").write_text(f"[dataset]\npath = {json.dumps(str(root))}\n",
                                  encoding="utf-8")
    empty = runs / "older"
    empty.mkdir()
    (empty / "job.toml").write_text("", encoding="utf-8")
    window.runs.set_folder(runs)
    window.runs.select(empty)
    assert not window.runs.losses_button.isEnabled()  # a run without item_loss.json
    window.runs.select(run)
    assert window.runs.losses_button.isEnabled()
    window.runs.losses_button.click()
    b = window.browser
    assert window.tabs.currentWidget() is b and b.opened_path == root
    assert b.wait_for_captions()
    assert [b.grid_model.image_paths[k].name for k in b.grid_model.keys] == \
        ["p2.png", "p1.png", "p0.png"]
    assert b.loss_picker.current_run() == str(run)  # listed, though not in the job's folder
