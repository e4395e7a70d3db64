"""The runs folder as a list a user manages: one summary a run (family, model, status,
steps, final loss, the best evaluation's loss and ROUGE-L, duration, date, notes) from its job.toml and the two ends of its
events.jsonl, a loss curve for comparing runs, rename and notes. No Qt: the Runs tab
shows it.

events.jsonl grows by a line a step (and a hardware line), so a summary reads only the
first lines (the first 'started') and the last ones (the last progress and how the run
ended), never the middle; summaries are cached while the files are unchanged."""
from __future__ import annotations

import os
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

from ..errors import HintedError
from ..fsutil import atomic_write_text
from .events import decode
from .layout import RunDir, list_runs
from .names import name_problem

NOTES_FILE = "notes.txt"
BLOCK = 1 << 16
# A run whose events were written this recently and that has not ended may still be
# training (from the window or from `lora-studio train`): renaming or deleting it would
# pull the folder from under the engine.
LIVE_SECONDS = 300
ENDS = ("started", "finished", "error")


class RunError(HintedError):
    pass


@dataclass(frozen=True)
class RunSummary:
    root: Path
    family: str              # "text", "sd1", "sdxl", ... as the engine reported it; "" unknown
    model: str               # the base model as job.toml names it
    status: str              # finished, cancelled, failed (kind), running or interrupted, new
    step: int | None         # the last step reported
    total: int | None
    final_loss: float | None  # the loss of that step
    started: float | None    # time of the first 'started' event
    date: float              # that, or when job.toml was written for a run never started
    last_event: float | None
    checkpoint: str          # the latest complete checkpoint's folder name, "" none
    notes: str
    best_eval_loss: float | None = None  # of the best evaluation of a finished run
    best_rougeL: float | None = None     # of that evaluation (generation metrics)

    @property
    def name(self) -> str:
        return self.root.name

    @property
    def duration(self) -> float | None:
        """Seconds from the first start to the last event (pauses between resumes count)."""
        if self.started is None or self.last_event is None:
            return None
        return max(0.0, self.last_event - self.started)

    @property
    def can_resume(self) -> bool:
        return self.status != "finished" and bool(self.checkpoint)

    def looks_live(self, now: float | None = None) -> bool:
        if self.status != "running or interrupted" or self.last_event is None:
            return False
        return (now if now is not None else time.time()) - self.last_event < LIVE_SECONDS


# ---------------------------------------------------------------- reading events

def _lines_backwards(path: Path):
    """The lines of ``path`` from the last to the first, read in blocks from the end."""
    with open(path, "rb") as fh:
        pos = fh.seek(0, os.SEEK_END)
        rest = b""
        while pos > 0:
            step = min(pos, BLOCK)
            pos -= step
            fh.seek(pos)
            block = fh.read(step) + rest
            lines = block.split(b"\n")
            rest = lines[0]  # maybe cut: completed by the next block back
            for line in reversed(lines[1:]):
                yield line
        yield rest


def _decode(raw: bytes) -> dict | None:
    return decode(raw.decode("utf-8", errors="replace"))


def _first_started(path: Path) -> dict | None:
    with open(path, "rb") as fh:
        for raw in fh:
            if b'"started"' in raw:
                ev = _decode(raw)
                if ev is not None and ev["type"] == "started":
                    return ev
    return None


def _last_events(path: Path) -> tuple[dict | None, dict | None, dict | None]:
    """The last progress event, the last of started/finished/error, and the last event."""
    progress = end = last = None
    for raw in _lines_backwards(path):
        ev = _decode(raw)
        if ev is None:
            continue
        last = last or ev
        if progress is None and ev["type"] == "progress" and isinstance(ev.get("step"), int):
            progress = ev
        if end is None and ev["type"] in ENDS:
            end = ev
        if progress is not None and end is not None:
            break
    return progress, end, last


def _status(end: dict | None) -> str:
    if end is None:
        return "new"
    if end["type"] == "finished":
        return "cancelled" if end.get("status") == "cancelled" else "finished"
    if end["type"] == "error":
        return f"failed ({end.get('kind', 'internal')})"
    return "running or interrupted"


def _best(end: dict | None, key: str) -> float | None:
    """A figure of the best evaluation, as the ``finished`` event reports it."""
    value = (end or {}).get(key) if (end or {}).get("type") == "finished" else None
    return float(value) if isinstance(value, (int, float)) else None


def _job_facts(job_toml: Path) -> tuple[str, str]:
    """(model, family) as job.toml names them; read as plain TOML, without validating,
    because a list of 200 runs must not wait on 200 validations."""
    try:
        model = tomllib.loads(job_toml.read_text(encoding="utf-8")).get("model", {})
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return "", ""
    if not isinstance(model, dict):
        return "", ""
    family = model.get("family", "")
    return str(model.get("path", "")), "" if family == "auto" else str(family)


