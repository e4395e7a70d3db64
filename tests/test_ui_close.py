"""Closing the main window never drops caption edits, text-record edits or a run
without asking."""
import json
import shutil
from pathlib import Path

import pytest
from PySide6.QtCore import QSettings, QTimer
from PySide6.QtWidgets import QApplication, QMessageBox

from lora_studio.runs.layout import RunDir
from lora_studio.ui.app import MainWindow
from test_dataset_browser import _make_dataset, _select
from ui_fixtures import answer_questions, fake_engine, no_gpu

ENDED = 20_000
Button = QMessageBox.StandardButton


@pytest.fixture
def win(qtbot, tmp_path, monkeypatch):
    """ui_fixtures.window, but not handed to qtbot: pytest-qt closes its widgets in
    a teardown hook where the monkeypatched answers are already gone, and after a
    failed test a real question would then block the whole run. This one is closed
    here, with answers set on the instance."""
    monkeypatch.setenv("LORA_STUDIO_CONFIG_DIR", str(tmp_path / "config"))
    window = MainWindow(settings=QSettings(str(tmp_path / "settings.ini"),
                                           QSettings.Format.IniFormat), gpu_read=no_gpu)
    window.show()
    yield window
    window.ask_stop_run = lambda: True
    window.browser.ask_unsaved = lambda summary, action: "discard"
    if window.training.is_running:
        window.training.worker.stop_grace_s = 0.5
    window.close()
    window.shutdown()
    window.deleteLater()


def make_conflict(win, tmp_path):
    """A caption edited here and, meanwhile, by another program."""
    root = _make_dataset(tmp_path / "mes données é")
    assert win.open_dataset(str(root))
    b = win.browser
    assert b.wait_for_captions()
    key = _select(b, "img 0.jpg")
    (root / "img 0.txt").write_text("edited in another program")
    b.editor.setPlainText("mine")
    _select(b, "img 2.jpg")  # the autosave meets the change on disk
    assert set(b.session.conflicts) == {key}
    return root, key


@pytest.fixture
def conflicted_window(win, tmp_path):
    return (win, *make_conflict(win, tmp_path))


@pytest.mark.parametrize("button, on_disk, closed", [
    (Button.Cancel, "edited in another program", False),
    (Button.Discard, "edited in another program", True),
    (Button.Save, "mine\n", True),
], ids=["cancel", "discard", "save"])
def test_closing_asks_about_a_caption_conflict(conflicted_window, monkeypatch, button, on_disk,
                                              closed):
    win, root, key = conflicted_window
    asked = answer_questions(monkeypatch, button)
    assert win.close() is closed
    assert len(asked) == 1
    assert "changed on disk by another program" in asked[0] and "before quitting?" in asked[0]
    assert (root / "img 0.txt").read_text() == on_disk
    assert win.isVisible() is not closed
    if not closed:
        assert win.browser.session.texts[key] == "mine"
        answer_questions(monkeypatch, Button.Discard)
        assert win.close()


def test_closing_saves_plain_edits_without_asking(win, tmp_path, monkeypatch):
    root = _make_dataset(tmp_path / "data")
    assert win.open_dataset(str(root))
    assert win.browser.wait_for_captions()
    _select(win.browser, "img 0.jpg")
    win.browser.editor.setPlainText("saved on quitting")
    asked = answer_questions(monkeypatch, Button.Cancel)
    assert win.close() and not asked
    assert (root / "img 0.txt").read_text() == "saved on quitting\n"


def edit_text_record(win, tmp_path) -> tuple[Path, Path]:
    folder = tmp_path / "clé usb"
    folder.mkdir()
    data = folder / "chat données.jsonl"
    data.write_text(json.dumps({"prompt": "Hi", "response": "Hello"}) + "\n", encoding="utf-8")
    assert win.browser.open_text_dataset(data)
    view = win.browser.text_view
    next(edit for path, edit in view._editors if path == ("response",)).setPlainText("Hello, edited")
    assert view.dirty
    return folder, data


def _response(data: Path) -> str:
    return json.loads(data.read_text(encoding="utf-8"))["response"]


def test_closing_saves_text_record_edits_without_asking(win, tmp_path, monkeypatch):
    _folder, data = edit_text_record(win, tmp_path)
    asked = answer_questions(monkeypatch, Button.Cancel)
    assert win.close() and not asked
    assert _response(data) == "Hello, edited"


