"""The logic behind ``lora-studio train``, ``demo`` and ``export``: build the run
folder, run the engine in this process, and draw its events as a one-line progress
bar. Torch is imported only when training starts, so the other commands stay fast."""
from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import IO

from ..config.fields import get_in, set_in
from ..config.findings import Finding
from ..config.jobfile import read_job_toml, write_job_toml
from ..config.paths import resolve_local_path
from ..config.presets import RELATIVE_TO_PRESET, builtin_dir, read_preset
from ..config.schema import JobConfig
from ..runs.events import EventWriter
from ..runs.layout import RunDir, new_run_dir

DEMO_PRESETS = {"text": "demo-text-tiny.toml", "image": "demo-image-tiny.toml"}


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
        elif kind == "error":
            self.last = ev
            self._line(f"error ({ev['kind']}): {ev['message']}")
            if ev.get("hint"):
                self._line(f"  hint: {ev['hint']}")


def anchor_paths(data: dict, base_dir: Path) -> dict:
    """Make model / dataset paths that exist relative to the preset absolute, so the
    run's job.toml works from anywhere."""
    for key in RELATIVE_TO_PRESET:
        value = get_in(data, key)
        if isinstance(value, str) and value:
            found = resolve_local_path(value, base_dir)
            if found is not None:
                set_in(data, key, str(found.resolve()))
    return data


def job_from_preset(preset_path: Path, overrides: list[str]) -> tuple[JobConfig, list[Finding]]:
    from ..cli import machine_gpu
    from ..config.fields import apply_overrides
    from ..config.validate import check
    preset = read_preset(preset_path)
    data = anchor_paths(apply_overrides(preset.data, overrides), preset.base_dir)
    job, findings = check(data, gpu=machine_gpu(), base_dir=preset.base_dir)
    return job, preset.findings + findings


def run_in_process(job: JobConfig, run: RunDir, resume: Path | None = None,
                   display: Callable[[dict], None] | None = None) -> dict | None:
    """Run the engine here with Ctrl+C as a clean cancel; returns the last
    ``finished`` / ``error`` event."""
    from ..runs.launch import clear_stale_stop
    from .control import StopRequest
    from .run import run as run_job
    display = display or TerminalProgress()
    clear_stale_stop(run)
    last: dict | None = None
    with EventWriter(run.events) as writer, StopRequest(None, run.root).handling_signals() as stop:
        def emit(ev: dict) -> None:
            nonlocal last
            writer(ev)
            display(ev)
            if ev["type"] in ("finished", "error"):
                last = ev
        run_job(job, run.root, emit, stop, resume)
    return last


def start_run(job: JobConfig, run: RunDir, resume: Path | None = None) -> dict | None:
    """In this process, or, for several processes, through accelerate launch."""
    if job.training.processes <= 1:
        return run_in_process(job, run, resume)
    from ..runs.launch import engine_command, follow_engine
    command = engine_command(run.root, job.training.processes, job.training.mixed_precision, resume)
    return follow_engine(command, run, TerminalProgress())


def exit_code(last: dict | None) -> int:
    return 0 if last is not None and last["type"] == "finished" else 1


def train(preset_path: Path | None, overrides: list[str], resume: Path | None,
          print_findings: Callable[[list[Finding]], None]) -> int:
    """``lora-studio train``: 0 finished or cancelled, 1 errors in the job or the run."""
    if resume is not None:
        from .checkpoint import resolve_resume
        from .control import EngineError
        try:
            checkpoint = resolve_resume(resume)
        except EngineError as exc:
            print(f"{exc.message}\n  hint: {exc.hint}", file=sys.stderr)
            return 1
        run = RunDir(checkpoint.parent.parent)
        job, findings = read_job_toml(run.job_toml)
        if any(f.level == "error" for f in findings):
            print_findings(findings)
            return 1
        print(f"Resuming {run.root} from {checkpoint.name}")
        return exit_code(start_run(job, run, checkpoint))
    assert preset_path is not None
    job, findings = job_from_preset(preset_path, overrides)
    if findings:
        print_findings(findings)
    if any(f.level == "error" for f in findings):
        return 1
    run = new_run_dir(Path(job.output.output_dir).absolute(), job.output.output_name)
    write_job_toml(job, run.job_toml)
    return exit_code(start_run(job, run))


def demo(kind: str, overrides: list[str], print_findings: Callable[[list[Finding]], None]) -> int:
    """``lora-studio demo text``: train the bundled tiny model on the bundled data."""
    return train(builtin_dir() / DEMO_PRESETS[kind], overrides, None, print_findings)


def export(run_dir: Path, fmt: str | None) -> int:
    """``lora-studio export``: one line per file written, "PATH  (FORMAT, SHA-256 HEX)"."""
    from .control import EngineError
    from .export import export_run
    try:
        written = export_run(run_dir, fmt)
    except EngineError as exc:
        print(f"{exc.message}\n  hint: {exc.hint}", file=sys.stderr)
        return 1
    for done in written:
        print(f"{done.path}  ({done.format}, SHA-256 {done.sha256})")
    return 0
