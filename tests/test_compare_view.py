"""The Runs tab's "Compare outputs" pane (issue 20, point 3): the records of a run's
compare.json ordered by how much the adapter changed them, the two answers side by
side, the comparison run as a child process, its failure said."""
import sys
import textwrap

import pytest

from lora_studio.runs.catalog import RunCatalog
from lora_studio.runs.compare_file import COMPARE_FILE, Compared, Comparison, write_comparison
from lora_studio.ui.compare_state import BASE, CompareState, against_choices, compare_command
from lora_studio.ui.compare_view import CompareView
from lora_studio.ui.runs_view import RunsView
from test_ui_export import finished_run

FOUND = (Compared("Say hi", "Ahoy!", "Hello.", "Ahoy, matey!", 0.0, 0.5),
         Compared("Name a fruit", "A plum, arr.", "A plum, arr.", "Plum.", 1.0, 0.1),
         Compared("Count to two", "One, two, arr.", "One two", "One, two, arr.", 0.6, 1.0))


def _compared_run(tmp_path, found=FOUND):
    run = finished_run(tmp_path, "text")
    write_comparison(run.root, Comparison("base", run.root.name, "", 6, found))
    return run


def test_rows_come_largest_change_first_either_way(tmp_path):
    run = _compared_run(tmp_path)
    state = CompareState()
    state.load(run.root)
    assert [state.cells(i)[0] for i in range(3)] == ["-0.900", "+0.500", "+0.400"]
    assert state.cells(0) == ("-0.900", "1.000 → 0.100", "Name a fruit")
    assert state.message == f"3 of 6 held-out records, largest change first: base against " \
                            f"{run.root.name}."
    detail = state.detail(1)
    assert (detail.prompt, detail.reference) == ("Say hi", "Ahoy!")
    assert (detail.before.title, detail.before.text) == ("base  ·  ROUGE-L 0.000", "Hello.")
    assert (detail.after.title, detail.after.text) == (f"{run.root.name}  ·  ROUGE-L 0.500",
                                                       "Ahoy, matey!")


def test_no_comparison_and_a_damaged_file_are_said(tmp_path):
    run = finished_run(tmp_path, "text")
    state = CompareState()
    state.load(run.root)
    assert state.rows == [] and state.message.startswith("No comparison yet")
    (run.root / COMPARE_FILE).write_text('{"before": "base", "found": [{"prompt": 1}]}')
    state.load(run.root)
    assert state.rows == [] and str(run.root / COMPARE_FILE) in state.message
    assert "Compare again" in state.message


def test_a_run_is_compared_against_the_base_or_finished_text_runs_of_its_base(tmp_path):
    first, second = finished_run(tmp_path, "text"), finished_run(tmp_path, "text")
    finished_run(tmp_path, "sd1")
    runs = RunCatalog(first.root.parent).runs()
    me = next(r for r in runs if r.root == first.root)
    assert against_choices(me, runs) == [(BASE, ""), (second.root.name, str(second.root))]
    assert compare_command(first.root, str(second.root), 7)[3:] == [
        "compare", str(first.root), "--records", "7", "--top", "7", "--against",
        str(second.root)]


WRITER = textwrap.dedent("""
    import sys
    from lora_studio.runs.compare_file import Compared, Comparison, write_comparison
    run, against, records = sys.argv[1:]
    write_comparison(run, Comparison(against or "base", "me", against, int(records), (
        Compared("Why is the sea <salty>?", "Rivers & rocks, arr.", "Because.",
                 "Rivers & rocks bring salt, arr.", 0.1, 0.8),)))
""")


@pytest.fixture
def view(qtbot):
    widget = CompareView()
    qtbot.addWidget(widget)
    widget.resize(900, 600)
    widget.show()
    yield widget
    widget.shutdown()


def _summary(run):
    [summary] = [r for r in RunCatalog(run.root.parent).runs() if r.root == run.root]
    return summary


def test_compare_runs_in_a_child_and_shows_both_answers(view, qtbot, tmp_path):
    run = finished_run(tmp_path, "text")
    view.show_run(_summary(run), [])
    assert view.table.rowCount() == 0 and view.status.text().startswith("No comparison yet")
    view.records.setValue(5)
    view.compare_command = lambda root, against, records: [
        sys.executable, "-c", WRITER, str(root), against, str(records)]
    with qtbot.waitSignal(view.compared, timeout=30000):
        assert view.start_compare()
        assert not view.compare_button.isEnabled()
    assert view.compare_button.isEnabled()
    assert view.table.rowCount() == 1 and view.table.item(0, 0).text() == "+0.700"
    assert view.prompt.text() == "Prompt: Why is the sea <salty>?"
    assert view.reference.text() == "Reference: Rivers & rocks, arr."
    assert view.before.title.text() == "base  ·  ROUGE-L 0.100"
    assert view.before.text.toPlainText() == "Because."
    assert view.after.title.text() == "me  ·  ROUGE-L 0.800"
    assert view.after.text.toPlainText() == "Rivers & rocks bring salt, arr."
    assert "1 of 5 held-out records" in view.status.text()
    view.grab().save("/tmp/compare_view.png")


def test_a_failed_comparison_is_said_and_changes_nothing(view, qtbot, tmp_path):
    run = _compared_run(tmp_path)
    view.show_run(_summary(run), [])
    view.compare_command = lambda *_: [sys.executable, "-c", "import sys; print('loading'); "
                                       "sys.exit('x held out no records to compare on.')"]
    with qtbot.waitSignal(view.compared, timeout=30000):
        view.start_compare()
    assert view.status.text().startswith("The comparison failed (exit code 1):")
    assert "held out no records to compare on." in view.status.text()
    assert view.table.rowCount() == 3   # the comparison already there is still shown


def test_a_comparison_that_cannot_start_is_said(view, tmp_path):
    run = finished_run(tmp_path, "text")
    view.show_run(_summary(run), [])
    view.compare_command = lambda *_: [str(tmp_path / "no such program")]
    assert not view.start_compare()
    assert view.status.text().startswith("Could not start the comparison:")
    assert view.compare_button.isEnabled()


def test_closing_kills_a_comparison_still_answering(view, tmp_path):
    run = finished_run(tmp_path, "text")
    view.show_run(_summary(run), [])
    view.compare_command = lambda *_: [sys.executable, "-c", "import time; time.sleep(60)"]
    assert view.start_compare() and view.running
    process = view.runner._child.proc
    view.shutdown()
    assert process.poll() is not None and not view.running


def test_image_runs_cannot_be_compared(view, tmp_path):
    run = finished_run(tmp_path, "sd1")
    view.show_run(_summary(run), [])
    assert not view.compare_button.isEnabled() and not view.start_compare()
    assert view.status.text() == "Select a finished text run."


def test_the_runs_tab_shows_the_selected_runs_comparison(qtbot, tmp_path):
    run = _compared_run(tmp_path)
    other = finished_run(tmp_path, "text")
    tab = RunsView(run.root.parent)
    qtbot.addWidget(tab)
    tab.resize(1100, 750)
    tab.show()
    tab.select(run.root)
    assert tab.outputs.table.rowCount() == 3
    assert tab.outputs.after.text.toPlainText() == "Plum."   # the largest change, selected
    assert [tab.outputs.against.itemText(i) for i in range(tab.outputs.against.count())] == [
        BASE, other.root.name]
    tab.outputs.parentWidget().parentWidget().setCurrentWidget(tab.outputs)
    tab.grab().save("/tmp/runs_compare.png")
    tab.select(other.root)
    assert tab.outputs.table.rowCount() == 0
    tab.shutdown()
