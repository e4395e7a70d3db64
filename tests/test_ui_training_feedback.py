"""The training view from the first second: phases before the first step, the samples
pane of the current run's kind, the image grid, the smoothing slider and the readout."""
import sys

import numpy as np
import pytest
from PySide6.QtCore import QPointF, Qt
from PySide6.QtGui import QColor, QImage

from lora_studio.config import JobConfig
from lora_studio.config.jobfile import write_job_toml
from lora_studio.runs.events import EventWriter, event
from lora_studio.runs.layout import new_run_dir
from lora_studio.ui.series import debiased_ema
from lora_studio.ui.training_view import TrainingView
from ui_fixtures import fake_engine, no_gpu

ENDED = 20_000
SILENT_ENGINE = [sys.executable, "-c", "import time; time.sleep(60)"]  # emits nothing


def _new_run(tmp_path, name="demo", family="auto"):
    run = new_run_dir(tmp_path / "runs", name)
    write_job_toml(JobConfig(model={"family": family}), run.job_toml)
    return run


@pytest.fixture
def view(qtbot):
    widget = TrainingView(no_gpu)
    qtbot.addWidget(widget)
    widget.resize(1200, 800)
    widget.show()
    yield widget
    if widget.worker is not None:
        widget.worker.stop_grace_s = 0.1
        widget.worker.kill_grace_s = 0.1
    widget.shutdown()


def _image(path, colour, size=(96, 64)):
    image = QImage(*size, QImage.Format.Format_RGB32)
    image.fill(QColor(colour))
    assert image.save(str(path))
    return path


def test_phases_show_from_train_until_the_first_step(view, tmp_path):
    run = _new_run(tmp_path, family="sd1")
    view.engine_command = lambda run_dir, resume: SILENT_ENGINE
    view.start(run.root)
    view.redraw()
    assert view.progress_label.text().startswith("Starting engine…")
    assert view.progress_bar.maximum() == 0  # busy: nothing to count yet
    for ev in (event("phase", phase="loading libraries"), event("phase", phase="loading the model"),
               event("phase", phase="caching latents", done=0, total=8),
               event("phase", phase="caching latents", done=3, total=8)):
        view.handle_event(ev)  # as the worker hands them over
    view.redraw()
    assert view.progress_label.text().startswith("Caching latents 3 / 8  ·  ETA")
    assert (view.progress_bar.maximum(), view.progress_bar.value()) == (8, 3)
    log = view.log_view.toPlainText()
    assert "Loading libraries…\nLoading the model…\nCaching latents…" in log
    assert log.count("Caching latents") == 1  # one line per phase, not per count
    view.handle_event(event("phase", phase="first step"))
    view.redraw()
    assert view.progress_label.text().startswith("First step…")
    view.handle_event(event("progress", step=1, total=40, loss=0.5, lr=1e-4, it_s=1.0, eta_s=39))
    view.redraw()
    assert view.progress_label.text().startswith("step 1 / 40")
    assert (view.progress_bar.maximum(), view.progress_bar.value()) == (40, 1)


def test_a_run_that_fails_while_loading_says_where(view, qtbot, tmp_path):
    run = _new_run(tmp_path)
    script = ("import sys\n"
              "from lora_studio.runs.events import EventWriter, event\n"
              "emit = EventWriter(sys.argv[1] + '/events.jsonl', echo=sys.stdout)\n"
              "emit(event('phase', phase='loading the model'))\n"
              "emit(event('error', kind='config', message='No such model.'))\n")
    view.engine_command = lambda run_dir, resume: [sys.executable, "-c", script, str(run_dir)]
    view.start(run.root)
    qtbot.waitUntil(lambda: not view.is_running, timeout=ENDED)
    assert view.progress_label.text() == "Loading the model…  ·  failed (config)"
    assert view.progress_bar.maximum() == 1  # no busy bar after the end
    assert "Loading the model…" in view.log_view.toPlainText()


def test_a_replayed_run_cut_off_while_loading_shows_no_running_clock(view, tmp_path):
    run = _new_run(tmp_path)
    with EventWriter(run.events) as emit:
        emit(event("phase", phase="loading libraries"))
        emit(event("phase", phase="tokenising", done=5, total=9))
    view.show_run(run.root)
    assert view.progress_label.text() == "Tokenising 5 / 9"
    assert (view.progress_bar.maximum(), view.progress_bar.value()) == (9, 5)
    view.redraw()
    assert view.progress_label.text() == "Tokenising 5 / 9"


def test_the_samples_pane_follows_the_current_runs_kind(view, qtbot, tmp_path):
    past = _new_run(tmp_path, "pictures", family="sd1")
    with EventWriter(past.events) as emit:
        emit(event("progress", step=10, total=10, loss=0.3, lr=1e-4))
        emit(event("sample", step=10, prompt="a cat", kind="image",
                   path=str(_image(past.samples / "step-000010-00.png", "orange"))))
    view.show_run(past.root)
    assert view.samples.stack.currentWidget() is view.samples.grid
    assert view.samples.title.text().startswith("Image samples")
    # A text run: its pane from the start, before it has made a sample.
    view.engine_command = fake_engine("--steps", "12", "--rate", "300")
    view.start(_new_run(tmp_path, "words", family="text").root)
    assert view.samples.stack.currentWidget() is view.samples.text_samples
    assert view.samples.title.text() == "Text samples" and len(view.samples.grid.grid) == 0
    qtbot.waitUntil(lambda: not view.is_running, timeout=ENDED)
    assert "sample text at step 10" in view.text_samples.toPlainText()
    # A model family left on auto: the engine's started event names it.
    view.engine_command = lambda run_dir, resume: SILENT_ENGINE
    view.start(_new_run(tmp_path, "auto").root)
    assert view.samples.title.text() == "Samples"
    view.handle_event(event("started", family="image", total_steps=5))
    assert view.samples.stack.currentWidget() is view.samples.grid


