"""The training view: Train / Stop / Resume / Export, the phase and step progress, the
live loss and learning-rate plot, the log, the samples and the GPU panel.

Events only update plain data (the series, the phase, the latest progress); a 10 Hz
timer draws, so a fast event stream never queues paints on the UI thread.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import (QFrame, QHBoxLayout, QLabel, QPlainTextEdit, QPushButton,
                               QSplitter, QVBoxLayout, QWidget)

from ..runs.events import read_events
from ..runs.exports import default_format, run_family
from ..runs.layout import RunDir
from ..runs.run_progress import ENGINE_START, eval_line, number
from . import worker as worker_mod
from .export_dialog import ExportDialog, ExportResult
from .gpu_panel import GpuPanel
from .loss_plot import LossPlot
from .progress_header import ProgressHeader
from .samples_pane import SamplesPane
from .series import TrainingSeries

REDRAW_MS = 100
LOG_LINES = 5000


class Banner(QFrame):
    """An engine error in plain sight: message, hint, and a close button."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("banner")
        self.setStyleSheet("#banner { background: #fdecea; border: 2px solid #d32f2f; "
                           "border-radius: 4px; } QLabel { color: #5f1111; }")
        layout = QHBoxLayout(self)
        self.text = QLabel()
        self.text.setWordWrap(True)
        self.text.setTextFormat(Qt.TextFormat.PlainText)
        self.text.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        close = QPushButton("Dismiss")
        close.clicked.connect(self.hide)
        layout.addWidget(self.text, 1)
        layout.addWidget(close, 0, Qt.AlignmentFlag.AlignTop)
        self.hide()

    def show_error(self, ev: dict) -> None:
        kind = ev.get("kind", "internal")
        title = {"oom": "Out of GPU memory", "nan": "Training diverged (NaN loss)",
                 "config": "Configuration problem", "data": "Dataset problem",
                 "io": "File problem"}.get(kind, "Training failed")
        hint = ev.get("hint") or ""
        self.text.setText(f"{title}: {ev.get('message', '')}" + (f"\n\n{hint}" if hint else ""))
        self.show()


