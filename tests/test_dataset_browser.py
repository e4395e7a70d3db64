import json
import os
import shutil
from pathlib import Path

import pytest
from PIL import Image

pytest.importorskip("pytestqt")
from PySide6.QtCore import Qt  # noqa: E402

from lora_studio.ui.dataset_browser import DatasetBrowser  # noqa: E402


def _make_dataset(root: Path) -> Path:
    root.mkdir()
    sub = root / "3_sks cat"
    sub.mkdir()
    colours = ["red", "blue", "green", "orange"]
    for i in range(6):
        folder = root if i < 4 else sub
        Image.new("RGB", (320 + 40 * i, 300), colours[i % 4]).save(folder / f"img {i}.jpg")
        if i != 3:
            nl = "\r\n" if i == 1 else "\n"
            (folder / f"img {i}.txt").write_bytes(f"sks, tag{i}, common{nl}".encode())
    (root / "broken.jpg").write_bytes(b"not an image")
    (root / "broken.txt").write_text("")
    Image.new("RGB", (40, 40), "gray").save(root / "tiny.png")
    (root / "tiny.txt").write_text("sks, tiny")
    (root / "dup.jpg").write_bytes((root / "img 0.jpg").read_bytes())
    (root / "dup.txt").write_text("sks")
    return root


@pytest.fixture
def browser(qtbot, tmp_path):
    root = _make_dataset(tmp_path / "my dataset ü")
    b = DatasetBrowser()
    qtbot.addWidget(b)
    b.resize(1200, 800)
    b.idle_timer.setInterval(30)  # the real 1.5 s idle is too slow for a test
    b.show()
    qtbot.waitExposed(b)
    assert b.open_folder(root)
    assert b.wait_for_captions()
    yield b, root
    b.shutdown()


def _select(b, name):
    keys = [k for k, p in enumerate(b.session.image_paths) if p.name == name]
    b.grid.setCurrentIndex(b.grid_model.index(b.grid_model.row_of(keys[0])))
    return keys[0]


def test_open_folder_shows_grid_repeats_and_thumbnails(qtbot, browser):
    b, root = browser
    assert b.grid_model.rowCount() == 9
    labels = [b.folder_combo.itemText(i) for i in range(b.folder_combo.count())]
    assert any("3_sks cat" in t and "×3 repeats" in t for t in labels)
    qtbot.waitUntil(lambda: len(b.grid_model.cache) >= 9, timeout=10000)
    key = _select(b, "img 2.jpg")
    facts = b.image_facts(key)
    assert facts["dimensions"] == "400 × 300" and facts["bucket"] == "576 × 448"
    assert b.editor.toPlainText() == "sks, tag2, common"
    b.folder_combo.setCurrentIndex(labels.index(next(t for t in labels if "3_sks" in t)))
    assert b.grid_model.rowCount() == 2


def test_edit_autosaves_on_idle_and_on_leaving(qtbot, browser):
    b, root = browser
    _select(b, "img 1.jpg")
    b.editor.setFocus()
    b.editor.moveCursor(b.editor.textCursor().MoveOperation.End)
    qtbot.keyClicks(b.editor, ", new tag")
    qtbot.waitUntil(lambda: (root / "img 1.txt").read_bytes() == b"sks, tag1, common, new tag\r\n")
    b.editor.setPlainText("changed then left")
    _select(b, "img 2.jpg")  # leaving saves at once, no idle wait
    assert (root / "img 1.txt").read_bytes() == b"changed then left\r\n"
    assert not b.session.dirty
    assert b.session.counts["new tag"] == 0


