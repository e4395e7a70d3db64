"""Loss and learning-rate series for the live plot, without Qt: preallocated numpy
arrays that grow by doubling, so 100,000 steps cost a few appends, not a list copy
per event, and a debiased exponential moving average of the loss for the smoothed
curve (TensorBoard's smoothing: the EMA divided by 1 - w**t, so the first points are
not pulled towards 0)."""
from __future__ import annotations

import math

import numpy as np

SMOOTHING = 0.6  # weight of the past in the EMA: TensorBoard's default
MAX_SMOOTHING = 0.999


def debiased_ema(values: np.ndarray, weight: float) -> np.ndarray:
    """The smoothed curve of ``values``: a point that is not finite keeps the last
    smoothed value (NaN before the first finite one) and does not enter the average."""
    out = np.full(len(values), np.nan)
    ema = ema_weight = 0.0
    last = math.nan
    for i, value in enumerate(values.tolist()):
        if math.isfinite(value):
            ema = weight * ema + (1 - weight) * value
            ema_weight = weight * ema_weight + (1 - weight)
            last = ema / ema_weight
        out[i] = last
    return out


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
        self.eval_steps: list[float] = []   # held-out loss: a point every N steps
        self.eval_loss: list[float] = []
        self.eval_rouge: list[float | None] = []   # ROUGE-L of the answers, when measured

    def clear(self) -> None:
        self.n = 0
        self.lr_max = 0.0
        self._ema = 0.0
        self._ema_weight = 0.0
        self.eval_steps, self.eval_loss, self.eval_rouge = [], [], []

    def add_eval(self, step: float, loss: float, rouge: float | None = None) -> None:
        """An eval loss (and ROUGE-L); a resumed run's evaluations replace those at or
        after its step."""
        keep = [i for i, s in enumerate(self.eval_steps) if s < step]
        self.eval_steps = [self.eval_steps[i] for i in keep] + [step]
        self.eval_loss = [self.eval_loss[i] for i in keep] + [loss]
        self.eval_rouge = [self.eval_rouge[i] for i in keep] + [rouge]

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
        self.n = int(np.searchsorted(self.steps[: self.n], step, side="left"))
        self.lr_max = float(np.nanmax(self.lr[: self.n], initial=0.0))
        kept = [i for i, s in enumerate(self.eval_steps) if s < step]
        self.eval_steps = [self.eval_steps[i] for i in kept]
        self.eval_loss = [self.eval_loss[i] for i in kept]
        self.eval_rouge = [self.eval_rouge[i] for i in kept]
        self._resmooth()

    def set_smoothing(self, weight: float) -> None:
        """A new weight (0 .. MAX_SMOOTHING) redraws the whole smoothed curve with it."""
        self.smoothing = min(max(float(weight), 0.0), MAX_SMOOTHING)
        self._resmooth()

    def _resmooth(self) -> None:
        loss = self.loss[: self.n]
        self.smooth[: self.n] = debiased_ema(loss, self.smoothing)
        # The running sums the next append continues from: after k points the
        # weights sum to 1 - w**k and the EMA is the debiased value times that.
        self._ema_weight = 1.0 - self.smoothing ** int(np.isfinite(loss).sum())
        self._ema = float(self.smooth[self.n - 1]) * self._ema_weight if self._ema_weight else 0.0

    def nearest(self, step: float) -> int | None:
        """The index of the point closest to ``step``; None when the series is empty."""
        if not self.n or not math.isfinite(step):
            return None
        steps = self.steps[: self.n]
        i = int(np.searchsorted(steps, step))
        if i == self.n or (i > 0 and step - steps[i - 1] <= steps[i] - step):
            i -= 1
        return i

    def readout(self, step: float) -> str:
        """'step 120  ·  loss 0.8123  ·  smoothed 0.8400  ·  lr 1e-04' at the point closest
        to ``step`` (the plot's hover line); '' when there is none."""
        i = self.nearest(step)
        if i is None:
            return ""
        parts = [f"step {self.steps[i]:g}"]
        for label, value, fmt in (("loss", self.loss[i], ".4f"), ("smoothed", self.smooth[i], ".4f"),
                                  ("lr", self.lr[i], ".3g")):
            if math.isfinite(value):
                parts.append(f"{label} {value:{fmt}}")
        if self.steps[i] in self.eval_steps:
            at = self.eval_steps.index(self.steps[i])
            parts.append(f"eval {self.eval_loss[at]:.4f}")
            if self.eval_rouge[at] is not None:
                parts.append(f"ROUGE-L {self.eval_rouge[at]:.3f}")
        return "  ·  ".join(parts)

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
