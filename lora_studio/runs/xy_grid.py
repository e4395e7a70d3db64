"""XY grids of the image playground, without torch: which image each cell is, its
labels, and the ``parameters`` text A1111 writes in a PNG (and ComfyUI, Civitai and
other tools read back).

A cell is a dict of what differs from the grid's shared settings: ``adapters`` /
``weights`` (an empty list or a strength of 0 is the base model), ``prompt``, ``seed``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..config.samplers import SAMPLERS  # noqa: F401  (the playground's names)


@dataclass
class Grid:
    col_labels: list[str]
    row_labels: list[str]
    cells: list[list[dict]] = field(default_factory=list)   # rows of cells

    @property
    def count(self) -> int:
        return sum(len(row) for row in self.cells)


def adapters_by_strengths(adapters: list[str], strengths: list[float]) -> Grid:
    """Columns: strengths; rows: adapters (checkpoints of a run). Strength 0 is the
    base model in every row."""
    cells = [[{"adapters": [a] if s else [], "weights": [s] if s else []} for s in strengths]
             for a in adapters]
    return Grid([f"strength {s:g}" if s else "base (0)" for s in strengths], list(adapters), cells)


def prompts_by_seeds(prompts: list[str], seeds: list[int]) -> Grid:
    cells = [[{"prompt": p, "seed": s} for s in seeds] for p in prompts]
    return Grid([f"seed {s}" for s in seeds], list(prompts), cells)


def a1111_parameters(settings: dict, adapters: list[str] | None = None,
                     weights: list[float] | None = None) -> str:
    """A1111's ``parameters`` text: the prompt with its <lora:name:weight> tags, the
    negative prompt line, then "Key: value" settings."""
    tags = "".join(f" <lora:{a}:{w:g}>" for a, w in zip(adapters or [], weights or []) if w)
    lines = [f"{settings.get('prompt', '')}{tags}"]
    if settings.get("negative_prompt"):
        lines.append(f"Negative prompt: {settings['negative_prompt']}")
    pairs = [("Steps", settings.get("steps")), ("Sampler", settings.get("sampler")),
             ("CFG scale", settings.get("cfg")), ("Seed", settings.get("seed")),
             ("Size", f"{settings.get('width')}x{settings.get('height')}"),
             ("Model", settings.get("model"))]
    lines.append(", ".join(f"{k}: {v}" for k, v in pairs if v not in (None, "")))
    return "\n".join(lines)