def test_image_samples_are_a_prompt_by_step_grid_and_a_click_enlarges(view, qtbot, tmp_path):
    run = _new_run(tmp_path, family="sd1")
    view.show_run(run.root)
    colours = {"a cat on a sofa": "orange", "a dog": "navy"}
    for step in (20, 10, 30):
        for i, (prompt, colour) in enumerate(colours.items()):
            if (step, prompt) == (30, "a dog"):
                continue  # a run stopped in the middle of sampling
            path = _image(run.samples / f"step-{step:06d}-{i:02d}.png", colour, (300, 200))
            view.handle_event(event("sample", step=step, prompt=prompt, path=str(path),
                                    kind="image"))
    grid = view.samples.grid
    assert grid.columnCount() == 3 and grid.rowCount() == 2
    assert [grid.horizontalHeaderItem(c).text() for c in range(3)] == ["step 10", "step 20",
                                                                      "step 30"]
    assert [grid.verticalHeaderItem(r).text() for r in range(2)] == ["a cat on a sofa", "a dog"]
    row, col = grid.cell_at("a dog", 20)
    assert (row, col) == (1, 1) and not grid.item(row, col).icon().isNull()
    assert grid.item(1, 2).icon().isNull()
    qtbot.mouseClick(grid.viewport(), Qt.MouseButton.LeftButton,
                     pos=grid.visualRect(grid.model().index(1, 2)).center())
    assert grid.dialog is None  # no sample there
    qtbot.mouseClick(grid.viewport(), Qt.MouseButton.LeftButton,
                     pos=grid.visualRect(grid.model().index(row, col)).center())
    dialog = grid.dialog
    assert dialog is not None and dialog.isVisible()
    assert dialog.caption.text() == "Step 20: a dog"
    image = dialog.image.pixmap().toImage()
    assert (image.width(), image.height()) == (300, 200)  # full size, not the thumbnail
    assert image.pixelColor(150, 100) == QColor("navy")
    dialog.close()


def _steps(view, n=50):
    for step in range(1, n + 1):
        view.handle_event(event("progress", step=step, total=n, loss=1.0 + (step % 4) / step,
                                lr=1e-4 * step / n))
    view.redraw()


def test_the_smoothing_slider_changes_the_plotted_curve(view):
    _steps(view)
    loss = view.raw_curve.getOriginalDataset()[1]
    assert view.smooth_curve.getOriginalDataset()[1] == pytest.approx(debiased_ema(loss, 0.6))
    view.plot.smoothing_slider.setValue(0)
    assert view.plot.smoothing_label.text() == "0"
    assert view.smooth_curve.getOriginalDataset()[1] == pytest.approx(loss)
    view.plot.smoothing_slider.setValue(950)
    smoothed = view.smooth_curve.getOriginalDataset()[1]
    assert smoothed == pytest.approx(debiased_ema(loss, 0.95))
    assert np.abs(np.diff(smoothed)).sum() < np.abs(np.diff(loss)).sum() / 4  # calmer


def test_hovering_the_plot_reads_out_step_loss_and_lr(view, qtbot):
    _steps(view)
    plot = view.plot.loss_plot
    plot.setYRange(0, 3, padding=0)
    plot.setXRange(0, 50, padding=0)
    scene_pos = plot.vb.mapViewToScene(QPointF(20.2, 1.5))
    view.graph.scene().sigMouseMoved.emit(scene_pos)
    qtbot.waitUntil(lambda: view.plot.readout.text().startswith("step 20  ·"))
    text = view.plot.readout.text()
    assert "loss 1.0000" in text and "lr 4e-05" in text
    assert view.plot.hover_lines[0].value() == 20 and view.plot.hover_lines[0].isVisible()


def test_eval_losses_are_plotted_beside_the_training_loss_and_logged(view):
    for step in range(1, 7):
        view.handle_event(event("progress", step=step, total=6, epoch=1, loss=3.0 - step * 0.1,
                                lr=1e-4, it_s=1.0, eta_s=1.0))
        if step % 2 == 0:
            view.handle_event(event("eval", step=step, loss=2.0 + (step == 6), best_step=min(step, 4),
                                    best_loss=2.0, since_best=step // 2 - 2 if step == 6 else 0,
                                    early_stopping=False))
    view.redraw()
    xs, ys = view.plot.eval_curve.getData()
    assert list(xs) == [2, 4, 6] and list(ys) == [2.0, 2.0, 3.0]
    log = view.log_view.toPlainText()
    assert "Eval loss 3.0000 at step 6 (best 2.0000 at step 4)." in log
    assert "eval 3.0000" in view.series.readout(6)
    assert "ROUGE-L" not in view.series.readout(6)
    view.handle_event(event("eval", step=6, loss=3.0, rougeL=0.4125, bleu=12.5, exact_match=0.25,
                            metric="eval_loss", best_step=4, best_value=2.0, since_best=1,
                            early_stopping=False))
    assert "eval 3.0000  ·  ROUGE-L 0.412" in view.series.readout(6)
    assert "Eval loss 3.0000, ROUGE-L 0.4125, BLEU 12.5, exact match 0.25 at step 6" in \
        view.log_view.toPlainText()
    # A resume from step 3 replaces the evaluations at and after it.
    view.handle_event(event("progress", step=3, total=6, epoch=1, loss=1.0, lr=1e-4, it_s=1.0,
                            eta_s=1.0))
    view.redraw()
    assert list(view.plot.eval_curve.getData()[0]) == [2]
