"""The Playground tab: chat with a base model and its adapters side by side, or draw
with a Stable Diffusion base and its LoRAs (one image, or an XY grid); a chat or a
drawing can be saved in the run's playground/ folder and opened again.

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
from PySide6.QtWidgets import (QFileDialog, QHBoxLayout, QLabel, QPlainTextEdit, QPushButton,
                               QScrollArea, QSizePolicy, QSplitter, QStackedWidget, QVBoxLayout,
                               QWidget)

from ..config.jobfile import JobFileError
from ..errors import HintedError
from ..runs.adapter_sources import adapter_source
from ..runs.layout import RunDir
from ..runs.playground_launch import IDLE_S, PlaygroundProcess
from ..runs.playground_sessions import read_session, save_session
from ..serve.catalog import build_catalog
from ..serve.http_server import DEFAULT_HOST
from ..serve.lent import WindowServer
from .chat_column import ChatColumn
from .chat_settings import ChatSettings
from .chat_state import ChatSession, RunChoice, read_run
from .image_page import ImagePage
from .image_settings import ImageSettings
from .image_state import ImageSession, base_kind
from .playground_models import ModelsPane
from .serve_box import ServeBox

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
        self.image_session = ImageSession()
        self.kind = "text"                  # the loaded base's: which page is shown
        self.run_dir: Path | None = None    # the run opened, where sessions are saved
        self.columns: list[ChatColumn] = []
        self.serving: WindowServer | None = None   # lora-studio serve on this process
        self._served_ids: list[str] = []

        self.models = ModelsPane()
        self.settings = ChatSettings()
        self.image_settings = ImageSettings()
        self.settings_stack = QStackedWidget()
        self.settings_stack.addWidget(self.settings)
        self.settings_stack.addWidget(self.image_settings)
        self.save_button = QPushButton("Save session")
        self.save_button.setToolTip("Save the chat, or the picture with its settings, in the "
                                    "run's playground/ folder")
        self.save_button.clicked.connect(self._save_clicked)
        reopen = QPushButton("Open saved…")
        reopen.setToolTip("Open a chat or a picture saved from the Playground")
        reopen.clicked.connect(self._open_saved_clicked)
        sessions = QHBoxLayout()
        sessions.addWidget(self.save_button)
        sessions.addWidget(reopen)
        left = QWidget()
        left_layout = QVBoxLayout(left)
        left_layout.setContentsMargins(0, 0, 0, 0)
        left_layout.addWidget(self.models, 1)
        left_layout.addWidget(self.settings_stack)
        self.serve_box = ServeBox()
        self.serve_box.serve_toggled.connect(self._serve_toggled)
        left_layout.addWidget(self.serve_box)
        left_layout.addLayout(sessions)

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
        chat_page = QWidget()
        chat_layout = QVBoxLayout(chat_page)
        chat_layout.setContentsMargins(0, 0, 0, 0)
        chat_layout.addWidget(scroll, 1)
        chat_layout.addLayout(entry)
        self.image_page = ImagePage(self.image_session, self.image_settings, self._send)
        self.pages = QStackedWidget()
        self.pages.addWidget(chat_page)
        self.pages.addWidget(self.image_page)
        right = QWidget()
        right_layout = QVBoxLayout(right)
        right_layout.setContentsMargins(0, 0, 0, 0)
        right_layout.addWidget(self.pages, 1)
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
        self._show_pages(0)
        self._rebuild_columns()
        self._sync()

    # -- choosing models -----------------------------------------------------
    def open_run(self, run_dir: str) -> bool:
        """Load the run's base and list its adapters, the final one ticked; its sample
        prompts (and for images its sampling settings) are filled in."""
        try:
            choice = read_run(run_dir)
        except (JobFileError, OSError) as exc:
            self._say(str(exc))
            return False
        self.run_dir = Path(run_dir)
        label = f"{choice.base}\n(from {Path(run_dir).name})"
        self._load_base(choice.kind, choice.base, choice.chat_template, label)
        session = self.session if choice.kind == "text" else self.image_session
        last = len(choice.adapters) - 1
        for i, (label, folder) in enumerate(choice.adapters):
            name = session.add_adapter(label, folder)
            self.models.add(name, str(folder), checked=i == last)  # the final adapter
        if choice.kind == "text":
            if choice.sample_prompts:
                self.input.setPlainText(choice.sample_prompts[0])
        else:
            self._fill_image_defaults(choice)
        self._compared_changed()
        return True

    def _fill_image_defaults(self, choice: RunChoice) -> None:
        session = self.image_session
        session.settings.update(choice.image_settings)
        if choice.sample_prompts:
            session.settings["prompt"] = choice.sample_prompts[0]
            session.grid_spec.prompts = "\n".join(choice.sample_prompts)
        self.image_page.show_session()

    def open_base(self, path: str) -> None:
        self.run_dir = None
        self._load_base(base_kind(path), path, "auto", path)
        self._compared_changed()

    def _load_base(self, kind: str, path: str, chat_template: str, label: str) -> None:
        if self.serving is not None:
            self._stop_serving("Stopped serving: another base model was loaded. Serve serves "
                               "the new one.")
        self._set_kind(kind)
        if kind == "text":
            self._send(self.session.set_base(path, chat_template))
        else:
            self._send(self.image_session.set_base(path))
        self.models.set_base(label)
        self._say("Loading the base model…")

    def _set_kind(self, kind: str) -> None:
        """The loaded base decides the page; the other kind's session starts afresh, as
        its base is gone from the process."""
        if kind == "text":
            self.image_session = self.image_page.session = ImageSession()
            self.image_page.show_session()
        else:
            self.session = ChatSession()
            self._rebuild_columns()
        self.kind = kind
        self._show_pages(0 if kind == "text" else 1)
        self.models.set_kind(kind)

    def _show_pages(self, index: int) -> None:
        self.pages.setCurrentIndex(index)
        self.settings_stack.setCurrentIndex(index)
        # A stack is as tall as its tallest page unless the hidden ones are Ignored.
        for i in range(self.settings_stack.count()):
            policy = QSizePolicy.Policy.Preferred if i == index else QSizePolicy.Policy.Ignored
            self.settings_stack.widget(i).setSizePolicy(policy, policy)

    def add_adapter(self, path: str) -> bool:
        if not (self.session.base_path or self.image_session.base_path):
            self._say("Load a base model (or open a run) before adding adapters.")
            return False
        try:
            source = adapter_source(path)
        except HintedError as exc:
            self._say(f"{exc.message} {exc.hint}")
            return False
        session = self.session if self.kind == "text" else self.image_session
        name = session.add_adapter(source.label, path)
        self.models.add(name, str(path), checked=True)
        self._compared_changed()
        return True

    def _compared_changed(self) -> None:
        if self.kind == "image":
            self.image_session.set_active(self.models.compared())
            return
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
            if self.serving is not None and self.serving.offer(ev):
                continue  # an answer for a client of the server
            column = self.session.on_event(ev)
            if column is not None:
                changed.add(id(column))
            self.image_page.on_event(ev)
            self._note(ev)
        self._serve_news()
        if changed:
            for widget, column in zip(self.columns, self.session.columns):
                if id(column) in changed:
                    widget.show_column(column)
            self._sync()

    def _note(self, ev: dict) -> None:
        kind = ev["type"]
        if kind == "base_loaded":
            self._say(f"Base model loaded in {ev['seconds']:.1f} s.")
        elif kind == "error" and not str(ev.get("id") or "").startswith(("g", "i")):
            self._say(f"{ev.get('message', '')} {ev.get('hint', '')}".strip())
        elif kind == "exited":
            reason = ev.get("reason")
            if reason == "crashed":
                self._say(f"The playground process ended unexpectedly (exit code {ev.get('code')}); "
                          "the next Send or Generate starts it again.")
            elif reason == "idle":
                self._say("The playground process was stopped after a while unused; it frees "
                          "the memory and starts again when next asked.")
            elif reason == "training":
                self._say("The playground process was stopped to leave the GPU to training.")
            self._sync()

    def _refresh_all(self) -> None:
        for widget, column in zip(self.columns, self.session.columns):
            widget.show_column(column)
        self._sync()

    def _sync(self) -> None:
        self.serve_box.set_available(self.kind == "text" and bool(self.session.base_path),
                                     "Open a run or a text base model first; image models "
                                     "are not served.")
        busy = self.session.busy
        self.send_button.setEnabled(not busy and bool(self.session.columns))
        self.stop_button.setEnabled(busy)
        self.clear_button.setEnabled(not busy)

    def _say(self, text: str) -> None:
        self.state_label.setText(text)
        self.status.emit(text)

    # -- serving ------------------------------------------------------------------
    def _serve_toggled(self, on: bool) -> None:
        """Serve the base and the adapters listed now, on this view's process."""
        if not on:
            self._stop_serving("Stopped serving.")
            return
        port = self.serve_box.port.value()
        try:
            catalog = build_catalog(list(self.session.adapters.values()),
                                    base=self.session.base_path)
            self.serving = WindowServer(catalog, self.process, DEFAULT_HOST, port,
                                        self.serve_box.key.text().strip() or None)
        except HintedError as exc:
            self.serve_box.show_state(f"Cannot serve: {exc.message} {exc.hint}", False)
            return
        except OSError as exc:
            self.serve_box.show_state(f"Cannot listen on {DEFAULT_HOST}:{port}: "
                                      f"{exc.strerror or exc}. Pick another port.", False)
            return
        self._served_ids = catalog.ids
        self.serve_box.show_state("Loading the adapters for serving…", True)

    def _serve_news(self) -> None:
        while self.serving is not None:
            try:
                kind, text = self.serving.messages.get_nowait()
            except queue.Empty:
                return
            if kind == "serving":
                self.serve_box.show_state(
                    f"Serving at {text} (base URL for chat front-ends and the openai client); "
                    f"models: {', '.join(self._served_ids)}. Adapters added later are served "
                    "after Serve is pressed again.", True)
            else:
                self.serving = None
                self.serve_box.show_state(f"Could not serve: {text}", False)

    def _stop_serving(self, text: str) -> None:
        if self.serving is not None:
            self.serving.close()
            self.serving = None
        self.serve_box.show_state(text, False)

    # -- saved sessions ---------------------------------------------------------
    def save_session(self, folder: Path | None = None) -> Path | None:
        """Save the chat, or the last picture with its settings, in ``folder`` (the
        run's playground/ by default); the JSON's path, None when there was nothing to
        save or it could not be written (said in the status line)."""
        folder = folder or (RunDir(self.run_dir).playground if self.run_dir else None)
        if folder is None:
            self._say("Open a run to save next to it, or choose a folder.")
            return None
        if self.kind == "text":
            if self.session.busy or not any(c.messages for c in self.session.columns):
                self._say("Nothing to save yet: chat first (and let the answers finish).")
                return None
            record, png = self.session.to_record(), None
        else:
            s = self.image_session
            if s.pending or not s.image_path:
                self._say("Nothing to save yet: draw an image or a grid first.")
                return None
            record, png = s.to_record(), s.image_path
        try:
            path = save_session(folder, record, png)
        except OSError as exc:
            self._say(f"Could not save in {folder}: {exc.strerror or exc}. Choose a folder you "
                      "can write to.")
            return None
        self._say(f"Saved {path.name} in {folder}.")
        return path

    def open_saved(self, path: str | Path) -> bool:
        """A saved chat, image or grid, with its base loaded again."""
        try:
            record = read_session(path)
        except HintedError as exc:
            self._say(f"{exc.message} {exc.hint}")
            return False
        folder = Path(path).parent
        self.run_dir = folder.parent if folder.name == "playground" and \
            (folder.parent / "job.toml").is_file() else None
        kind = "text" if record["kind"] == "chat" else "image"
        fresh = ChatSession() if kind == "text" else ImageSession()
        try:
            requests = fresh.from_record(record)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            self._say(f"{path} is damaged ({type(exc).__name__}: {exc}). Open another saved "
                      "session.")
            return False
        self._set_kind(kind)
        self.models.set_base(f"{record.get('base', '')}\n(saved in {Path(path).name})")
        if kind == "text":
            self.session = fresh
            compared = [c.adapter for c in fresh.columns if c.adapter]
            self.models.with_base.blockSignals(True)
            self.models.with_base.setChecked(any(not c.adapter for c in fresh.columns))
            self.models.with_base.blockSignals(False)
            self.settings.system.setPlainText(fresh.system)
            for name, box in self.settings.boxes.items():
                box.setValue(fresh.settings[name])
        else:
            self.image_session = self.image_page.session = fresh
            compared = fresh.active
        for name, adapter_path in fresh.adapters.items():
            self.models.add(name, adapter_path, checked=name in compared)
        self._send(requests)
        if kind == "text":
            self._rebuild_columns()
        else:
            self.image_page.show_session()
        self._say(f"Opened {Path(path).name}; loading its base model…")
        return True

    def _save_clicked(self) -> None:
        folder = None
        if self.run_dir is None:
            chosen = QFileDialog.getExistingDirectory(self, "Save the session in")
            if not chosen:
                return
            folder = Path(chosen)
        self.save_session(folder)

    def _open_saved_clicked(self) -> None:
        start = str(RunDir(self.run_dir).playground) if self.run_dir else ""
        path, _ = QFileDialog.getOpenFileName(self, "Open a saved session", start,
                                              "Saved sessions (*.json)")
        if path:
            self.open_saved(path)

    # -- the window's calls ----------------------------------------------------
    def release_gpu(self) -> None:
        """A training run starts: the playground's model leaves the GPU."""
        if self.serving is not None:
            self._stop_serving("Stopped serving to leave the GPU to training.")
        self.process.stop("training")

    def shutdown(self) -> None:
        if self.serving is not None:
            self._stop_serving("Stopped serving.")
        self._idle_timer.stop()
        self.process.stop()
        self._drain_timer.stop()
