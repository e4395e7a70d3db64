"""The Playground tab: chat with a base model and its adapters side by side.

The model runs in the playground process (runs/playground_launch.py), started on the
first request and stopped when idle or when a training run needs the GPU; its events
are read in the launcher's thread and drained here by a 20 ms timer (never through a
cross-thread Qt signal: PYSIDE-3124). A crash of that process is a message here, and
the next Send starts it again with the same base and adapters.
"""
from __future__ import annotations

import queue
from pathlib import Path

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QKeySequence, QShortcut
from PySide6.QtWidgets import (QHBoxLayout, QLabel, QPlainTextEdit, QPushButton, QScrollArea,
                               QSplitter, QVBoxLayout, QWidget)

from ..config.jobfile import JobFileError
from ..errors import HintedError
from ..runs.adapter_sources import adapter_source
from ..runs.playground_launch import IDLE_S, PlaygroundProcess
from .chat_column import ChatColumn
from .chat_settings import ChatSettings
from .chat_state import ChatSession, read_run
from .playground_models import ModelsPane

DRAIN_MS = 20
IDLE_CHECK_MS = 10_000
MAX_BATCH = 2000


class PlaygroundView(QWidget):
    status = Signal(str)

    def __init__(self, process: PlaygroundProcess | None = None, idle_s: float = IDLE_S,
                 parent=None):
        super().__init__(parent)
        self.process = process or PlaygroundProcess(idle_s=idle_s)
        self.session = ChatSession()
        self.columns: list[ChatColumn] = []

        self.models = ModelsPane()
        self.settings = ChatSettings()
        left = QWidget()
        left_layout = QVBoxLayout(left)
        left_layout.setContentsMargins(0, 0, 0, 0)
        left_layout.addWidget(self.models, 1)
        left_layout.addWidget(self.settings)

        self.columns_box = QWidget()
        self.columns_layout = QHBoxLayout(self.columns_box)
        self.columns_layout.setContentsMargins(0, 0, 0, 0)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(self.columns_box)
        self.input = QPlainTextEdit()
        self.input.setPlaceholderText("Message (Ctrl+Enter sends)")
        self.input.setFixedHeight(72)
        self.send_button = QPushButton("Send")
        self.send_button.clicked.connect(self.send)
        self.stop_button = QPushButton("Stop")
        self.stop_button.clicked.connect(self.stop)
        self.clear_button = QPushButton("Clear")
        self.clear_button.setToolTip("Start a new conversation in every column")
        self.clear_button.clicked.connect(self.clear)
        self.state_label = QLabel()
        self.state_label.setStyleSheet("color: #666;")
        self.state_label.setTextFormat(Qt.TextFormat.PlainText)
        buttons = QVBoxLayout()
        for button in (self.send_button, self.stop_button, self.clear_button):
            buttons.addWidget(button)
        entry = QHBoxLayout()
        entry.addWidget(self.input, 1)
        entry.addLayout(buttons)
        right = QWidget()
        right_layout = QVBoxLayout(right)
        right_layout.setContentsMargins(0, 0, 0, 0)
        right_layout.addWidget(scroll, 1)
        right_layout.addLayout(entry)
        right_layout.addWidget(self.state_label)

        splitter = QSplitter()
        splitter.addWidget(left)
        splitter.addWidget(right)
        splitter.setStretchFactor(1, 1)
        splitter.setSizes([320, 900])
        layout = QVBoxLayout(self)
        layout.addWidget(splitter)

        self.models.open_run.connect(self.open_run)
        self.models.open_base.connect(self.open_base)
        self.models.add_adapter.connect(self.add_adapter)
        self.models.compared_changed.connect(self._compared_changed)
        for keys in ("Ctrl+Return", "Ctrl+Enter"):
            QShortcut(QKeySequence(keys), self.input, self.send)

        self._drain_timer = QTimer(self)
        self._drain_timer.setInterval(DRAIN_MS)
        self._drain_timer.timeout.connect(self.drain)
        self._drain_timer.start()
        self._idle_timer = QTimer(self)
        self._idle_timer.setInterval(IDLE_CHECK_MS)
        self._idle_timer.timeout.connect(self.process.stop_if_idle)
        self._idle_timer.start()
        self._rebuild_columns()
        self._sync()

    # -- choosing models -----------------------------------------------------
    def open_run(self, run_dir: str) -> bool:
        try:
            choice = read_run(run_dir)
        except (JobFileError, OSError) as exc:
            self._say(str(exc))
            return False
        if choice.kind != "text":
            self._say("The playground chats with text models; image runs are not supported yet.")
            return False
        self._load_base(choice.base, choice.chat_template, f"{choice.base}\n(from {Path(run_dir).name})")
        last = len(choice.adapters) - 1
        for i, (label, folder) in enumerate(choice.adapters):
            name = self.session.add_adapter(label, folder)
            self.models.add(name, str(folder), checked=i == last)  # the final adapter
        if choice.sample_prompts and not self.input.toPlainText().strip():
            self.input.setPlainText(choice.sample_prompts[0])
        self._compared_changed()
        return True

    def open_base(self, folder: str) -> None:
        self._load_base(folder, "auto", folder)
        self._compared_changed()

    def _load_base(self, path: str, chat_template: str, label: str) -> None:
        self._send(self.session.set_base(path, chat_template))
        self.models.set_base(label)
        self._say("Loading the base model…")

    def add_adapter(self, path: str) -> bool:
        if not self.session.base_path:
            self._say("Load a base model (or open a run) before adding adapters.")
            return False
        try:
            source = adapter_source(path)
        except HintedError as exc:
            self._say(f"{exc.message} {exc.hint}")
            return False
        name = self.session.add_adapter(source.label, path)
        self.models.add(name, str(path), checked=True)
        self._compared_changed()
        return True

    def _compared_changed(self) -> None:
        self.session.set_compared(self.models.compared(), self.models.with_base.isChecked())
        self._rebuild_columns()

    def _rebuild_columns(self) -> None:
        for widget in self.columns:
            widget.setParent(None)
            widget.deleteLater()
        self.columns = []
        for column in self.session.columns:
            widget = ChatColumn(column.title)
            widget.show_column(column)
            self.columns_layout.addWidget(widget, 1)
            self.columns.append(widget)
        self._sync()

    # -- chatting -------------------------------------------------------------
    def send(self) -> None:
        self.session.system = self.settings.system.toPlainText()
        self.session.settings.update(self.settings.values())
        requests = self.session.send(self.input.toPlainText())
        if not requests:
            if not self.session.base_path:
                self._say("Open a run or a base model first.")
            return
        self.input.clear()
        self._send(requests)
        self._refresh_all()

    def stop(self) -> None:
        self._send(self.session.stop())

    def clear(self) -> None:
        if not self.session.busy:
            self.session.clear()
            self._refresh_all()

    def _send(self, requests: list[dict]) -> None:
        for req in requests:
            self.process.send(req)
        self._sync()

    # -- events ---------------------------------------------------------------
    def drain(self) -> None:
        changed = set()
        for _ in range(MAX_BATCH):
            try:
                ev = self.process.events.get_nowait()
            except queue.Empty:
                break
            column = self.session.on_event(ev)
            if column is not None:
                changed.add(id(column))
            self._note(ev)
        if changed:
            for widget, column in zip(self.columns, self.session.columns):
                if id(column) in changed:
                    widget.show_column(column)
            self._sync()

    def _note(self, ev: dict) -> None:
        kind = ev["type"]
        if kind == "base_loaded":
            self._say(f"Base model loaded in {ev['seconds']:.1f} s.")
        elif kind == "error" and not str(ev.get("id") or "").startswith("g"):
            self._say(f"{ev.get('message', '')} {ev.get('hint', '')}".strip())
        elif kind == "exited":
            reason = ev.get("reason")
            if reason == "crashed":
                self._say(f"The playground process ended unexpectedly (exit code {ev.get('code')}); "
                          "the next Send starts it again.")
            elif reason == "idle":
                self._say("The playground process was stopped after a while unused; it frees "
                          "the memory and starts again on the next Send.")
            elif reason == "training":
                self._say("The playground process was stopped to leave the GPU to training.")
            self._sync()

    def _refresh_all(self) -> None:
        for widget, column in zip(self.columns, self.session.columns):
            widget.show_column(column)
        self._sync()

    def _sync(self) -> None:
        busy = self.session.busy
        self.send_button.setEnabled(not busy and bool(self.session.columns))
        self.stop_button.setEnabled(busy)
        self.clear_button.setEnabled(not busy)

    def _say(self, text: str) -> None:
        self.state_label.setText(text)
        self.status.emit(text)

    # -- the window's calls ----------------------------------------------------
    def release_gpu(self) -> None:
        """A training run starts: the playground's model leaves the GPU."""
        self.process.stop("training")

    def shutdown(self) -> None:
        self._idle_timer.stop()
        self.process.stop()
        self._drain_timer.stop()
