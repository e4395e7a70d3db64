import math
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import numpy as np
import pytest

from lora_studio.config import JobConfig
from lora_studio.config.jobfile import write_job_toml
from lora_studio.runs.events import EventWriter, event
from lora_studio.runs.layout import RunDir, new_run_dir
from lora_studio.hardware.monitor import gpu_facts
from lora_studio.ui.gpu_panel import GpuPanel
from lora_studio.ui.series import TrainingSeries
from lora_studio.runs.run_progress import format_eta, progress_text
from lora_studio.ui.training_view import TrainingView
from ui_fixtures import fake_engine, no_gpu, one_gpu, window  # noqa: F401  (fixture)

ENDED = 20_000  # ms a fake run may take on a busy CI machine


def test_series_grows_smooths_and_cuts_back_on_resume():
    series = TrainingSeries(capacity=8, smoothing=0.9)
    for step in range(1, 100_001):
        series.append(step, 1.0 if step % 2 else 3.0, 1e-4)
    assert series.n == 100_000 and len(series.steps) >= 100_000
    assert abs(series.view("smooth")[-1] - 2.0) < 0.2  # the EMA sits between the two values
    assert series.view("smooth")[0] == 1.0             # bias-corrected from the first point
    series.append(50, float("nan"), None)               # resumed from step 49's checkpoint
    assert series.n == 50 and series.view("steps")[-1] == 50
    assert math.isnan(series.view("loss")[-1]) and not math.isnan(series.view("smooth")[-1])


def test_learning_rate_axis_top_follows_the_series():
    series = TrainingSeries(capacity=4)
    for step, lr in enumerate([0.0, 5e-4, 1e-3, 2e-4], start=1):
        series.append(step, 1.0, lr)
    assert series.lr_max == 1e-3
    series.append(2, 1.0, 1e-4)                          # resumed at step 2: the peak is cut
    assert series.lr_max == 1e-4
    series.clear()
    assert series.lr_max == 0.0


def test_progress_text_and_eta():
    assert format_eta(3725) == "1:02:05" and format_eta(65) == "1:05" and format_eta(None) == "–"
    text = progress_text({"step": 5, "total": 40, "epoch": 1, "loss": 1.23456, "lr": 1e-4,
                          "it_s": 2.5, "eta_s": 14})
    assert text.startswith("step 5 / 40") and "2.50 it/s" in text and "ETA 0:14" in text


def test_gpu_panel_says_plainly_when_there_is_no_gpu(qtbot):
    panel = GpuPanel(no_gpu)
    qtbot.addWidget(panel)
    assert panel.headline.text().startswith("No NVIDIA GPU found")
    assert "System RAM: 3.0 / 16.0 GiB" == panel.ram.text()
    panel.shutdown()
    reading = {"snap": one_gpu()}
    panel = GpuPanel(lambda: reading["snap"])
    qtbot.addWidget(panel)
    assert "RTX 3060" in panel.headline.text()
    assert panel.bars[0].value() == 500 and "87%" in panel.details[0].text()
    assert "66 °C" in panel.details[0].text()
    assert gpu_facts(panel.snapshot).supports_bf16 and not gpu_facts(no_gpu()).cuda_available
    reading["snap"] = no_gpu()
    panel.refresh()
    assert not panel.bars[0].isVisibleTo(panel) and "No NVIDIA GPU" in panel.headline.text()
    panel.shutdown()


def _new_run(tmp_path, name="demo"):
    run = new_run_dir(tmp_path / "runs", name)
    write_job_toml(JobConfig(), run.job_toml)
    return run


@pytest.fixture
def view(qtbot):
    widget = TrainingView(no_gpu)
    qtbot.addWidget(widget)
    widget.resize(1200, 800)
    widget.show()
    yield widget
    if widget.worker is not None:
        widget.worker.stop_grace_s = 0.2
    widget.shutdown()


def _wait_idle(qtbot, view):
    qtbot.waitUntil(lambda: not view.is_running, timeout=ENDED)


def test_a_run_streams_into_plot_progress_log_and_samples(view, qtbot, tmp_path):
    run = _new_run(tmp_path)
    view.engine_command = fake_engine("--steps", "60", "--rate", "300")
    view.set_can_train(True)
    view.start(run.root)
    assert view.is_running and view.stop_button.isEnabled() and not view.train_button.isEnabled()
    _wait_idle(qtbot, view)
    assert view.series.n == 60
    x, y = view.smooth_curve.getOriginalDataset()  # getData() is clipped to the view
    assert len(x) == 60 and np.isfinite(y).all()
    assert len(view.lr_curve.getOriginalDataset()[0]) == 60
    assert view.progress_bar.maximum() == 60 and view.progress_bar.value() == 60
    assert "60 / 60" in view.progress_label.text() and "it/s" in view.progress_label.text()
    log = view.log_view.toPlainText()
    assert "step 50 done" in log and "Finished: completed." in log
    assert "sample text at step 60" in view.text_samples.toPlainText()
    assert not view.banner.isVisible()
    assert view.export_button.isEnabled() and view.train_button.isEnabled()


