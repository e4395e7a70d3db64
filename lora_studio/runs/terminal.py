"""Engine events drawn on a terminal (``lora-studio train`` and ``demo``)."""
from __future__ import annotations

import os
import sys
from typing import IO


def format_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class TerminalProgress:
    """Events as a terminal display: progress redraws one ``\\r`` line
    (step/total, loss, it/s, ETA); other events print on lines of their own.
    Into a file or a pipe (a log on a headless box) progress is a plain line
    every 5 % of the run instead, so the log stays readable."""

    def __init__(self, out: IO[str] | None = None):
        self.out = out or sys.stdout
        self.interactive = bool(getattr(self.out, "isatty", lambda: False)())
        self._open_line = False
        self.last: dict | None = None  # the finished or error event, when one came

    def _line(self, text: str) -> None:
        if self._open_line:
            self.out.write("\n")
            self._open_line = False
        self.out.write(text + "\n")
        self.out.flush()

    def _phase(self, ev: dict) -> None:
        """A phase with a count redraws its line (interactive) or prints when it starts
        and ends (a log); one without prints once."""
        name, total = ev["phase"], ev.get("total")
        if total is None:
            self._line(f"{name}...")
            return
        text = f"{name} {ev['done']}/{total}"
        if self.interactive:
            self.out.write(f"\r{text}   ")
            self.out.flush()
            self._open_line = True
        elif ev["done"] in (0, total):
            self._line(text)

    def __call__(self, ev: dict) -> None:
        kind = ev["type"]
        if kind == "progress":
            text = (f"step {ev['step']}/{ev['total']}  loss {ev['loss']:.4f}  "
                    f"{ev['it_s']:.2f} it/s  ETA {format_duration(ev['eta_s'])}")
            if self.interactive:
                self.out.write(f"\r{text}   ")
                self.out.flush()
                self._open_line = True
            elif ev["step"] % max(1, ev["total"] // 20) == 0 or ev["step"] == ev["total"]:
                self._line(text)
        elif kind == "phase":
            self._phase(ev)
        elif kind == "started":
            self._line(f"Training {ev.get('total_steps')} steps on {ev.get('device')} "
                       f"({ev.get('dataset_size')} records) -> {ev.get('run_dir')}")
        elif kind == "log":
            self._line(ev.get("message", ""))
        elif kind == "sample":
            for s in ev.get("samples", []):
                self._line(f"sample @ step {ev['step']}: {s['prompt']!r} -> {s['text']!r}")
            if ev.get("kind") == "image":
                self._line(f"sample @ step {ev['step']}: {ev['prompt']!r} -> {ev['path']}")
        elif kind == "checkpoint":
            self._line(f"checkpoint: {ev['path']}")
        elif kind == "finished":
            self.last = ev
            where = ev.get("final") or ev.get("checkpoint") or ""
            self._line(f"{ev['status']} at step {ev.get('step')}: {where}")
            if ev.get("files"):  # last, where a user looks for what to load in their tool
                self._line(f"Exported to {os.path.commonpath(ev['files'])}")
        elif kind == "error":
            self.last = ev
            self._line(f"error ({ev['kind']}): {ev['message']}")
            if ev.get("hint"):
                self._line(f"  hint: {ev['hint']}")
