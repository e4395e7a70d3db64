"""The image Playground's drawing settings: prompt, negative prompt, sampler and the
numbers of ui/image_state.py's IMAGE_SETTINGS table."""
from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (QComboBox, QDoubleSpinBox, QFormLayout, QGroupBox, QPlainTextEdit,
                               QSpinBox)

from ..runs.xy_grid import SAMPLERS
from .image_state import IMAGE_SETTINGS

TOOLTIPS = {
    "seed": "The same seed and settings draw the same image",
    "width": "0: the model's own size; Stable Diffusion draws in steps of 8 pixels",
    "height": "0: the model's own size; Stable Diffusion draws in steps of 8 pixels",
    "strength": "How strongly the ticked LoRAs apply; 0 draws with the base model alone",
}


class ImageSettings(QGroupBox):
    changed = Signal()

    def __init__(self, parent=None):
        super().__init__("Drawing", parent)
        form = QFormLayout(self)
        self.prompt = QPlainTextEdit()
        self.prompt.setPlaceholderText("Prompt")
        self.prompt.setFixedHeight(64)
        self.negative = QPlainTextEdit()
        self.negative.setPlaceholderText("Negative prompt (optional)")
        self.negative.setFixedHeight(44)
        self.sampler = QComboBox()
        self.sampler.addItems(list(SAMPLERS))
        form.addRow("Prompt", self.prompt)
        form.addRow("Negative", self.negative)
        form.addRow("Sampler", self.sampler)
        for widget in (self.prompt, self.negative):
            widget.textChanged.connect(self.changed)
        self.sampler.currentTextChanged.connect(self.changed)
        self.boxes = {}
        for name, title, default, low, high, step in IMAGE_SETTINGS:
            box = QSpinBox() if isinstance(default, int) else QDoubleSpinBox()
            box.setRange(low, high)
            box.setSingleStep(step)
            if isinstance(box, QDoubleSpinBox):
                box.setDecimals(2)
            if name in ("width", "height"):
                box.setSpecialValueText("model's size")
            box.setValue(default)
            box.setToolTip(TOOLTIPS.get(name, ""))
            box.valueChanged.connect(self.changed)
            self.boxes[name] = box
            form.addRow(title, box)

    def values(self) -> dict:
        return {"prompt": self.prompt.toPlainText(), "negative_prompt": self.negative.toPlainText(),
                "sampler": self.sampler.currentText(),
                **{name: box.value() for name, box in self.boxes.items()}}

    def show_values(self, values: dict) -> None:
        self.blockSignals(True)
        self.prompt.setPlainText(str(values.get("prompt", "")))
        self.negative.setPlainText(str(values.get("negative_prompt", "")))
        if values.get("sampler") in SAMPLERS:
            self.sampler.setCurrentText(values["sampler"])
        for name, box in self.boxes.items():
            if name in values:
                box.setValue(values[name])
        self.blockSignals(False)
