"""The Runs tab: the runs of a folder as a sortable table (runs/catalog.py reads them),
with open folder, rename, notes, delete to the trash, a loss plot of the runs ticked
for comparing, and the selected text run's answers against the base model's
(ui/compare_view.py). Opening a run replays its events into the training view;
Resume continues it."""
from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import QFile, QSortFilterProxyModel, Qt, QUrl, Signal
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import (QAbstractItemView, QFileDialog, QHBoxLayout, QHeaderView,
                               QInputDialog, QLabel, QMessageBox, QPlainTextEdit, QPushButton,
                               QSplitter, QTableView, QTabWidget, QVBoxLayout, QWidget)

from ..runs.catalog import RunCatalog, RunError, RunSummary, loss_curve
from ..runs.item_loss import ITEM_LOSS_FILE
from .compare_view import CompareView
from .loss_compare import LossCompare
from .runs_model import COLUMN, PATH_ROLE, SORT_ROLE, RunsTableModel


def move_to_trash(path: Path) -> bool:
    """The platform's trash (Windows, macOS, freedesktop Linux); False where there is none
    or it refused."""
    moved = QFile.moveToTrash(str(path))
    # PySide6 documents (bool, path in trash) and returns a bare bool in 6.12.
    return bool(moved[0] if isinstance(moved, tuple) else moved)


