"""A validation finding: what is wrong, where, and what to change."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Level = Literal["error", "warning", "info"]


@dataclass(frozen=True)
class Finding:
    path: str  # dotted field path, e.g. "network.rank"; "" for the job as a whole
    level: Level
    message: str
    hint: str
    rule: str  # stable id of the rule that produced it, e.g. "alpha-vs-rank"

    def __str__(self) -> str:
        where = f"{self.path}: " if self.path else ""
        return f"{self.level.upper()} {where}{self.message} Hint: {self.hint}"


def has_errors(findings: list[Finding]) -> bool:
    return any(f.level == "error" for f in findings)
