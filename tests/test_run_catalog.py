"""The runs list without a window: summaries from job.toml and the ends of events.jsonl,
loss curves, rename rules, notes; and the Runs tab driving it (rename, notes, delete to
the trash, compare)."""
import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QMessageBox

from lora_studio.config.jobfile import write_job_toml
from lora_studio.config.parse import parse_job
from lora_studio.runs import catalog as catalog_mod
from lora_studio.runs.catalog import NOTES_FILE, RunCatalog, RunError, loss_curve, summarize
from lora_studio.runs.events import EventWriter, event
from lora_studio.runs.layout import new_run_dir
from lora_studio.runs.names import name_problem
from lora_studio.ui.runs_view import RunsView

T0 = 1_700_000_000.0


def make_run(folder, name, losses, end="finished", family="sd1", model="/models/sd15.safetensors",
             now=None, noise=0, best=None):
    job, _ = parse_job({"model": {"family": family, "path": model}})
    t0 = now if now is not None else T0
    run = new_run_dir(folder, name, now=t0)
    write_job_toml(job, run.job_toml)
    with EventWriter(run.events) as emit:
        emit({**event("started", family=family, total_steps=len(losses)), "time": t0})
        for step, loss in enumerate(losses, 1):
            emit({**event("progress", step=step, total=len(losses), loss=loss), "time": t0 + step})
            for _ in range(noise):
                emit(event("hardware", vram_used=1, vram_total=2))
        if end == "finished":
            emit({**event("finished", status="completed", **(best or {})),
                  "time": t0 + len(losses) + 5})
        elif end == "oom":
            emit({**event("error", kind="oom", message="out of memory", hint="-"),
                  "time": t0 + len(losses) + 5})
    return run


def test_summary_reads_the_ends_of_the_events(tmp_path):
    run = make_run(tmp_path, "cat", [1.0, 0.5, 0.25], noise=2000)  # events past a few blocks
    s = summarize(run.root)
    assert (s.family, s.model, s.status, s.step, s.total, s.final_loss) == \
        ("sd1", "/models/sd15.safetensors", "finished", 3, 3, 0.25)
    assert s.duration == 8 and s.date == T0 and not s.can_resume

    failed = make_run(tmp_path, "dog", [2.0, 1.5], end="oom", family="text", model="gpt2")
    (failed.checkpoints / "step-000001").mkdir()
    (failed.checkpoints / "step-000001" / "COMPLETE").touch()
    s = summarize(failed.root)
    assert (s.status, s.step, s.final_loss, s.checkpoint) == ("failed (oom)", 2, 1.5, "step-000001")
    assert s.can_resume


def test_summary_of_a_run_never_started_and_a_torn_last_line(tmp_path):
    run = new_run_dir(tmp_path, "fresh")
    write_job_toml(parse_job({})[0], run.job_toml)
    s = summarize(run.root)
    assert (s.status, s.step, s.final_loss, s.duration, s.family) == ("new", None, None, None, "")
    torn = make_run(tmp_path, "torn", [3.0, 2.0], end=None)
    with open(torn.events, "a", encoding="utf-8") as fh:
        fh.write('{"type":"progress","step":3,"lo')
    s = summarize(torn.root)
    assert (s.status, s.step, s.final_loss) == ("running or interrupted", 2, 2.0)


def test_the_tail_is_read_without_the_middle(tmp_path, monkeypatch):
    run = make_run(tmp_path, "long", [1.0] * 3000)
    decoded = []
    real = catalog_mod._decode
    monkeypatch.setattr(catalog_mod, "_decode", lambda raw: decoded.append(raw) or real(raw))
    assert summarize(run.root).step == 3000
    assert len(decoded) < 20


def test_catalog_caches_until_a_file_changes(tmp_path, monkeypatch):
    run = make_run(tmp_path, "cat", [1.0, 0.5])
    catalog = RunCatalog(tmp_path)
    calls = []
    real = catalog_mod.summarize
    monkeypatch.setattr(catalog_mod, "summarize", lambda root: calls.append(root) or real(root))
    assert [r.step for r in catalog.runs()] == [2]
    assert [r.step for r in catalog.runs()] == [2] and len(calls) == 1
    with EventWriter(run.events) as emit:
        emit(event("progress", step=3, total=3, loss=0.1))
    assert [r.final_loss for r in catalog.runs()] == [0.1] and len(calls) == 2


