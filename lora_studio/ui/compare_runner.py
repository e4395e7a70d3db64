"""Runs `lora-studio compare` for the Runs tab as a child process (it loads the model;
the window never does), without a console window on Windows. A reader thread keeps
the tail of its output; a QTimer notices the end and calls on_end(exit code, output
tail) on the GUI thread. stop() kills it (the window is closing)."""
from __future__ import annotations

import subprocess
import threading
from collections import deque

from PySide6.QtCore import QObject, QTimer

from ..runs import launch
from .worker import child_env

TAIL_LINES = 8   # of the child's output kept to explain a failure


class CompareRunner(QObject):
    def __init__(self, on_end, parent=None, poll_ms: int = 100):
        super().__init__(parent)
        self.on_end = on_end
        self._proc: subprocess.Popen | None = None
        self._reader: threading.Thread | None = None
        self._tail: deque[str] = deque(maxlen=TAIL_LINES)
        self._timer = QTimer(self)
        self._timer.setInterval(poll_ms)
        self._timer.timeout.connect(self.poll)

    @property
    def running(self) -> bool:
        return self._proc is not None

    def start(self, command: list[str]) -> None:
        """Raises OSError when the command cannot start."""
        self._tail.clear()
        self._proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, env=child_env(),
                                      encoding="utf-8", errors="replace",
                                      creationflags=launch.NO_WINDOW)
        self._reader = threading.Thread(target=self._read, args=(self._proc,), daemon=True)
        self._reader.start()
        self._timer.start()

    def _read(self, proc: subprocess.Popen) -> None:
        for line in proc.stdout:
            self._tail.append(line.rstrip("\n"))

    def poll(self) -> None:
        if self._proc is None or self._proc.poll() is None or self._reader.is_alive():
            return
        code = self._proc.returncode
        self._finish()
        self.on_end(code, "\n".join(self._tail))

    def _finish(self) -> None:
        self._timer.stop()
        if self._proc is not None:
            self._proc.stdout.close()
            self._proc = None

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
            self._reader.join(5)
            self._finish()
