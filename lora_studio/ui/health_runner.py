"""Runs the dataset health check (decode every image, hash same-size files) in a
child process, `python -m lora_studio.data.health`. In a thread it would hold the
GIL for most of the decode and make every GUI-thread system call wait its turn
(saving 10,000 captions went from 3 s to 30 s); a child process also keeps a
decoder crash on a hostile file away from the window. A reader thread only
collects output lines; a QTimer hands them over on the GUI thread."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from PySide6.QtCore import QObject, QTimer

import lora_studio

from ..data.health import ImageCheck


class HealthRunner(QObject):
    """start(paths) checks {index: path}; on_checks(dict), on_duplicates(list) and
    on_progress(done, total, error) are called on the GUI thread."""

    def __init__(self, on_checks, on_duplicates, on_progress, parent=None, poll_ms: int = 100):
        super().__init__(parent)
        self.on_checks, self.on_duplicates, self.on_progress = on_checks, on_duplicates, on_progress
        self._proc: subprocess.Popen | None = None
        self._lines: list[str] = []
        self._lock = threading.Lock()
        self._reader: threading.Thread | None = None
        self._paths_file: Path | None = None
        self._done = self._total = 0
        self._timer = QTimer(self)
        self._timer.setInterval(poll_ms)
        self._timer.timeout.connect(self.poll)

    def start(self, paths: dict[int, Path]) -> None:
        self.stop()
        if not paths:
            return
        fd, name = tempfile.mkstemp(prefix="lora-studio-health-", suffix=".json")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump({k: str(p) for k, p in paths.items()}, fh)
        self._paths_file = Path(name)
        env = dict(os.environ)
        package_root = str(Path(lora_studio.__file__).resolve().parents[1])
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "lora_studio.data.health", name], stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, env=env, encoding="utf-8",
            creationflags=getattr(subprocess, "CREATE_NO_WINDOW", 0))
        self._done, self._total = 0, len(paths)
        self._lines = []
        self._reader = threading.Thread(target=self._read, args=(self._proc,), daemon=True)
        self._reader.start()
        self._timer.start()

    def _read(self, proc: subprocess.Popen) -> None:
        for line in proc.stdout:
            with self._lock:
                self._lines.append(line)

    @property
    def running(self) -> bool:
        return self._proc is not None

    def poll(self) -> None:
        if self._proc is None:
            return
        with self._lock:
            lines, self._lines = self._lines, []
        for line in lines:
            msg = json.loads(line)
            if "duplicates" in msg:
                self.on_duplicates(msg["duplicates"])
            else:
                checks = {int(k): ImageCheck(w, h, err) for k, (w, h, err) in msg["checks"].items()}
                self._done += len(checks)
                self.on_checks(checks)
                self.on_progress(self._done, self._total, "")
        if self._proc.poll() is not None and not self._reader.is_alive():
            with self._lock:
                rest = self._lines
            if rest:
                return  # hand over the last lines on the next tick
            error = ""
            if self._done < self._total:
                error = (f"The health check stopped early (exit code {self._proc.returncode}); "
                         f"images not checked are shown without health marks.")
            self._finish()
            if error:
                self.on_progress(self._total, self._total, error)

    def _finish(self) -> None:
        self._timer.stop()
        if self._proc is not None:
            self._proc.stdout.close()
            self._proc = None
        if self._paths_file is not None:
            self._paths_file.unlink(missing_ok=True)
            self._paths_file = None

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
            if self._reader is not None:
                self._reader.join(5)
            self._finish()

    def shutdown(self) -> None:
        self.stop()
