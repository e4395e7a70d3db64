"""Child processes behind the window: the training engine and the exporter.

``TrainingWorker`` starts ``python -m lora_studio.engine RUN_DIR`` and reads its
stdout line by line in its own thread, so a crash, an out-of-memory error or a hung
CUDA call in the child never blocks or takes down the window. The thread hands the
decoded events to the UI thread through a queue that a 20 ms timer drains, and the
signals are emitted there: Python objects never travel through a cross-thread Qt
signal (PySide6 6.8+ can corrupt reference counts doing that, PYSIDE-3124), and a
burst of events arrives as one batch instead of one queued call each.
"""
from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
import time
from collections import deque
from pathlib import Path

from PySide6.QtCore import QThread, QTimer, Signal

from ..fsutil import atomic_write_text, sha256_file
from ..config.jobfile import JobFileError, read_job_toml
from ..runs import launch
from ..runs.events import EventWriter, decode, event
from ..runs.layout import RunDir

STOP_GRACE_S = 20.0   # the engine checks STOP once per step; a slow step may take a while
KILL_GRACE_S = 5.0
STDERR_NAME = "engine-stderr.log"
DRAIN_MS = 20
MAX_BATCH = 5000  # events handled per drain, so a flood still lets the UI paint


def engine_command(run_dir: Path, resume: Path | None = None) -> list[str]:
    """One engine process, or one per GPU through accelerate launch ("GPUs" setting)."""
    try:
        training = read_job_toml(Path(run_dir) / "job.toml")[0].training
    except JobFileError:  # the engine itself reports the unreadable job.toml
        return launch.engine_command(run_dir, resume=resume)
    return launch.engine_command(run_dir, training.processes, training.mixed_precision, resume)


def child_env() -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONIOENCODING": "utf-8"}


def tail_lines(path: Path, n: int = 15) -> list[str]:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return [line.rstrip("\n") for line in deque(fh, maxlen=n)]
    except OSError:
        return []


class TrainingWorker(QThread):
    """``event`` carries each event dict, in order; ``exited`` the exit code, after
    the last event. Both are emitted on the UI thread."""

    event = Signal(dict)
    exited = Signal(int)

    def __init__(self, run_dir: Path | str, resume: Path | str | None = None,
                 command: list[str] | None = None, stop_grace_s: float = STOP_GRACE_S,
                 parent=None):
        super().__init__(parent)
        self.run_dir = RunDir(Path(run_dir))
        self.resume = Path(resume) if resume else None
        self.command = command or engine_command(self.run_dir.root, self.resume)
        self.stop_grace_s = stop_grace_s
        self.kill_grace_s = KILL_GRACE_S
        self.stop_requested = False
        self._proc: subprocess.Popen | None = None
        self._timers: list[threading.Timer] = []
        self._ended = False  # a finished or error event was seen
        self._group_done = threading.Event()  # the engine's whole process group has ended
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._drain_timer = QTimer(self)  # lives in the UI thread, like this object
        self._drain_timer.setInterval(DRAIN_MS)
        self._drain_timer.timeout.connect(self.drain)

    @property
    def stop_file(self) -> Path:
        return self.run_dir.stop_file

    @property
    def stderr_path(self) -> Path:
        return self.run_dir.root / STDERR_NAME

    # -- UI thread -----------------------------------------------------------
    def start(self) -> None:
        launch.clear_stale_stop(self.run_dir)
        super().start()
        self._drain_timer.start()

    def drain(self) -> None:
        """Emit the signals for what the reading thread queued."""
        for _ in range(MAX_BATCH):
            try:
                kind, item = self._queue.get_nowait()
            except queue.Empty:
                return
            if kind == "event":
                self.event.emit(item)
            elif kind == "exit":
                self._drain_timer.stop()
                self.exited.emit(item)
                return

    def stop(self) -> None:
        """Ask the engine to stop after its current step (it saves a checkpoint);
        terminate it if it has not ended after the grace period."""
        if self.stop_requested:
            return
        self.stop_requested = True
        try:
            atomic_write_text(self.stop_file, "stop requested by the window\n")
        except OSError:
            self._terminate()
            return
        self._later(self.stop_grace_s, self._terminate)

    def _later(self, seconds: float, fn) -> None:
        timer = threading.Timer(seconds, fn)
        timer.daemon = True
        self._timers.append(timer)
        timer.start()

    # The engine runs in a process group of its own (accelerate launch starts one
    # process per GPU under it): terminate and kill go to the whole group, also once
    # its leader is gone, until the worker has seen the group end.
    def _terminate(self) -> None:
        proc = self._proc
        if proc is not None and not self._group_done.is_set():
            launch.signal_group(proc, hard=False)
            self._later(self.kill_grace_s, self._kill)

    def _kill(self) -> None:
        proc = self._proc
        if proc is not None and not self._group_done.is_set():
            launch.signal_group(proc, hard=True)

    # -- worker thread -------------------------------------------------------
    def _dispatch(self, ev: dict) -> None:
        if ev["type"] in ("finished", "error"):
            self._ended = True
        self._queue.put(("event", ev))

    def _record(self, ev: dict) -> None:
        """An event the window made up (a crash, a forced stop): also written to
        events.jsonl so the runs list shows how the run ended."""
        try:
            with EventWriter(self.run_dir.events) as write:
                write(ev)
        except OSError:
            pass
        self._dispatch(ev)

    def run(self) -> None:
        try:
            with open(self.stderr_path, "ab") as err:
                self._proc = subprocess.Popen(
                    self.command, stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL,
                    env=child_env(), text=True, encoding="utf-8", errors="replace", bufsize=1,
                    **launch.group_options())
        except OSError as exc:
            self._record(event("error", kind="internal",
                               message=f"Could not start the training process: {exc}",
                               hint="Check that Python and LoRA Studio are installed correctly."))
            self._queue.put(("exit", -1))
            return
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            ev = decode(line)
            if ev is not None:
                self._dispatch(ev)
            elif line.strip():  # a library printing to stdout: shown, not recorded
                self._queue.put(("event", {"type": "log", "level": "info",
                                           "message": line.rstrip()}))
        code = self._proc.wait()
        for timer in self._timers:
            timer.cancel()
        # Output closed and the leader gone: whatever is left of its group (a process
        # that let go of stdout) has nobody reading it and would hold the GPU.
        launch.signal_group(self._proc, hard=True)
        self._group_done.set()
        if not self._ended:
            self._record(self._ending(code))
        self._queue.put(("exit", code))

    def _ending(self, code: int) -> dict:
        if self.stop_requested:
            return event("finished", status="cancelled",
                         message="Stopped: the training process was ended without saving "
                                 "a checkpoint for this step.")
        tail = tail_lines(self.stderr_path)
        detail = ("Last lines of its error output:\n" + "\n".join(tail)) if tail else \
            f"Its error output is empty; see {self.stderr_path}."
        return event("error", kind="internal",
                     message=f"The training process stopped unexpectedly (exit code {code}).",
                     hint=detail)


