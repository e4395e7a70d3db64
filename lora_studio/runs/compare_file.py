"""What `lora-studio compare` found, kept in the run folder as compare.json so the Runs
tab shows it without loading a model: the held-out records whose answers changed most
between the base model (or another run's adapter) and the run's adapter. Plain JSON,
no torch."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from ..fsutil import atomic_write_text

COMPARE_FILE = "compare.json"


@dataclass(frozen=True)
class Compared:
    prompt: str
    reference: str
    before: str          # the base model's answer, or the other run's
    after: str           # the run's adapter's answer
    before_rouge: float
    after_rouge: float

    @property
    def gap(self) -> float:
        """ROUGE-L the run's adapter gained (negative: lost) on this record."""
        return self.after_rouge - self.before_rouge


@dataclass(frozen=True)
class Comparison:
    before: str          # "base", or the other run's folder name
    after: str           # the run's folder name
    against: str         # the other run's folder, "" for the base model
    records: int         # held-out records answered
    found: tuple[Compared, ...]


class CompareFileError(Exception):
    """compare.json is there but cannot be read; the message names it."""


def write_comparison(run_root: str | Path, comparison: Comparison) -> Path:
    path = Path(run_root) / COMPARE_FILE
    data = {**asdict(comparison), "found": [asdict(c) for c in comparison.found]}
    atomic_write_text(path, json.dumps(data, indent=1, ensure_ascii=False) + "\n")
    return path


def read_comparison(run_root: str | Path) -> Comparison | None:
    """The run's last comparison; None when it has none."""
    path = Path(run_root) / COMPARE_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return Comparison(str(data["before"]), str(data["after"]), str(data["against"]),
                          int(data["records"]),
                          tuple(Compared(str(c["prompt"]), str(c["reference"]), str(c["before"]),
                                         str(c["after"]), float(c["before_rouge"]),
                                         float(c["after_rouge"])) for c in data["found"]))
    except (OSError, ValueError, KeyError, TypeError, RecursionError) as exc:
        raise CompareFileError(f"{path} cannot be read ({type(exc).__name__}: {exc}). Compare "
                               "again to write it anew.") from None
