"""The Playground's Serve box: a port, an optional API key and a toggle that serves the
loaded text base and its adapters to chat front-ends (``lora-studio serve`` on the
Playground's own process, serve/lent.py). Only this computer can connect."""
from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (QGroupBox, QHBoxLayout, QLabel, QLineEdit, QPushButton,
                               QSpinBox, QVBoxLayout)

from ..serve.http_server import DEFAULT_PORT

IDLE_TEXT = ("Let chat front-ends (LobeChat, Open WebUI) and the openai client use the base "
             "model and its adapters at http://127.0.0.1:PORT/v1, from this computer only.")


class ServeBox(QGroupBox):
    serve_toggled = Signal(bool)

    def __init__(self, parent=None):
        super().__init__("Serve (OpenAI API)", parent)
        self.port = QSpinBox()
        self.port.setRange(1, 65535)
        self.port.setValue(DEFAULT_PORT)
        self.port.setToolTip("The port to listen on, on 127.0.0.1")
        self.key = QLineEdit()
        self.key.setPlaceholderText("API key (optional)")
        self.key.setEchoMode(QLineEdit.EchoMode.Password)
        self.key.setToolTip("When set, requests need 'Authorization: Bearer KEY'")
        self.button = QPushButton("Serve")
        self.button.setCheckable(True)
        self.button.toggled.connect(self._toggled)
        self.label = QLabel(IDLE_TEXT)
        self.label.setWordWrap(True)
        self.label.setTextFormat(Qt.TextFormat.PlainText)
        self.label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        row = QHBoxLayout()
        row.addWidget(QLabel("Port"))
        row.addWidget(self.port)
        row.addWidget(self.key, 1)
        row.addWidget(self.button)
        layout = QVBoxLayout(self)
        layout.addLayout(row)
        layout.addWidget(self.label)

    def _toggled(self, on: bool) -> None:
        self.port.setEnabled(not on)
        self.key.setEnabled(not on)
        self.button.setText("Stop serving" if on else "Serve")
        self.serve_toggled.emit(on)

    def show_state(self, text: str, serving: bool) -> None:
        """What the server is doing; the toggle follows without asking again."""
        self.label.setText(text)
        if self.button.isChecked() != serving:
            self.button.blockSignals(True)
            self.button.setChecked(serving)
            self.button.blockSignals(False)
            self.port.setEnabled(not serving)
            self.key.setEnabled(not serving)
            self.button.setText("Stop serving" if serving else "Serve")

    def set_available(self, available: bool, why: str = "") -> None:
        self.button.setEnabled(available or self.button.isChecked())
        self.button.setToolTip("" if available else why)
