"""Auto-caption: choose a tagger or a captioner and its options, run it over some of
the dataset's images in the captioning process, watch n/N and the time left, cancel.
The dataset browser takes the captions in as one undoable edit when the run ends."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (QCheckBox, QComboBox, QDialog, QDoubleSpinBox, QFileDialog,
                               QFormLayout, QGroupBox, QHBoxLayout, QLabel, QLineEdit,
                               QProgressBar, QPushButton, QSpinBox, QVBoxLayout)

from ..data.caption_merge import MODES
from ..errors import HintedError
from ..runs.caption_models import TASKS, ModelMissing, cached_models, locate, model_type
from ..runs.caption_protocol import CaptionRequest, CaptionTally, request_for
from .caption_runner import CaptionRunner

KIND_LABELS = {"tagger": "Tags: WD14 tagger (onnxruntime)",
               "captioner": "Sentences: BLIP or Florence-2 (transformers)"}
MODE_LABELS = {"skip": "Skip images that have a caption",
               "append": "Append new tags to the caption",
               "overwrite": "Overwrite the caption"}


class CaptionDialog(QDialog):
    """``scopes``: (label, image indices) choices. ``prepare(keys)`` gives the images and
    caption files of those indices, or a message saying why not; ``done(tally)`` is
    called once when a run ends, however it ends."""

    def __init__(self, scopes: Sequence[tuple[str, list[int]]],
                 prepare: Callable[[list[int]], tuple[list, list] | str],
                 done: Callable[[CaptionTally], None], parent=None):
        super().__init__(parent)
        self.setWindowTitle("Auto-caption")
        self.resize(620, 0)
        self._prepare, self._done = prepare, done
        self.tally = CaptionTally(status="idle")
        self.keys: list[int] = []  # the images of the run, in the request's order
        self.runner = CaptionRunner(self._event, self)

        self.kind = QComboBox()
        for kind, label in KIND_LABELS.items():
            self.kind.addItem(label, kind)
        self.model = QComboBox()
        self.model.setEditable(True)
        self.model.setMinimumContentsLength(36)
        self.browse = QPushButton("Folder…")
        self.browse.clicked.connect(self._choose_folder)
        self.model_status = QLabel()
        self.model_status.setWordWrap(True)
        self.model_status.setAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop)
        self.model_status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)

        self.general = QDoubleSpinBox(decimals=2, minimum=0.01, maximum=1.0, singleStep=0.05, value=0.35)
        self.character = QDoubleSpinBox(decimals=2, minimum=0.01, maximum=1.0, singleStep=0.05, value=0.85)
        self.exclude = QLineEdit()
        self.exclude.setPlaceholderText("tags never written, comma-separated")
        self.underscores = QCheckBox("Underscores to spaces (long_hair → long hair; kaomoji like ^_^ kept)")
        self.underscores.setChecked(True)
        self.rating = QCheckBox("Add the rating tag (general, sensitive, …)")
        self.tagger_box = QGroupBox("Tagger")
        tf = QFormLayout(self.tagger_box)
        tf.addRow("General tags above", self.general)
        tf.addRow("Character tags above", self.character)
        tf.addRow("Exclude", self.exclude)
        tf.addRow(self.underscores)
        tf.addRow(self.rating)

        self.task = QComboBox()
        self.task.setEditable(True)
        self._fill_tasks(None)
        self.task.setToolTip("Florence-2: a task token. BLIP: how the caption starts, or none.")
        self.max_tokens = QSpinBox(minimum=8, maximum=512, value=60)
        self.captioner_box = QGroupBox("Captioner")
        cf = QFormLayout(self.captioner_box)
        cf.addRow("Task / prompt", self.task)
        cf.addRow("Longest caption (tokens)", self.max_tokens)

        self.trigger = QLineEdit()
        self.trigger.setPlaceholderText("e.g. ohwx woman, written first in every caption")
        self.mode = QComboBox()
        for mode in MODES:
            self.mode.addItem(MODE_LABELS[mode], mode)
        self.scope = QComboBox()
        for label, keys in scopes:
            self.scope.addItem(label, keys)

        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.status = QLabel("Captions are written beside the images as they are made; "
                             "Ctrl+Z in the Dataset tab undoes the whole run.")
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.last = QLabel()  # the latest caption, so a long run shows what it writes
        self.last.setWordWrap(True)
        self.last.setStyleSheet("color: palette(placeholder-text);")
        self.run_button = QPushButton("Caption")
        self.run_button.setDefault(True)
        self.run_button.clicked.connect(self.start)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        self.close_button = QPushButton("Close")
        self.close_button.clicked.connect(self.reject)

        form = QFormLayout()
        form.addRow("Model kind", self.kind)
        row = QHBoxLayout()
        row.addWidget(self.model, 1)
        row.addWidget(self.browse)
        form.addRow("Model", row)
        common = QFormLayout()
        common.addRow("Trigger word", self.trigger)
        common.addRow("Existing captions", self.mode)
        common.addRow("Images", self.scope)
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        for b in (self.run_button, self.cancel_button, self.close_button):
            buttons.addWidget(b)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.model_status)
        layout.addWidget(self.tagger_box)
        layout.addWidget(self.captioner_box)
        layout.addLayout(common)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        layout.addWidget(self.last)
        layout.addLayout(buttons)

        self.kind.currentIndexChanged.connect(self._kind_changed)
        self.model.currentTextChanged.connect(self._check_model)
        self._kind_changed()

    # -- options -------------------------------------------------------------------
    def set_scopes(self, scopes: Sequence[tuple[str, list[int]]]) -> None:
        """New choices of images (the selection changed); the other options stay."""
        self.scope.clear()
        for label, keys in scopes:
            self.scope.addItem(label, keys)

    @property
    def kind_name(self) -> str:
        return self.kind.currentData()

    def _kind_changed(self, *_args) -> None:
        kind = self.kind_name
        self.tagger_box.setVisible(kind == "tagger")
        self.captioner_box.setVisible(kind == "captioner")
        self.model.blockSignals(True)
        self.model.clear()
        found = cached_models(kind)
        for repo, here in sorted(found, key=lambda f: not f[1]):  # the downloaded ones first
            self.model.addItem(repo)
            self.model.setItemData(self.model.count() - 1,
                                   "in your Hugging Face cache" if here else "not downloaded",
                                   Qt.ItemDataRole.ToolTipRole)
        self.model.blockSignals(False)
        self._check_model()
        self.adjustSize()

    def _choose_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Choose the model's folder")
        if folder:
            self.model.setEditText(folder)

    def _check_model(self, *_args) -> bool:
        try:
            located = locate(self.kind_name, self.model.currentText())
        except ModelMissing as exc:
            self.model_status.setText(f"{exc.message} {exc.hint}")
            return False
        self.model_status.setText(f"Found in {located.path}")
        if self.kind_name == "captioner":
            try:
                self._fill_tasks(model_type(located.path))
            except HintedError as exc:
                self.model_status.setText(f"{exc.message} {exc.hint}")
                return False
        return True

    def _fill_tasks(self, model: str | None) -> None:
        """The tasks of the chosen model's type (all while none is found)."""
        tasks = TASKS.get(model) if model else None
        tasks = tasks or tuple(t for group in TASKS.values() for t in group)
        if [self.task.itemData(i) for i in range(self.task.count())] == list(tasks):
            return
        self.task.clear()
        for task in tasks:
            self.task.addItem(task or "(no prompt)", task)

    def request(self, images: list, captions: list) -> CaptionRequest:
        task = self.task.currentData() if self.task.currentText() == self.task.itemText(
            self.task.currentIndex()) else self.task.currentText().strip()
        return request_for(
            self.kind_name, self.model.currentText().strip(), images, captions,
            mode=self.mode.currentData(), trigger=self.trigger.text().strip(),
            general_threshold=self.general.value(), character_threshold=self.character.value(),
            exclude=[t.strip() for t in self.exclude.text().split(",") if t.strip()],
            underscores_to_spaces=self.underscores.isChecked(),
            include_rating=self.rating.isChecked(), task=task or "",
            max_new_tokens=self.max_tokens.value())

    # -- running -------------------------------------------------------------------
    def start(self) -> bool:
        if self.runner.running:
            return False
        if not self._check_model():
            self.status.setText("Nothing was run: see what is wrong with the model above.")
            return False
        keys = self.scope.currentData() or []
        prepared = self._prepare(keys)
        if isinstance(prepared, str):
            self.status.setText(prepared)
            return False
        images, captions = prepared
        self.keys = list(keys)
        self.tally = CaptionTally(total=len(images), status="loading")
        self.last.clear()
        self.progress.setRange(0, max(1, len(images)))
        self.progress.setValue(0)
        self._set_running(True)
        self.runner.start(self.request(images, captions))
        self._show()
        return True

    def cancel(self) -> None:
        if self.runner.running:
            self.status.setText("Cancelling: the caption being written is finished first…")
            self.runner.cancel()

    def _event(self, ev: dict) -> None:
        self.tally.add(ev)
        if ev.get("type") == "captioned" and ev.get("action") == "written":
            self.last.setText(f"{Path(ev['caption']).name}: {ev['text']}")
        self._show()
        if self.tally.over:
            self._set_running(False)
            self._done(self.tally)

    def _show(self) -> None:
        self.progress.setValue(self.tally.done)
        self.status.setText(self.tally.summary() if self.tally.over else self.tally.progress_text())

    def _set_running(self, running: bool) -> None:
        for w in (self.run_button, self.close_button, self.kind, self.model, self.browse,
                  self.tagger_box, self.captioner_box, self.trigger, self.mode, self.scope):
            w.setEnabled(not running)
        self.cancel_button.setEnabled(running)

    def reject(self) -> None:
        if self.runner.running:  # Esc or the title bar's close while it runs: cancel first
            self.cancel()
            return
        super().reject()

    def wait(self, seconds: float = 120.0) -> bool:
        """Until the run has ended (tests)."""
        return self.runner.wait(seconds)
