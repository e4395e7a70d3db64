"""What a run is doing, as the line the window shows above the plot: the phase before
the first step (``phase`` events, with n/N and the time left where they count), then
the step progress of the ``progress`` events."""
from __future__ import annotations

import math
from dataclasses import dataclass

# The window's own phase, from Train until the engine's first event: starting Python
# and importing the engine take seconds on a cold disk.
ENGINE_START = "starting engine"
SEP = "  ·  "


def format_eta(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "–"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def number(ev: dict, *keys: str) -> float | None:
    """The first of ``keys`` that holds a number (not a bool)."""
    for key in keys:
        value = ev.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    return None


def progress_text(ev: dict) -> str:
    step, total = number(ev, "step"), number(ev, "total", "total_steps")
    parts = [f"step {int(step or 0)}" + (f" / {int(total)}" if total else "")]
    epoch = number(ev, "epoch")
    if epoch is not None:
        parts.append(f"epoch {epoch:g}")
    loss = number(ev, "loss")
    if loss is not None:
        parts.append(f"loss {loss:.4g}")
    lr = number(ev, "lr", "learning_rate")
    if lr is not None:
        parts.append(f"lr {lr:.3g}")
    speed = number(ev, "it_s", "its", "it/s", "steps_per_s")
    if speed is not None:
        parts.append(f"{speed:.2f} it/s")
    parts.append(f"ETA {format_eta(number(ev, 'eta', 'eta_s'))}")
    return SEP.join(parts)


@dataclass
class Phase:
    name: str
    since: float                # when it began, in seconds of time.time()
    done: int | None = None
    total: int | None = None
    eta_s: float | None = None  # from the rate since the phase's first count


def phase_text(phase: Phase, now: float) -> str:
    """'Caching latents 12 / 40  ·  ETA 0:07', or 'Loading the model…  ·  0:12' (the
    time spent so far, so a long load is seen to be alive)."""
    name = phase.name[:1].upper() + phase.name[1:]
    if phase.total:
        return SEP.join([f"{name} {phase.done or 0} / {phase.total}",
                         f"ETA {format_eta(phase.eta_s)}"])
    return f"{name}…{SEP}{format_eta(max(0.0, now - phase.since))}"


class PhaseTracker:
    """The current phase from the event stream: ``None`` once steps are counted (the
    step progress takes over) or the run has ended."""

    def __init__(self) -> None:
        self.current: Phase | None = None
        self._first: tuple[float, int] | None = None  # (time, done) of the phase's first count

    def begin(self, name: str, now: float) -> None:
        self.current = Phase(name, now)
        self._first = None

    def feed(self, ev: dict, now: float) -> bool:
        """Take one event; True when it began a new phase (worth a log line)."""
        kind = ev.get("type")
        if kind in ("progress", "finished", "error"):
            self.current = None
            return False
        if kind != "phase" or not isinstance(ev.get("phase"), str):
            return False
        at = number(ev, "time")
        at = now if at is None else at
        done, total = number(ev, "done"), number(ev, "total")
        new = self.current is None or self.current.name != ev["phase"]
        if new:
            self.begin(ev["phase"], at)
        phase = self.current
        assert phase is not None
        phase.done = None if done is None else int(done)
        phase.total = None if not total else int(total)
        if phase.done is not None and phase.total:
            if self._first is None:
                self._first = (at, phase.done)
            first_at, first_done = self._first
            rate = (phase.done - first_done) / (at - first_at) if at > first_at else 0.0
            phase.eta_s = (phase.total - phase.done) / rate if rate > 0 else None
        return new


# The generation metrics an eval event may carry, as the log names them.
EVAL_METRICS = (("rougeL", "ROUGE-L"), ("bleu", "BLEU"), ("exact_match", "exact match"))


def eval_line(ev: dict) -> str:
    """The log line of an ``eval`` event: its loss and generation metrics, the best so
    far by the early-stopping metric, early stopping."""
    line = f"Eval loss {ev.get('loss', float('nan')):.4f}"
    line += "".join(f", {label} {ev[key]:.4g}" for key, label in EVAL_METRICS
                    if isinstance(ev.get(key), (int, float)))
    line += f" at step {ev.get('step')}"
    metric = ev.get("metric", "eval_loss")
    name = "" if metric == "eval_loss" else dict(EVAL_METRICS).get(metric, metric) + " "
    if ev.get("best_step") is not None and ev.get("best_step") != ev.get("step"):
        best = ev.get("best_value", ev.get("best_loss", float("nan")))
        line += f" (best {name}{best:.4f} at step {ev['best_step']})"
    elif ev.get("best_step") == ev.get("step"):
        line += " (the best so far)"
    if ev.get("early_stopping"):
        line += f": no better {name or 'loss '}in {ev.get('since_best')} evaluation(s), " \
                "stopping early"
    return line + "."
