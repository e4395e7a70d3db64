"""The last image or XY grid the playground drew, fitted to the pane, with its
parameters below; a click shows it at full size."""
from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, QUrl, Signal
from PySide6.QtGui import QDesktopServices, QPixmap
from PySide6.QtWidgets import (QDialog, QDialogButtonBox, QLabel, QScrollArea, QSizePolicy,
                               QVBoxLayout, QWidget)


class ImageDialog(QDialog):
    """The picture at its own size (scrolled when bigger than the screen)."""

    def __init__(self, path: Path, caption: str, parent: QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle(path.name)
        self.path = path
        layout = QVBoxLayout(self)
        self.image = QLabel()
        self.image.setPixmap(QPixmap(str(path)))
        scroll = QScrollArea()
        scroll.setWidget(self.image)
        scroll.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.caption = QLabel(caption)
        self.caption.setWordWrap(True)
        self.caption.setTextFormat(Qt.TextFormat.PlainText)
        self.caption.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        open_file = buttons.addButton("Open file", QDialogButtonBox.ButtonRole.ActionRole)
        open_file.clicked.connect(
            lambda: QDesktopServices.openUrl(QUrl.fromLocalFile(str(self.path))))
        buttons.rejected.connect(self.reject)
        layout.addWidget(scroll, 1)
        layout.addWidget(self.caption)
        layout.addWidget(buttons)
        screen = self.screen().availableGeometry().size() * 0.85
        self.resize(min(self.image.sizeHint().width() + 48, screen.width()),
                    min(self.image.sizeHint().height() + 140, screen.height()))


class ImageResult(QWidget):
    enlarged = Signal(object)   # the dialog shown, for whoever wants to close it

    def __init__(self, parent=None):
        super().__init__(parent)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.image = QLabel("Nothing drawn yet.")
        self.image.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.image.setMinimumSize(160, 160)
        self.image.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Ignored)
        self.image.setStyleSheet("background: #f4f4f4; color: #888;")
        self.image.setCursor(Qt.CursorShape.PointingHandCursor)
        self.image.setToolTip("Click to see it at full size")
        self.image.mousePressEvent = lambda _event: self.enlarge()
        self.parameters = QLabel()
        self.parameters.setWordWrap(True)
        self.parameters.setTextFormat(Qt.TextFormat.PlainText)
        self.parameters.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.parameters.setStyleSheet("color: #555;")
        layout.addWidget(self.image, 1)
        layout.addWidget(self.parameters)
        self.path: Path | None = None
        self._pixmap = QPixmap()

    def show_image(self, path: str, parameters: str) -> bool:
        """False (and a message in its place) when the file is not a readable image."""
        pixmap = QPixmap(path) if path else QPixmap()
        self.path = Path(path) if path and not pixmap.isNull() else None
        self._pixmap = pixmap
        self.parameters.setText(parameters if self.path else "")
        if self.path is None:
            self.image.setPixmap(QPixmap())
            self.image.setText(f"{path} could not be read as an image." if path else
                               "Nothing drawn yet.")
            return False
        self._fit()
        return True

    def _fit(self) -> None:
        if self._pixmap.isNull():
            return
        size = self.image.size()
        scaled = self._pixmap
        # Small pictures (the tiny test model draws 64 px) are scaled up by whole steps
        # so their pixels stay sharp; big ones are scaled down smoothly.
        if scaled.width() > size.width() or scaled.height() > size.height():
            scaled = scaled.scaled(size, Qt.AspectRatioMode.KeepAspectRatio,
                                   Qt.TransformationMode.SmoothTransformation)
        else:
            factor = max(1, min(size.width() // scaled.width(), size.height() // scaled.height()))
            scaled = scaled.scaled(scaled.size() * factor, Qt.AspectRatioMode.KeepAspectRatio,
                                   Qt.TransformationMode.FastTransformation)
        self.image.setPixmap(scaled)

    def resizeEvent(self, event) -> None:
        super().resizeEvent(event)
        self._fit()

    def enlarge(self) -> ImageDialog | None:
        if self.path is None:
            return None
        dialog = ImageDialog(self.path, self.parameters.text(), self)
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.show()
        self.enlarged.emit(dialog)
        return dialog