def test_loss_curve_keeps_the_later_attempt_of_a_resumed_step(tmp_path):
    run = make_run(tmp_path, "cat", [1.0, 0.8, 0.6], end=None)
    with EventWriter(run.events) as emit:
        emit(event("started", family="sd1", total_steps=4, resumed_from="checkpoints/step-000002"))
        emit(event("progress", step=3, total=4, loss=0.5))
        emit(event("progress", step=4, total=4, loss=0.4))
    assert loss_curve(run.root) == ([1, 2, 3, 4], [1.0, 0.8, 0.5, 0.4])


@pytest.mark.parametrize("name, problem", [
    ("", "empty"), ("a/b", "'/'"), ('my:run?', "':' '?'"), ("run.", "dot or a space"),
    ("CON", "device name"), ("lpt1.old", "device name"), ("x" * 121, "at most 120"),
    ("tab\there", "'\\t'"),
])
def test_names_windows_cannot_hold_are_refused(name, problem):
    assert problem in name_problem(name)


def test_names_that_are_fine(tmp_path):
    for name in ("mon chat é", "run-2 v1.5", "CONSOLE", "コン"):
        assert name_problem(name) is None


def test_rename_refuses_clashes_and_live_runs(tmp_path):
    a = make_run(tmp_path, "a", [1.0])
    b = make_run(tmp_path, "b", [1.0])
    catalog = RunCatalog(tmp_path)
    with pytest.raises(RunError, match="already exists"):
        catalog.rename(a.root, b.root.name.upper())  # one name on Windows and macOS
    with pytest.raises(RunError, match="Windows does not allow"):
        catalog.rename(a.root, "a|b")
    with pytest.raises(RunError, match="training in this window"):
        catalog.rename(a.root, "c", in_use=a.root)
    live = make_run(tmp_path, "live", [1.0], end=None)
    with EventWriter(live.events) as emit:
        emit(event("progress", step=2, total=9, loss=0.5))  # written now
    with pytest.raises(RunError, match="may still be training"):
        catalog.rename(live.root, "other")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([a.root.name, b.root.name,
                                                                 live.root.name])
    moved = catalog.rename(a.root, "  chat noir é ")
    assert moved == tmp_path / "chat noir é" and moved.is_dir() and not a.root.exists()
    assert summarize(moved).step == 1
    assert catalog.rename(moved, moved.name) == moved


def test_notes_are_saved_beside_the_run(tmp_path):
    run = make_run(tmp_path, "a", [1.0])
    catalog = RunCatalog(tmp_path)
    catalog.save_notes(run.root, "Good at 800 steps.\r\nTry rank 8 — é")
    assert catalog.runs()[0].notes == "Good at 800 steps.\nTry rank 8 — é"
    catalog.save_notes(run.root, "  ")
    assert not (run.root / NOTES_FILE).exists() and catalog.runs()[0].notes == ""


# ---------------------------------------------------------------- the Runs tab

@pytest.fixture
def runs(qtbot, tmp_path):
    folder = tmp_path / "runs ü"
    old = make_run(folder, "old", [2.0, 1.0, 0.5], now=T0)
    new = make_run(folder, "new", [3.0, 2.5], end="oom", family="sdxl", now=T0 + 60)
    view = RunsView(folder)
    qtbot.addWidget(view)
    view.resize(1100, 700)
    view.show()
    return view, old, new


def test_runs_tab_shows_the_columns(runs):
    view, old, new = runs
    headers = [view.model.headerData(i, Qt.Orientation.Horizontal) for i in range(view.model.columnCount())]
    assert headers == ["Name", "Family", "Model", "Status", "Steps", "Final loss",
                       "Best eval loss", "ROUGE-L", "Duration", "Date"]
    rows = {r.name: [view.model.index(view.model.rows.index(r), c).data()
                     for c in range(10)] for r in view.runs()}
    assert rows[old.root.name][1:9] == ["sd1", "sd15.safetensors", "finished", "3 / 3", "0.5",
                                        "–", "–", "8 s"]
    assert rows[new.root.name][3:6] == ["failed (oom)", "2 / 2", "2.5"]
    view.table.sortByColumn(5, Qt.SortOrder.AscendingOrder)   # final loss, ascending: as numbers
    assert [r.name for r in view.runs()] == [old.root.name, new.root.name]


