"""Engine events: one JSON object per line, each with a ``type``.

Types (DESIGN.md): phase (what is happening before the first step, with done/total
when it counts), started, progress, eval (held-out loss, the best so far), log, sample,
checkpoint, hardware, finished, error. Error kinds: config, data, oom, nan, io, internal.
A cancelled run ends with ``finished`` carrying ``status="cancelled"`` and the
checkpoint it left; a completed one with ``status="completed"``.
"""
from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

EVENT_TYPES = ("phase", "started", "progress", "eval", "log", "sample", "checkpoint", "hardware",
               "finished", "error")
ERROR_KINDS = ("config", "data", "oom", "nan", "io", "internal")

Emit = Callable[[dict], None]


def event(type_: str, **fields: Any) -> dict:
    if type_ not in EVENT_TYPES:
        raise ValueError(f"unknown event type {type_!r}")
    if type_ == "error" and fields.get("kind") not in ERROR_KINDS:
        raise ValueError(f"unknown error kind {fields.get('kind')!r}")
    return {"type": type_, "time": round(time.time(), 3), **fields}


def encode(ev: dict) -> str:
    return json.dumps(ev, ensure_ascii=False, separators=(",", ":"), allow_nan=False,
                      default=str)


def decode(line: str) -> dict | None:
    """One line of an event stream, or None for a line that is not an event
    (a library printing to stdout, a line cut by a crash)."""
    line = line.strip()
    if not line.startswith("{"):
        return None
    try:
        ev = json.loads(line)
    except json.JSONDecodeError:
        return None
    return ev if isinstance(ev, dict) and ev.get("type") in EVENT_TYPES else None


def drop_torn_tail(path: Path) -> int:
    """Cut a last line that has no newline (the writer was killed or the disk filled up
    mid-line), so that the next event starts a line of its own instead of being glued
    to the fragment and lost with it. Returns the bytes dropped."""
    try:
        fh = open(path, "r+b")
    except FileNotFoundError:
        return 0
    with fh:
        end = fh.seek(0, os.SEEK_END)
        pos = end
        while pos > 0:
            step = min(pos, 1 << 16)
            fh.seek(pos - step)
            block = fh.read(step)
            if pos == end and block.endswith(b"\n"):
                return 0
            cut = block.rfind(b"\n")
            if cut >= 0:
                pos = pos - step + cut + 1
                break
            pos -= step
        fh.truncate(pos)
        return end - pos


class EventWriter:
    """Appends each event to ``events.jsonl`` (flushed, so a crash loses nothing
    written) and optionally echoes it to a stream (the engine's stdout)."""

    def __init__(self, path: Path, echo: IO[str] | None = None, enabled: bool = True):
        self.path = Path(path)
        self.echo = echo
        self.enabled = enabled  # False on non-main processes of a multi-GPU run
        self._file = None
        if enabled:
            drop_torn_tail(self.path)
            self._file = open(self.path, "a", encoding="utf-8", newline="\n")

    def __call__(self, ev: dict) -> None:
        if not self.enabled:
            return
        line = encode(ev)
        assert self._file is not None
        self._file.write(line + "\n")
        self._file.flush()
        if self.echo is not None:
            self.echo.write(line + "\n")
            self.echo.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> "EventWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def stdout_events() -> Emit:
    """The emit of a child process whose stdout carries only events (captioning,
    playground): libraries print progress bars and notices to stdout, so from now on
    sys.stdout is stderr, and each event is one line on the real stdout, written by one
    thread at a time."""
    out = sys.stdout
    sys.stdout = sys.stderr
    lock = threading.Lock()

    def emit(ev: dict) -> None:
        with lock:
            out.write(encode(ev) + "\n")
            out.flush()
    return emit


def read_events(path: Path) -> Iterator[dict]:
    """Replay a run's ``events.jsonl``; skips lines that do not parse (a cut last line)."""
    path = Path(path)
    if not path.exists():
        return
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            ev = decode(line)
            if ev is not None:
                yield ev
