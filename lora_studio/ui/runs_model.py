"""The Runs tab's table: one row a RunSummary (runs/catalog.py), a tick in the first
column to compare runs, and a sort key per column so that steps, losses and dates sort
as numbers."""
from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import QAbstractTableModel, QModelIndex, Qt, Signal

from ..runs.catalog import RunSummary

SORT_ROLE = Qt.ItemDataRole.UserRole + 1
PATH_ROLE = Qt.ItemDataRole.UserRole


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def _steps(run: RunSummary) -> str:
    if run.step is None:
        return "–"
    return f"{run.step} / {run.total}" if run.total else str(run.step)


def _model(run: RunSummary) -> str:
    """A local path by its last part; a Hub id as it is."""
    path = Path(run.model)
    return path.name if path.is_absolute() else run.model


# header, shown text, sort key
COLUMNS: tuple[tuple[str, Callable[[RunSummary], str], Callable[[RunSummary], object]], ...] = (
    ("Name", lambda r: r.name, lambda r: r.name.casefold()),
    ("Family", lambda r: r.family or "–", lambda r: r.family),
    ("Model", _model, lambda r: _model(r).casefold()),
    ("Status", lambda r: r.status, lambda r: r.status),
    ("Steps", _steps, lambda r: r.step if r.step is not None else -1),
    ("Final loss", lambda r: "–" if r.final_loss is None else f"{r.final_loss:.4g}",
     lambda r: r.final_loss if r.final_loss is not None else float("inf")),
    ("Best eval loss", lambda r: "–" if r.best_eval_loss is None else f"{r.best_eval_loss:.4g}",
     lambda r: r.best_eval_loss if r.best_eval_loss is not None else float("inf")),
    ("ROUGE-L", lambda r: "–" if r.best_rougeL is None else f"{r.best_rougeL:.3f}",
     lambda r: r.best_rougeL if r.best_rougeL is not None else -1.0),
    ("Duration", lambda r: _duration(r.duration),
     lambda r: r.duration if r.duration is not None else -1.0),
    ("Date", lambda r: time.strftime("%Y-%m-%d %H:%M", time.localtime(r.date)), lambda r: r.date),
)
COLUMN = {header: i for i, (header, _, _) in enumerate(COLUMNS)}
TOOLTIPS = {
    "Duration": "From the first start to the last event; pauses between resumes count.",
    "Best eval loss": "The held-out loss of the best evaluation (the checkpoint exported).",
    "ROUGE-L": "ROUGE-L of the answers generated for held-out records at the best evaluation.",
}


class RunsTableModel(QAbstractTableModel):
    ticked_changed = Signal()   # the runs ticked for comparing changed

    def __init__(self, parent=None):
        super().__init__(parent)
        self.rows: list[RunSummary] = []
        self.ticked: set[Path] = set()

    def set_runs(self, runs: list[RunSummary]) -> None:
        self.beginResetModel()
        self.rows = list(runs)
        self.endResetModel()
        kept = self.ticked & {r.root for r in self.rows}
        if kept != self.ticked:
            self.ticked = kept
            self.ticked_changed.emit()

    def ticked_runs(self) -> list[RunSummary]:
        return [r for r in self.rows if r.root in self.ticked]

    def set_ticked(self, root: Path, on: bool) -> None:
        row = next(i for i, r in enumerate(self.rows) if r.root == root)
        self.setData(self.index(row, 0), Qt.CheckState.Checked if on else Qt.CheckState.Unchecked,
                     Qt.ItemDataRole.CheckStateRole)

    def rowCount(self, parent=QModelIndex()) -> int:
        return 0 if parent.isValid() else len(self.rows)

    def columnCount(self, parent=QModelIndex()) -> int:
        return 0 if parent.isValid() else len(COLUMNS)

    def headerData(self, section, orientation, role=Qt.ItemDataRole.DisplayRole):
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole:
            return COLUMNS[section][0]
        return None

    def flags(self, index):
        flags = super().flags(index)
        return flags | Qt.ItemFlag.ItemIsUserCheckable if index.column() == 0 else flags

    def data(self, index, role=Qt.ItemDataRole.DisplayRole):
        if not index.isValid():
            return None
        run = self.rows[index.row()]
        _, text, key = COLUMNS[index.column()]
        if role == Qt.ItemDataRole.DisplayRole:
            return text(run)
        if role == SORT_ROLE:
            return key(run)
        if role == PATH_ROLE:
            return str(run.root)
        if role == Qt.ItemDataRole.ToolTipRole:
            if index.column() == 0:
                return str(run.root) + (f"\n\n{run.notes.strip()}" if run.notes.strip() else "")
            if index.column() == COLUMN["Model"]:
                return run.model
            return TOOLTIPS.get(COLUMNS[index.column()][0])
        if role == Qt.ItemDataRole.CheckStateRole and index.column() == 0:
            return Qt.CheckState.Checked if run.root in self.ticked else Qt.CheckState.Unchecked
        return None

    def setData(self, index, value, role=Qt.ItemDataRole.EditRole) -> bool:
        if role != Qt.ItemDataRole.CheckStateRole or index.column() != 0:
            return False
        root = self.rows[index.row()].root
        if Qt.CheckState(value) == Qt.CheckState.Checked:
            self.ticked.add(root)
        else:
            self.ticked.discard(root)
        self.dataChanged.emit(index, index, [role])
        self.ticked_changed.emit()
        return True
