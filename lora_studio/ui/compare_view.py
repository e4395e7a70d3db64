"""The Runs tab's "Compare outputs" pane: the held-out records whose answers the run's
adapter changed most against the base model (or another run's adapter), largest
change first, and the selected record's two answers side by side under its prompt
and reference. Compare runs `lora-studio compare` as a child process (compare_runner.py:
the window never loads a model) and shows the compare.json it writes
(ui/compare_state.py holds the logic)."""
from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (QAbstractItemView, QComboBox, QGridLayout, QHBoxLayout,
                               QLabel, QPlainTextEdit, QPushButton, QSpinBox,
                               QSplitter, QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget)

from ..runs.catalog import RunSummary
from .compare_runner import CompareRunner
from .compare_state import CompareState, against_choices, compare_command, comparable

HEADERS = ("ROUGE-L change", "ROUGE-L", "Prompt")


def _text_label(text: str = "") -> QLabel:
    label = QLabel(text)
    label.setTextFormat(Qt.TextFormat.PlainText)   # answers may hold '<' or '&'
    label.setWordWrap(True)
    label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
    return label


class _Answer(QWidget):
    """One side: whose answer and its ROUGE-L, then the answer."""

    def __init__(self):
        super().__init__()
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.title = _text_label()
        self.title.setStyleSheet("font-weight: bold")
        self.text = QPlainTextEdit()
        self.text.setReadOnly(True)
        layout.addWidget(self.title)
        layout.addWidget(self.text, 1)

    def show_side(self, title: str, text: str) -> None:
        self.title.setText(title)
        self.text.setPlainText(text)


class CompareView(QWidget):
    compared = Signal()   # a comparison ended (written or failed); the pane shows it

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.state = CompareState()
        self.run: RunSummary | None = None
        self.compare_command = compare_command
        self.runner = CompareRunner(self._end, self)
        self._running_for: Path | None = None
        self._failure: tuple[Path, str] | None = None   # the last comparison's error, per run
        layout = QVBoxLayout(self)
        controls = QHBoxLayout()
        controls.addWidget(QLabel("Answers of the adapter against"))
        self.against = QComboBox()
        controls.addWidget(self.against, 1)
        controls.addWidget(QLabel("on"))
        self.records = QSpinBox()
        self.records.setRange(1, 500)
        self.records.setValue(16)
        controls.addWidget(self.records)
        controls.addWidget(QLabel("held-out records"))
        self.compare_button = QPushButton("Compare")
        self.compare_button.setToolTip("Answer the held-out records with both (greedy) in a "
                                       "child process: lora-studio compare")
        self.compare_button.clicked.connect(self.start_compare)
        controls.addWidget(self.compare_button)
        layout.addLayout(controls)
        self.status = _text_label()
        layout.addWidget(self.status)

        self.table = QTableWidget(0, len(HEADERS))
        self.table.setHorizontalHeaderLabels(HEADERS)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().hide()
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.itemSelectionChanged.connect(self._show_selected)

        detail = QWidget()
        grid = QGridLayout(detail)
        grid.setContentsMargins(0, 0, 0, 0)
        self.prompt = _text_label()
        self.reference = _text_label()
        self.before, self.after = _Answer(), _Answer()
        grid.addWidget(self.prompt, 0, 0, 1, 2)
        grid.addWidget(self.reference, 1, 0, 1, 2)
        grid.addWidget(self.before, 2, 0)
        grid.addWidget(self.after, 2, 1)
        grid.setRowStretch(2, 1)
        splitter = QSplitter(Qt.Orientation.Vertical)
        splitter.addWidget(self.table)
        splitter.addWidget(detail)
        splitter.setSizes([160, 240])
        layout.addWidget(splitter, 1)
        self.show_run(None, [])

    # -- what is shown -------------------------------------------------------
    def show_run(self, run: RunSummary | None, runs: list[RunSummary]) -> None:
        """The run's last comparison and the runs it can be compared against."""
        kept = self.against.currentData()
        self.run = run if comparable(run) else None
        self.against.clear()
        if self.run is not None:
            for label, folder in against_choices(self.run, runs):
                self.against.addItem(label, folder)
            self.against.setCurrentIndex(max(0, self.against.findData(kept)))
        self._update_button()
        self._load()

    def _load(self) -> None:
        self.state.load(self.run.root if self.run else None)
        failed = self._failure is not None and self.run is not None and \
            self._failure[0] == self.run.root
        self.status.setText(self._failure[1] if failed else self.state.message)
        self.table.setRowCount(len(self.state.rows))
        for i in range(len(self.state.rows)):
            for column, text in enumerate(self.state.cells(i)):
                item = QTableWidgetItem(text)
                if column < 2:
                    item.setTextAlignment(Qt.AlignmentFlag.AlignCenter)
                self.table.setItem(i, column, item)
        for column in range(len(HEADERS) - 1):   # the prompt takes the rest
            self.table.resizeColumnToContents(column)
        if self.state.rows:
            self.table.selectRow(0)
        else:
            self._clear_detail()

    def _show_selected(self) -> None:
        rows = self.table.selectionModel().selectedRows()
        if not rows:
            return
        found = self.state.detail(rows[0].row())
        self.prompt.setText(f"Prompt: {found.prompt}")
        self.reference.setText(f"Reference: {found.reference}")
        self.before.show_side(found.before.title, found.before.text)
        self.after.show_side(found.after.title, found.after.text)

    def _clear_detail(self) -> None:
        for label in (self.prompt, self.reference):
            label.setText("")
        for side in (self.before, self.after):
            side.show_side("", "")

    def _update_button(self) -> None:
        self.compare_button.setEnabled(self.run is not None and not self.runner.running)

    # -- comparing -----------------------------------------------------------
    @property
    def running(self) -> bool:
        return self.runner.running

    def start_compare(self) -> bool:
        if self.run is None or self.runner.running:
            return False
        self._running_for, self._failure = self.run.root, None
        try:
            self.runner.start(self.compare_command(self.run.root, self.against.currentData() or "",
                                                   self.records.value()))
        except OSError as exc:
            self._ended(f"Could not start the comparison: {exc}")
            return False
        self._update_button()
        self.status.setText(f"Answering up to {self.records.value()} held-out records with "
                            f"{self.against.currentText()} and with {self.run.name} (the model "
                            "loads in a child process)…")
        return True

    def _end(self, code: int, output: str) -> None:
        self._ended(f"The comparison failed (exit code {code}):\n{output}" if code else "")

    def _ended(self, error: str) -> None:
        ran_for, self._running_for = self._running_for, None
        self._failure = (ran_for, error) if error else None
        self._update_button()
        if self.run is not None and self.run.root == ran_for:
            self._load()
        self.compared.emit()

    def shutdown(self) -> None:
        """Kill a comparison still answering (the window is closing)."""
        self.runner.stop()
