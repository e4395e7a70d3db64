"""Loss and learning-rate series for the live plot, without Qt: preallocated numpy
arrays that grow by doubling, so 100,000 steps cost a few appends, not a list copy
per event, and an exponential moving average of the loss for the smoothed curve."""
from __future__ import annotations

import math

import numpy as np

SMOOTHING = 0.9  # weight of the past in the EMA, as TensorBoard's default slider


class TrainingSeries:
    def __init__(self, capacity: int = 4096, smoothing: float = SMOOTHING):
        self.smoothing = smoothing
        self.steps = np.zeros(capacity, dtype=np.float64)
        self.loss = np.full(capacity, np.nan)
        self.smooth = np.full(capacity, np.nan)
        self.lr = np.full(capacity, np.nan)
        self.n = 0
        self.lr_max = 0.0  # the learning-rate axis runs from 0 to this
        self._ema = 0.0
        self._ema_weight = 0.0  # for the bias correction of the first points

    def clear(self) -> None:
        self.n = 0
        self.lr_max = 0.0
        self._ema = 0.0
        self._ema_weight = 0.0

    def _grow(self) -> None:
        size = len(self.steps) * 2
        for name in ("steps", "loss", "smooth", "lr"):
            old = getattr(self, name)
            new = np.full(size, np.nan) if name != "steps" else np.zeros(size)
            new[: self.n] = old[: self.n]
            setattr(self, name, new)

    def _cut_back(self, step: float) -> None:
        """A resumed run restarts at its checkpoint's step: drop the points at or after
        it and rebuild the EMA from what is left."""
        keep = int(np.searchsorted(self.steps[: self.n], step, side="left"))
        self.n = keep
        self.lr_max = float(np.nanmax(self.lr[:keep], initial=0.0))
        self._ema = 0.0
        self._ema_weight = 0.0
        for i in range(keep):
            if not math.isnan(self.loss[i]):
                self._update_ema(self.loss[i])

    def _update_ema(self, loss: float) -> float:
        self._ema = self.smoothing * self._ema + (1 - self.smoothing) * loss
        self._ema_weight = self.smoothing * self._ema_weight + (1 - self.smoothing)
        return self._ema / self._ema_weight

    def append(self, step: float, loss: float | None, lr: float | None) -> None:
        if self.n and step <= self.steps[self.n - 1]:
            self._cut_back(step)
        if self.n == len(self.steps):
            self._grow()
        i = self.n
        self.steps[i] = step
        valid = loss is not None and math.isfinite(loss)
        self.loss[i] = loss if valid else np.nan
        self.smooth[i] = self._update_ema(loss) if valid else (self.smooth[i - 1] if i else np.nan)
        self.lr[i] = lr if lr is not None else np.nan
        if lr is not None and math.isfinite(lr):
            self.lr_max = max(self.lr_max, lr)
        self.n += 1

    def view(self, name: str) -> np.ndarray:
        return getattr(self, name)[: self.n]
