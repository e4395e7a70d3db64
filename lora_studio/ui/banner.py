"""A bar across the top of a page that says what is wrong with what was opened
and offers the one-click fix; × hides it until the next message."""
from __future__ import annotations

from collections.abc import Callable

from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QPushButton, QToolButton


class Banner(QFrame):
    def __init__(self, parent=None):
        super().__init__(parent)
        self._action: Callable[[], object] | None = None
        self.setObjectName("banner")
        self.setStyleSheet("QFrame#banner { background: #fff4d6; border: 1px solid #e0c36a; "
                           "border-radius: 3px; } QFrame#banner QLabel { color: #4a3500; }")
        self.label = QLabel()
        self.label.setWordWrap(True)
        self.button = QPushButton()
        self.button.clicked.connect(self._act)
        close = QToolButton(text="×")
        close.setAutoRaise(True)
        close.setToolTip("Hide this message")
        close.clicked.connect(self.clear)
        row = QHBoxLayout(self)
        row.setContentsMargins(8, 4, 4, 4)
        row.addWidget(self.label, 1)
        row.addWidget(self.button)
        row.addWidget(close)
        self.hide()

    def show_message(self, text: str, action: str, on_action: Callable[[], object]) -> None:
        self.label.setText(text)
        self.button.setText(action)
        self._action = on_action
        self.show()

    def clear(self) -> None:
        self._action = None
        self.hide()

    def _act(self) -> None:
        action = self._action
        self.clear()
        if action is not None:
            action()
