"""``lora-studio export RUN_DIR [--format FORMAT]``: a finished run's adapter in one
of its family's formats (runs/exports.py lists them), written by that family."""
from __future__ import annotations

from pathlib import Path

from ..config.jobfile import JobFileError, read_job_toml
from ..runs.exports import IMAGE_ADAPTER, TEXT_ADAPTER, default_format, format_names, run_family
from ..runs.layout import RunDir
from .core.control import EngineError
from .core.family import Exported
from .families import family_package

TRAINED = {"text": TEXT_ADAPTER, "image": IMAGE_ADAPTER}   # what final/ holds, by family


def export_run(run_root: str | Path, fmt: str | None = None) -> list[Exported]:
    """The run's trained LoRA into ``exports/`` in ``fmt`` (the family's default when
    None). Returns every file written, with its SHA-256."""
    run = RunDir(Path(run_root))
    if not run.job_toml.exists():
        raise EngineError("config", f"{run.root} is not a run folder (no job.toml).",
                          "Pass a folder under your runs folder, e.g. runs/my_lora-20250101-120000.")
    try:
        job, _ = read_job_toml(run.job_toml)
    except JobFileError as exc:
        raise EngineError("config", str(exc), "Restore the run's job.toml; the trained adapter "
                                              "in final/ is untouched.") from None
    family = run_family(run)
    trained = TRAINED.get(family or "")
    if trained is None or not (run.final / trained).exists():
        raise EngineError("config", f"{run.root} has no trained adapter in final/ yet.",
                          "Let the run finish, or resume it: lora-studio train --resume "
                          f"\"{run.root}\".")
    fmt = fmt or default_format(family)
    if fmt not in format_names(family):
        raise EngineError("config", f"'{fmt}' is not an export format for {family} runs.",
                          f"Use --format {' or '.join(format_names(family))}.")
    return family_package(family).export(run, job, fmt)
