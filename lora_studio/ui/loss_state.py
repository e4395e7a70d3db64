"""A run's per-item losses laid over the dataset the browser shows, without Qt: each
item's loss and how bad it is among the others (its badge), and the order that puts
the worst-learned items first (runs/item_loss.py reads the file)."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..runs.item_loss import ItemLoss, ItemLosses, item_key, record_key


@dataclass(frozen=True)
class LossBadge:
    text: str      # the loss as shown, e.g. "0.1234"
    heat: float    # 0 the best-learned item of the run .. 1 the worst
    tip: str       # the loss, how often the item was seen and the run


def loss_text(loss: float) -> str:
    return f"{loss:.4f}" if loss >= 1e-3 else f"{loss:.2e}"


class LossOverlay:
    """The losses of one run for the items of a dataset, by the browser's item index
    (``keys``: each item's key in the run's file, in browser order). Items the run did
    not train (added since, skipped) have no loss."""

    def __init__(self, losses: ItemLosses, keys: Sequence[str]):
        self.losses = losses
        self.item: list[ItemLoss | None] = [losses.items.get(k) for k in keys]
        ranked = sorted({v.loss for v in losses.items.values()})
        top = max(1, len(ranked) - 1)
        self._heat = {loss: i / top for i, loss in enumerate(ranked)}

    @classmethod
    def for_images(cls, losses: ItemLosses, paths: Sequence[Path]) -> "LossOverlay":
        return cls(losses, [item_key(p, losses.root) for p in paths])

    @classmethod
    def for_records(cls, losses: ItemLosses, file: Path, lines: Sequence[int]) -> "LossOverlay":
        return cls(losses, [record_key(file, line, losses.root) for line in lines])

    @property
    def run_name(self) -> str:
        return self.losses.run.name

    @property
    def matched(self) -> int:
        """How many of the items the run has a loss for."""
        return sum(v is not None for v in self.item)

    def badge(self, index: int) -> LossBadge | None:
        value = self.item[index] if 0 <= index < len(self.item) else None
        if value is None:
            return None
        return LossBadge(loss_text(value.loss), self._heat.get(value.loss, 0.0),
                         f"Loss {value.loss:.6g} (mean of {value.seen} time(s) seen) in run "
                         f"{self.run_name}, step {self.losses.step}")

    def worst_first(self, indices: Sequence[int]) -> list[int]:
        """``indices`` with the highest loss first; those without a loss keep their order
        after the others."""
        with_loss = [i for i in indices if self.item[i] is not None]
        without = [i for i in indices if self.item[i] is None]
        return sorted(with_loss, key=lambda i: -self.item[i].loss) + without

    def summary(self) -> str:
        return (f"Loss from {self.run_name} (step {self.losses.step}): {self.matched} of "
                f"{len(self.item)} item(s) trained.")