def test_runs_rank_by_their_best_evaluation(qtbot, tmp_path):
    folder = tmp_path / "runs"
    worse = make_run(folder, "worse", [2.0], family="text", now=T0,
                     best={"best_step": 1, "best_eval_loss": 1.5, "best_rougeL": 0.25})
    better = make_run(folder, "better", [2.0], family="text", now=T0 + 60,
                      best={"best_step": 1, "best_eval_loss": 1.25, "best_rougeL": 0.5})
    make_run(folder, "none", [2.0], family="text", now=T0 + 120)
    s = summarize(better.root)
    assert (s.best_eval_loss, s.best_rougeL) == (1.25, 0.5)
    view = RunsView(folder)
    qtbot.addWidget(view)
    view.table.sortByColumn(7, Qt.SortOrder.DescendingOrder)   # ROUGE-L, best first
    assert [r.name for r in view.runs()][:2] == [better.root.name, worse.root.name]
    assert view.model.index(view.model.rows.index(s), 7).data() == "0.500"
    view.table.sortByColumn(6, Qt.SortOrder.AscendingOrder)    # eval loss, best first
    assert [r.name for r in view.runs()][:2] == [better.root.name, worse.root.name]


def test_rename_from_the_tab_and_a_refused_name(runs):
    view, old, _ = runs
    view.select(old.root)
    assert not view.rename("CON")
    assert "device name" in view.message.text() and old.root.exists()
    assert view.rename("kept one")
    assert view.selected_run() == old.root.with_name("kept one")
    assert "kept one" in [r.name for r in view.runs()]


def test_notes_persist_across_a_new_view(runs, qtbot):
    view, old, new = runs
    view.select(old.root)
    assert not view.save_notes_button.isEnabled()
    view.notes.setPlainText("best so far")
    view.notes.document().setModified(True)
    assert view.save_notes_button.isEnabled()
    view.save_notes_button.click()
    assert (old.root / NOTES_FILE).read_text(encoding="utf-8") == "best so far"
    view.select(new.root)
    assert view.notes.toPlainText() == ""
    again = RunsView(view.folder)
    qtbot.addWidget(again)
    again.select(old.root)
    assert again.notes.toPlainText() == "best so far"


def test_delete_moves_to_the_trash_after_asking(runs, monkeypatch, tmp_path):
    view, old, _ = runs
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    (tmp_path / "xdg").mkdir()
    asked = []
    monkeypatch.setattr(QMessageBox, "question",
                        lambda *a: asked.append(a[2]) or QMessageBox.StandardButton.No)
    view.select(old.root)
    assert not view.delete_selected() and old.root.exists() and "trash" in asked[0]
    monkeypatch.setattr(QMessageBox, "question", lambda *a: QMessageBox.StandardButton.Yes)
    assert view.delete_selected()
    assert not old.root.exists()
    assert (tmp_path / "xdg" / "Trash" / "files" / old.root.name / "job.toml").exists()
    assert old.root.name not in [r.name for r in view.runs()]


def test_delete_without_a_trash_asks_before_deleting_for_good(runs, monkeypatch):
    view, old, new = runs
    view.trash = lambda path: False
    monkeypatch.setattr(QMessageBox, "question", lambda *a: QMessageBox.StandardButton.Yes)
    warned = []
    monkeypatch.setattr(QMessageBox, "warning",
                        lambda *a: warned.append(a[2]) or QMessageBox.StandardButton.No)
    view.select(old.root)
    assert not view.delete_selected() and old.root.exists()
    assert "could not be moved to the trash" in warned[0] and "kept" in view.message.text()
    monkeypatch.setattr(QMessageBox, "warning", lambda *a: QMessageBox.StandardButton.Yes)
    assert view.delete_selected() and not old.root.exists()
    view.in_use = lambda: new.root
    view.select(new.root)
    assert not view.delete_selected() and new.root.exists()
    assert "training in this window" in view.message.text()


def test_ticking_two_runs_overlays_their_loss_curves(runs, tmp_path):
    view, old, new = runs
    assert view.compare.plot.listDataItems() == []
    view.model.set_ticked(old.root, True)
    view.model.set_ticked(new.root, True)
    items = view.compare.plot.listDataItems()
    assert [(list(i.xData), list(i.yData), i.name()) for i in items] == [
        ([1, 2, 3], [2.0, 1.0, 0.5], old.root.name), ([1, 2], [3.0, 2.5], new.root.name)]
    assert items[0].opts["pen"].color() != items[1].opts["pen"].color()
    view.grab().save(str(tmp_path / "runs_tab.png"))
    view.model.set_ticked(new.root, False)
    assert len(view.compare.plot.listDataItems()) == 1
