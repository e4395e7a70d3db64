"""What the Runs tab's "Compare outputs" pane shows, without Qt: the run's last
comparison (compare.json, written by `lora-studio compare`), its records ordered by
how much the adapter changed ROUGE-L against the record's own answer, either way, and
the two answers of one record side by side; which runs it can be compared against;
the command that compares (a child process: the window never loads a model)."""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from ..runs.catalog import RunSummary
from ..runs.compare_file import CompareFileError, Compared, Comparison, read_comparison

BASE = "the base model"
PROMPT_CHARS = 90   # of a prompt's first line in the list


@dataclass(frozen=True)
class Side:
    title: str   # "base  ·  ROUGE-L 0.120"
    text: str


@dataclass(frozen=True)
class Detail:
    prompt: str
    reference: str
    before: Side
    after: Side


def gap_text(c: Compared) -> str:
    return f"{c.gap:+.3f}"


def one_line(text: str, limit: int = PROMPT_CHARS) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[:limit - 1] + "…"


class CompareState:
    """load(run) reads the run's compare.json; rows and detail(i) are what the pane
    lists and shows; message says why there is nothing to list."""

    def __init__(self):
        self.comparison: Comparison | None = None
        self.rows: list[Compared] = []
        self.message = ""

    def load(self, run_root: str | Path | None) -> None:
        self.comparison, self.rows, self.message = None, [], ""
        if run_root is None:
            self.message = "Select a finished text run."
            return
        try:
            self.comparison = read_comparison(run_root)
        except CompareFileError as exc:
            self.message = str(exc)
            return
        if self.comparison is None:
            self.message = ("No comparison yet: Compare answers held-out records with both "
                            "and lists those the adapter changed most.")
            return
        self.rows = sorted(self.comparison.found, key=lambda c: -abs(c.gap))
        self.message = (f"{len(self.rows)} of {self.comparison.records} held-out records, "
                        f"largest change first: {self.comparison.before} against "
                        f"{self.comparison.after}.")

    def cells(self, i: int) -> tuple[str, str, str]:
        """(change, ROUGE-L before -> after, prompt) of row ``i``."""
        c = self.rows[i]
        return gap_text(c), f"{c.before_rouge:.3f} → {c.after_rouge:.3f}", one_line(c.prompt)

    def detail(self, i: int) -> Detail:
        c, found = self.rows[i], self.comparison
        return Detail(c.prompt, c.reference,
                      Side(f"{found.before}  ·  ROUGE-L {c.before_rouge:.3f}", c.before),
                      Side(f"{found.after}  ·  ROUGE-L {c.after_rouge:.3f}", c.after))


def comparable(run: RunSummary | None) -> bool:
    """A finished text run: it has an adapter and held-out records may be answered."""
    return run is not None and run.family == "text" and run.status == "finished"


def against_choices(run: RunSummary, runs: list[RunSummary]) -> list[tuple[str, str]]:
    """(label, run folder; "" for the base model): the base model, then the other
    finished text runs trained on the same base, newest first."""
    others = sorted((r for r in runs if r.root != run.root and comparable(r)
                     and r.model == run.model), key=lambda r: -r.date)
    return [(BASE, "")] + [(r.name, str(r.root)) for r in others]


def compare_command(run_root: str | Path, against: str, records: int) -> list[str]:
    """`lora-studio compare` listing every record answered (the pane orders them)."""
    return [sys.executable, "-m", "lora_studio", "compare", str(run_root),
            "--records", str(records), "--top", str(records),
            *(["--against", against] if against else [])]
