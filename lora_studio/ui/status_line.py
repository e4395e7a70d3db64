"""The status bar's message: elided in the middle to the room the permanent widgets
leave (the whole text in its tooltip) instead of running under them, and cleared
after a while like QStatusBar's own messages."""
from __future__ import annotations

from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import QLabel, QSizePolicy

SHOWN_MS = 10_000


class StatusLine(QLabel):
    def __init__(self, parent=None):
        super().__init__(parent)
        self.full_text = ""
        self.setTextFormat(Qt.TextFormat.PlainText)
        # Take the room there is, never ask for more: the text adapts to the width.
        self.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self._clear = QTimer(self)
        self._clear.setSingleShot(True)
        self._clear.timeout.connect(lambda: self.show_message("", 0))

    def show_message(self, text: str, shown_ms: int = SHOWN_MS) -> None:
        self.full_text = " ".join(text.split())  # one line, whatever the message held
        self._fit()
        if shown_ms and text:
            self._clear.start(shown_ms)
        else:
            self._clear.stop()

    def _fit(self) -> None:
        shown = self.fontMetrics().elidedText(self.full_text, Qt.TextElideMode.ElideMiddle,
                                              max(0, self.contentsRect().width()))
        self.setText(shown)
        self.setToolTip(self.full_text if shown != self.full_text else "")

    def resizeEvent(self, event) -> None:
        super().resizeEvent(event)
        self._fit()
