"""Each training item's loss, summed over the times it was seen, for runs/item_loss.py.

The sums stay on the device (one index_add_ a micro-batch, no copy back to the host)
and the counts on the host, since which items a batch holds is known there; both are
pulled only when a checkpoint or the end writes them. With several processes each
holds its own share and they are added up at that point (every process calls
``totals``, a collective)."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from ...runs.item_loss import merge, write_item_losses

STATE_KEY = "item_loss"  # in a checkpoint's state.json: {"sums": [...], "seen": [...]}


class ItemLossMeter:
    def __init__(self, keys: Sequence[str], kind: str, root: Path, device):
        self.keys, self.kind, self.root = list(keys), kind, root
        self.sums = torch.zeros(len(self.keys), dtype=torch.float32, device=device)
        self.seen = [0] * len(self.keys)

    def add(self, indices: Sequence[int], losses: torch.Tensor) -> None:
        """``losses[i]``: the loss of item ``indices[i]`` this time (a graph tensor is
        detached)."""
        for i in indices:
            self.seen[i] += 1
        at = torch.tensor(list(indices), dtype=torch.long).to(self.sums.device, non_blocking=True)
        self.sums.index_add_(0, at, losses.detach().float())

    def totals(self, accelerator) -> tuple[list[float], list[int]]:
        """The sums and counts of every process (each process must call this)."""
        sums, seen = self.sums, torch.tensor(self.seen, dtype=torch.float32, device=self.sums.device)
        if accelerator.num_processes > 1:
            sums = accelerator.reduce(sums.clone(), reduction="sum")
            seen = accelerator.reduce(seen, reduction="sum")
        return sums.tolist(), [int(n) for n in seen.tolist()]

    def restore(self, saved: dict, is_main: bool) -> bool:
        """Take a checkpoint's totals back (on the main process only, so that adding up
        the processes counts them once); False when they do not fit this dataset."""
        sums, seen = saved.get("sums"), saved.get("seen")
        if not isinstance(sums, list) or not isinstance(seen, list) or \
                len(sums) != len(self.keys) or len(seen) != len(self.keys):
            return False
        if is_main:
            self.sums.copy_(torch.tensor(sums, dtype=torch.float32))
            self.seen = [int(n) for n in seen]
        return True

    def save(self, accelerator, run_root: Path, step: int) -> dict:
        """Write item_loss.json (main process); the totals for the checkpoint's state."""
        sums, seen = self.totals(accelerator)
        if accelerator.is_main_process:
            write_item_losses(run_root, self.kind, self.root, step, merge(self.keys, sums, seen))
        return {"sums": sums, "seen": seen}
