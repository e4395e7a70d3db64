"""Which built-in preset fits a dataset of the other kind than the current
preset's (a folder of images opened under a text preset, a .jsonl under an image
one): one of the dataset's kind, for the same VRAM class where there is one,
else for the largest class below it, else the smallest."""
from __future__ import annotations

import re
from collections.abc import Iterable

from .presets import PresetInfo

FAMILY_KINDS = {"text": "text", "sd1": "image", "sd2": "image", "sdxl": "image"}
_GB = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*GB\s*$", re.IGNORECASE)


def kind_of_family(family: object) -> str:
    """'text', 'image', or 'unknown' (family 'auto' or not a family)."""
    return FAMILY_KINDS.get(family, "unknown") if isinstance(family, str) else "unknown"


def vram_gb(vram_class: str) -> float:
    """'12GB' -> 12.0; 'CPU' (and anything unreadable) -> 0."""
    match = _GB.match(vram_class or "")
    return float(match.group(1)) if match else 0.0


def matching_preset(dataset_kind: str, job_kind: str, vram_class: str,
                    presets: Iterable[PresetInfo]) -> PresetInfo | None:
    """The built-in preset to offer, or None when the job already fits the
    dataset (or its kind is not decided yet) or no built-in has that kind."""
    if job_kind in (dataset_kind, "unknown"):
        return None
    fitting = [p for p in presets if p.origin == "built-in" and not p.error
               and kind_of_family(p.meta.model_family) == dataset_kind]
    if not fitting:
        return None
    want = vram_gb(vram_class)
    same = [p for p in fitting if vram_gb(p.meta.vram_class) == want]
    below = sorted((p for p in fitting if vram_gb(p.meta.vram_class) < want),
                   key=lambda p: vram_gb(p.meta.vram_class))
    return (same or below[-1:] or sorted(fitting, key=lambda p: vram_gb(p.meta.vram_class)))[0]