def test_an_engine_crash_shows_its_stderr_and_the_window_stays_usable(view, qtbot, tmp_path):
    run = _new_run(tmp_path)
    view.engine_command = fake_engine("--steps", "40", "--mode", "crash")
    view.start(run.root)
    _wait_idle(qtbot, view)
    assert view.banner.isVisible()
    text = view.banner.text.text()
    assert "exit code 3" in text and "RuntimeError: fake engine crashed" in text
    assert view.series.n == 19
    assert RunDir(run.root).status() == "failed"  # the made-up error event is in events.jsonl
    view.engine_command = fake_engine("--steps", "5")
    view.start(_new_run(tmp_path, "again").root)  # a new run works after the crash
    _wait_idle(qtbot, view)
    assert not view.banner.isVisible() and view.series.n == 5


def test_an_oom_error_event_shows_message_and_hint(view, qtbot, tmp_path):
    run = _new_run(tmp_path)
    view.engine_command = fake_engine("--steps", "10", "--mode", "oom")
    view.start(run.root)
    _wait_idle(qtbot, view)
    text = view.banner.text.text()
    assert text.startswith("Out of GPU memory: CUDA out of memory (fake).")
    assert "gradient checkpointing" in text
    assert "exit code" not in text  # the engine's own error, not a made-up crash


def test_stop_then_resume_continues_the_plot(view, qtbot, tmp_path):
    run = _new_run(tmp_path)
    view.engine_command = fake_engine("--steps", "400", "--rate", "40")
    view.start(run.root)
    qtbot.waitUntil(lambda: view.series.n >= 5, timeout=ENDED)
    view.stop()
    assert not view.stop_button.isEnabled()
    _wait_idle(qtbot, view)
    stopped_at = view.series.n
    assert stopped_at < 400 and RunDir(run.root).status() == "cancelled"
    assert view.resume_button.isEnabled()
    view.engine_command = fake_engine("--steps", f"{stopped_at + 10}", "--rate", "300")
    view.resume()
    _wait_idle(qtbot, view)
    assert view.series.view("steps")[-1] == stopped_at + 10
    assert (np.diff(view.series.view("steps")) > 0).all()  # no repeated steps after the resume
    assert RunDir(run.root).status() == "finished"


def test_stop_kills_an_engine_that_hangs(view, qtbot, tmp_path):
    run = _new_run(tmp_path)
    view.engine_command = fake_engine("--steps", "10", "--mode", "hang")
    view.start(run.root)
    qtbot.waitUntil(lambda: view.series.n >= 1, timeout=ENDED)
    view.worker.stop_grace_s = 0.3
    view.stop()
    _wait_idle(qtbot, view)
    assert "Finished: cancelled" in view.log_view.toPlainText()
    assert RunDir(run.root).status() == "cancelled"


def test_export_shows_path_and_sha256(view, qtbot, tmp_path):
    run = _new_run(tmp_path)
    view.engine_command = fake_engine("--steps", "3")
    view.start(run.root)
    _wait_idle(qtbot, view)
    script = textwrap.dedent("""
        import pathlib, sys
        out = pathlib.Path(sys.argv[1]) / "exports" / "demo"
        out.mkdir(parents=True, exist_ok=True)
        (out / "adapter_model.safetensors").write_bytes(b"abc")
    """)
    view.export_command = lambda run_dir, fmt: [sys.executable, "-c", script, str(run_dir)]
    with qtbot.waitSignal(view.run_ended, timeout=ENDED):
        view.export_button.click()
    assert view.export_box.isVisible()
    label = view.export_label.text()
    assert "adapter_model.safetensors" in label
    assert "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad" in label
    assert view.export_folder == run.exports / "demo"
    view.export_command = lambda run_dir, fmt: [sys.executable, "-c",
                                                "import sys; sys.exit('no adapter here')"]
    with qtbot.waitSignal(view.run_ended, timeout=ENDED):
        view.export()
    assert view.banner.isVisible() and "no adapter here" in view.banner.text.text()


