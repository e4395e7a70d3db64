"""The window's side of the playground process: starts ``python -m
lora_studio.playground`` on first use, sends it requests, reads its events in a thread
of its own, and stops it when it has been idle for a while or a training run needs the
GPU. No torch, no Qt: the events wait in ``events`` (a queue) for the window to take.

What the process holds (the base model, the adapters, the ones in use) is remembered
as the requests that built it: a process started again after an idle stop, a training
run or a crash gets them first, so the next generation answers as before.
"""
from __future__ import annotations

import queue
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from . import launch
from .playground_protocol import MODULE, STATE_REQUESTS, decode_event, encode, reply

IDLE_S = 600.0          # stopped after this long without a request or an event
SHUTDOWN_GRACE_S = 5.0
STDERR_NAME = "lora-studio-playground.log"


def playground_command() -> list[str]:
    return [sys.executable, "-m", MODULE]


def remember(state: list[dict], req: dict) -> list[dict]:
    """The state requests after ``req``: a base replaces everything, an adapter replaces
    one of the same name, a choice of adapters the previous choice."""
    kind = req["type"]
    if kind == "load_base":
        return [req]
    if kind == "load_adapter":
        return [r for r in state if not (r["type"] == kind and r.get("name") == req.get("name"))
                ] + [req]
    if kind == "set_adapters":
        return [r for r in state if r["type"] != kind] + [req]
    return state


class PlaygroundProcess:
    """``events`` receives ``(event dict)``s, in order, from a reading thread, including
    an ``exited`` event (code, reason) whenever the process ends."""

    def __init__(self, command: list[str] | None = None, idle_s: float = IDLE_S,
                 stderr_path: Path | None = None, clock: Callable[[], float] = time.monotonic):
        self.command = command or playground_command()
        self.idle_s = idle_s
        self.stderr_path = stderr_path or Path(tempfile.gettempdir()) / STDERR_NAME
        self.clock = clock
        self.events: queue.SimpleQueue = queue.SimpleQueue()
        self.state: list[dict] = []
        self.starts = 0
        self._proc: subprocess.Popen | None = None
        self._ending_reason: str | None = None  # why we are stopping it; None: it died
        self._lock = threading.Lock()
        self.last_used = clock()

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self.running else None

    # -- sending -------------------------------------------------------------
    def send(self, req: dict) -> None:
        """Start the process when needed (with the remembered state), then send ``req``."""
        self.last_used = self.clock()
        if req["type"] in STATE_REQUESTS:
            self.state = remember(self.state, req)
        if not self.running:
            if req["type"] in ("stop", "shutdown"):
                return
            self._start()  # sends the state, which already holds req when it is one
            if req["type"] in STATE_REQUESTS:
                return
        if not self._write(req):
            self._start()
            if req["type"] not in STATE_REQUESTS:
                self._write(req)

    def _write(self, req: dict) -> bool:
        proc = self._proc
        try:
            assert proc is not None and proc.stdin is not None
            proc.stdin.write(encode(req) + "\n")
            proc.stdin.flush()
            return True
        except (OSError, ValueError, AssertionError):  # it died since the last look
            return False

    def _start(self) -> None:
        with self._lock:
            self._ending_reason = None
            self.stderr_path.parent.mkdir(parents=True, exist_ok=True)
            try:
                with open(self.stderr_path, "ab") as err:
                    proc = subprocess.Popen(
                        self.command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err,
                        env=launch.engine_env(), text=True, encoding="utf-8", errors="replace",
                        bufsize=1, **launch.group_options())
            except OSError as exc:
                self._proc = None
                self.events.put(reply("error", kind="internal",
                                      message=f"Could not start the playground process: {exc}",
                                      hint="Check that Python and LoRA Studio are installed "
                                           "correctly."))
                return
            self._proc = proc
            self.starts += 1
            threading.Thread(target=self._read, args=(proc,), daemon=True,
                             name="playground-events").start()
        for req in self.state:
            self._write(req)

    # -- reading (its own thread) --------------------------------------------
    def _read(self, proc: subprocess.Popen) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            ev = decode_event(line)
            if ev is not None:
                self.last_used = self.clock()
                self.events.put(ev)
        code = proc.wait()
        launch.signal_group(proc, hard=True)  # whatever it started goes with it
        reason = self._ending_reason if proc is self._proc else "replaced"
        self.events.put({"type": "exited", "pid": proc.pid, "code": code,
                         "reason": reason or "crashed",
                         "hint": "" if reason else self._tail()})

    def _tail(self, n: int = 12) -> str:
        try:
            lines = self.stderr_path.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-n:])

    # -- stopping ------------------------------------------------------------
    def stop(self, reason: str = "shutdown", grace_s: float = SHUTDOWN_GRACE_S) -> None:
        """Ask the process to exit, force it after ``grace_s``; the state is kept for
        the next start."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        self._ending_reason = reason
        self._write({"type": "shutdown"})
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            launch.signal_group(proc, hard=True)
            proc.wait()

    def stop_if_idle(self) -> bool:
        """Call now and then: stops the process after idle_s without traffic."""
        if self.running and self.clock() - self.last_used >= self.idle_s:
            self.stop("idle")
            return True
        return False
