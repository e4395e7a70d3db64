"""A .jsonl / .json text dataset as a table of records (a column per role or field,
under readable headers): the record under the cursor as the chat training sees,
with the turns that carry the loss marked, and in a form (one box per text field);
the lines the text engine would skip listed with their line numbers, and an atomic
save."""
from __future__ import annotations

from PySide6.QtCore import QAbstractTableModel, QModelIndex, Qt, Signal
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (QAbstractItemView, QFormLayout, QHBoxLayout, QHeaderView, QLabel,
                               QListWidget, QPlainTextEdit, QPushButton, QScrollArea, QSplitter,
                               QTableView, QTabWidget, QVBoxLayout, QWidget)

from ..data.chat_record import chat_record
from ..data.record_columns import Column, cell_text, field_title, record_columns
from ..data.text_table import TextTable, TextTableError
from ..runs.item_loss import ItemLosses
from .chat_record_view import ChatRecordView
from .loss_state import LossOverlay
from .token_view import TokenView

PREVIEW_CHARS = 120
TEXT_COLUMN_WIDTH = 180


class RecordTableModel(QAbstractTableModel):
    """Rows are the table's records in ``order`` (view row -> record), the worst-learned
    first when sorted by a run's loss, which is then a column of its own."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.table: TextTable | None = None
        self.columns: list[Column] = []
        self.order: list[int] = []
        self.losses: LossOverlay | None = None

    def set_table(self, table: TextTable | None, losses: LossOverlay | None = None,
                  worst_first: bool = False) -> None:
        self.beginResetModel()
        self.table = table
        self.columns = record_columns([r.obj for r in table.rows], table.format) if table else []
        self.losses = losses
        rows = list(range(len(table.rows))) if table else []
        self.order = losses.worst_first(rows) if losses and worst_first else rows
        self.endResetModel()

    @property
    def fixed(self) -> list[str]:
        """The headers of the columns before the record's fields."""
        return ["Line", "Status"] + (["Loss"] if self.losses else [])

    def record(self, view_row: int) -> int:
        return self.order[view_row] if 0 <= view_row < len(self.order) else -1

    def view_row(self, record: int) -> int:
        return self.order.index(record) if record in self.order else -1

    def rowCount(self, parent=QModelIndex()) -> int:
        return 0 if parent.isValid() or self.table is None else len(self.order)

    def columnCount(self, parent=QModelIndex()) -> int:
        return 0 if parent.isValid() else len(self.fixed) + len(self.columns)

    def headerData(self, section, orientation, role=Qt.ItemDataRole.DisplayRole):
        if role != Qt.ItemDataRole.DisplayRole or orientation != Qt.Orientation.Horizontal:
            return None
        return (self.fixed + [c.title for c in self.columns])[section]

    def data(self, index, role=Qt.ItemDataRole.DisplayRole):
        if not index.isValid() or self.table is None:
            return None
        record = self.order[index.row()]
        row = self.table.rows[record]
        col = index.column()
        badge = self.losses.badge(record) if self.losses and col == 2 else None
        if role == Qt.ItemDataRole.DisplayRole:
            if col == 0:
                return row.line
            if col == 1:
                return ("edited, " if row.edited else "") + ("skipped" if row.error else "ok")
            if col == 2 and self.losses:
                return badge.text if badge else "–"
            text = cell_text(row.obj, self.columns[col - len(self.fixed)])
            text = " ".join(text.split())
            return text[:PREVIEW_CHARS] + ("…" if len(text) > PREVIEW_CHARS else "")
        if role == Qt.ItemDataRole.ToolTipRole and (row.error or badge):
            return badge.tip if badge else row.error
        if role == Qt.ItemDataRole.ForegroundRole and col == 1 and row.error:
            return QColor("#d32f2f")
        if role == Qt.ItemDataRole.BackgroundRole and badge:
            return QColor(211, 47, 47, int(160 * badge.heat))
        return None

    def row_changed(self, record: int) -> None:
        r = self.view_row(record)
        self.dataChanged.emit(self.index(r, 0), self.index(r, self.columnCount() - 1))


