"""The selected text record as a chat: the system prompt across the top, user turns
on the left, assistant turns on the right, each bubble marked with whether training
computes the loss on it. What to draw comes from data/chat_record.py."""
from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QScrollArea, QVBoxLayout, QWidget

from ..data.chat_record import Bubble, ChatRecord

# role -> (background, border, which side it sits on)
BUBBLE_STYLES = {
    "system": ("#eeeeee", "#bdbdbd", "wide"),
    "user": ("#e3f2fd", "#90caf9", "left"),
    "assistant": ("#e8f5e9", "#81c784", "right"),
    "text": ("#fffde7", "#fff176", "wide"),
}
LOSS_MARKS = {True: ("● loss", "#2e7d32"), False: ("○ context, no loss", "#757575")}
SHOWN_CHARS = 4000  # a bubble shows this much of a very long turn; the form has it all


class BubbleFrame(QFrame):
    def __init__(self, bubble: Bubble, parent=None):
        super().__init__(parent)
        self.bubble = bubble
        background, border, _side = BUBBLE_STYLES[bubble.role]
        self.setObjectName("bubble")
        width = 3 if bubble.loss else 1
        self.setStyleSheet(f"#bubble {{ background: {background}; border: {width}px solid {border}; "
                           "border-radius: 8px; }")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(8, 4, 8, 6)
        layout.setSpacing(2)
        head = QHBoxLayout()
        title = QLabel(f"<b>{bubble.title}</b>")
        mark, colour = LOSS_MARKS[bubble.loss]
        self.mark = QLabel(mark)
        self.mark.setStyleSheet(f"color: {colour}; font-size: 11px;")
        head.addWidget(title)
        head.addStretch(1)
        head.addWidget(self.mark)
        layout.addLayout(head)
        text = bubble.text
        if len(text) > SHOWN_CHARS:
            text = text[:SHOWN_CHARS] + f"… ({len(bubble.text) - SHOWN_CHARS:,} more characters)"
        self.body = QLabel(text)
        self.body.setTextFormat(Qt.TextFormat.PlainText)
        self.body.setWordWrap(True)
        self.body.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        layout.addWidget(self.body)


class ChatRecordView(QScrollArea):
    def __init__(self, parent=None):
        super().__init__(parent)
        self.setWidgetResizable(True)
        self.bubbles: list[BubbleFrame] = []
        self.note = QLabel()
        self.note.setWordWrap(True)
        self.note.setStyleSheet("color: #555;")
        self._column = QVBoxLayout()
        body = QWidget()
        layout = QVBoxLayout(body)
        layout.addWidget(self.note)
        layout.addLayout(self._column)
        layout.addStretch(1)
        self.setWidget(body)

    def show_record(self, chat: ChatRecord | None) -> None:
        while self._column.count():
            item = self._column.takeAt(0)
            if item.widget():
                item.widget().deleteLater()
        self.bubbles = []
        self.note.setText(chat.note if chat else "")
        for bubble in chat.bubbles if chat else ():
            frame = BubbleFrame(bubble)
            row = QWidget()
            line = QHBoxLayout(row)
            line.setContentsMargins(0, 0, 0, 0)
            side = BUBBLE_STYLES[bubble.role][2]
            # A turn takes most of the width, leaving the rest on the other side.
            line.addStretch(1 if side == "right" else 0)
            line.addWidget(frame, 5)
            line.addStretch(1 if side == "left" else 0)
            self._column.addWidget(row)
            self.bubbles.append(frame)
