"""Find and replace over captions: plain or regex, previewed as a list of
(file, before, after) before anything is written."""
from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (QAbstractItemView, QCheckBox, QComboBox, QDialog, QDialogButtonBox,
                               QFormLayout, QHeaderView, QLabel, QLineEdit, QPushButton,
                               QTableWidget, QTableWidgetItem, QVBoxLayout)

from ..data.tags import Change, find_replace_preview

SCOPES = ("All images", "Shown images", "Selected images")
PREVIEW_ROWS = 2000  # the table shows this many; the count and Apply cover all


class FindReplaceDialog(QDialog):
    """`captions_for(scope)` gives the (index, text) pairs to search; `names` maps an
    index to a file name; `apply(changes)` is called with the previewed changes."""

    def __init__(self, captions_for, names, apply, parent=None):
        super().__init__(parent)
        self.setWindowTitle("Find and replace in captions")
        self.resize(760, 480)
        self._captions_for = captions_for
        self._names = names
        self._apply = apply
        self.changes: list[Change] = []

        self.find_edit = QLineEdit()
        self.find_edit.setPlaceholderText("text or regular expression")
        self.replace_edit = QLineEdit()
        self.replace_edit.setPlaceholderText("replacement (\\1 for groups in regex mode)")
        self.regex = QCheckBox("Regular expression")
        self.case = QCheckBox("Match case")
        self.case.setChecked(True)
        self.scope = QComboBox()
        self.scope.addItems(SCOPES)
        self.preview_button = QPushButton("Preview")
        self.preview_button.setDefault(True)
        self.preview_button.clicked.connect(self.preview)
        self.summary = QLabel("Preview shows every caption that would change; nothing is written "
                              "until you apply.")
        self.summary.setWordWrap(True)
        self.table = QTableWidget(0, 3)
        self.table.setHorizontalHeaderLabels(["File", "Before", "After"])
        self.table.verticalHeader().hide()
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.ResizeToContents)
        self.table.horizontalHeader().setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        self.table.horizontalHeader().setSectionResizeMode(2, QHeaderView.ResizeMode.Stretch)
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Apply
                                        | QDialogButtonBox.StandardButton.Close)
        self.apply_button = self.buttons.button(QDialogButtonBox.StandardButton.Apply)
        self.apply_button.setEnabled(False)
        self.apply_button.clicked.connect(self.apply)
        self.buttons.rejected.connect(self.reject)

        form = QFormLayout()
        form.addRow("Find", self.find_edit)
        form.addRow("Replace with", self.replace_edit)
        form.addRow("In", self.scope)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.regex)
        layout.addWidget(self.case)
        layout.addWidget(self.preview_button, 0, Qt.AlignmentFlag.AlignLeft)
        layout.addWidget(self.summary)
        layout.addWidget(self.table, 1)
        layout.addWidget(self.buttons)
        for w in (self.find_edit, self.replace_edit):
            w.textEdited.connect(self._invalidate)
        for w in (self.regex, self.case):
            w.toggled.connect(self._invalidate)
        self.scope.currentIndexChanged.connect(self._invalidate)

    def _invalidate(self, *_args) -> None:
        self.changes = []
        self.apply_button.setEnabled(False)

    def preview(self) -> list[Change]:
        self._invalidate()
        self.table.setRowCount(0)
        try:
            self.changes = find_replace_preview(
                self._captions_for(self.scope.currentText()), self.find_edit.text(),
                self.replace_edit.text(), regex=self.regex.isChecked(),
                case_sensitive=self.case.isChecked())
        except ValueError as exc:
            self.summary.setText(f"<span style='color:#d32f2f'>{exc}</span>")
            return []
        shown = self.changes[:PREVIEW_ROWS]
        self.table.setRowCount(len(shown))
        for r, change in enumerate(shown):
            for c, text in enumerate((self._names(change.key), change.old, change.new)):
                item = QTableWidgetItem(text)
                item.setToolTip(text)
                self.table.setItem(r, c, item)
        more = f" (first {PREVIEW_ROWS} shown)" if len(self.changes) > PREVIEW_ROWS else ""
        self.summary.setText(f"{len(self.changes)} caption(s) would change{more}.")
        self.apply_button.setEnabled(bool(self.changes))
        return self.changes

    def apply(self) -> None:
        if self.changes:
            self._apply(self.changes)
            self.summary.setText(f"Applied to {len(self.changes)} caption(s). Undo with Ctrl+Z.")
            self._invalidate()
            self.table.setRowCount(0)
