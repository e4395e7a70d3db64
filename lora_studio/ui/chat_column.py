"""One answerer's conversation in the Playground: the base model or one adapter."""
from __future__ import annotations

import html

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QFrame, QLabel, QTextBrowser, QVBoxLayout

from .chat_state import Column

ROLE_STYLE = {"user": ("You", "#1565c0"), "assistant": ("", "#2e7d32")}


def transcript_html(column: Column) -> str:
    parts = []
    for message in column.messages:
        who, colour = ROLE_STYLE.get(message["role"], ("", "#555"))
        who = who or column.title
        text = html.escape(message["content"]).replace("\n", "<br>")
        if not message["content"].strip():
            text = '<i style="color:#999">(an empty answer: only spaces or line breaks)</i>'
        parts.append(f'<p><b style="color:{colour}">{html.escape(who)}</b><br>{text}</p>')
    if column.pending is not None:
        text = html.escape(column.partial).replace("\n", "<br>")
        parts.append(f'<p><b style="color:#2e7d32">{html.escape(column.title)}</b><br>{text}'
                     '<span style="color:#999"> ▍</span></p>')
    if column.error:
        parts.append(f'<p style="color:#c62828">{html.escape(column.error)}</p>')
    return "".join(parts)


class ChatColumn(QFrame):
    def __init__(self, title: str, parent=None):
        super().__init__(parent)
        self.setFrameShape(QFrame.Shape.StyledPanel)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 6, 6, 6)
        self.title = QLabel(title)
        self.title.setTextFormat(Qt.TextFormat.PlainText)
        self.title.setStyleSheet("font-weight: bold;")
        self.title.setToolTip(title)
        layout.addWidget(self.title)
        self.view = QTextBrowser()
        self.view.setMinimumWidth(220)
        layout.addWidget(self.view, 1)
        self.status = QLabel()
        self.status.setStyleSheet("color: #666;")
        layout.addWidget(self.status)

    def show_column(self, column: Column) -> None:
        bar = self.view.verticalScrollBar()
        at_end = bar.value() >= bar.maximum() - 4
        self.view.setHtml(transcript_html(column))
        if at_end:
            bar.setValue(bar.maximum())
        self.status.setText("writing…" if column.pending else
                            {"length": "stopped at max new tokens", "stopped": "stopped"}.get(
                                column.last_reason, ""))
