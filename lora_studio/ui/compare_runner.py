"""Runs `lora-studio compare` for the Runs tab as a child process (it loads the model;
the window never does), without a console window on Windows. Its output lines come
through ui/child_lines.py and the tail is kept; a QTimer notices the end and calls
on_end(exit code, output tail) on the GUI thread. stop() kills it (the window is
closing)."""
from __future__ import annotations

from collections import deque

from .child_lines import ChildLines
from .child_runner import ChildRunner
from .worker import child_env

TAIL_LINES = 8   # of the child's output kept to explain a failure


class CompareRunner(ChildRunner):
    def __init__(self, on_end, parent=None, poll_ms: int = 100):
        super().__init__(parent, poll_ms)
        self.on_end = on_end
        self._tail: deque[str] = deque(maxlen=TAIL_LINES)

    def start(self, command: list[str]) -> None:
        """Raises OSError when the command cannot start."""
        self._tail.clear()
        self._run(ChildLines(command, child_env(), merge_stderr=True))

    def poll(self) -> None:
        if self._child is None:
            return
        self._tail.extend(line.rstrip("\n") for line in self._child.take())
        if not self._child.ended():
            return
        code = self._child.returncode
        self._finish()
        self.on_end(code, "\n".join(self._tail))