class TextDatasetView(QWidget):
    dirty_changed = Signal(bool)
    message = Signal(str)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.table: TextTable | None = None
        self.save_error = ""  # why the last save failed; "" after a save or an open
        self._editors: list[tuple[tuple, QPlainTextEdit]] = []
        self._row = -1
        self.responses_only = True  # dataset.train_on_responses_only of the job
        self.item_losses: ItemLosses | None = None  # a run's, shown as a column
        self.worst_first = False

        self.model = RecordTableModel(self)
        self.view = QTableView()
        self.view.setModel(self.model)
        self.view.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.view.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.view.verticalHeader().hide()
        self.view.setWordWrap(False)
        self.view.horizontalHeader().setStretchLastSection(True)
        self.view.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        self.view.selectionModel().currentRowChanged.connect(self._show_record)

        self.form_box = QWidget()
        box_layout = QVBoxLayout(self.form_box)
        self.form = QFormLayout()
        box_layout.addLayout(self.form)
        box_layout.addStretch(1)
        self.record_error = QLabel()
        self.record_error.setWordWrap(True)
        self.record_error.setStyleSheet("color: #d32f2f")
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(self.form_box)

        self.problems = QListWidget()
        self.problems.setWordWrap(True)
        self.problems.itemActivated.connect(self._jump_to_problem)
        self.title = QLabel()
        self.save_button = QPushButton("Save")
        self.save_button.setEnabled(False)
        self.save_button.clicked.connect(self.save)

        right = QWidget()
        rl = QVBoxLayout(right)
        rl.setContentsMargins(0, 0, 0, 0)
        self.chat = ChatRecordView()
        self.record_tabs = QTabWidget()
        self.record_tabs.addTab(self.chat, "Chat")
        self.record_tabs.addTab(scroll, "Fields")
        self.tokens = TokenView()
        self.tokens.line_activated.connect(self.select_line)
        self.record_tabs.addTab(self.tokens, "Tokens")
        rl.addWidget(self.record_tabs, 3)
        rl.addWidget(self.record_error)
        rl.addWidget(QLabel("<b>Lines training would skip</b>"))
        rl.addWidget(self.problems, 1)

        split = QSplitter()
        split.addWidget(self.view)
        split.addWidget(right)
        split.setStretchFactor(0, 3)
        split.setStretchFactor(1, 2)

        top = QHBoxLayout()
        top.addWidget(self.title, 1)
        top.addWidget(self.save_button)
        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(split, 1)

    def open(self, path) -> bool:
        try:
            table = TextTable(path)
        except TextTableError as exc:
            self.message.emit(str(exc))
            return False
        self.table = table
        self.save_error = ""
        self._row = -1
        self._set_table()
        self.tokens.set_path(table.path)
        self.problems.clear()
        for p in table.problems:
            self.problems.addItem(f"line {p.line}: {p.message}" if p.line else p.message)
        fmt = table.format or "unknown format"
        self.title.setText(f"<b>{table.path.name}</b> — {len(table.rows)} record(s) ({fmt}), "
                           f"{len(table.problems)} skipped")
        self._set_dirty(False)
        self.message.emit(f"Opened {table.path}")
        if table.rows:
            self.view.selectRow(0)
        else:
            self._show_record(self.model.index(-1, 0))
        return True

    def _clear_form(self) -> None:
        while self.form.rowCount():
            self.form.removeRow(0)
        self._editors = []

    def _show_record(self, current: QModelIndex, _previous=None) -> None:
        self._clear_form()
        self._row = self.model.record(current.row()) if current.isValid() else -1
        if self.table is None or self._row < 0:
            self.record_error.clear()
            self._show_chat()
            return
        for path, value in self.table.fields(self._row):
            edit = QPlainTextEdit(value)
            lines = max(1, min(8, value.count("\n") + 1 + len(value) // 70))
            edit.setFixedHeight(edit.fontMetrics().lineSpacing() * (lines + 1) + 10)
            edit.textChanged.connect(lambda p=path, e=edit: self._field_edited(p, e))
            self.form.addRow(field_title(path), edit)
            self._editors.append((path, edit))
        self.record_error.setText(self.table.rows[self._row].error)
        self.tokens.show_line(self.table.rows[self._row].line)
        self._show_chat()

    def _show_chat(self) -> None:
        if self.table is None or self._row < 0:
            self.chat.show_record(None)
            return
        self.chat.show_record(chat_record(self.table.rows[self._row].obj, self.table.format,
                                          self.responses_only))

    def set_responses_only(self, on: bool) -> None:
        """Mark the turns the loss is on as the job will train: only the responses, or all."""
        if on != self.responses_only:
            self.responses_only = on
            self._show_chat()

    def _field_edited(self, path: tuple, edit: QPlainTextEdit) -> None:
        error = self.table.set_field(self._row, path, edit.toPlainText())
        self.record_error.setText(error)
        self._show_chat()
        self.model.row_changed(self._row)
        self._set_dirty(self.table.dirty)

    def set_job(self, job, base_dir) -> None:
        """The job the Tokens tab tokenises for: its model's tokenizer, chat template,
        max_seq_length and train_on_responses_only."""
        self.tokens.set_job(job, base_dir)

    def _jump_to_problem(self, item) -> None:
        self.select_line(self.table.problems[self.problems.row(item)].line)

    def select_line(self, line: int) -> None:
        if self.table is None:
            return
        for r, row in enumerate(self.table.rows):
            if row.line == line:
                self.view.selectRow(self.model.view_row(r))
                return

    # -- a run's loss of each record ---------------------------------------------
    def _overlay(self) -> LossOverlay | None:
        if self.item_losses is None or self.table is None:
            return None
        return LossOverlay.for_records(self.item_losses, self.table.path,
                                       [row.line for row in self.table.rows])

    def _set_table(self) -> None:
        """Show the table with the run's losses and order, the same record current."""
        record = self._row
        self.model.set_table(self.table, self._overlay(), self.worst_first)
        fixed = len(self.model.fixed)
        for col in range(self.model.columnCount()):
            if col < fixed or self.model.columns[col - fixed].kind == "turns":
                self.view.resizeColumnToContents(col)
            else:
                self.view.setColumnWidth(col, TEXT_COLUMN_WIDTH)
        if record >= 0:
            self.view.selectRow(self.model.view_row(record))

    def set_losses(self, losses: ItemLosses | None) -> None:
        """A text run's per-record losses (runs/item_loss.py), or None."""
        self.item_losses = losses
        if self.table is not None:
            self._set_table()

    def sort_by_loss(self, worst_first: bool) -> None:
        self.worst_first = worst_first
        if self.table is not None and self.item_losses is not None:
            self._set_table()

    def loss_summary(self) -> str:
        overlay = self.model.losses
        return overlay.summary() if overlay else ""

    def _set_dirty(self, dirty: bool) -> None:
        self.save_button.setEnabled(dirty)
        self.dirty_changed.emit(dirty)

    @property
    def dirty(self) -> bool:
        return bool(self.table and self.table.dirty)

    def save(self) -> bool:
        if self.table is None or not self.table.dirty:
            return True
        self.save_error = self.table.try_save()
        if self.save_error:
            self.message.emit(self.save_error)
            return False
        self.model.dataChanged.emit(self.model.index(0, 0),
                                    self.model.index(self.model.rowCount() - 1, 1))
        self._set_dirty(False)
        self.tokens.set_path(self.table.path)  # scan what was written
        self.tokens.show_line(self.table.rows[self._row].line if self._row >= 0 else None)
        self.message.emit(f"Saved {self.table.path.name}")
        return True

    def leave(self, choice: str) -> bool:
        """Settle unsaved edits before the table is replaced or the application quits:
        "save" writes them, "discard" closes the table without writing, "cancel"
        keeps it. True: it may go."""
        if not self.dirty:
            return True
        if choice == "discard":
            self.close_table()
            return True
        return choice == "save" and self.save()

    def close_table(self) -> None:
        self.table = None
        self.save_error = ""
        self._row = -1
        self.model.set_table(None)
        self._clear_form()
        self.chat.show_record(None)
        self.tokens.set_path(None)
        self.record_error.clear()
        self.problems.clear()
        self.title.clear()
        self._set_dirty(False)