def test_runs_list_replays_a_run_into_the_plot(window, qtbot, tmp_path):
    runs = tmp_path / "old runs"
    run = new_run_dir(runs, "past")
    write_job_toml(JobConfig(), run.job_toml)
    with EventWriter(run.events) as emit:
        emit(event("started", total_steps=30))
        for step in range(1, 31):
            emit(event("progress", step=step, total=30, loss=1 / step, lr=1e-4))
        emit(event("error", kind="nan", message="Loss became NaN at step 30.",
                   hint="Lower the learning rate."))
    (run.checkpoints / "step-000020").mkdir()
    (run.checkpoints / "step-000020" / "COMPLETE").touch()
    window.runs.set_folder(runs)
    (summary,) = window.runs.runs()
    assert (summary.status, summary.step, summary.checkpoint) == ("failed (nan)", 30, "step-000020")
    window.runs.select(run.root)
    assert window.runs.resume_button.isEnabled()
    window.runs.open_button.click()
    assert window.tabs.currentWidget() is window.training
    assert window.training.series.n == 30
    assert len(window.training.raw_curve.getOriginalDataset()[0]) == 30
    assert "Loss became NaN" in window.training.banner.text.text()
    assert window.training.resume_button.isEnabled()


def test_train_from_the_window_with_a_fake_engine(window, qtbot, tmp_path):
    window.training.engine_command = fake_engine("--steps", "25", "--rate", "300")
    out = tmp_path / "rüns with space"
    window.tabs.setCurrentIndex(1)
    row = window.panel.rows["output.output_dir"].editor.focus_widget()
    row.setText(str(out))
    row.textEdited.emit(str(out))
    window.panel.validate_now()
    window.train()
    assert window.training.is_running and not window.params_train_button.isEnabled()
    qtbot.waitUntil(lambda: not window.training.is_running, timeout=ENDED)
    runs = list(out.iterdir())
    assert len(runs) == 1 and runs[0].name.startswith("demo_text-")
    job = tomllib.loads((runs[0] / "job.toml").read_text(encoding="utf-8"))
    model = Path(job["model"]["path"])
    assert model.is_absolute() and model.is_dir() and ".." not in model.parts  # made absolute
    assert window.training.series.n == 25
    assert window.recent_runs() == [str(runs[0])]
    assert len(window.runs.runs()) == 1
    assert window.params_train_button.isEnabled()


def test_window_starts_without_ml_libraries(tmp_path):
    code = textwrap.dedent(f"""
        import os, sys
        os.environ["QT_QPA_PLATFORM"] = "offscreen"
        os.environ["LORA_STUDIO_CONFIG_DIR"] = {str(tmp_path)!r}
        from PySide6.QtCore import QSettings
        from PySide6.QtWidgets import QApplication
        app = QApplication([])
        from lora_studio.ui.app import MainWindow
        w = MainWindow(settings=QSettings({str(tmp_path / 's.ini')!r}, QSettings.Format.IniFormat))
        w.show()
        app.processEvents()
        heavy = [m for m in ("torch", "transformers", "diffusers", "peft", "accelerate",
                             "bitsandbytes") if m in sys.modules]
        print("HEAVY", heavy)
        w.shutdown()
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "HEAVY []" in out.stdout, out.stdout + out.stderr


def test_printed_export_files_are_read_from_the_exporter_output(tmp_path):
    from lora_studio.ui.worker import printed_files
    single = tmp_path / "my lora ü.safetensors"
    single.write_bytes(b"x")
    folder = tmp_path / "diffusers"
    folder.mkdir()
    (folder / "pytorch_lora_weights.safetensors").write_bytes(b"y")
    out = (f"{single}  (kohya, SHA-256 abc)\n{folder}  (diffusers, SHA-256 def)\n"
           "relative/not/a/path\n\n")
    assert printed_files(out) == [single, folder / "pytorch_lora_weights.safetensors"]


def test_image_samples_go_into_the_grid_and_bad_ones_a_log_line(view, tmp_path):
    from PySide6.QtGui import QColor, QImage
    run = _new_run(tmp_path)
    view.show_run(run.root)
    image = QImage(64, 48, QImage.Format.Format_RGB32)
    image.fill(QColor("orange"))
    assert image.save(str(run.samples / "step-000010.png"))
    view.handle_event(event("sample", step=10, path="samples/step-000010.png", prompt="a cat"))
    grid = view.samples.grid
    assert len(grid.grid) == 1 and view.samples.stack.currentWidget() is grid
    assert "a cat" in grid.item(*grid.cell_at("a cat", 10)).toolTip()
    (run.samples / "broken.png").write_bytes(b"not a png")
    view.handle_event(event("sample", step=20, path=str(run.samples / "broken.png")))
    assert len(grid.grid) == 1 and grid.grid.steps == [10]
    assert "could not be read" in view.log_view.toPlainText()
