"""Runs the dataset health check (decode every image, hash same-size files) in a
child process, `python -m lora_studio.data.health`. In a thread it would hold the
GIL for most of the decode and make every GUI-thread system call wait its turn
(saving 10,000 captions went from 3 s to 30 s); a child process also keeps a
decoder crash on a hostile file away from the window. Its output lines reach the
GUI thread through a QTimer (ui/child_lines.py)."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from ..data.health import ImageCheck
from .child_lines import ChildLines, python_module
from .child_runner import ChildRunner


class HealthRunner(ChildRunner):
    """start(paths) checks {index: path}; on_checks(dict), on_duplicates(list) and
    on_progress(done, total, error) are called on the GUI thread."""

    def __init__(self, on_checks, on_duplicates, on_progress, parent=None, poll_ms: int = 100):
        super().__init__(parent, poll_ms)
        self.on_checks, self.on_duplicates, self.on_progress = on_checks, on_duplicates, on_progress
        self._paths_file: Path | None = None
        self._done = self._total = 0

    def start(self, paths: dict[int, Path]) -> None:
        self.stop()
        if not paths:
            return
        fd, name = tempfile.mkstemp(prefix="lora-studio-health-", suffix=".json")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump({k: str(p) for k, p in paths.items()}, fh)
        self._paths_file = Path(name)
        self._run(ChildLines(python_module("lora_studio.data.health", name)))
        self._done, self._total = 0, len(paths)

    def poll(self) -> None:
        if self._child is None:
            return
        for line in self._child.take():
            msg = json.loads(line)
            if "duplicates" in msg:
                self.on_duplicates(msg["duplicates"])
            else:
                checks = {int(k): ImageCheck(w, h, err) for k, (w, h, err) in msg["checks"].items()}
                self._done += len(checks)
                self.on_checks(checks)
                self.on_progress(self._done, self._total, "")
        if self._child.ended():
            error = ""
            if self._done < self._total:
                error = (f"The health check stopped early (exit code {self._child.returncode}); "
                         f"images not checked are shown without health marks.")
            self._finish()
            if error:
                self.on_progress(self._total, self._total, error)

    def _finish(self) -> None:
        super()._finish()
        if self._paths_file is not None:
            self._paths_file.unlink(missing_ok=True)
            self._paths_file = None