def read_notes(root: Path) -> str:
    try:
        return (Path(root) / NOTES_FILE).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return ""


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def summarize(root: Path) -> RunSummary:
    run = RunDir(Path(root))
    model, family = _job_facts(run.job_toml)
    first = progress = end = last = None
    if run.events.exists():
        first = _first_started(run.events)
        progress, end, last = _last_events(run.events)
    checkpoint = run.latest_checkpoint()
    return RunSummary(
        root=run.root, family=str((first or {}).get("family") or family), model=model,
        status=_status(end),
        step=progress["step"] if progress else None,
        total=progress.get("total") if progress else (end or {}).get("total_steps"),
        final_loss=progress.get("loss") if progress else None,
        started=first.get("time") if first else None,
        date=first["time"] if first and isinstance(first.get("time"), (int, float))
        else _mtime(run.job_toml),
        last_event=last.get("time") if last else None,
        checkpoint=checkpoint.name if checkpoint else "", notes=read_notes(run.root),
        best_eval_loss=_best(end, "best_eval_loss"), best_rougeL=_best(end, "best_rougeL"))


def loss_curve(root: Path) -> tuple[list[int], list[float]]:
    """(steps, losses) of every progress event; where a resumed run repeated steps, the
    later attempt's loss."""
    by_step: dict[int, float] = {}
    events = RunDir(Path(root)).events
    if events.exists():
        with open(events, "rb") as fh:
            for raw in fh:
                if b'"progress"' not in raw:
                    continue  # most lines of a long run; skipped without parsing
                ev = _decode(raw)
                if ev and ev["type"] == "progress" and isinstance(ev.get("step"), int) \
                        and isinstance(ev.get("loss"), (int, float)):
                    by_step[ev["step"]] = float(ev["loss"])
    steps = sorted(by_step)
    return steps, [by_step[s] for s in steps]


# ---------------------------------------------------------------- the catalog

def _stamp(run: RunDir) -> tuple:
    """What changes when a summary would: the files it is read from."""
    out = []
    for path in (run.job_toml, run.events, run.root / NOTES_FILE, run.checkpoints):
        try:
            st = path.stat()
            out.append((st.st_size, st.st_mtime_ns))
        except OSError:
            out.append(None)
    return tuple(out)


class RunCatalog:
    """The runs of one folder, newest first, with summaries cached per run folder."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self._cache: dict[Path, tuple[tuple, RunSummary]] = {}

    def runs(self) -> list[RunSummary]:
        found = []
        for run in list_runs(self.folder):
            stamp = _stamp(run)
            cached = self._cache.get(run.root)
            if cached is None or cached[0] != stamp:
                cached = (stamp, summarize(run.root))
                self._cache[run.root] = cached
            found.append(cached[1])
        return found

    def rename(self, root: Path, new_name: str, in_use: Path | None = None) -> Path:
        """Rename run folder ``root`` to ``new_name`` beside it; returns the new path.
        Refuses names Windows cannot hold, a name in use, and a run that is training."""
        root = Path(root)
        new_name = new_name.strip()
        if new_name == root.name:
            return root
        problem = name_problem(new_name)
        if problem:
            raise RunError("name", problem, "Use letters, digits, spaces, '-', '_' or '.'.")
        self._refuse_live(root, in_use, "rename")
        target = root.with_name(new_name)
        clash = [p for p in root.parent.iterdir()
                 if p.name.casefold() == new_name.casefold() and p != root]
        if clash:  # casefold: Windows and macOS see 'Run' and 'run' as one name
            raise RunError("exists", f"'{clash[0].name}' already exists in {root.parent}.",
                           "Choose another name.")
        try:
            os.rename(root, target)
        except OSError as exc:
            raise RunError("io", f"Could not rename {root.name}: {exc.strerror or exc}.",
                           "Close programs that have files of this run open, then try "
                           "again.") from None
        self._cache.pop(root, None)
        return target

    def check_removable(self, root: Path, in_use: Path | None = None) -> None:
        self._refuse_live(root, in_use, "delete")

    def _refuse_live(self, root: Path, in_use: Path | None, what: str) -> None:
        if in_use is not None and Path(in_use) == Path(root):
            raise RunError("busy", f"{root.name} is training in this window.",
                           f"Stop it first, then {what} it.")
        if summarize(root).looks_live():
            raise RunError("busy", f"{root.name} wrote events in the last "
                                   f"{LIVE_SECONDS // 60} minutes and has not ended: it may "
                                   "still be training.",
                           f"Stop it first (or wait {LIVE_SECONDS // 60} minutes if its "
                           f"process is gone), then {what} it.")

    def save_notes(self, root: Path, text: str) -> None:
        path = Path(root) / NOTES_FILE
        if not text.strip():
            path.unlink(missing_ok=True)
            return
        try:
            atomic_write_text(path, text)
        except OSError as exc:
            raise RunError("io", f"Could not save the notes in {path}: {exc.strerror or exc}.",
                           "Check that the runs folder is writable.") from None
