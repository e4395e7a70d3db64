"""The dataset browser's left pane: the dataset's tags with their counts, the
health problems with theirs, what the scan did not use, and the filter summary.
Clicking a tag or a problem asks the browser to filter on it."""
from __future__ import annotations

from PySide6.QtCore import QAbstractTableModel, QModelIndex, Qt, Signal
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (QAbstractItemView, QHBoxLayout, QHeaderView, QLabel, QLineEdit,
                              QListWidget, QListWidgetItem, QPushButton, QTableView, QVBoxLayout,
                              QWidget)

from ..data.health import PROBLEMS


class TagCountModel(QAbstractTableModel):
    """Tags of the whole dataset with their counts, most frequent first."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.rows: list[tuple[str, int]] = []
        self.filter_text = ""
        self._counts = {}

    def set_counts(self, counts) -> None:
        self._counts = counts
        self._refill()

    def set_filter(self, text: str) -> None:
        self.filter_text = text.strip().lower()
        self._refill()

    def _refill(self) -> None:
        self.beginResetModel()
        f = self.filter_text
        self.rows = sorted(((t, n) for t, n in self._counts.items() if n > 0 and f in t.lower()),
                           key=lambda tn: (-tn[1], tn[0]))
        self.endResetModel()

    def rowCount(self, parent=QModelIndex()) -> int:
        return 0 if parent.isValid() else len(self.rows)

    def columnCount(self, parent=QModelIndex()) -> int:
        return 0 if parent.isValid() else 2

    def headerData(self, section, orientation, role=Qt.ItemDataRole.DisplayRole):
        if role == Qt.ItemDataRole.DisplayRole and orientation == Qt.Orientation.Horizontal:
            return ("Tag", "Images")[section]
        return None

    def data(self, index, role=Qt.ItemDataRole.DisplayRole):
        if not index.isValid():
            return None
        tag, n = self.rows[index.row()]
        if role == Qt.ItemDataRole.DisplayRole:
            return tag if index.column() == 0 else n
        if role == Qt.ItemDataRole.TextAlignmentRole and index.column() == 1:
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        return None


class TagHealthPanel(QWidget):
    tag_clicked = Signal(str)
    problem_clicked = Signal(str)  # a PROBLEMS key
    clear_clicked = Signal()

    def __init__(self, parent=None):
        super().__init__(parent)
        self.tag_filter = QLineEdit()
        self.tag_filter.setPlaceholderText("Find a tag…")
        self.tag_filter.setClearButtonEnabled(True)
        self.tag_model = TagCountModel(self)
        self.tag_filter.textChanged.connect(self.tag_model.set_filter)
        self.tag_view = QTableView()
        self.tag_view.setModel(self.tag_model)
        self.tag_view.verticalHeader().hide()
        self.tag_view.verticalHeader().setDefaultSectionSize(22)
        self.tag_view.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.tag_view.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.tag_view.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        header = self.tag_view.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        header.setSectionResizeMode(1, QHeaderView.ResizeMode.ResizeToContents)
        self.tag_view.clicked.connect(
            lambda index: self.tag_clicked.emit(self.tag_model.rows[index.row()][0]))
        self.filter_label = QLabel()
        self.clear_filter_button = QPushButton("Show all")
        self.clear_filter_button.clicked.connect(self.clear_clicked)
        self.health_list = QListWidget()
        self.health_list.setMaximumHeight(130)
        self.health_list.itemClicked.connect(self._health_clicked)
        self.health_status = QLabel()
        self.health_status.setWordWrap(True)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(QLabel("<b>Tags</b> (click to filter)"))
        layout.addWidget(self.tag_filter)
        layout.addWidget(self.tag_view, 1)
        layout.addWidget(QLabel("<b>Health</b>"))
        layout.addWidget(self.health_list)
        layout.addWidget(self.health_status)
        row = QHBoxLayout()
        row.addWidget(self.filter_label, 1)
        row.addWidget(self.clear_filter_button)
        layout.addLayout(row)

    def show_health(self, problem_counts: dict[str, int], passed_over, selected: str | None,
                    status: str) -> None:
        """One row per problem with its count, then one per group the scan passed over."""
        self.health_list.clear()
        for key, n in problem_counts.items():
            item = QListWidgetItem(f"{PROBLEMS[key]}  ({n})")
            item.setData(Qt.ItemDataRole.UserRole, key)
            if n:
                item.setForeground(QColor("#e57373"))
            self.health_list.addItem(item)
            if key == selected:
                item.setSelected(True)
        for group in passed_over:
            item = QListWidgetItem(f"Not used: {group.label}  ({len(group.paths)})")
            item.setData(Qt.ItemDataRole.UserRole, group)
            item.setForeground(QColor("#e57373"))
            item.setToolTip(group.detail)
            self.health_list.addItem(item)
        self.health_status.setText(status)

    def _health_clicked(self, item: QListWidgetItem) -> None:
        key = item.data(Qt.ItemDataRole.UserRole)
        if isinstance(key, str):
            self.problem_clicked.emit(key)
        else:  # a group of files the scan passed over: say which and why
            self.health_status.setText(key.detail)
