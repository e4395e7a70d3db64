"""``python -m lora_studio.engine RUN_DIR [--resume [CHECKPOINT]]``

Runs RUN_DIR/job.toml, printing events as JSON lines on stdout and appending them to
RUN_DIR/events.jsonl. SIGINT / SIGTERM or a RUN_DIR/STOP file cancel cleanly: the
current step finishes, a checkpoint is written and ``finished`` says "cancelled"; a
STOP that is there before the first step (pressed while this process was starting
up) ends the run at once, with no new checkpoint. The launcher removes a stale STOP
before starting this process; the engine never deletes it.
``--resume`` alone continues from the run's latest complete checkpoint.
Exit status: 0 finished or cancelled, 1 failed, 2 the job could not be read.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ..config.findings import has_errors
from ..config.jobfile import JobFileError, read_job_toml
from ..runs.events import EventWriter, encode, event
from ..runs.layout import RunDir
from .core.control import EngineError, StopRequest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lora_studio.engine",
                                     description="Run the job.toml of a run folder.")
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--resume", nargs="?", const="latest", default=None,
                        help="a checkpoint folder; alone: the run's latest complete checkpoint")
    args = parser.parse_args(argv)
    if not (args.run_dir / "job.toml").is_file():  # nothing to run: say why, create nothing
        sys.stdout.write(encode(event("error", kind="config",
                                      message=f"{args.run_dir / 'job.toml'}: no such file.",
                                      hint="Pass a run folder; lora-studio train writes one.")) + "\n")
        return 2
    if argv is None:  # started as `python -m lora_studio.engine`: the process is the run's
        skip_unneeded_libraries(args.run_dir / "job.toml")

    import torch
    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env
    # accelerate joins launched processes over gloo only when told they are CPU
    # processes; a launch on a machine without CUDA is one (runs/launch.py).
    launched = int(os.environ.get("WORLD_SIZE", "1")) > 1
    main_process = PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU")
                                or (launched and not torch.cuda.is_available())).is_main_process
    run = RunDir(args.run_dir).ensure()
    errors = []
    with EventWriter(run.events, echo=sys.stdout, enabled=main_process) as writer:
        def emit(ev: dict) -> None:
            if ev["type"] == "error":
                errors.append(ev)
            writer(ev)

        try:
            job, findings = read_job_toml(run.job_toml)
        except JobFileError as exc:
            emit(event("error", kind="config", message=str(exc), hint="Fix or rewrite job.toml."))
            return 2
        if has_errors(findings):
            emit(event("error", kind="config",
                       message="job.toml has errors:\n" + "\n".join(str(f) for f in findings),
                       hint="Fix the listed settings."))
            return 2
        resume = None
        if args.resume:
            from .core.checkpoint import resolve_resume
            try:
                resume = resolve_resume(run.root if args.resume == "latest" else Path(args.resume))
            except EngineError as exc:
                emit(exc.to_event())
                return 2
        from .run import run as run_job
        with StopRequest(None, run.root).handling_signals() as stop:
            run_job(job, run.root, emit, stop, resume)
    return 1 if errors else 0


def skip_unneeded_libraries(job_toml: Path) -> None:
    """Before anything imports the ML libraries (engine/lean_imports.py); a job.toml
    that cannot be read is reported below, by the run."""
    try:
        job, findings = read_job_toml(job_toml)
    except JobFileError:
        return
    if not has_errors(findings):
        from .lean_imports import skip_unneeded
        skip_unneeded(job)


if __name__ == "__main__":
    sys.exit(main())