class RunsView(QWidget):
    open_run = Signal(str)     # replay this run folder in the training view
    resume_run = Signal(str)   # resume this run folder from its last checkpoint
    try_run = Signal(str)      # open this run's adapters in the Playground
    losses_run = Signal(str)   # show this run's per-item losses in the Dataset tab

    def __init__(self, folder: str | Path = "runs", parent: QWidget | None = None):
        super().__init__(parent)
        self.catalog = RunCatalog(folder)
        self.in_use: Callable[[], Path | None] = lambda: None   # the run training here
        self.trash: Callable[[Path], bool] = move_to_trash
        layout = QVBoxLayout(self)
        top = QHBoxLayout()
        self.folder_label = QLabel()
        self.folder_label.setTextFormat(Qt.TextFormat.PlainText)
        self.folder_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        choose = QPushButton("Choose folder…")
        choose.clicked.connect(self._choose_folder)
        refresh = QPushButton("Refresh")
        refresh.clicked.connect(self.refresh)
        top.addWidget(self.folder_label, 1)
        top.addWidget(choose)
        top.addWidget(refresh)
        layout.addLayout(top)

        self.model = RunsTableModel(self)
        self.model.ticked_changed.connect(self._update_compare)
        self.proxy = QSortFilterProxyModel(self)
        self.proxy.setSourceModel(self.model)
        self.proxy.setSortRole(SORT_ROLE)
        self.table = QTableView()
        self.table.setModel(self.proxy)
        self.table.setSortingEnabled(True)
        self.table.sortByColumn(COLUMN["Date"], Qt.SortOrder.DescendingOrder)   # newest first
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setAlternatingRowColors(True)
        self.table.setWordWrap(False)
        self.table.verticalHeader().hide()
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        self.table.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        self.table.doubleClicked.connect(lambda index: self._emit(self.open_run))
        self.table.selectionModel().selectionChanged.connect(self._selection_changed)

        self.notes = QPlainTextEdit()
        self.notes.setPlaceholderText("Notes on this run (saved in its folder as notes.txt)")
        self.notes.modificationChanged.connect(lambda changed: self.save_notes_button.setEnabled(
            changed and self.selected_run() is not None))
        self.save_notes_button = QPushButton("Save notes")
        self.save_notes_button.clicked.connect(self.save_notes)
        self.compare = LossCompare()
        notes_box = QWidget()
        notes_layout = QVBoxLayout(notes_box)
        notes_layout.setContentsMargins(0, 0, 0, 0)
        notes_layout.addWidget(QLabel("Notes"))
        notes_layout.addWidget(self.notes, 1)
        notes_layout.addWidget(self.save_notes_button, 0, Qt.AlignmentFlag.AlignRight)
        below = QSplitter(Qt.Orientation.Horizontal)
        self.outputs = CompareView()
        views = QTabWidget()
        views.addTab(self.compare, "Loss curves")
        views.addTab(self.outputs, "Compare outputs")
        below.addWidget(notes_box)
        below.addWidget(views)
        below.setSizes([350, 650])
        splitter = QSplitter(Qt.Orientation.Vertical)
        splitter.addWidget(self.table)
        splitter.addWidget(below)
        splitter.setSizes([300, 300])
        layout.addWidget(splitter, 1)

        bottom = QHBoxLayout()
        self.open_folder_button = QPushButton("Open folder")
        self.open_folder_button.clicked.connect(self.open_folder)
        self.rename_button = QPushButton("Rename…")
        self.rename_button.clicked.connect(self._ask_rename)
        self.delete_button = QPushButton("Delete…")
        self.delete_button.clicked.connect(self.delete_selected)
        self.open_button = QPushButton("Open in training view")
        self.open_button.clicked.connect(lambda: self._emit(self.open_run))
        self.resume_button = QPushButton("Resume from last checkpoint")
        self.resume_button.clicked.connect(lambda: self._emit(self.resume_run))
        self.try_button = QPushButton("Try it")
        self.try_button.setToolTip("Open the run's final adapter and checkpoints in the "
                                   "Playground, its sample prompts filled in")
        self.try_button.clicked.connect(lambda: self._emit(self.try_run))
        self.losses_button = QPushButton("Losses in Dataset")
        self.losses_button.setToolTip("Open the run's dataset with each image's (or record's) "
                                      "training loss, the worst-learned first")
        self.losses_button.clicked.connect(lambda: self._emit(self.losses_run))
        for button in (self.open_folder_button, self.rename_button, self.delete_button):
            bottom.addWidget(button)
        bottom.addStretch(1)
        bottom.addWidget(self.open_button)
        bottom.addWidget(self.resume_button)
        bottom.addWidget(self.losses_button)
        bottom.addWidget(self.try_button)
        layout.addLayout(bottom)
        self.message = QLabel()
        self.message.setWordWrap(True)
        self.message.setTextFormat(Qt.TextFormat.PlainText)
        self.message.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.message.hide()
        layout.addWidget(self.message)
        self.set_folder(folder)

    # -- the list ------------------------------------------------------------
    @property
    def folder(self) -> Path:
        return self.catalog.folder

    def set_folder(self, folder: str | Path) -> None:
        if Path(folder) != self.catalog.folder:
            self.catalog = RunCatalog(folder)
        self.refresh()

    def _choose_folder(self) -> None:
        chosen = QFileDialog.getExistingDirectory(self, "Runs folder", str(self.folder))
        if chosen:
            self.set_folder(chosen)

    def refresh(self) -> None:
        selected = self.selected_run()
        runs = self.catalog.runs()
        self.model.set_runs(runs)
        self.folder_label.setText(f"Runs in {self.folder.absolute()}" if runs else
                                  f"No runs yet in {self.folder.absolute()}")
        if selected is not None:
            self.select(selected)
        self.table.resizeColumnsToContents()
        self._selection_changed()
        self._update_compare()

    def runs(self) -> list[RunSummary]:
        """The rows in the order shown."""
        return [self.model.rows[self.proxy.mapToSource(self.proxy.index(i, 0)).row()]
                for i in range(self.proxy.rowCount())]

    def select(self, root: Path) -> None:
        for i in range(self.proxy.rowCount()):
            if Path(self.proxy.index(i, 0).data(PATH_ROLE)) == Path(root):
                self.table.selectRow(i)
                return

    def selected_summary(self) -> RunSummary | None:
        rows = self.table.selectionModel().selectedRows()
        return self.model.rows[self.proxy.mapToSource(rows[0]).row()] if rows else None

    def selected_run(self) -> Path | None:
        summary = self.selected_summary()
        return summary.root if summary else None

    def _selection_changed(self, *_) -> None:
        run = self.selected_summary()
        for button in (self.open_button, self.open_folder_button, self.rename_button,
                       self.delete_button, self.try_button):
            button.setEnabled(run is not None)
        self.resume_button.setEnabled(run is not None and run.can_resume)
        self.losses_button.setEnabled(run is not None and
                                      (run.root / ITEM_LOSS_FILE).is_file())
        if run is None or self._notes_root != run.root:
            self._notes_root = run.root if run else None
            self.notes.setPlainText(run.notes if run else "")
            self.notes.setEnabled(run is not None)
            self.notes.document().setModified(False)
        self.save_notes_button.setEnabled(run is not None and self.notes.document().isModified())
        self.outputs.show_run(run, self.model.rows)

    _notes_root: Path | None = None

    def _emit(self, signal) -> None:
        run = self.selected_run()
        if run is not None:
            signal.emit(str(run))

    def _say(self, text: str) -> None:
        self.message.setText(text)
        self.message.setVisible(bool(text))

    def _error(self, exc: RunError) -> None:
        self._say(f"{exc.message} {exc.hint}")

    # -- actions -------------------------------------------------------------
    def open_folder(self) -> None:
        run = self.selected_run()
        if run is not None:
            QDesktopServices.openUrl(QUrl.fromLocalFile(str(run)))

    def _ask_rename(self) -> None:
        run = self.selected_run()
        if run is None:
            return
        name, ok = QInputDialog.getText(self, "Rename run", "New name for the run folder:",
                                        text=run.name)
        if ok:
            self.rename(name)

    def rename(self, new_name: str) -> bool:
        run = self.selected_run()
        if run is None:
            return False
        try:
            target = self.catalog.rename(run, new_name, self.in_use())
        except RunError as exc:
            self._error(exc)
            return False
        self._say(f"Renamed {run.name} to {target.name}.")
        self._notes_root = target   # keep unsaved notes typed for the run
        self.refresh()
        self.select(target)
        return True

    def save_notes(self) -> bool:
        run = self.selected_run()
        if run is None:
            return False
        try:
            self.catalog.save_notes(run, self.notes.toPlainText())
        except RunError as exc:
            self._error(exc)
            return False
        self.notes.document().setModified(False)
        self._say(f"Notes saved in {run.name}.")
        self.refresh()
        return True

    def delete_selected(self) -> bool:
        """Ask, then move the selected run to the trash; where there is no trash, ask
        again before deleting it for good."""
        run = self.selected_run()
        if run is None:
            return False
        try:
            self.catalog.check_removable(run, self.in_use())
        except RunError as exc:
            self._error(exc)
            return False
        yes, no = QMessageBox.StandardButton.Yes, QMessageBox.StandardButton.No
        if QMessageBox.question(self, "Delete run", f"Move the run '{run.name}' with its "
                                "checkpoints, samples and exports to the trash?",
                                yes | no, no) != yes:
            return False
        if self.trash(run):
            self._say(f"Moved {run.name} to the trash.")
        else:
            if QMessageBox.warning(self, "No trash", f"'{run.name}' could not be moved to the "
                                   "trash (this system or drive has none). Delete it for good? "
                                   "This cannot be undone.", yes | no, no) != yes:
                self._say(f"{run.name} was kept: it could not be moved to the trash.")
                return False
            try:
                shutil.rmtree(run)
            except OSError as exc:
                self._say(f"Could not delete {run}: {exc.strerror or exc}. Close programs "
                          "that have its files open, then try again.")
                self.refresh()
                return False
            self._say(f"Deleted {run.name}.")
        self.refresh()
        return True

    def _update_compare(self) -> None:
        ticked = sorted(self.model.ticked_runs(), key=lambda r: r.date)
        self.compare.show_curves([(r.name, *loss_curve(r.root)) for r in ticked])

    def shutdown(self) -> None:
        self.outputs.shutdown()
