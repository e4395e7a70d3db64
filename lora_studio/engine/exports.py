"""``lora-studio export RUN_DIR [--format FORMAT] [--output DIR] [--name NAME]
[--precision P]``: a finished run's adapter in one of its family's formats (runs/exports.py lists them), written by that family."""
from __future__ import annotations

from pathlib import Path

from ..config.jobfile import JobFileError, read_job_toml
from ..runs.exports import (IMAGE_ADAPTER, PRECISIONS, TEXT_ADAPTER, default_format, format_names,
                            run_family)
from ..runs.layout import RunDir
from ..runs.names import name_problem
from .core.control import EngineError
from .core.family import Exported
from .families import family_entry, family_package

TRAINED = {"text": TEXT_ADAPTER, "image": IMAGE_ADAPTER}   # what final/ holds, by family


def export_run(run_root: str | Path, fmt: str | None = None, output: str | Path | None = None,
               name: str | None = None, precision: str | None = None) -> list[Exported]:
    """The run's trained LoRA in ``fmt`` (the family's default when None) into folder
    ``output`` (the run's exports/) as ``name`` (runs.exports.default_name), in
    ``precision`` for image LoRAs. Never replaces a different file: a second export of
    other content goes beside it with a -2 suffix. Returns every file written, with its
    SHA-256."""
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
    if precision is not None and precision not in PRECISIONS:
        raise EngineError("config", f"'{precision}' is not a save precision.",
                          f"Use --precision {' or '.join(PRECISIONS)}.")
    if precision is not None and family != "image":
        raise EngineError("config", f"--precision is for image LoRAs; {run.root.name} is a "
                                    f"{family} run.",
                          "Leave --precision out: text adapters are saved as trained.")
    if name is not None and name_problem(name):
        raise EngineError("config", f"Cannot export as '{name}': {name_problem(name)}",
                          "Give a file name without a folder, e.g. --name my_lora_v2.")
    out_dir = Path(output) if output is not None else None
    if out_dir is not None:
        if out_dir.exists() and not out_dir.is_dir():
            raise EngineError("config", f"{out_dir} is a file, not a folder.",
                              "Pass the folder to export into with --output, and the file "
                              "name with --name.")
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise EngineError("io", f"Cannot create the folder {out_dir}: "
                                    f"{exc.strerror or exc}.",
                              "Choose a folder you can write to.") from None
    return family_entry(family_package(family), "export")(run, job, fmt, out_dir, name,
                                                          precision)
