"""The image side of the Playground tab: Generate, the XY grid builder, Stop, and the
last picture drawn. The settings come from the Drawing pane, the LoRAs in use from the
Models pane; what to ask the playground process is ui/image_state.py's."""
from __future__ import annotations

from collections.abc import Callable

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget

from .image_result import ImageResult
from .image_settings import ImageSettings
from .image_state import GridProblem, ImageSession
from .xy_grid_pane import XYGridPane


class ImagePage(QWidget):
    def __init__(self, session: ImageSession, settings: ImageSettings,
                 send: Callable[[list[dict]], None], parent=None):
        super().__init__(parent)
        self.session = session
        self.settings = settings
        self.send = send
        self.result = ImageResult()
        self.grid_pane = XYGridPane()
        self.grid_pane.draw.connect(self.draw_grid)
        self.generate_button = QPushButton("Generate")
        self.generate_button.setToolTip("One image with the ticked LoRAs at the strength set")
        self.generate_button.clicked.connect(self.generate)
        self.stop_button = QPushButton("Stop")
        self.stop_button.clicked.connect(self.stop)
        self.state_label = QLabel()
        self.state_label.setTextFormat(Qt.TextFormat.PlainText)
        self.state_label.setWordWrap(True)
        buttons = QHBoxLayout()
        buttons.addWidget(self.generate_button)
        buttons.addWidget(self.stop_button)
        buttons.addWidget(self.state_label, 1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.result, 1)
        layout.addLayout(buttons)
        layout.addWidget(self.grid_pane)
        self.refresh()

    def _ask(self, make: Callable[[], list[dict]]) -> None:
        self.session.settings.update(self.settings.values())
        self.session.grid_spec = self.grid_pane.spec()
        try:
            requests = make()
        except GridProblem as exc:
            self.session.error = str(exc)
            self.refresh()
            return
        if not requests and not self.session.base_path:
            self.session.error = "Open an image run or a Stable Diffusion model first."
        self.send(requests)
        self.refresh()

    def generate(self) -> None:
        self._ask(self.session.generate)

    def draw_grid(self) -> None:
        self._ask(self.session.grid)

    def stop(self) -> None:
        self.send(self.session.stop())

    def show_session(self) -> None:
        """Everything from the session: after a reopened save or a run's defaults."""
        self.settings.show_values(self.session.settings)
        self.grid_pane.show_spec(self.session.grid_spec)
        self.result.show_image(self.session.image_path, self.session.parameters)
        self.refresh()

    def on_event(self, ev: dict) -> None:
        if self.session.on_event(ev):
            if ev["type"] == "image":
                self.result.show_image(self.session.image_path, self.session.parameters)
            self.refresh()

    def refresh(self) -> None:
        s = self.session
        busy = s.pending is not None
        for button in (self.generate_button, self.grid_pane.draw_button):
            button.setEnabled(not busy and bool(s.base_path))
        self.stop_button.setEnabled(busy)
        done, total = s.progress
        if busy:
            text = f"Drawing the grid: {done} of {total} images…" if total else "Drawing…"
        else:
            text = s.error
        self.state_label.setText(text)
        self.state_label.setStyleSheet("color: #c62828;" if s.error and not busy else "color: #666;")