@pytest.mark.parametrize("button, plugged_back, closed", [
    (Button.Cancel, False, False),
    (Button.Discard, False, True),
    (Button.Save, True, True),
    (Button.Save, False, False),
], ids=["cancel", "discard", "save", "save-fails-again"])
def test_closing_asks_about_text_records_that_could_not_be_saved(win, tmp_path, monkeypatch, button,
                                                                plugged_back, closed):
    folder, data = edit_text_record(win, tmp_path)
    shutil.rmtree(folder)  # the drive was unplugged: the save on quitting fails
    asked = []

    def question(parent, title, text, *args):
        asked.append(text)
        if plugged_back:
            folder.mkdir()
        return button
    monkeypatch.setattr(QMessageBox, "question", staticmethod(question))
    assert win.close() is closed
    assert len(asked) == 1
    assert asked[0].startswith(f"1 edited record(s) in {data} are not saved. Cannot save {data}: ")
    assert asked[0].endswith("Save them before quitting?")
    assert win.isVisible() is not closed
    view = win.browser.text_view
    if plugged_back:
        assert _response(data) == "Hello, edited" and not view.dirty
    else:
        assert not folder.exists()  # nothing written anywhere
    if not closed:  # the edit is still there to save later
        assert view.dirty and view.table.rows[0].obj["response"] == "Hello, edited"


def _start_long_run(win, qtbot, tmp_path) -> Path:
    win.training.engine_command = fake_engine("--steps", "2000", "--rate", "50")
    editor = win.panel.rows["output.output_dir"].editor
    editor.edit.setText(str(tmp_path / "runs é"))
    editor.changed.emit()
    win.panel.validate_now()
    win.train()
    assert win.training.is_running
    qtbot.waitUntil(lambda: win.training.series.n >= 2, timeout=ENDED)
    return win.training.run.root


def test_closing_during_a_run_asks_and_stop_leaves_a_resumable_run(win, qtbot, tmp_path,
                                                                   monkeypatch):
    run = _start_long_run(win, qtbot, tmp_path)
    asked = []
    monkeypatch.setattr(win, "ask_stop_run", lambda: asked.append("run") or False)
    assert not win.close()
    assert asked == ["run"] and win.isVisible() and win.training.is_running
    assert not (run / "STOP").exists()

    monkeypatch.setattr(win, "ask_stop_run", lambda: asked.append("run") or True)
    assert win.close()
    assert asked == ["run", "run"] and not win.isVisible()
    # The window asked the engine to stop (STOP file) and waited for its checkpoint.
    assert (run / "STOP").exists()
    assert RunDir(run).latest_checkpoint() is not None
    win.training.worker.drain()
    qtbot.waitUntil(lambda: not win.training.is_running, timeout=ENDED)


def test_cancelling_the_caption_question_keeps_the_run_going(win, qtbot, tmp_path, monkeypatch):
    run = _start_long_run(win, qtbot, tmp_path)
    make_conflict(win, tmp_path)
    monkeypatch.setattr(win, "ask_stop_run", lambda: True)
    answer_questions(monkeypatch, Button.Cancel)
    assert not win.close()
    assert win.training.is_running and not (run / "STOP").exists()
    answer_questions(monkeypatch, Button.Discard)
    assert win.close()


def _click_in_dialog(text: str, seen: list, shot: Path | None = None) -> None:
    """When the modal dialog is up: note its text, save a picture, click `text`."""
    def poll(tries=200):
        box = QApplication.activeModalWidget()
        if not isinstance(box, QMessageBox):
            if tries:
                QTimer.singleShot(20, lambda: poll(tries - 1))
            return
        seen.append((box.text(), [b.text() for b in box.buttons()]))
        if shot is not None:
            box.grab().save(str(shot))
        wanted = [b for b in box.buttons() if b.text().replace("&", "") == text]
        (wanted[0].click() if wanted else box.reject())
    QTimer.singleShot(0, poll)


@pytest.mark.parametrize("click, stops", [("Stop and quit", True), ("Cancel", False)])
def test_the_run_question_is_stop_and_quit_or_cancel(win, tmp_path, click, stops):
    seen = []
    _click_in_dialog(click, seen, tmp_path / "ask stop run.png")
    assert win.ask_stop_run() is stops
    (text, buttons), = seen
    assert "A run is in progress" in text and "resume" in text
    assert sorted(b.replace("&", "") for b in buttons) == ["Cancel", "Stop and quit"]
    assert not QApplication.activeModalWidget()
