"""A resolved job as TOML (``job.toml`` in a run folder) and back."""
from __future__ import annotations

import tomllib
from pathlib import Path

import tomli_w

from ..fsutil import atomic_write_text
from .findings import Finding
from .parse import parse_job
from .schema import JobConfig


def _drop_none(value):
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    return value


def job_to_dict(job: JobConfig) -> dict:
    """Every field, TOML-ready (TOML has no null: unset optionals are left out)."""
    return _drop_none(job.model_dump(mode="json"))


def write_job_toml(job: JobConfig, path: str | Path) -> None:
    atomic_write_text(path, tomli_w.dumps(job_to_dict(job)))


class JobFileError(ValueError):
    pass


def read_job_toml(path: str | Path) -> tuple[JobConfig, list[Finding]]:
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8-sig"))
    except FileNotFoundError:
        raise JobFileError(f"{path}: no such file.") from None
    except tomllib.TOMLDecodeError as exc:
        raise JobFileError(f"{path}: not valid TOML ({exc}).") from None
    except RecursionError:
        raise JobFileError(f"{path}: nested too deeply to read; it is not a job LoRA Studio "
                           "wrote.") from None
    return parse_job(data)
