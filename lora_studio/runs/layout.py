"""The run directory (DESIGN.md):

    runs/<name>-<yyyymmdd-hhmmss>/
      job.toml  events.jsonl  checkpoints/  samples/  final/  exports/
      playground/   saved chats and image grids (made by the first save)
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from .events import read_events

SUBDIRS = ("checkpoints", "samples", "final", "exports")
# Its presence asks the engine to stop. Only a launcher removes it, before starting the
# engine: a Stop pressed while the engine is still starting up must not be lost.
STOP_FILE = "STOP"


@dataclass(frozen=True)
class RunDir:
    root: Path

    @property
    def job_toml(self) -> Path:
        return self.root / "job.toml"

    @property
    def events(self) -> Path:
        return self.root / "events.jsonl"

    @property
    def stop_file(self) -> Path:
        return self.root / STOP_FILE

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def samples(self) -> Path:
        return self.root / "samples"

    @property
    def final(self) -> Path:
        return self.root / "final"

    @property
    def exports(self) -> Path:
        return self.root / "exports"

    @property
    def playground(self) -> Path:
        return self.root / "playground"

    def ensure(self) -> "RunDir":
        self.root.mkdir(parents=True, exist_ok=True)
        for sub in SUBDIRS:
            (self.root / sub).mkdir(exist_ok=True)
        return self

    def latest_checkpoint(self) -> Path | None:
        """The newest complete checkpoint folder (``step-000123``), or None."""
        if not self.checkpoints.is_dir():
            return None
        done = [p for p in self.checkpoints.iterdir()
                if p.is_dir() and p.name.startswith("step-") and (p / "COMPLETE").exists()]
        return max(done, key=lambda p: int(p.name.split("-")[1]), default=None)

    def status(self) -> str:
        """'finished', 'failed', 'cancelled', 'running or interrupted' or 'new', from the events."""
        last = None
        for ev in read_events(self.events):
            if ev["type"] in ("started", "finished", "error"):
                last = ev
        if last is None:
            return "new"
        if last["type"] == "finished":
            return "cancelled" if last.get("status") == "cancelled" else "finished"
        if last["type"] == "error":
            return "failed"
        return "running or interrupted"


def new_run_dir(output_dir: str | Path, name: str, now: float | None = None) -> RunDir:
    """Create ``<output_dir>/<name>-<yyyymmdd-hhmmss>``; a suffix keeps two runs in the
    same second apart."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
    base = Path(output_dir) / f"{name}-{stamp}"
    base.parent.mkdir(parents=True, exist_ok=True)
    n = 1
    while True:
        root = base if n == 1 else base.with_name(f"{base.name}-{n}")
        try:
            root.mkdir()  # atomic: of two runs started together, one gets it
        except FileExistsError:
            n += 1
            continue
        return RunDir(root).ensure()


def list_runs(output_dir: str | Path) -> list[RunDir]:
    """Run folders under output_dir, newest first."""
    folder = Path(output_dir)
    if not folder.is_dir():
        return []
    runs = [RunDir(p) for p in folder.iterdir() if (p / "job.toml").exists()]
    return sorted(runs, key=lambda r: r.root.stat().st_mtime, reverse=True)
