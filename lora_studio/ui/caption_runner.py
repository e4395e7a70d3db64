"""Runs auto-captioning in its own process, ``python -m lora_studio.captioning``: the
taggers and captioners need onnxruntime or torch, which the window never imports. The
request goes in on the child's stdin; a reader thread collects its JSON lines and a
QTimer hands them to on_event on the GUI thread (as ui/token_runner.py does).

cancel() writes a line to the child, which stops after the caption it is writing;
a child still loading its model has written nothing and is ended at once, and one
that does not stop within CANCEL_GRACE_S is ended too (its captions are each old or
new on disk, never cut)."""
from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path

from PySide6.QtCore import QObject, QTimer

import lora_studio

from ..runs.caption_protocol import (CaptionRequest, caption_command, caption_env,
                                     decode_event)

STDERR_KEPT = 4000  # characters of the child's stderr kept to explain a crash
CANCEL_GRACE_S = 10.0


class CaptionRunner(QObject):
    """start(request) runs it; every event reaches on_event(dict) on the GUI thread,
    and a child that ends without ``finished`` or ``error`` sends an ``error``."""

    def __init__(self, on_event, parent=None, poll_ms: int = 50):
        super().__init__(parent)
        self.on_event = on_event
        self._proc: subprocess.Popen | None = None
        self._lines: list[str] = []
        self._stderr = ""
        self._lock = threading.Lock()
        self._readers: list[threading.Thread] = []
        self._ended = False       # the child sent "finished" or "error"
        self._started = False     # the model is loaded: captions may be on their way
        self._cancel_at: float | None = None
        self._timer = QTimer(self)
        self._timer.setInterval(poll_ms)
        self._timer.timeout.connect(self.poll)

    @property
    def running(self) -> bool:
        return self._proc is not None

    def start(self, request: CaptionRequest) -> None:
        self.stop()
        package_root = str(Path(lora_studio.__file__).resolve().parents[1])
        self._proc = subprocess.Popen(
            caption_command(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, env=caption_env(package_root), encoding="utf-8",
            creationflags=getattr(subprocess, "CREATE_NO_WINDOW", 0))
        self._lines, self._stderr = [], ""
        self._ended = self._started = False
        self._cancel_at = None
        self._readers = [threading.Thread(target=self._read, args=(self._proc,), daemon=True),
                         threading.Thread(target=self._read_stderr, args=(self._proc,), daemon=True)]
        for reader in self._readers:
            reader.start()
        self._write(request.to_json() + "\n")
        self._timer.start()

    def cancel(self) -> None:
        """Stop after the caption being written; ends a child still loading at once."""
        if self._proc is None or self._cancel_at is not None:
            return
        self._cancel_at = time.monotonic()
        if not self._started:
            self._proc.kill()
            return
        self._write("cancel\n")

    def _write(self, text: str) -> None:
        try:
            self._proc.stdin.write(text)
            self._proc.stdin.flush()
        except OSError:  # the child has ended; poll() reports why
            pass

    def _read(self, proc: subprocess.Popen) -> None:
        for line in proc.stdout:
            with self._lock:
                self._lines.append(line)

    def _read_stderr(self, proc: subprocess.Popen) -> None:
        for line in proc.stderr:
            with self._lock:
                self._stderr = (self._stderr + line)[-STDERR_KEPT:]

    def poll(self) -> None:
        if self._proc is None:
            return
        with self._lock:
            lines, self._lines = self._lines, []
        for line in lines:
            ev = decode_event(line)
            if ev is None:
                continue  # a library printed to stdout; only our events count
            self._started |= ev["type"] == "started"
            self._ended |= ev["type"] in ("finished", "error")
            self.on_event(ev)
            if self._proc is None:
                return
        if self._cancel_at is not None and time.monotonic() - self._cancel_at > CANCEL_GRACE_S:
            self._proc.kill()
        if self._proc.poll() is not None and not any(r.is_alive() for r in self._readers):
            with self._lock:
                if self._lines:
                    return  # hand over the last lines on the next tick
                stderr = self._stderr.strip()
            code, ended, cancelled = self._proc.returncode, self._ended, self._cancel_at is not None
            self._finish()
            if ended:
                return
            if cancelled:
                self.on_event({"type": "finished", "status": "cancelled"})
                return
            last = stderr.splitlines()[-1] if stderr else f"exit code {code}"
            self.on_event({"type": "error", "message": f"The captioning process stopped: {last}",
                           "hint": "Captions written before it stopped are kept. Its output:\n"
                                   + stderr})

    def _finish(self) -> None:
        self._timer.stop()
        if self._proc is not None:
            for pipe in (self._proc.stdin, self._proc.stdout, self._proc.stderr):
                try:
                    pipe.close()
                except OSError:
                    pass
            self._proc = None

    def stop(self) -> None:
        """End the child now (the window is closing); no more events."""
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
            for reader in self._readers:
                reader.join(5)
            self._finish()

    def wait(self, seconds: float = 60.0) -> bool:
        """Poll until the child has ended (tests and shutdown); True when it has."""
        deadline = time.monotonic() + seconds
        while self._proc is not None and time.monotonic() < deadline:
            time.sleep(0.02)
            self.poll()
        return self._proc is None
