"""The thumbnail grid of the dataset browser and its Qt model. Rows are the
shown images; thumbnails fill in from a background loader."""
from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QAbstractListModel, QModelIndex, Qt
from PySide6.QtGui import QColor, QImage
from PySide6.QtWidgets import QAbstractItemView, QListView

from ..data.health import PROBLEMS
from ..data.session import CaptionSession
from .loss_state import LossOverlay
from .thumbnails import THUMB_SIZE, ThumbnailCache, ThumbnailDelegate, ThumbnailLoader, broken_image


class ImageGridModel(QAbstractListModel):
    """Rows are the shown images (session indices after filtering). Thumbnails
    come from the cache or are requested from the loader and filled in later."""

    def __init__(self, loader: ThumbnailLoader, parent=None):
        super().__init__(parent)
        self.loader = loader
        self.cache = ThumbnailCache()
        self.session: CaptionSession | None = None  # None while captions load
        self.image_paths: list[Path] = []
        self.names: list[str] = []
        self.keys: list[int] = []
        self._row_of: dict[int, int] = {}
        self.losses: LossOverlay | None = None  # a run's loss of each image (the badges)
        self._placeholder = QImage(THUMB_SIZE, THUMB_SIZE, QImage.Format.Format_RGB32)
        self._placeholder.fill(QColor(58, 58, 62))
        self._broken = broken_image()
        loader.on_ready = self._thumbnail_ready

    def set_images(self, image_paths: list[Path], names: list[str]) -> None:
        self.beginResetModel()
        self.loader.reset()
        self.cache.clear()
        self.session = None
        self.image_paths = image_paths
        self.names = names
        self.keys = list(range(len(image_paths)))
        self._row_of = {k: r for r, k in enumerate(self.keys)}
        self.endResetModel()

    def set_losses(self, losses: LossOverlay | None) -> None:
        self.losses = losses
        if self.keys:
            self.dataChanged.emit(self.index(0), self.index(len(self.keys) - 1))

    def set_session(self, session: CaptionSession) -> None:
        self.session = session
        self.refresh_keys(self.keys)

    def set_keys(self, keys: list[int]) -> None:
        self.beginResetModel()
        self.keys = keys
        self._row_of = {k: r for r, k in enumerate(keys)}
        self.endResetModel()

    def row_of(self, key: int) -> int:
        return self._row_of.get(key, -1)

    def rowCount(self, parent=QModelIndex()) -> int:
        return 0 if parent.isValid() else len(self.keys)

    def data(self, index, role=Qt.ItemDataRole.DisplayRole):
        if not index.isValid():
            return None
        key = self.keys[index.row()]
        session = self.session
        if role == Qt.ItemDataRole.DisplayRole:
            return ("● " if session and key in session.dirty else "") + self.names[key]
        if role == Qt.ItemDataRole.DecorationRole:
            img = self.cache.get(key)
            if img is None:
                self.loader.request(key, str(self.image_paths[key]))
                return self._placeholder
            return img
        if role == Qt.ItemDataRole.ToolTipRole:
            problems = ", ".join(PROBLEMS[p] for p in sorted(session.problems(key))) if session else ""
            badge = self.losses.badge(key) if self.losses else None
            return str(self.image_paths[key]) + (f"\n{problems}" if problems else "") + \
                (f"\n{badge.tip}" if badge else "")
        if role == ThumbnailDelegate.LOSS_ROLE:
            return self.losses.badge(key) if self.losses else None
        if role == ThumbnailDelegate.PROBLEM_ROLE:
            return bool(session and session.problems(key))
        if role == Qt.ItemDataRole.UserRole:
            return key
        return None

    def _thumbnail_ready(self, key: int, img: QImage) -> None:
        self.cache.put(key, img if not img.isNull() else self._broken)
        self.refresh_key(key)

    def refresh_keys(self, keys) -> None:
        keys = list(keys)
        if len(keys) > 64:  # one signal for the lot instead of thousands
            if self.keys:
                self.dataChanged.emit(self.index(0), self.index(len(self.keys) - 1))
            return
        for key in keys:
            self.refresh_key(key)

    def refresh_key(self, key: int) -> None:
        row = self._row_of.get(key, -1)
        if row >= 0:
            idx = self.index(row)
            self.dataChanged.emit(idx, idx)


class ImageGrid(QListView):
    """Icon view over an ImageGridModel; several images can be selected for batch edits."""

    def __init__(self, model: ImageGridModel, parent=None):
        super().__init__(parent)
        self.setViewMode(QListView.ViewMode.IconMode)
        self.setResizeMode(QListView.ResizeMode.Adjust)
        self.setMovement(QListView.Movement.Static)
        self.setUniformItemSizes(True)
        self.setItemDelegate(ThumbnailDelegate(THUMB_SIZE, self))
        self.setSpacing(4)
        self.setMouseTracking(True)
        self.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.setModel(model)

    def selected_keys(self) -> list[int]:
        model = self.model()
        return [model.keys[r] for r in sorted(i.row() for i in self.selectionModel().selectedIndexes())]

    def show_key(self, key: int) -> bool:
        """Make the image current and scroll to it; False if it is not shown."""
        row = self.model().row_of(key)
        if row >= 0:
            self.setCurrentIndex(self.model().index(row))
            self.scrollTo(self.model().index(row))
        return row >= 0
