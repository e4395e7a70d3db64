"""Runs auto-captioning in its own process, ``python -m lora_studio.captioning``: the
taggers and captioners need onnxruntime or torch, which the window never imports. The
request goes in on the child's stdin; its JSON lines reach on_event on the GUI thread
through a QTimer (ui/child_lines.py).

cancel() writes a line to the child, which stops after the caption it is writing;
a child still loading its model has written nothing and is ended at once, and one
that does not stop within CANCEL_GRACE_S is ended too (its captions are each old or
new on disk, never cut)."""
from __future__ import annotations

import time

from ..runs.caption_protocol import (CaptionRequest, caption_command, caption_env,
                                     decode_event)
from .child_lines import ChildLines, package_root
from .child_runner import ChildRunner

CANCEL_GRACE_S = 10.0


class CaptionRunner(ChildRunner):
    """start(request) runs it; every event reaches on_event(dict) on the GUI thread,
    and a child that ends without ``finished`` or ``error`` sends an ``error``."""

    def __init__(self, on_event, parent=None, poll_ms: int = 50):
        super().__init__(parent, poll_ms)
        self.on_event = on_event
        self._ended = False       # the child sent "finished" or "error"
        self._started = False     # the model is loaded: captions may be on their way
        self._cancel_at: float | None = None

    def start(self, request: CaptionRequest) -> None:
        self.stop()
        self._run(ChildLines(caption_command(), caption_env(package_root()),
                             stdin=True, stderr=True))
        self._ended = self._started = False
        self._cancel_at = None
        self._child.write(request.to_json() + "\n")

    def cancel(self) -> None:
        """Stop after the caption being written; ends a child still loading at once."""
        if self._child is None or self._cancel_at is not None:
            return
        self._cancel_at = time.monotonic()
        if not self._started:
            self._child.proc.kill()
            return
        self._child.write("cancel\n")

    def poll(self) -> None:
        if self._child is None:
            return
        for line in self._child.take():
            ev = decode_event(line)
            if ev is None:
                continue  # a library printed to stdout; only our events count
            self._started |= ev["type"] == "started"
            self._ended |= ev["type"] in ("finished", "error")
            self.on_event(ev)
            if self._child is None:
                return
        if self._cancel_at is not None and time.monotonic() - self._cancel_at > CANCEL_GRACE_S:
            self._child.proc.kill()
        if not self._child.ended():
            return  # still running, or its last lines are handed over on the next tick
        child, ended, cancelled = self._child, self._ended, self._cancel_at is not None
        self._finish()
        if ended:
            return
        if cancelled:
            self.on_event({"type": "finished", "status": "cancelled"})
            return
        stderr = child.stderr
        last = stderr.splitlines()[-1] if stderr else f"exit code {child.returncode}"
        self.on_event({"type": "error", "message": f"The captioning process stopped: {last}",
                       "hint": "Captions written before it stopped are kept. Its output:\n"
                               + stderr})

    def wait(self, seconds: float = 60.0) -> bool:
        """Poll until the child has ended (tests and shutdown); True when it has."""
        deadline = time.monotonic() + seconds
        while self._child is not None and time.monotonic() < deadline:
            time.sleep(0.02)
            self.poll()
        return self._child is None
