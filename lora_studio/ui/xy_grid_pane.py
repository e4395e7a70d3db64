"""The XY grid builder: checkpoints (the ticked LoRAs) × strengths, 0 being the base
model, or prompts × seeds; the grid itself is drawn by the playground process."""
from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (QComboBox, QFormLayout, QGroupBox, QLineEdit, QPlainTextEdit,
                               QPushButton, QStackedWidget, QWidget)

from .image_state import GRID_MODES, GridSpec


class XYGridPane(QGroupBox):
    draw = Signal()

    def __init__(self, parent=None):
        super().__init__("XY grid", parent)
        form = QFormLayout(self)
        self.mode = QComboBox()
        for key, title in GRID_MODES:
            self.mode.addItem(title, key)
        form.addRow("Grid", self.mode)
        self.strengths = QLineEdit()
        self.strengths.setToolTip("Columns: LoRA strengths, separated by commas; 0 is the base "
                                  "model. Rows: the ticked checkpoints.")
        self.prompts = QPlainTextEdit()
        self.prompts.setPlaceholderText("One prompt a line (the rows)")
        self.prompts.setFixedHeight(64)
        self.seeds = QLineEdit()
        self.seeds.setToolTip("Columns: seeds, separated by commas")
        strengths_page, seeds_page = QWidget(), QWidget()
        strengths_form = QFormLayout(strengths_page)
        strengths_form.setContentsMargins(0, 0, 0, 0)
        strengths_form.addRow("Strengths", self.strengths)
        seeds_form = QFormLayout(seeds_page)
        seeds_form.setContentsMargins(0, 0, 0, 0)
        seeds_form.addRow("Prompts", self.prompts)
        seeds_form.addRow("Seeds", self.seeds)
        self.pages = QStackedWidget()
        self.pages.addWidget(strengths_page)
        self.pages.addWidget(seeds_page)
        form.addRow(self.pages)
        self.draw_button = QPushButton("Draw grid")
        self.draw_button.clicked.connect(self.draw)
        form.addRow(self.draw_button)
        self.mode.currentIndexChanged.connect(self._mode_changed)
        self._mode_changed()

    def _mode_changed(self) -> None:
        self.pages.setCurrentIndex(self.mode.currentIndex())
        page = self.pages.currentWidget()
        for i in range(self.pages.count()):  # the stack's height is the shown page's
            self.pages.widget(i).setVisible(self.pages.widget(i) is page)
        self.pages.setFixedHeight(page.sizeHint().height())

    def spec(self) -> GridSpec:
        return GridSpec(self.mode.currentData(), self.strengths.text(), self.prompts.toPlainText(),
                        self.seeds.text())

    def show_spec(self, spec: GridSpec) -> None:
        self.mode.setCurrentIndex(max(0, self.mode.findData(spec.mode)))
        self.strengths.setText(spec.strengths)
        self.prompts.setPlainText(spec.prompts)
        self.seeds.setText(spec.seeds)
