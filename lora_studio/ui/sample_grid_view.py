"""Image samples as a table: a row per prompt, written out in the row's header (which
stays in view while the steps scroll by), a column per sampled step; a click on a
thumbnail enlarges it."""
from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QSize, Qt, QUrl
from PySide6.QtGui import QDesktopServices, QIcon, QPixmap
from PySide6.QtWidgets import (QAbstractItemView, QDialog, QDialogButtonBox, QHeaderView, QLabel,
                               QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget)

from ..runs.sample_grid import SampleGrid

THUMB = 112
PROMPT_WIDTH = 104  # the row headers' width: a prompt wraps onto several lines


class SampleDialog(QDialog):
    """One sample at the size it was made (or the screen's), with its prompt and step."""

    def __init__(self, path: Path, prompt: str, step: int, parent: QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle(f"Sample at step {step}")
        self.path = path
        layout = QVBoxLayout(self)
        self.caption = QLabel(f"Step {step}: {prompt}")
        self.caption.setWordWrap(True)
        self.caption.setTextFormat(Qt.TextFormat.PlainText)
        self.caption.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.image = QLabel()
        self.image.setAlignment(Qt.AlignmentFlag.AlignCenter)
        pixmap = QPixmap(str(path))
        screen = self.screen().availableGeometry().size() * 0.8
        if pixmap.width() > screen.width() or pixmap.height() > screen.height():
            pixmap = pixmap.scaled(screen, Qt.AspectRatioMode.KeepAspectRatio,
                                   Qt.TransformationMode.SmoothTransformation)
        self.image.setPixmap(pixmap)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        open_file = buttons.addButton("Open file", QDialogButtonBox.ButtonRole.ActionRole)
        open_file.clicked.connect(
            lambda: QDesktopServices.openUrl(QUrl.fromLocalFile(str(self.path))))
        buttons.rejected.connect(self.reject)
        layout.addWidget(self.caption)
        layout.addWidget(self.image, 1)
        layout.addWidget(buttons)


class SampleGridView(QTableWidget):
    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.grid = SampleGrid()
        self.dialog: SampleDialog | None = None
        self._icons: dict[Path, QIcon] = {}
        self.setIconSize(QSize(THUMB, THUMB))
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.setSelectionMode(QAbstractItemView.SelectionMode.NoSelection)
        self.setShowGrid(False)
        rows = self.verticalHeader()
        rows.setFixedWidth(PROMPT_WIDTH)
        rows.setSectionResizeMode(QHeaderView.ResizeMode.Fixed)
        rows.setDefaultSectionSize(THUMB + 8)
        rows.setDefaultAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter
                                 | Qt.TextFlag.TextWordWrap)
        self.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Fixed)
        self.horizontalHeader().setDefaultSectionSize(THUMB + 8)
        self.setHorizontalScrollMode(QAbstractItemView.ScrollMode.ScrollPerPixel)
        self.setVerticalScrollMode(QAbstractItemView.ScrollMode.ScrollPerPixel)
        self.cellClicked.connect(self._clicked)

    def clear_samples(self) -> None:
        self.grid = SampleGrid()
        self._icons.clear()
        self.clear()
        self.setRowCount(0)
        self.setColumnCount(0)

    def thumbnail(self, path: Path) -> QIcon | None:
        """The file's thumbnail, read once; None when it is not a readable image."""
        icon = self._icons.get(path)
        if icon is None:
            pixmap = QPixmap(str(path))
            if pixmap.isNull():
                return None
            icon = QIcon(pixmap.scaled(THUMB, THUMB, Qt.AspectRatioMode.KeepAspectRatio,
                                       Qt.TransformationMode.SmoothTransformation))
            self._icons[path] = icon
        return icon

    def add(self, prompt: str, step: int, path: Path) -> bool:
        """Place a sample; False (and nothing placed) when the file is not an image."""
        self._icons.pop(path, None)  # a step sampled again after a resume: a new file
        if self.thumbnail(path) is None:
            return False
        newest = not self.grid.steps or step > self.grid.steps[-1]
        self.grid.add(prompt, step, path)
        self._fill()
        if newest:  # the latest samples are the ones to look at during a run
            self.horizontalScrollBar().setValue(self.horizontalScrollBar().maximum())
        return True

    def _fill(self) -> None:
        grid = self.grid
        self.setColumnCount(len(grid.steps))
        self.setRowCount(len(grid.prompts))
        self.setHorizontalHeaderLabels([f"step {step}" for step in grid.steps])
        for row, prompt in enumerate(grid.prompts):
            header = QTableWidgetItem(prompt)
            header.setToolTip(prompt)
            self.setVerticalHeaderItem(row, header)
            for col, step in enumerate(grid.steps):
                path = grid.cell(prompt, step)
                item = QTableWidgetItem()
                item.setFlags(Qt.ItemFlag.ItemIsEnabled)
                if path is not None:
                    item.setIcon(self._icons[path])
                    item.setToolTip(f"Step {step}: {prompt}\nClick to enlarge.")
                self.setItem(row, col, item)

    def cell_at(self, prompt: str, step: int) -> tuple[int, int]:
        """The (row, column) of a sample's thumbnail."""
        return self.grid.prompts.index(prompt), self.grid.steps.index(step)

    def _clicked(self, row: int, col: int) -> None:
        prompt, step = self.grid.prompts[row], self.grid.steps[col]
        if self.grid.cell(prompt, step) is not None:
            self.enlarge(prompt, step)

    def enlarge(self, prompt: str, step: int) -> None:
        if self.dialog is not None:
            self.dialog.deleteLater()
        self.dialog = SampleDialog(self.grid.cell(prompt, step), prompt, step, self)
        self.dialog.open()
