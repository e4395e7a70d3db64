"""What the runners of the window's child processes (token view, health check,
auto-captioning, Compare outputs) share: one child at a time (ui/child_lines.py), whose
lines the subclass's poll() takes on the GUI thread every poll_ms, and its end."""
from __future__ import annotations

from PySide6.QtCore import QObject, QTimer

from .child_lines import ChildLines


class ChildRunner(QObject):
    """Subclasses define poll(), start a child with _run(ChildLines(...)) and call
    _finish() once poll() has seen it end."""

    def __init__(self, parent=None, poll_ms: int = 100):
        super().__init__(parent)
        self._child: ChildLines | None = None
        self._timer = QTimer(self)
        self._timer.setInterval(poll_ms)
        self._timer.timeout.connect(self.poll)

    @property
    def running(self) -> bool:
        return self._child is not None

    def _run(self, child: ChildLines) -> None:
        self._child = child
        self._timer.start()

    def _finish(self) -> None:
        self._timer.stop()
        if self._child is not None:
            self._child.close()
            self._child = None

    def stop(self) -> None:
        """End the child now (a new start, or the window is closing); no more messages."""
        if self._child is not None:
            self._child.kill()
            self._finish()

    def shutdown(self) -> None:
        self.stop()
