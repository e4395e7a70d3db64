"""The Playground's generation settings: the system prompt and the sampling knobs
(ui/chat_state.py's SETTINGS table)."""
from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (QDoubleSpinBox, QFormLayout, QGroupBox, QPlainTextEdit, QSpinBox)

from .chat_state import SETTINGS


class ChatSettings(QGroupBox):
    changed = Signal()

    def __init__(self, parent=None):
        super().__init__("Generation", parent)
        form = QFormLayout(self)
        self.system = QPlainTextEdit()
        self.system.setPlaceholderText("System prompt (optional)")
        self.system.setFixedHeight(64)
        self.system.textChanged.connect(self.changed)
        form.addRow("System", self.system)
        self.boxes = {}
        for name, title, default, low, high, step in SETTINGS:
            box = QSpinBox() if isinstance(default, int) else QDoubleSpinBox()
            box.setRange(low, high)
            box.setSingleStep(step)
            if isinstance(box, QDoubleSpinBox):
                box.setDecimals(2)
            box.setValue(default)
            box.valueChanged.connect(self.changed)
            self.boxes[name] = box
            form.addRow(title, box)
        self.boxes["temperature"].setToolTip("0 answers greedily: the same every time")
        self.boxes["seed"].setToolTip("The same seed gives every column the same random draws")

    def values(self) -> dict:
        return {name: box.value() for name, box in self.boxes.items()}
