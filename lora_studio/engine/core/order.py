"""How many steps a run has and which micro-batches each process trains, in which
order. Pure functions of (seed, epoch), so a resumed run sees exactly the batches
of one that was never stopped."""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch


def epoch_order(n_items: int, epoch: int, seed: int) -> list[int]:
    """A seeded shuffle of ``range(n_items)``, a new one every epoch."""
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    return torch.randperm(n_items, generator=generator).tolist()


def chunks(items: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [items[i:i + size] for i in range(0, len(items), size)]


def shard(batches: Sequence[Any], num_processes: int, process_index: int) -> list[Any]:
    """This process's micro-batches: padded by wrapping so that every process gets as
    many (or the collective calls hang), then strided across processes."""
    batches = list(batches)
    padded = math.ceil(len(batches) / num_processes) * num_processes
    batches += batches[: padded - len(batches)]
    return batches[process_index::num_processes]


def steps_per_epoch(micro_batches: int, gradient_accumulation_steps: int) -> int:
    return math.ceil(micro_batches / gradient_accumulation_steps)


def total_steps(max_steps: int, epochs: int, per_epoch: int) -> int:
    return max_steps if max_steps > 0 else epochs * per_epoch
