"""Past runs in the runs folder: name, status, last step, latest checkpoint. Opening
one replays its events into the training view; Resume continues it."""
from __future__ import annotations

import time
from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (QFileDialog, QHBoxLayout, QHeaderView, QLabel, QPushButton,
                               QTreeWidget, QTreeWidgetItem, QVBoxLayout, QWidget)

from ..runs.events import read_events
from ..runs.layout import RunDir, list_runs

COLUMNS = ("Run", "Status", "Last step", "Checkpoint", "Modified")


def run_summary(run: RunDir) -> tuple[str, str, str, str, str]:
    """One pass over the events: status as RunDir.status() tells it, and the last step."""
    last_step, last_end = None, None
    for ev in read_events(run.events):
        if ev["type"] == "progress" and isinstance(ev.get("step"), int):
            last_step = f"{ev['step']} / {ev['total']}" if ev.get("total") else str(ev["step"])
        if ev["type"] in ("started", "finished", "error"):
            last_end = ev
    if last_end is None:
        status = "new"
    elif last_end["type"] == "finished":
        status = "cancelled" if last_end.get("status") == "cancelled" else "finished"
    elif last_end["type"] == "error":
        status = f"failed ({last_end.get('kind', 'internal')})"
    else:
        status = "running or interrupted"
    checkpoint = run.latest_checkpoint()
    modified = time.strftime("%Y-%m-%d %H:%M", time.localtime(run.root.stat().st_mtime))
    return (run.root.name, status, last_step or "–", checkpoint.name if checkpoint else "–",
            modified)


class RunsView(QWidget):
    open_run = Signal(str)     # replay this run folder in the training view
    resume_run = Signal(str)   # resume this run folder from its last checkpoint

    def __init__(self, folder: str | Path = "runs", parent: QWidget | None = None):
        super().__init__(parent)
        self.folder = Path(folder)
        layout = QVBoxLayout(self)
        top = QHBoxLayout()
        self.folder_label = QLabel()
        self.folder_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        choose = QPushButton("Choose folder…")
        choose.clicked.connect(self._choose_folder)
        refresh = QPushButton("Refresh")
        refresh.clicked.connect(self.refresh)
        top.addWidget(self.folder_label, 1)
        top.addWidget(choose)
        top.addWidget(refresh)
        layout.addLayout(top)
        self.tree = QTreeWidget()
        self.tree.setHeaderLabels(list(COLUMNS))
        self.tree.setRootIsDecorated(False)
        self.tree.setAlternatingRowColors(True)
        self.tree.header().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        self.tree.itemActivated.connect(lambda item: self._emit(self.open_run, item))
        self.tree.itemSelectionChanged.connect(self._update_buttons)
        layout.addWidget(self.tree, 1)
        bottom = QHBoxLayout()
        self.open_button = QPushButton("Open in training view")
        self.open_button.clicked.connect(lambda: self._emit(self.open_run))
        self.resume_button = QPushButton("Resume from last checkpoint")
        self.resume_button.clicked.connect(lambda: self._emit(self.resume_run))
        bottom.addStretch(1)
        bottom.addWidget(self.open_button)
        bottom.addWidget(self.resume_button)
        layout.addLayout(bottom)
        self.set_folder(self.folder)

    def set_folder(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.folder_label.setText(f"Runs in {self.folder.absolute()}")
        self.refresh()

    def _choose_folder(self) -> None:
        chosen = QFileDialog.getExistingDirectory(self, "Runs folder", str(self.folder))
        if chosen:
            self.set_folder(chosen)

    def refresh(self) -> None:
        selected = self.selected_run()
        self.tree.clear()
        for run in list_runs(self.folder):
            item = QTreeWidgetItem(list(run_summary(run)))
            item.setData(0, Qt.ItemDataRole.UserRole, str(run.root))
            item.setToolTip(0, str(run.root))
            self.tree.addTopLevelItem(item)
            if selected is not None and run.root == selected:
                item.setSelected(True)
        for column in range(1, len(COLUMNS)):
            self.tree.resizeColumnToContents(column)
        if self.tree.topLevelItemCount() == 0:
            self.folder_label.setText(f"No runs yet in {self.folder.absolute()}")
        self._update_buttons()

    def selected_run(self) -> Path | None:
        items = self.tree.selectedItems()
        return Path(items[0].data(0, Qt.ItemDataRole.UserRole)) if items else None

    def _update_buttons(self) -> None:
        run = self.selected_run()
        self.open_button.setEnabled(run is not None)
        self.resume_button.setEnabled(run is not None and RunDir(run).status() != "finished"
                                      and RunDir(run).latest_checkpoint() is not None)

    def _emit(self, signal, item: QTreeWidgetItem | None = None) -> None:
        if item is not None:
            path = item.data(0, Qt.ItemDataRole.UserRole)
        else:
            run = self.selected_run()
            path = str(run) if run is not None else None
        if path:
            signal.emit(path)
