"""What the "Will it fit?" box shows, without Qt: the job's VRAM estimate against the
card (its free VRAM, or an assumed card size on a machine without an NVIDIA GPU), the
breakdown, and auto-fit's proposal as field values the panel can take as edits.

The estimate reads only config and safetensors headers; the model's spec is cached
per model path (and the path's modification time), so an edit costs one estimate:
a few milliseconds even for SDXL or a 7B model (benchmarks/fit_estimate.py), fast
enough for the GUI thread. Auto-fit tries many jobs (up to a few hundred
milliseconds) and runs in a worker.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config.fields import SPECS
from ..config.gpu import GIB, GpuFacts
from ..config.model_info import ModelInfoError
from ..config.paths import resolve_local_path
from ..config.schema import JobConfig
from ..hardware.autofit import Change, DoesNotFit, autofit
from ..hardware.estimate import DEFAULT_MARGIN, Estimate, ModelSpec, estimate, model_spec
from ..hardware.monitor import HardwareSnapshot, visible_gpus

CARD_SIZES_GB = (8, 12, 16, 24)
BITSANDBYTES_FIELDS = ("optimizer.optimizer", "model.load_in_4bit", "model.load_in_8bit")
DEFAULT_CARD_GB = 8  # the most common card among hobbyists


@dataclass(frozen=True)
class Budget:
    """The VRAM the job may use."""
    bytes: int
    name: str    # the card's name, or "" for an assumed card
    real: bool   # a card in this machine (its free VRAM) or an assumed size (all of it)

    @property
    def card(self) -> str:
        """'an 8 GB card' for an assumed card; the name for a real one."""
        if self.real:
            return self.name or "the GPU"
        size = self.bytes // GIB
        return f"{'an' if str(size).startswith(('8', '11', '18')) else 'a'} {size} GB card"


def budget_for(snap: HardwareSnapshot, processes: int = 1, assumed_gb: int = DEFAULT_CARD_GB) -> Budget:
    """The card the run will be limited by: of the GPUs a run of ``processes`` uses,
    the one with the least free VRAM; without a GPU, an assumed card of that size."""
    gpus = visible_gpus(snap)[:max(1, processes)]
    if not gpus:
        return Budget(assumed_gb * GIB, "", False)
    card = min(gpus, key=lambda g: g.vram_free)
    return Budget(card.vram_free, card.name, True)


def gb(n: int | float) -> str:
    """A size as people read it: GiB for a card's worth, MiB below (tiny demo models)."""
    if abs(n) >= GIB:
        return f"{n / GIB:.1f} GiB"
    mib = n / 1024 ** 2
    if abs(mib) < 1:
        return f"{n / 1024:.0f} KiB"
    return f"{mib:.0f} MiB" if abs(mib) >= 10 else f"{mib:.1f} MiB"


@dataclass(frozen=True)
class FitReport:
    budget: Budget
    estimate: Estimate | None = None
    error: str = ""  # why there is no estimate (no model set, unreadable model)

    @property
    def fits(self) -> bool | None:
        return None if self.estimate is None else self.estimate.total <= self.budget.bytes

    @property
    def share(self) -> float:
        """Estimate / budget (over 1 when it does not fit); 0 without an estimate."""
        if self.estimate is None or self.budget.bytes <= 0:
            return 0.0
        return self.estimate.total / self.budget.bytes

    def headline(self) -> str:
        if self.estimate is None:
            return f"No estimate: {self.error}"
        need = f"Needs about {gb(self.estimate.total)}"
        card, free = self.budget.card, gb(self.budget.bytes)
        if self.budget.real:
            return f"{need} of the {free} free on {card}: it fits." if self.fits else \
                f"{need}; {card} has {free} free: it will not fit."
        return f"{need}: fits {card}." if self.fits else f"{need}: too much for {card}."

    def breakdown(self) -> list[tuple[str, str]]:
        """(part, size) rows: every non-empty part, then the margin and the total."""
        if self.estimate is None:
            return []
        est = self.estimate
        rows = [(p.name, gb(p.bytes)) for p in est.parts if p.bytes]
        rows.append((f"safety margin ({est.margin:.0%})", gb(est.total - est.subtotal)))
        rows.append(("total", gb(est.total)))
        return rows + [(note, "") for note in est.notes]


@dataclass(frozen=True)
class Proposal:
    """Auto-fit's answer: the changes, and whether they make the job fit."""
    changes: tuple[Change, ...]
    fits: bool
    message: str = ""

    def values(self) -> dict[str, Any]:
        return {c.path: c.new for c in self.changes}

    def lines(self) -> list[str]:
        return [change_text(c) for c in self.changes]


def _shown(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value)


def change_text(change: Change) -> str:
    title = SPECS[change.path].title if change.path in SPECS else change.path
    saves = f"  (saves {gb(change.saving)})" if change.saving > 0 else ""
    return f"{title}: {_shown(change.old)} → {_shown(change.new)}{saves}"


class FitState:
    """Estimates and auto-fit proposals for the panel's job, with the model's spec
    read once per model."""

    def __init__(self, margin: float = DEFAULT_MARGIN):
        self.margin = margin
        self._specs: dict[tuple, ModelSpec] = {}

    def spec(self, job: JobConfig, base_dir: str | os.PathLike | None) -> ModelSpec:
        """Raises ModelInfoError with a message when the model cannot be read."""
        key = _spec_key(job, base_dir)
        spec = self._specs.get(key)
        if spec is None:
            spec = model_spec(job, str(base_dir) if base_dir else None)
            self._specs = {key: spec}  # one model at a time: the cache never grows
        return spec

    def report(self, job: JobConfig, base_dir: str | os.PathLike | None, budget: Budget) -> FitReport:
        try:
            spec = self.spec(job, base_dir)
        except ModelInfoError as exc:
            return FitReport(budget, error=exc.message)
        # A real card or an assumed one: either way the CUDA context counts.
        card = GpuFacts(name=budget.name, total_vram_bytes=budget.bytes, cuda_available=True)
        return FitReport(budget, estimate(job, card, spec, self.margin))

    def propose(self, job: JobConfig, base_dir: str | os.PathLike | None, budget: Budget) -> Proposal:
        try:
            spec = self.spec(job, base_dir)
        except ModelInfoError as exc:
            return Proposal((), False, exc.message)
        return propose(job, spec, budget, self.margin)


def propose(job: JobConfig, spec: ModelSpec, budget: Budget, margin: float = DEFAULT_MARGIN) -> Proposal:
    """The fewest changes that make the job fit the budget (bitsandbytes options
    included: the budget is a CUDA card's). Pure: a worker thread may run it."""
    try:
        changes = autofit(job, budget.bytes, margin, cuda=True, spec=spec)
    except DoesNotFit as exc:
        return Proposal(tuple(exc.changes), False, exc.message)
    if not changes:
        return Proposal((), True, "It fits as it is: nothing to change.")
    needs_cuda = not budget.real and any(c.path in BITSANDBYTES_FIELDS for c in changes)
    return Proposal(tuple(changes), True, "bitsandbytes (8-bit optimizer, 4-bit base) needs an NVIDIA GPU: "
                    "with these changes the job trains on such a card, not on this computer."
                    if needs_cuda else "")


def _spec_key(job: JobConfig, base_dir: str | os.PathLike | None) -> tuple:
    found = resolve_local_path(job.model.path, base_dir) if job.model.path else None
    try:
        stamp = found.stat().st_mtime_ns if found is not None else None
    except OSError:
        stamp = None
    return (job.model.path, job.model.family, job.model.allow_pickle,
            str(Path(base_dir)) if base_dir else None, str(found), stamp)