def test_undo_redo_across_images(qtbot, browser):
    b, root = browser
    _select(b, "img 0.jpg")
    b.editor.setPlainText("first edit")
    _select(b, "img 2.jpg")
    b.editor.setPlainText("second edit")
    b.editor.setFocus()
    qtbot.keyClick(b.editor, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert (root / "img 2.txt").read_text() == "sks, tag2, common\n"
    qtbot.keyClick(b.editor, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert (root / "img 0.txt").read_text() == "sks, tag0, common\n"
    assert b.session.image_paths[b._current].name == "img 0.jpg"  # undo went to that image
    assert b.editor.toPlainText() == "sks, tag0, common"
    qtbot.keyClick(b.editor, Qt.Key.Key_Z,
                   Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier)
    assert (root / "img 0.txt").read_text() == "first edit\n"


def test_batch_tag_edit_filter_by_tag_and_undo(qtbot, browser):
    b, root = browser
    sks = b.side.tag_model.rows.index(("sks", b.session.counts["sks"]))
    b.side.tag_view.clicked.emit(b.side.tag_model.index(sks, 0))  # click the tag: filter on it
    assert b.grid_model.rowCount() == 7
    b.caption_pane.batch_tag.setText("sks")
    b.caption_pane.batch_with.setText("ohwx, person")
    b.caption_pane.batch_scope.setCurrentText("Shown images")
    b.caption_pane.replace_button.click()
    assert (root / "img 0.txt").read_text() == "ohwx, person, tag0, common\n"
    assert (root / "3_sks cat" / "img 4.txt").read_text().startswith("ohwx, person")
    assert "sks" not in b.session.counts and b.session.counts["person"] == 7
    b.caption_pane.batch_tag.setText("extra")
    b.caption_pane.batch_scope.setCurrentText("Selected images")
    _select(b, "tiny.png")
    b.caption_pane.add_button.click()
    assert (root / "tiny.txt").read_text() == "ohwx, person, tiny, extra"
    b.undo()
    b.undo()
    assert (root / "img 0.txt").read_text() == "sks, tag0, common\n"
    assert (root / "tiny.txt").read_text() == "sks, tiny"


def test_bad_files_are_listed_not_crashing(qtbot, browser):
    b, root = browser
    assert b.wait_for_health()
    qtbot.waitUntil(lambda: b.session.problem_counts()["unreadable"] == 1)
    counts = b.session.problem_counts()
    assert counts == {"no_caption": 1, "empty_caption": 1, "caption_unreadable": 0,
                      "unreadable": 1, "too_small": 1, "duplicate": 2, "over_clip": 0}
    qtbot.waitUntil(lambda: "Corrupt / unreadable  (1)" in
                    [b.health_list.item(i).text() for i in range(b.health_list.count())])
    item = next(b.health_list.item(i) for i in range(b.health_list.count())
                if b.health_list.item(i).data(Qt.ItemDataRole.UserRole) == "unreadable")
    b.health_list.itemClicked.emit(item)
    assert b.grid_model.rowCount() == 1
    key = b._current
    assert b.session.image_paths[key].name == "broken.jpg"
    assert "cannot identify" in b.image_facts(key)["error"]
    assert "Cannot show" in b.caption_pane.preview.text()
    b.grab()  # painting a broken thumbnail must not fail


def test_keyboard_navigation_and_save(qtbot, browser):
    b, root = browser
    b.grid.setFocus()
    first = b.grid.currentIndex().row()
    qtbot.keyClick(b.grid, Qt.Key.Key_Right)
    assert b.grid.currentIndex().row() == first + 1
    b.editor.setFocus()
    qtbot.keyClick(b.editor, Qt.Key.Key_PageDown)
    assert b.grid.currentIndex().row() == first + 2
    qtbot.keyClick(b.editor, Qt.Key.Key_PageUp)
    assert b.grid.currentIndex().row() == first + 1
    b.autosave = False
    b.editor.setPlainText("manual save")
    key = b._current
    qtbot.keyClick(b.editor, Qt.Key.Key_S, Qt.KeyboardModifier.ControlModifier)
    assert b.session.files[key].path.read_text().startswith("manual save")


def test_external_change_is_not_overwritten(qtbot, browser):
    b, root = browser
    _select(b, "img 0.jpg")
    (root / "img 0.txt").write_text("edited in another program")
    b.editor.setPlainText("mine")
    _select(b, "img 2.jpg")
    assert (root / "img 0.txt").read_text() == "edited in another program"
    assert not b.caption_pane.conflict_bar.isHidden()
    b.caption_pane.keep_mine_button.click()
    assert (root / "img 0.txt").read_text() == "mine\n"
    assert b.caption_pane.conflict_bar.isHidden()
    (root / "img 0.txt").write_text("retagged by a tool")  # not edited here: just follow it
    _select(b, "img 0.jpg")
    assert b.editor.toPlainText() == "retagged by a tool"
    assert b.session.counts["retagged by a tool"] == 1


def test_find_replace_preview_then_apply(qtbot, browser):
    b, root = browser
    b.grid.setFocus()
    qtbot.keyClick(b.grid, Qt.Key.Key_F, Qt.KeyboardModifier.ControlModifier)
    d = b.find_dialog
    assert d.isVisible()
    d.find_edit.setText(r"tag(\d)")
    d.replace_edit.setText(r"number_\1")
    d.regex.setChecked(True)
    changes = d.preview()
    assert len(changes) == 5 and d.table.rowCount() == 5
    assert (root / "img 0.txt").read_text() == "sks, tag0, common\n"  # preview writes nothing
    d.apply_button.click()
    assert (root / "img 0.txt").read_text() == "sks, number_0, common\n"
    d.find_edit.setText("(")
    assert d.preview() == [] and "Invalid regular expression" in d.summary.text()
    d.close()


def test_caption_autocompletion(qtbot, browser):
    b, root = browser
    _select(b, "tiny.png")
    b.editor.setFocus()
    b.editor.moveCursor(b.editor.textCursor().MoveOperation.End)
    qtbot.keyClicks(b.editor, ", comm")
    assert b.editor.completer.model().stringList()[0] == "common"
    b.editor.insert_completion("common")
    assert b.editor.toPlainText() == "sks, tiny, common"


def test_text_dataset_table(qtbot, tmp_path):
    p = tmp_path / "chat data.jsonl"
    p.write_text("\n".join([json.dumps({"prompt": "Hi", "response": "Hello"}),
                            "{broken",
                            json.dumps({"prompt": "Q", "response": "A"})]) + "\n")
    b = DatasetBrowser()
    qtbot.addWidget(b)
    b.show()
    qtbot.waitExposed(b)
    assert b.open_text_dataset(p)
    v = b.text_view
    assert v.model.rowCount() == 2
    assert v.problems.count() == 1 and v.problems.item(0).text().startswith("line 2:")
    v.view.selectRow(1)
    path, edit = next((pe for pe in v._editors if pe[0] == ("response",)))
    edit.setPlainText("A, edited")
    assert v.dirty
    v.view.setFocus()
    qtbot.waitUntil(lambda: v.view.hasFocus())
    qtbot.keyClick(v.view, Qt.Key.Key_S, Qt.KeyboardModifier.ControlModifier)
    lines = p.read_text().splitlines()
    assert json.loads(lines[2])["response"] == "A, edited" and lines[1] == "{broken"
    assert not b.dirty
    assert not b.open_text_dataset(tmp_path / "missing.jsonl")
    assert "does not exist" in b.status.text()


def _unsavable_text_edit(qtbot, tmp_path, answer):
    """A browser with a text record edited in a folder that is then unplugged;
    its questions are answered with `answer` ("save" plugs the folder back first)."""
    folder = tmp_path / "clé usb"
    folder.mkdir()
    for name in ("a.jsonl", "b.jsonl"):
        (folder / name).write_text(json.dumps({"prompt": name, "response": "A"}) + "\n")
    b = DatasetBrowser()
    qtbot.addWidget(b)
    assert b.open_text_dataset(folder)
    view = b.text_view
    next(edit for path, edit in view._editors if path == ("response",)).setPlainText("A, edited")
    shutil.rmtree(folder)
    asked = []

    def ask(summary, action):
        asked.append((summary, action))
        if answer == "save":
            folder.mkdir()
        return answer
    b.ask_unsaved = ask
    return b, folder / "a.jsonl", asked


@pytest.mark.parametrize("answer", ["cancel", "discard", "save"])
def test_opening_another_text_dataset_asks_about_unsaved_records(qtbot, tmp_path, answer):
    other = tmp_path / "other.jsonl"
    other.write_text(json.dumps({"prompt": "Q", "response": "A"}) + "\n")
    b, first, asked = _unsavable_text_edit(qtbot, tmp_path, answer)
    assert b.open_text_dataset(other) is (answer != "cancel")
    (summary, action), = asked
    assert action == "opening another text dataset"
    assert summary.startswith(f"1 edited record(s) in {first} are not saved. Cannot save {first}")
    assert b.text_view.table.path == (first if answer == "cancel" else other)
    assert b.dirty is (answer == "cancel")
    if answer == "cancel":
        assert f"Kept {first} open" in b.status.text()
    if answer == "save":
        assert json.loads(first.read_text())["response"] == "A, edited"


@pytest.mark.parametrize("answer", ["cancel", "discard"])
def test_opening_an_image_folder_asks_about_unsaved_records(qtbot, tmp_path, answer):
    root = _make_dataset(tmp_path / "images")
    b, first, asked = _unsavable_text_edit(qtbot, tmp_path, answer)
    assert b.open_folder(root) is (answer == "discard")
    assert [a for _s, a in asked] == ["opening an image folder"]
    if answer == "cancel":
        assert b.pages.currentIndex() == 1 and b.text_view.dirty
    else:  # the hidden table is closed, so quitting later does not ask again
        assert b.wait_for_captions() and b.text_view.table is None and not b.dirty
    b.shutdown()


def test_switching_file_in_a_text_folder_can_be_cancelled(qtbot, tmp_path):
    b, first, asked = _unsavable_text_edit(qtbot, tmp_path, "cancel")
    b.text_files.setCurrentIndex(1)
    b.text_files.activated.emit(1)
    assert [a for _s, a in asked] == ["opening another file"]
    assert b.text_files.currentIndex() == 0 and b.text_view.table.path == first and b.dirty


def test_health_child_dying_is_reported_not_crashing(qtbot, browser):
    b, root = browser
    b.health.start(dict(enumerate(b.session.image_paths)))
    b.health._child.proc.kill()
    assert b.wait_for_health()
    assert "stopped early" in b.health_status.text()


def test_missing_and_empty_folders(qtbot, tmp_path):
    b = DatasetBrowser()
    qtbot.addWidget(b)
    assert not b.open_folder(tmp_path / "nope")
    assert "does not exist" in b.status.text()
    (tmp_path / "empty").mkdir()
    assert b.open_folder(tmp_path / "empty") and b.wait_for_captions()
    assert b.grid_model.rowCount() == 0 and len(b.session) == 0
    b.caption_pane.batch_tag.setText("x")
    assert b.batch_edit("add") == 0
    b.shutdown()


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="FIFOs are POSIX")
def test_what_the_scan_passed_over_is_listed_under_health(qtbot, tmp_path):
    root = tmp_path / "hostile ü"
    (root / "2_ok").mkdir(parents=True)
    Image.new("RGB", (300, 300), "red").save(root / "2_ok" / "a.png")
    os.mkfifo(root / "2_ok" / "a.txt")  # a caption that would block a reader forever
    (root / "2_ok" / "layers.psd").write_bytes(b"8BPS")
    (root / "30000000_x").mkdir()
    b = DatasetBrowser()
    qtbot.addWidget(b)
    b.resize(1000, 700)
    assert b.open_folder(root) and b.wait_for_captions()
    assert "Not used: 3 file(s) or folder(s)" in b.status.text()
    rows = {b.health_list.item(i).text(): b.health_list.item(i)
            for i in range(b.health_list.count())}
    assert {"Not used: Not a regular file  (1)", "Not used: Unsupported format  (1)",
            "Not used: Repeat prefix too large  (1)"} <= set(rows)
    b.health_list.itemClicked.emit(rows["Not used: Not a regular file  (1)"])
    assert "a.txt is a pipe" in b.health_status.text()
    assert b.grid_model.rowCount() == 1  # the image still opens, its caption unread
    assert "is a pipe" in b.image_facts(0)["caption"]
    b.grab().save(str(tmp_path / "health.png"))
    b.shutdown()
