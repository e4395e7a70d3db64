"""Status-bar messages are elided to the room beside the permanent widgets."""
from lora_studio.ui.status_line import StatusLine
from ui_fixtures import window  # noqa: F401  (fixture)

LONG = ("Imported a very long preset file name from somewhere far away.toml as 'Anna Müller "
        "v1'; 10 setting(s) had no equivalent (see the findings); left out output.output_dir "
        "(defaults used); 4 error(s) to fix before training")


def test_a_long_message_is_elided_beside_the_findings(window, qtbot):
    window.resize(window.minimumSizeHint().width(), 400)
    window.findings_label.setText("4 error(s), 3 warning(s)")
    window._status(LONG * 2)
    line = window.status_line
    qtbot.waitUntil(lambda: line.text() != "")
    assert line.full_text == LONG * 2 and line.toolTip() == LONG * 2
    assert "…" in line.text() and line.text().endswith("before training")
    assert line.fontMetrics().horizontalAdvance(line.text()) <= line.contentsRect().width()
    assert line.geometry().right() < window.findings_label.geometry().left()
    window.resize(3000, 400)  # room again: the whole message, no tooltip needed
    window._status(LONG)
    qtbot.waitUntil(lambda: line.text() == LONG)
    assert line.toolTip() == ""


def test_a_message_is_one_line_and_clears_itself(qtbot):
    line = StatusLine()
    qtbot.addWidget(line)
    line.resize(2000, 20)
    line.show_message("Cannot save:\nthe disk is full.", shown_ms=10)
    assert line.text() == "Cannot save: the disk is full."
    qtbot.waitUntil(lambda: line.text() == "")