def _snapshot(folder: Path) -> dict[Path, float]:
    if not folder.is_dir():
        return {}
    return {p: p.stat().st_mtime for p in folder.rglob("*") if p.is_file()}


def printed_files(stdout: str) -> list[Path]:
    """The files `lora-studio export` reports, one a line ("PATH" or
    "PATH  (format, SHA-256 ...)"); a folder stands for the files in it."""
    found: list[Path] = []
    for line in stdout.splitlines():
        path = Path(line.split("  (", 1)[0].strip())
        if not line.strip() or not path.is_absolute():
            continue
        if path.is_file():
            found.append(path)
        elif path.is_dir():
            found.extend(sorted(p for p in path.rglob("*") if p.is_file()))
    return found


def export_command(run_dir: Path, fmt: str | None = None) -> list[str]:
    """`lora-studio export RUN_DIR [--format FMT]` (runs.exports.FORMATS; None: the default)."""
    return [sys.executable, "-m", "lora_studio", "export", str(run_dir),
            *(["--format", fmt] if fmt else [])]


def export_options(output: Path | None = None, name: str | None = None,
                   precision: str | None = None) -> list[str]:
    """`lora-studio export`'s --output, --name and --precision, for those given."""
    return [*(["--output", str(output)] if output is not None else []),
            *(["--name", name] if name else []),
            *(["--precision", precision] if precision else [])]


class ExportWorker(QThread):
    """Runs the exporter as a child process. When the thread has finished, ``files``
    holds [(path, sha256), ...] of what it wrote in the run's exports/ folder, or
    ``error`` the exporter's message (read them on QThread.finished)."""

    def __init__(self, run_dir: Path | str, fmt: str | None = None,
                 command: list[str] | None = None, parent=None):
        super().__init__(parent)
        self.run_dir = RunDir(Path(run_dir))
        self.command = command or export_command(self.run_dir.root, fmt)
        self.files: list[tuple[str, str]] = []
        self.error = ""

    def run(self) -> None:
        before = _snapshot(self.run_dir.exports)
        started = time.time()
        try:
            proc = subprocess.run(self.command, capture_output=True, text=True, encoding="utf-8",
                                  errors="replace", env=child_env(), stdin=subprocess.DEVNULL,
                                  creationflags=launch.NO_WINDOW)
        except OSError as exc:
            self.error = f"Could not start the exporter: {exc}"
            return
        if proc.returncode != 0:
            lines = (proc.stderr.strip() or proc.stdout.strip()).splitlines()[-12:]
            self.error = f"Export failed (exit code {proc.returncode}).\n" + "\n".join(lines)
            return
        written = printed_files(proc.stdout)
        if not written:  # an exporter that does not list what it wrote
            after = _snapshot(self.run_dir.exports)
            written = sorted(p for p, mtime in after.items()
                             if before.get(p) != mtime or mtime >= started - 2)
        if not written:
            self.error = f"The exporter ended without writing a file in {self.run_dir.exports}."
            return
        self.files = [(str(p), sha256_file(p)) for p in written]
