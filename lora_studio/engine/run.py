"""The engine's one entry point: run a validated job in a run folder, reporting
through events. Whatever happens, the run ends with a ``finished`` or an ``error``
event, never with a bare traceback."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ..config.schema import JobConfig
from ..runs.events import Emit, event
from ..runs.layout import RunDir
from .core.control import Cancelled, StopRequest, error_event
from .families import detect_family, family_entry, family_package
from .trackers import open_trackers, tracked


def effective_batch_event(job: JobConfig, processes: int) -> dict:
    t = job.training
    effective = t.batch_size * processes * t.gradient_accumulation_steps
    return event("log", level="info", effective_batch=effective, processes=processes,
                 message=f"Effective batch {effective} = {t.batch_size} per device x {processes} "
                         f"process(es) x {t.gradient_accumulation_steps} accumulation step(s).")


def stop_agreed(stop: Callable[[], bool], state) -> bool:
    """Whether any launched process was asked to stop; all of them take the same branch,
    or the ones that go on would wait forever for the others in a collective call."""
    flag = stop()
    if state.num_processes == 1:
        return flag
    import torch
    import torch.distributed as dist
    value = torch.tensor([1.0 if flag else 0.0], device=state.device)
    dist.all_reduce(value)
    return value.item() > 0


def resume_step(resume: Path | None) -> int:
    """The step a run starts from, read from the checkpoint folder's name (step-NNNNNN)."""
    if resume is None:
        return 0
    digits = Path(resume).name.rpartition("-")[2]
    return int(digits) if digits.isdigit() else 0


def quiet_libraries() -> None:
    """The engine reports through events: the libraries' own progress bars (weights
    loading) would only garble the terminal line and the GUI's
    stderr tail, and peft 0.21 trips transformers 5's deprecation of
    ``is_gradient_checkpointing`` on every model, which no user can act on."""
    import warnings

    from transformers.utils import logging as transformers_logging
    transformers_logging.disable_progress_bar()
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*",
                            category=FutureWarning)


def run(job: JobConfig, run_dir: str | Path, emit: Emit,
        should_stop: Callable[[], bool] | None = None, resume: Path | None = None) -> None:
    """Train ``job`` in ``run_dir``. ``should_stop`` is polled once per optimizer step (a
    ``STOP`` file in the run folder counts too); ``resume`` is a checkpoint folder. A stop
    asked for before the first step (while loading, scanning, tokenising or caching)
    ends the run within a second, with no new checkpoint: a resumed run's checkpoint
    stays as it was."""
    run_folder = RunDir(Path(run_dir)).ensure()
    stop = should_stop if isinstance(should_stop, StopRequest) else StopRequest(should_stop,
                                                                                run_folder.root)
    oom_hint = None
    quiet_libraries()
    try:
        from accelerate import PartialState  # the launched processes' state, or a single one
        state = PartialState()
        if stop_agreed(stop, state):
            raise Cancelled
        if state.is_main_process and job.output.log_with != "none":
            emit = tracked(emit, open_trackers(job, run_folder.root, emit))
        emit(effective_batch_event(job, state.num_processes))
        emit(event("phase", phase="loading libraries"))
        with stop.interrupting():
            package = family_package(detect_family(job))
            from .core.trainer import train
        oom_hint = package.OOM_HINT
        train(job, run_folder, emit, stop, family_entry(package, "prepare"), resume)
    except Cancelled:
        emit(event("finished", status="cancelled", step=resume_step(resume), checkpoint=None,
                   message="Stopped before training started."))
    except Exception as exc:
        emit(error_event(exc, oom_hint) if oom_hint else error_event(exc))


def run_in_process(job: JobConfig, run_folder: RunDir, resume: Path | None = None,
                   display: Callable[[dict], None] | None = None) -> dict | None:
    """Run the engine in this process with Ctrl+C / SIGTERM as a clean cancel, writing
    events.jsonl and showing each event (a terminal display by default); returns the
    last ``finished`` / ``error`` event."""
    from ..runs.events import EventWriter
    from ..runs.launch import clear_stale_stop
    from ..runs.terminal import TerminalProgress
    display = display or TerminalProgress()
    clear_stale_stop(run_folder)
    last: dict | None = None
    with EventWriter(run_folder.events) as writer, \
            StopRequest(None, run_folder.root).handling_signals() as stop:
        def emit(ev: dict) -> None:
            nonlocal last
            writer(ev)
            display(ev)
            if ev["type"] in ("finished", "error"):
                last = ev
        run(job, run_folder.root, emit, stop, resume)
    return last
