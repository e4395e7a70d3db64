"""The Playground's model pane: the base model (from a run, or a model folder), the
adapters added to it (a run's final/ and checkpoints, or any PEFT folder / LoRA file)
and which of them answer side by side, the base among them."""
from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (QCheckBox, QFileDialog, QGroupBox, QHBoxLayout, QLabel,
                               QListWidget, QListWidgetItem, QPushButton, QVBoxLayout)


LIST_TITLES = {"text": "Adapters (ticked ones answer side by side):",
               "image": "LoRAs (ticked ones draw together, or are the grid's rows):"}


class ModelsPane(QGroupBox):
    open_run = Signal(str)          # a run folder
    open_base = Signal(str)         # a model folder
    add_adapter = Signal(str)       # a folder or a .safetensors file
    compared_changed = Signal()

    def __init__(self, parent=None):
        super().__init__("Models", parent)
        layout = QVBoxLayout(self)
        buttons = QHBoxLayout()
        run = QPushButton("Open run…")
        run.setToolTip("Load the run's base model and list its final adapter and checkpoints")
        run.clicked.connect(self._choose_run)
        base = QPushButton("Base model…")
        base.setToolTip("Load a model folder as the base, with no adapter: a text model, or "
                        "a Stable Diffusion model in diffusers' layout")
        base.clicked.connect(self._choose_base)
        buttons.addWidget(run)
        buttons.addWidget(base)
        layout.addLayout(buttons)
        self.base_label = QLabel("No base model loaded.")
        self.base_label.setWordWrap(True)
        self.base_label.setTextFormat(Qt.TextFormat.PlainText)
        layout.addWidget(self.base_label)
        self.with_base = QCheckBox("Answer with the base model too")
        self.with_base.setChecked(True)
        self.with_base.toggled.connect(self.compared_changed)
        layout.addWidget(self.with_base)
        self.list_label = QLabel()
        layout.addWidget(self.list_label)
        self.list = QListWidget()
        self.list.itemChanged.connect(lambda _item: self.compared_changed.emit())
        layout.addWidget(self.list, 1)
        more = QHBoxLayout()
        add_folder = QPushButton("Add folder…")
        add_folder.setToolTip("A PEFT adapter folder, a run's final/ or one of its checkpoints")
        add_folder.clicked.connect(self._choose_adapter_folder)
        add_file = QPushButton("Add file…")
        add_file.setToolTip("A LoRA .safetensors file")
        add_file.clicked.connect(self._choose_adapter_file)
        more.addWidget(add_folder)
        more.addWidget(add_file)
        layout.addLayout(more)
        self.set_kind("text")

    def set_kind(self, kind: str) -> None:
        """Text models answer side by side, the base among them; image LoRAs are mixed
        into one picture, or are an XY grid's rows."""
        self.with_base.setVisible(kind == "text")
        self.list_label.setText(LIST_TITLES[kind])

    def set_base(self, text: str) -> None:
        self.base_label.setText(text)
        self.list.clear()

    def add(self, name: str, path: str, checked: bool) -> None:
        item = QListWidgetItem(name)
        item.setToolTip(path)
        item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
        item.setCheckState(Qt.CheckState.Checked if checked else Qt.CheckState.Unchecked)
        self.list.blockSignals(True)
        self.list.addItem(item)
        self.list.blockSignals(False)

    def compared(self) -> list[str]:
        return [self.list.item(i).text() for i in range(self.list.count())
                if self.list.item(i).checkState() == Qt.CheckState.Checked]

    def _choose_run(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Open a run folder")
        if folder:
            self.open_run.emit(folder)

    def _choose_base(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Choose a base model folder")
        if folder:
            self.open_base.emit(folder)

    def _choose_adapter_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Choose an adapter folder")
        if folder:
            self.add_adapter.emit(folder)

    def _choose_adapter_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Choose a LoRA file", "",
                                              "LoRA files (*.safetensors)")
        if path:
            self.add_adapter.emit(path)
