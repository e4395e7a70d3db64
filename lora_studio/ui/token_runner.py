"""Runs the token view's scan in a child process, `python -m
lora_studio.engine.text.token_view`: the tokenizer needs transformers, which the
window never imports. The scan request and the records asked for go in on the
child's stdin; a reader thread collects its JSON lines and a QTimer hands them to
on_message on the GUI thread (as ui/health_runner.py does). stop() kills the child,
which is how a scan is cancelled."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

from PySide6.QtCore import QObject, QTimer

import lora_studio

MODULE = "lora_studio.engine.text.token_view"
STDERR_KEPT = 4000  # characters of the child's stderr kept to explain a crash


class TokenViewRunner(QObject):
    """start(request) scans; ask(line) asks for the record at that line; every message
    from the child reaches on_message(dict) on the GUI thread, and a child that ends
    without saying so sends {"type": "error", ...}."""

    def __init__(self, on_message, parent=None, poll_ms: int = 100):
        super().__init__(parent)
        self.on_message = on_message
        self._proc: subprocess.Popen | None = None
        self._lines: list[str] = []
        self._stderr = ""
        self._lock = threading.Lock()
        self._readers: list[threading.Thread] = []
        self._finished = False  # the child sent "done" or "error"
        self._timer = QTimer(self)
        self._timer.setInterval(poll_ms)
        self._timer.timeout.connect(self.poll)

    @property
    def running(self) -> bool:
        return self._proc is not None

    def start(self, request: dict) -> None:
        self.stop()
        env = dict(os.environ)
        package_root = str(Path(lora_studio.__file__).resolve().parents[1])
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
        env["PYTHONIOENCODING"] = "utf-8"
        self._proc = subprocess.Popen(
            [sys.executable, "-m", MODULE], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, env=env, encoding="utf-8",
            creationflags=getattr(subprocess, "CREATE_NO_WINDOW", 0))
        self._lines, self._stderr, self._finished = [], "", False
        self._readers = [threading.Thread(target=self._read, args=(self._proc,), daemon=True),
                         threading.Thread(target=self._read_stderr, args=(self._proc,), daemon=True)]
        for reader in self._readers:
            reader.start()
        self._send(request)
        self._timer.start()

    def ask(self, line: int) -> None:
        if self._proc is not None:
            self._send({"line": line})

    def ask_index(self, index: int) -> None:
        """The record at that place in the scan (a mixed-in one has no line of the file)."""
        if self._proc is not None:
            self._send({"index": index})

    def _send(self, msg: dict) -> None:
        try:
            self._proc.stdin.write(json.dumps(msg) + "\n")
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
            try:
                msg = json.loads(line)
            except ValueError:
                continue  # a library printed to stdout; only our JSON lines are messages
            self._finished |= msg.get("type") in ("done", "error")
            self.on_message(msg)
            if self._proc is None:  # on_message stopped or restarted the scan
                return
        if self._proc.poll() is not None and not any(r.is_alive() for r in self._readers):
            with self._lock:
                if self._lines:
                    return  # hand over the last lines on the next tick
                stderr = self._stderr.strip()
            code, finished = self._proc.returncode, self._finished
            self._finish()
            if not finished:
                last = stderr.splitlines()[-1] if stderr else f"exit code {code}"
                self.on_message({"type": "error", "message": f"The token view stopped: {last}",
                                 "hint": "The full output of the tokenizer process:\n" + stderr})

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
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
            for reader in self._readers:
                reader.join(5)
            self._finish()

    def shutdown(self) -> None:
        self.stop()