class TrainingView(QWidget):
    train_clicked = Signal()   # the window builds the run from the parameter panel
    run_started = Signal()
    run_ended = Signal()       # a run or an export ended: the runs list refreshes
    export_ended = Signal()    # last_export_files or last_export_error says how
    status = Signal(str)       # a line for the status bar
    try_run = Signal(str)      # open this run's adapters in the Playground

    def __init__(self, gpu_read=None, parent: QWidget | None = None):
        super().__init__(parent)
        self.engine_command: Callable = worker_mod.engine_command
        self.export_command: Callable = worker_mod.export_command
        self.worker: worker_mod.TrainingWorker | None = None
        self.exporter: worker_mod.ExportWorker | None = None
        self.last_export_files: list[tuple[str, str]] = []
        self.last_export_error = ""
        self.export_dialog: ExportDialog | None = None
        self.run: RunDir | None = None
        self.series = TrainingSeries()
        self._outcome = ""  # how the run ended, shown after the last progress
        self._can_train = False
        self._run_status = "new"
        self._has_checkpoint = False
        self._run_kind = "text"  # the run's family, which picks the export formats

        layout = QVBoxLayout(self)
        self.banner = Banner()
        layout.addWidget(self.banner)

        buttons = QHBoxLayout()
        self.train_button = QPushButton("Train")
        self.train_button.setToolTip("Start a new run with the current parameters (Ctrl+Enter)")
        self.stop_button = QPushButton("Stop")
        self.stop_button.setToolTip("Stop after the current step and save a checkpoint (Esc)")
        self.resume_button = QPushButton("Resume")
        self.resume_button.setToolTip("Continue the run from its last checkpoint")
        self.export_button = QPushButton("Export")
        self.export_as_button = QPushButton("Export as…")
        self.try_button = QPushButton("Try it")
        self.try_button.setToolTip("Open the run's final adapter and checkpoints in the "
                                   "Playground, its sample prompts filled in")
        self.run_label = QLabel("No run yet.")
        self.run_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        for button in (self.train_button, self.stop_button, self.resume_button,
                       self.export_button, self.export_as_button, self.try_button):
            buttons.addWidget(button)
        buttons.addWidget(self.run_label, 1)
        layout.addLayout(buttons)
        self.train_button.clicked.connect(self.train_clicked)
        self.stop_button.clicked.connect(self.stop)
        self.resume_button.clicked.connect(self.resume)
        self.export_button.clicked.connect(lambda: self.export())
        self.export_as_button.clicked.connect(self._export_as)
        self.try_button.clicked.connect(
            lambda: self.try_run.emit(str(self.run.root)) if self.run is not None else None)

        self.export_box = ExportResult()
        self.export_label = self.export_box.label
        layout.addWidget(self.export_box)

        self.header = ProgressHeader()
        self.progress_bar, self.progress_label = self.header.bar, self.header.label
        layout.addWidget(self.header)

        main_split = QSplitter(Qt.Orientation.Horizontal)
        left_split = QSplitter(Qt.Orientation.Vertical)
        self.plot = LossPlot(self.series)
        self.graph = self.plot.graph
        self.raw_curve, self.smooth_curve = self.plot.raw_curve, self.plot.smooth_curve
        self.lr_curve = self.plot.lr_curve
        left_split.addWidget(self.plot)

        self.log_view = QPlainTextEdit()
        self.log_view.setReadOnly(True)
        self.log_view.setMaximumBlockCount(LOG_LINES)
        self.log_view.setPlaceholderText("Engine messages appear here.")
        left_split.addWidget(self.log_view)
        left_split.setStretchFactor(0, 3)
        left_split.setStretchFactor(1, 1)
        main_split.addWidget(left_split)

        right = QWidget()
        right_layout = QVBoxLayout(right)
        right_layout.setContentsMargins(0, 0, 0, 0)
        self.gpu_panel = GpuPanel(gpu_read)
        right_layout.addWidget(self.gpu_panel)
        self.samples = SamplesPane()
        self.text_samples = self.samples.text_samples
        right_layout.addWidget(self.samples, 1)
        main_split.addWidget(right)
        main_split.setStretchFactor(0, 3)
        main_split.setStretchFactor(1, 1)
        main_split.setSizes([800, 400])  # room for two or three columns of image samples
        layout.addWidget(main_split, 1)

        self.redraw_timer = QTimer(self)
        self.redraw_timer.setInterval(REDRAW_MS)
        self.redraw_timer.timeout.connect(self.redraw)
        self.redraw_timer.start()
        self._update_buttons()

    # -- state ---------------------------------------------------------------
    @property
    def is_running(self) -> bool:
        return self.worker is not None

    def set_can_train(self, ok: bool) -> None:
        self._can_train = ok
        self._update_buttons()

    def _update_buttons(self) -> None:
        running, exporting = self.is_running, self.exporter is not None
        self.train_button.setEnabled(self._can_train and not running)
        self.stop_button.setEnabled(running and not self.worker.stop_requested)
        self.resume_button.setEnabled(not running and self._has_checkpoint
                                      and self._run_status != "finished")
        can_export = not running and not exporting and self._run_status == "finished"
        self.export_button.setEnabled(can_export)
        self.export_as_button.setEnabled(can_export)
        self.export_button.setText(f"Export ({default_format(self._run_kind)})"
                                   if can_export else "Export")
        # During a run its checkpoints can be tried; the Playground says when there is none yet.
        self.try_button.setEnabled(self.run is not None)

    def _refresh_run_facts(self) -> None:
        """Read the run folder once (status, checkpoint, kind), not on every button update."""
        run = self.run
        self._run_status = run.status() if run is not None else "new"
        self._has_checkpoint = run is not None and run.latest_checkpoint() is not None
        self._run_kind = (run_family(run) if run is not None else None) or "text"
        self._update_buttons()

    def _say(self, text: str) -> None:
        self.status.emit(text)

    # -- runs ----------------------------------------------------------------
    def _reset_display(self) -> None:
        self.series.clear()
        self.plot.clear()
        self._outcome = ""
        self.banner.hide()
        self.export_box.hide()
        self.log_view.clear()
        self.samples.clear()
        self.gpu_panel.clear_run()
        self.header.reset()

    def _set_run(self, run_dir: Path | str) -> None:
        self.run = RunDir(Path(run_dir))
        self.run_label.setText(f"Run: {self.run.root}")

    def start(self, run_dir: Path | str, resume: Path | str | None = None) -> None:
        """Start the engine on a prepared run folder (job.toml written)."""
        if self.is_running:
            return
        if resume is None or self.run is None or Path(run_dir) != self.run.root:
            self._reset_display()
            if resume is not None:
                self._replay_events(RunDir(Path(run_dir)))
        self._set_run(run_dir)
        self.banner.hide()
        self.export_box.hide()
        self.samples.set_kind(run_family(self.run))
        self.header.begin(ENGINE_START, time.time())
        command = self.engine_command(self.run.root, Path(resume) if resume else None)
        self.worker = worker_mod.TrainingWorker(self.run.root, resume, command=command,
                                                parent=self)
        self.worker.event.connect(self.handle_event)
        self.worker.exited.connect(self._on_exited)
        self.worker.start()
        self._say(("Resuming " if resume else "Training ") + self.run.root.name)
        self._update_buttons()
        self.run_started.emit()

    def stop(self) -> None:
        if self.worker is not None and not self.worker.stop_requested:
            self.worker.stop()
            self.log_view.appendPlainText("Stop requested: the engine stops after this step "
                                          "and saves a checkpoint.")
            self._say("Stopping…")
            self._update_buttons()

    def resume(self) -> None:
        if self.run is None or self.is_running:
            return
        checkpoint = self.run.latest_checkpoint()
        if checkpoint is not None:
            self.start(self.run.root, resume=checkpoint)

    def _on_exited(self, code: int) -> None:
        worker, self.worker = self.worker, None
        if worker is not None:
            worker.wait()
            worker.deleteLater()
        self.redraw()
        self._refresh_run_facts()
        self.run_ended.emit()

    def show_run(self, run_dir: Path | str) -> None:
        """Replay a past run's events.jsonl into the plot, log and samples."""
        if self.is_running:
            return
        self._reset_display()
        self._set_run(run_dir)
        self._replay_events(self.run)
        self.redraw()
        self._refresh_run_facts()
        self._say(f"Showing {self.run.root.name} ({self.run.status()})")

    def _replay_events(self, run: RunDir) -> None:
        previous, self.run = self.run, run
        for ev in read_events(run.events):
            self.handle_event(ev)
        self.run = previous if previous is not None else run

    # -- events --------------------------------------------------------------
    def handle_event(self, ev: dict) -> None:
        kind = ev.get("type")
        if self.header.feed(ev, time.time()):
            name = str(ev["phase"])
            self.log_view.appendPlainText(name[:1].upper() + name[1:] + "…")
        if kind == "progress":
            step = number(ev, "step")
            if step is not None:
                self.series.append(step, number(ev, "loss"), number(ev, "lr", "learning_rate"))
        elif kind == "eval":
            step, loss = number(ev, "step"), number(ev, "loss")
            if step is not None and loss is not None:
                self.series.add_eval(step, loss, number(ev, "rougeL"))
                self.log_view.appendPlainText(eval_line(ev))
        elif kind == "log":
            self.log_view.appendPlainText(str(ev.get("message", "")))
        elif kind == "started":
            if ev.get("family"):
                self.samples.set_kind("text" if ev["family"] == "text" else "image")
            self.log_view.appendPlainText("Started" + (f": {ev['message']}" if ev.get("message")
                                                       else "."))
        elif kind == "checkpoint":
            self.log_view.appendPlainText(f"Checkpoint saved: {ev.get('path', '')}")
        elif kind == "hardware":
            self.gpu_panel.show_engine_reading(ev)
        elif kind == "sample":
            problem = self.samples.add(ev, self._sample_path(ev))
            if problem:
                self.log_view.appendPlainText(problem)
        elif kind == "error":
            self._outcome = f"failed ({ev.get('kind', 'internal')})"
            self.banner.show_error(ev)
            self.log_view.appendPlainText(f"ERROR ({ev.get('kind')}): {ev.get('message', '')}")
            self._say("Training failed: " + str(ev.get("message", "")))
        elif kind == "finished":
            status = ev.get("status", "completed")
            self._outcome = status
            self.log_view.appendPlainText(f"Finished: {status}."
                                          + (f" {ev['message']}" if ev.get("message") else ""))
            self._say(f"Run {status}")

    def _sample_path(self, ev: dict) -> Path | None:
        raw = ev.get("path")
        if not raw:
            return None
        path = Path(raw)
        if not path.is_absolute() and self.run is not None:
            path = self.run.root / path
        elif not path.exists() and self.run is not None:
            # A run trained elsewhere (a headless box) and copied here: same folder layout.
            moved = self.run.root / path.parent.name / path.name
            path = moved if moved.exists() else path
        return path

    def redraw(self) -> None:
        """Draw what arrived since the last tick (the timer calls this at 10 Hz)."""
        self.plot.redraw()
        self.header.tick(time.time())
        if not self.is_running:  # also a replayed run that was cut off while loading
            self.header.settle(self._outcome)
            self._outcome = ""

    # -- export --------------------------------------------------------------
    @property
    def export_folder(self) -> Path | None:
        return self.export_box.folder

    def export(self, fmt: str | None = None, options: list[str] | None = None) -> bool:
        """Export the run in ``fmt`` (its family's default when None) in a child
        process, with more `lora-studio export` ``options`` (worker.export_options);
        False when a run or another export is in the way."""
        if self.run is None or self.is_running or self.exporter is not None:
            return False
        fmt = fmt or default_format(self._run_kind)
        self.exporter = worker_mod.ExportWorker(self.run.root, fmt,
                                                command=self.export_command(self.run.root, fmt)
                                                + (options or []),
                                                parent=self)
        self.exporter.finished.connect(self._export_ended)
        self.exporter.start()
        self._say(f"Exporting ({fmt})…")
        self._update_buttons()
        return True

    def _export_as(self) -> None:
        if self.run is None:
            return
        if self.export_dialog is not None:
            self.export_dialog.deleteLater()
        self.export_dialog = ExportDialog(self, self._run_kind, self)
        self.export_dialog.open()

    def _export_done(self, files: list) -> None:
        self.export_box.show_files(files)
        self._say(f"Exported {Path(files[0][0]).name}")

    def _export_failed(self, message: str) -> None:
        self.banner.show_error({"kind": "io", "message": message,
                                "hint": "The trained adapter is still in the run's final/ folder."})
        self._say("Export failed")

    def _export_ended(self) -> None:
        exporter, self.exporter = self.exporter, None
        if exporter is not None:
            self.last_export_files, self.last_export_error = exporter.files, exporter.error
            if exporter.files:
                self._export_done(exporter.files)
            else:
                self._export_failed(exporter.error)
            exporter.deleteLater()
        self._refresh_run_facts()
        self.export_ended.emit()
        self.run_ended.emit()

    def shutdown(self) -> None:
        """Before the window closes: stop the timers and a running engine."""
        self.redraw_timer.stop()
        self.gpu_panel.shutdown()
        if self.worker is not None:
            self.worker.stop()
            self.worker.wait()  # bounded: the worker ends the engine after its grace period
        if self.exporter is not None:
            self.exporter.wait(60_000)
