"""The text dataset view: readable column headers and the selected record as a chat
with the turns that carry the loss marked."""
import json

from PySide6.QtCore import Qt

from lora_studio.ui.text_dataset_view import TextDatasetView
from ui_fixtures import window  # noqa: F401  (fixture)

CHAT = {"messages": [{"role": "system", "content": "Be a pirate."},
                     {"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Arr."},
                     {"role": "user", "content": "Again?"},
                     {"role": "assistant", "content": "Arr arr."}]}


def _view(qtbot, tmp_path, *records):
    p = tmp_path / "chat données.jsonl"
    p.write_text("\n".join(json.dumps(r) for r in records) + "\n", encoding="utf-8")
    view = TextDatasetView()
    qtbot.addWidget(view)
    assert view.open(p)
    return view


def _headers(view):
    model = view.model
    return [model.headerData(c, Qt.Orientation.Horizontal) for c in range(model.columnCount())]


def test_role_columns_have_readable_headers(qtbot, tmp_path):
    view = _view(qtbot, tmp_path, CHAT)
    assert _headers(view) == ["Line", "Status", "Turns", "System", "User", "Assistant"]
    assert view.model.index(0, 4).data() == "Hi? │ Again?"
    alpaca = _view(qtbot, tmp_path, {"instruction": "Say hi", "input": "", "output": "Ahoy"})
    assert _headers(alpaca) == ["Line", "Status", "Instruction", "Input", "Output"]


def test_the_chat_shows_a_bubble_per_turn_with_the_loss_marks(qtbot, tmp_path):
    view = _view(qtbot, tmp_path, {"messages": [{"role": "user", "content": "Hi"}]}, CHAT)
    assert view.chat.bubbles == [] and "no assistant turn" in view.chat.note.text()
    view.view.selectRow(1)
    bubbles = view.chat.bubbles
    assert [b.bubble.title for b in bubbles] == ["System prompt", "User", "Assistant", "User",
                                                 "Assistant"]
    assert [b.body.text() for b in bubbles][:3] == ["Be a pirate.", "Hi?", "Arr."]
    assert ["● loss" in b.mark.text() for b in bubbles] == [False, False, True, False, True]
    view.set_responses_only(False)
    assert all("● loss" in b.mark.text() for b in view.chat.bubbles)
    assert "every turn" in view.chat.note.text()


def test_editing_a_field_redraws_the_chat(qtbot, tmp_path):
    view = _view(qtbot, tmp_path, CHAT)
    labels = [view.form.itemAt(i, view.form.ItemRole.LabelRole).widget().text()
              for i in range(view.form.rowCount())]
    assert labels[:2] == ["Turn 1 role", "Turn 1 text"]
    edit = next(e for path, e in view._editors if path == ("messages", 2, "content"))
    edit.setPlainText("Arr, edited.")
    assert view.chat.bubbles[2].body.text() == "Arr, edited."
    edit.setPlainText("")
    assert view.chat.bubbles[2].body.text() == ""  # an empty turn is still a turn
    view.close_table()
    assert view.chat.bubbles == [] and view.chat.note.text() == ""


def test_the_loss_marks_follow_the_jobs_setting(window, qtbot, tmp_path):
    p = tmp_path / "chat.jsonl"
    p.write_text(json.dumps(CHAT) + "\n", encoding="utf-8")
    assert window.browser.open_text_dataset(p)
    chat = window.browser.text_view.chat
    assert ["● loss" in b.mark.text() for b in chat.bubbles] == [False, False, True, False, True]
    window.tabs.setCurrentIndex(1)
    window.panel.rows["dataset.train_on_responses_only"].editor.focus_widget().setChecked(False)
    qtbot.waitUntil(lambda: all("● loss" in b.mark.text() for b in chat.bubbles))
