"""The full image of the dataset browser, decoded at most PREVIEW_MAX big and
scaled to the pane as it resizes."""
from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QSize, Qt
from PySide6.QtGui import QImageReader, QPixmap
from PySide6.QtWidgets import QLabel, QSizePolicy

PREVIEW_MAX = 1600  # enough for any screen


class ImagePreview(QLabel):
    def __init__(self, text: str = "", parent=None):
        super().__init__(text, parent)
        self._pixmap: QPixmap | None = None
        self.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.setMinimumSize(240, 200)
        self.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Ignored)
        self.setStyleSheet("background: #2b2b2e; color: #bbb;")

    def show_text(self, text: str) -> None:
        self._pixmap = None
        self.setPixmap(QPixmap())
        self.setText(text)

    def show_image(self, path: Path) -> None:
        reader = QImageReader(str(path))
        reader.setAutoTransform(True)
        size = reader.size()
        if size.isValid() and max(size.width(), size.height()) > PREVIEW_MAX:
            reader.setScaledSize(size.scaled(QSize(PREVIEW_MAX, PREVIEW_MAX),
                                             Qt.AspectRatioMode.KeepAspectRatio))
        img = reader.read()
        if img.isNull():
            self.show_text(f"Cannot show this image:\n{reader.errorString()}")
            return
        self._pixmap = QPixmap.fromImage(img)
        self._fit()

    def _fit(self) -> None:
        if self._pixmap is not None:
            self.setPixmap(self._pixmap.scaled(self.size(), Qt.AspectRatioMode.KeepAspectRatio,
                                               Qt.TransformationMode.SmoothTransformation))

    def resizeEvent(self, event) -> None:
        super().resizeEvent(event)
        self._fit()
