"""The samples a run made, from its ``sample`` events: which kind it makes (text or
image), and its image samples as a grid of prompt (rows, in the order the run first
sampled them) by step (columns, ascending)."""
from __future__ import annotations

from pathlib import Path

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}


def sample_kind(ev: dict) -> str | None:
    """'text' or 'image' for a ``sample`` event: its ``kind``, else what it carries."""
    if ev.get("kind") in ("text", "image"):
        return ev["kind"]
    if isinstance(ev.get("samples"), list) or isinstance(ev.get("text"), str):
        return "text"
    path = ev.get("path")
    if isinstance(path, str) and path:
        return "image" if Path(path).suffix.lower() in IMAGE_SUFFIXES else "text"
    return None


class SampleGrid:
    def __init__(self) -> None:
        self.prompts: list[str] = []
        self.steps: list[int] = []
        self._cells: dict[tuple[str, int], Path] = {}

    def add(self, prompt: str, step: int, path: Path) -> None:
        """A resumed run that samples a step again replaces that cell."""
        if prompt not in self.prompts:
            self.prompts.append(prompt)
        if step not in self.steps:
            self.steps.append(step)
            self.steps.sort()
        self._cells[(prompt, step)] = path

    def cell(self, prompt: str, step: int) -> Path | None:
        return self._cells.get((prompt, step))

    def __len__(self) -> int:
        return len(self._cells)
