"""Runs the token view's scan in a child process, `python -m
lora_studio.engine.text.token_view`: the tokenizer needs transformers, which the
window never imports. The scan request and the records asked for go in on the
child's stdin; its JSON lines reach on_message on the GUI thread through a QTimer
(ui/child_lines.py). stop() kills the child, which is how a scan is cancelled."""
from __future__ import annotations

import json

from .child_lines import ChildLines, python_module
from .child_runner import ChildRunner

MODULE = "lora_studio.engine.text.token_view"


class TokenViewRunner(ChildRunner):
    """start(request) scans; ask(line) asks for the record at that line; every message
    from the child reaches on_message(dict) on the GUI thread, and a child that ends
    without saying so sends {"type": "error", ...}."""

    def __init__(self, on_message, parent=None, poll_ms: int = 100):
        super().__init__(parent, poll_ms)
        self.on_message = on_message
        self._finished = False  # the child sent "done" or "error"

    def start(self, request: dict) -> None:
        self.stop()
        self._run(ChildLines(python_module(MODULE), stdin=True, stderr=True))
        self._finished = False
        self._send(request)

    def ask(self, line: int) -> None:
        if self._child is not None:
            self._send({"line": line})

    def ask_index(self, index: int) -> None:
        """The record at that place in the scan (a mixed-in one has no line of the file)."""
        if self._child is not None:
            self._send({"index": index})

    def _send(self, msg: dict) -> None:
        self._child.write(json.dumps(msg) + "\n")

    def poll(self) -> None:
        if self._child is None:
            return
        for line in self._child.take():
            try:
                msg = json.loads(line)
            except ValueError:
                continue  # a library printed to stdout; only our JSON lines are messages
            self._finished |= msg.get("type") in ("done", "error")
            self.on_message(msg)
            if self._child is None:  # on_message stopped or restarted the scan
                return
        if self._child.ended():
            child, finished = self._child, self._finished
            self._finish()
            if not finished:
                stderr = child.stderr
                last = stderr.splitlines()[-1] if stderr else f"exit code {child.returncode}"
                self.on_message({"type": "error", "message": f"The token view stopped: {last}",
                                 "hint": "The full output of the tokenizer process:\n" + stderr})
