"""The training view: Train / Stop / Resume / Export, the live loss and learning-rate
plot, progress with it/s and ETA, the log, the samples and the GPU panel.

Events only update plain data (the series, the latest progress); a 10 Hz timer
draws, so a fast event stream never queues paints on the UI thread.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import pyqtgraph as pg
from PySide6.QtCore import QSize, Qt, QTimer, QUrl, Signal
from PySide6.QtGui import QDesktopServices, QIcon, QPixmap
from PySide6.QtWidgets import (QFrame, QHBoxLayout, QLabel, QListView, QListWidget,
                               QListWidgetItem, QPlainTextEdit, QProgressBar, QPushButton,
                               QSplitter, QTabWidget, QVBoxLayout, QWidget)

from ..runs.events import read_events
from ..runs.exports import default_format, run_family
from ..runs.layout import RunDir
from . import worker as worker_mod
from .export_dialog import ExportDialog, ExportResult
from .gpu_panel import GpuPanel
from .series import TrainingSeries

REDRAW_MS = 100
LOG_LINES = 5000
THUMB = 160
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}


def format_eta(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "–"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _num(ev: dict, *keys: str) -> float | None:
    for key in keys:
        value = ev.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    return None


def progress_text(ev: dict) -> str:
    step, total = _num(ev, "step"), _num(ev, "total", "total_steps")
    parts = [f"step {int(step or 0)}" + (f" / {int(total)}" if total else "")]
    epoch = _num(ev, "epoch")
    if epoch is not None:
        parts.append(f"epoch {epoch:g}")
    loss = _num(ev, "loss")
    if loss is not None:
        parts.append(f"loss {loss:.4g}")
    lr = _num(ev, "lr", "learning_rate")
    if lr is not None:
        parts.append(f"lr {lr:.3g}")
    speed = _num(ev, "it_s", "its", "it/s", "steps_per_s")
    if speed is not None:
        parts.append(f"{speed:.2f} it/s")
    parts.append(f"ETA {format_eta(_num(ev, 'eta', 'eta_s'))}")
    return "  ·  ".join(parts)


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

    def __init__(self, gpu_read=None, parent: QWidget | None = None):
        super().__init__(parent)
        pg.setConfigOptions(background="w", foreground="k", antialias=False)
        self.engine_command: Callable = worker_mod.engine_command
        self.export_command: Callable = worker_mod.export_command
        self.worker: worker_mod.TrainingWorker | None = None
        self.exporter: worker_mod.ExportWorker | None = None
        self.last_export_files: list[tuple[str, str]] = []
        self.last_export_error = ""
        self.export_dialog: ExportDialog | None = None
        self.run: RunDir | None = None
        self.series = TrainingSeries()
        self._drawn = -1
        self._progress: dict | None = None
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
        self.run_label = QLabel("No run yet.")
        self.run_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        for button in (self.train_button, self.stop_button, self.resume_button,
                       self.export_button, self.export_as_button):
            buttons.addWidget(button)
        buttons.addWidget(self.run_label, 1)
        layout.addLayout(buttons)
        self.train_button.clicked.connect(self.train_clicked)
        self.stop_button.clicked.connect(self.stop)
        self.resume_button.clicked.connect(self.resume)
        self.export_button.clicked.connect(lambda: self.export())
        self.export_as_button.clicked.connect(self._export_as)

        self.export_box = ExportResult()
        self.export_label = self.export_box.label
        layout.addWidget(self.export_box)

        progress_row = QHBoxLayout()
        self.progress_bar = QProgressBar()
        self.progress_bar.setRange(0, 1)
        self.progress_bar.setValue(0)
        self.progress_label = QLabel("Idle")
        progress_row.addWidget(self.progress_bar, 1)
        progress_row.addWidget(self.progress_label, 2)
        layout.addLayout(progress_row)

        main_split = QSplitter(Qt.Orientation.Horizontal)
        left_split = QSplitter(Qt.Orientation.Vertical)
        self.graph = pg.GraphicsLayoutWidget()
        self.loss_plot = self.graph.addPlot(row=0, col=0)
        self.lr_plot = self.graph.addPlot(row=1, col=0)
        self.graph.ci.layout.setRowStretchFactor(0, 3)
        self.graph.ci.layout.setRowStretchFactor(1, 1)
        # No grid: in a software-rendered window it costs more than the curves
        # (benchmarks/ui_stall.py).
        for plot, label in ((self.loss_plot, "loss"), (self.lr_plot, "learning rate")):
            plot.setLabel("left", label)
            plot.setDownsampling(auto=True, mode="peak")
            plot.setClipToView(True)
        self.lr_plot.setLabel("bottom", "step")
        for plot in (self.loss_plot, self.lr_plot):
            # A fixed axis width: tick labels that change width as the range moves
            # would otherwise re-layout the whole plot on every redraw. Equal widths
            # also line the two plots up.
            plot.getAxis("left").setWidth(64)
        self.lr_plot.setXLink(self.loss_plot)
        self.loss_plot.addLegend(offset=(-10, 10))
        self.raw_curve = self.loss_plot.plot(pen=pg.mkPen((100, 150, 220, 120), width=1),
                                             name="loss", connect="finite")
        self.smooth_curve = self.loss_plot.plot(pen=pg.mkPen("#0d47a1", width=2),
                                                name="smoothed (EMA)", connect="finite")
        self.lr_curve = self.lr_plot.plot(pen=pg.mkPen("#e65100", width=1), connect="finite")
        for curve in (self.raw_curve, self.smooth_curve, self.lr_curve):
            # Two points per pixel column (min and max) instead of pyqtgraph's ten:
            # the same picture, a fifth of the drawing at 100,000 steps.
            curve.opts["autoDownsampleFactor"] = 1.0
        left_split.addWidget(self.graph)

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
        self.samples_tabs = QTabWidget()
        self.gallery = QListWidget()
        self.gallery.setViewMode(QListView.ViewMode.IconMode)
        self.gallery.setIconSize(QSize(THUMB, THUMB))
        self.gallery.setResizeMode(QListView.ResizeMode.Adjust)
        self.gallery.setWordWrap(True)
        self.gallery.itemActivated.connect(self._open_sample)
        self.text_samples = QPlainTextEdit()
        self.text_samples.setReadOnly(True)
        self.text_samples.setPlaceholderText("Text samples appear here during training.")
        self.samples_tabs.addTab(self.text_samples, "Text samples")
        self.samples_tabs.addTab(self.gallery, "Image samples")
        right_layout.addWidget(self.samples_tabs, 1)
        main_split.addWidget(right)
        main_split.setStretchFactor(0, 3)
        main_split.setStretchFactor(1, 1)
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
        self._drawn = -1
        self._progress = None
        self._outcome = ""
        self.banner.hide()
        self.export_box.hide()
        self.log_view.clear()
        self.gallery.clear()
        self.text_samples.clear()
        self.gpu_panel.clear_run()
        self.progress_bar.setRange(0, 1)
        self.progress_bar.setValue(0)
        self.progress_label.setText("Idle")

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
        if kind == "progress":
            step = _num(ev, "step")
            if step is not None:
                self.series.append(step, _num(ev, "loss"), _num(ev, "lr", "learning_rate"))
            self._progress = ev
        elif kind == "log":
            self.log_view.appendPlainText(str(ev.get("message", "")))
        elif kind == "started":
            self.log_view.appendPlainText("Started" + (f": {ev['message']}" if ev.get("message")
                                                       else "."))
        elif kind == "checkpoint":
            self.log_view.appendPlainText(f"Checkpoint saved: {ev.get('path', '')}")
        elif kind == "hardware":
            self.gpu_panel.show_engine_reading(ev)
        elif kind == "sample":
            self._add_sample(ev)
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

    def _add_sample(self, ev: dict) -> None:
        path = self._sample_path(ev)
        step = ev.get("step", "?")
        if path is not None and path.suffix.lower() in IMAGE_SUFFIXES:
            pixmap = QPixmap(str(path))
            if pixmap.isNull():
                self.log_view.appendPlainText(f"Sample image could not be read: {path}")
                return
            item = QListWidgetItem(QIcon(pixmap.scaled(THUMB, THUMB,
                                                       Qt.AspectRatioMode.KeepAspectRatio,
                                                       Qt.TransformationMode.SmoothTransformation)),
                                   f"step {step}")
            item.setToolTip(f"{ev.get('prompt', '')}\n{path}".strip())
            item.setData(Qt.ItemDataRole.UserRole, str(path))
            self.gallery.addItem(item)
            self.samples_tabs.setCurrentWidget(self.gallery)
            return
        if isinstance(ev.get("samples"), list):  # the text engine: [{prompt, text}, ...]
            for item in ev["samples"]:
                if isinstance(item, dict):
                    self.text_samples.appendPlainText(
                        f"— step {step} — {item.get('prompt', '')}\n{item.get('text', '')}\n")
            return
        text = ev.get("text")
        if text is None and path is not None:
            try:
                text = path.read_text(encoding="utf-8", errors="replace")
            except OSError as exc:
                text = f"(could not read {path}: {exc.strerror})"
        prompt = ev.get("prompt")
        header = f"— step {step}" + (f" — {prompt}" if prompt else "")
        self.text_samples.appendPlainText(f"{header}\n{text or ''}\n")

    def _open_sample(self, item: QListWidgetItem) -> None:
        QDesktopServices.openUrl(QUrl.fromLocalFile(item.data(Qt.ItemDataRole.UserRole)))

    def redraw(self) -> None:
        """Draw what arrived since the last tick (the timer calls this at 10 Hz)."""
        if self.series.n != self._drawn and self.graph.isVisible():
            self._drawn = self.series.n
            steps = self.series.view("steps")
            self.raw_curve.setData(steps, self.series.view("loss"))
            self.smooth_curve.setData(steps, self.series.view("smooth"))
            self.lr_curve.setData(steps, self.series.view("lr"))
            if self.series.lr_max > 0:
                # From 0, fixed: autorange makes a constant rate a flat line in a void.
                self.lr_plot.setYRange(0, self.series.lr_max * 1.1, padding=0)
        if self._progress is not None:
            ev, self._progress = self._progress, None
            step, total = _num(ev, "step") or 0, _num(ev, "total", "total_steps")
            if total:
                self.progress_bar.setRange(0, int(total))
                self.progress_bar.setValue(min(int(step), int(total)))
            self.progress_label.setText(progress_text(ev))
        if self._outcome and not self.is_running:
            text = self.progress_label.text().split("  ·  ETA")[0]
            self.progress_label.setText(f"{text}  ·  {self._outcome}")
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
