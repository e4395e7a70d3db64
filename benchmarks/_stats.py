"""The figures every benchmark reports: a measured value and its baseline, both taken
in the same run and interleaved round by round, so that a change in the machine's load
moves both.

The ratio is the median of the per-round ratios (value / baseline of the same round),
not the ratio of the two medians: pairing each value with the baseline measured next
to it cancels the load of that moment. The spread is the min-max of those per-round
ratios, so a reader sees how far one round may land from the headline.
"""
from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Summary:
    median: float
    baseline_median: float
    ratio: float
    low: float   # the smallest per-round ratio
    high: float  # the largest per-round ratio
    n: int


def figure(x: float) -> str:
    """Three significant digits without an exponent: 6.91, 0.123, 1234."""
    if abs(x) >= 100:
        return f"{x:.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    if abs(x) >= 1:
        return f"{x:.2f}"
    return f"{x:.3g}"


def compare(values: Sequence[float], baselines: Sequence[float]) -> Summary:
    if len(values) != len(baselines) or not values:
        raise ValueError(f"need one baseline per value, got {len(values)} and {len(baselines)}")
    ratios = [v / b for v, b in zip(values, baselines)]
    return Summary(statistics.median(values), statistics.median(baselines),
                   statistics.median(ratios), min(ratios), max(ratios), len(values))


def summarize(name: str, values: Sequence[float], baselines: Sequence[float], *,
              baseline: str, unit: str, over: str = "rounds", per_round: bool = True) -> Summary:
    """Print the headline line (and, with `per_round`, every round's value / baseline)
    and return the figures for a target check."""
    s = compare(values, baselines)
    print(f"{name}: {figure(s.median)} {unit} (median of {s.n}) vs {baseline} "
          f"{figure(s.baseline_median)} {unit} -> ratio {s.ratio:.3f} "
          f"(spread, min-max of per-round ratios: {s.low:.3f}-{s.high:.3f} over {s.n} {over})",
          flush=True)
    if per_round:
        print("  per round, value / baseline: "
              + ", ".join(f"{figure(v)}/{figure(b)}" for v, b in zip(values, baselines)), flush=True)
    return s


def verdict(label: str, value: float, limit: float, unit: str = "",
            at_least: bool = False) -> bool:
    """Print whether `value` is within its target `limit`: an upper bound, or with
    `at_least` a lower one (a speed-up, images per second)."""
    ok = value >= limit if at_least else value <= limit
    # A ratio (no unit) close to its target needs all three decimals to tell the sides apart.
    shown = (lambda x: f"{x:.3f}") if not unit else (lambda x: f"{figure(x)} {unit}")
    print(f"{label}: {shown(value)} (target {'>=' if at_least else '<='} {shown(limit)}): "
          f"{'OK' if ok else 'MISSED'}", flush=True)
    return ok
