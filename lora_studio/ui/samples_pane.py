"""The samples pane of the training view: the current run's text samples, or its image
samples as a prompt × step grid; which one follows the run's kind (its job, then its
``started`` and ``sample`` events), never the previous run's."""
from __future__ import annotations

from pathlib import Path

from PySide6.QtWidgets import QLabel, QPlainTextEdit, QStackedWidget, QVBoxLayout, QWidget

from ..runs.run_progress import number
from ..runs.sample_grid import sample_kind
from .sample_grid_view import SampleGridView

TITLES = {"text": "Text samples", "image": "Image samples: click one to enlarge",
          None: "Samples"}


class SamplesPane(QWidget):
    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.title = QLabel()
        self.title.setStyleSheet("font-weight: bold;")
        self.text_samples = QPlainTextEdit()
        self.text_samples.setReadOnly(True)
        self.grid = SampleGridView()
        self.stack = QStackedWidget()
        self.stack.addWidget(self.text_samples)
        self.stack.addWidget(self.grid)
        layout.addWidget(self.title)
        layout.addWidget(self.stack, 1)
        self.kind: str | None = None
        self.set_kind(None)

    def set_kind(self, kind: str | None) -> None:
        """'text', 'image' or None (not known yet: a model family left on auto)."""
        self.kind = kind
        self.title.setText(TITLES[kind])
        self.stack.setCurrentWidget(self.grid if kind == "image" else self.text_samples)
        self.text_samples.setPlaceholderText(
            "Samples appear here during training (output.sample_prompts, every "
            "output.sample_every_n_steps steps)." if kind is None else
            "Text samples appear here during training.")

    def clear(self) -> None:
        self.text_samples.clear()
        self.grid.clear_samples()
        self.set_kind(None)

    def add(self, ev: dict, path: Path | None) -> str:
        """Show a ``sample`` event (``path``: its file, found); '' or a problem to log."""
        kind = sample_kind(ev)
        if kind is not None and kind != self.kind:
            self.set_kind(kind)
        step = ev.get("step", "?")
        if kind == "image":
            if path is None:
                return "An image sample event names no file."
            if not self.grid.add(str(ev.get("prompt") or ""), int(number(ev, "step") or 0), path):
                return f"Sample image could not be read: {path}"
            return ""
        if isinstance(ev.get("samples"), list):  # the text engine: [{prompt, text}, ...]
            for item in ev["samples"]:
                if isinstance(item, dict):
                    self.text_samples.appendPlainText(
                        f"— step {step} — {item.get('prompt', '')}\n{item.get('text', '')}\n")
            return ""
        text = ev.get("text")
        if text is None and path is not None:
            try:
                text = path.read_text(encoding="utf-8", errors="replace")
            except OSError as exc:
                text = f"(could not read {path}: {exc.strerror})"
        prompt = ev.get("prompt")
        header = f"— step {step}" + (f" — {prompt}" if prompt else "")
        self.text_samples.appendPlainText(f"{header}\n{text or ''}\n")
        return ""
