"""The interface between the shared core and a model family.

A family is one package under ``engine/`` (``text/``, ``image/``; a Flux or SD3
family would be one more) that exposes:

- ``prepare(job, ctx) -> Trainee``: load the model, put the adapter in, read the
  data. Called once per process, after the seed is set.
- ``export(run, job, fmt) -> list[Exported]``: write a finished run's adapter in
  one of the formats ``runs/exports.py`` lists for the family.
- ``OOM_HINT``: what to change when the run runs out of memory.

Everything else is the core's: the optimizer and schedule, accumulation, clipping,
the per-process share of each epoch, checkpoints and resume, stop, progress and
hardware events (see ``trainer.py``).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from ...runs.events import Emit
from ...runs.layout import RunDir
from .item_losses import ItemLossMeter


@dataclass(frozen=True)
class RunContext:
    """What a family may know about the run it is prepared for."""
    run: RunDir
    emit: Emit                    # a no-op on all but the main process
    device: torch.device
    is_main: bool
    num_processes: int
    # phase(name, done, total): a ``phase`` event, and a stop check (control.Phases)
    phase: Callable[..., None] = field(default=lambda *args: None)


@dataclass(frozen=True)
class Exported:
    format: str       # a name from runs.exports.FORMATS
    path: Path
    sha256: str


class Trainee(Protocol):
    """One family's side of one run.

    The loss is a *sum* over the micro-batch's loss items (label tokens, images) and
    ``batch_items`` counts them: the core divides by the items of the whole optimizer
    step (every micro-batch and process), so batch 4 x accumulation 1 and batch 2 x
    accumulation 2 give the same update however long each record is.
    """
    family: str                     # "text", "sd1", ...: the 'started' event, checkpoints
    dataset_size: int               # records or images; a resume warns when it changed
    model: torch.nn.Module          # what accelerate prepares (DDP wraps it)
    param_groups: list[dict]        # torch optimizer groups; a group's own "lr" is kept
    started_facts: dict             # extra fields of the 'started' event
    # Optional: each item's loss, added to by loss_sum; the core writes it with every
    # checkpoint (item_loss.json) and keeps it across a resume.
    item_losses: ItemLossMeter | None

    def epoch_batches(self, epoch: int) -> Sequence[Any]:
        """Every micro-batch of ``epoch`` in training order, a pure function of (seed,
        epoch) so that a resumed run sees what an uninterrupted one would."""

    def batch_items(self, batch: Any) -> int:
        """How many loss items ``batch`` holds."""

    def loss_sum(self, model: torch.nn.Module, batch: Any) -> torch.Tensor:
        """The summed loss of ``batch`` through ``model`` (the prepared module)."""

    def set_train(self, mode: bool) -> None:
        """Put the trained modules in training (True) or eval mode."""

    def trainable_state(self) -> dict[str, torch.Tensor]:
        """The trained tensors, as a checkpoint keeps them."""

    def load_trainable_state(self, tensors: dict[str, torch.Tensor]) -> None: ...

    def sample(self, step: int) -> None:
        """Write and announce samples (main process only); may do nothing."""

    def write_final(self, step: int, steps_per_epoch: int, started_at: float) -> list[Exported]:
        """Main process, after the last step: final/ and the default exports."""
