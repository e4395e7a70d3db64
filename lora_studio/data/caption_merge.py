"""How an automatic caption meets the caption already beside the image: skip an image
that has one, append the new tags it lacks, or overwrite it; the trigger word first in
every case, never twice."""
from __future__ import annotations

from .tags import join_tags, split_tags

MODES = ("skip", "append", "overwrite")


def _unique(tags: list[str]) -> list[str]:
    return list(dict.fromkeys(tags))


def merged_caption(existing: str, generated: str, mode: str, trigger: str = "") -> str | None:
    """The caption to write, or None to leave the file as it is: ``skip`` and the image
    has a caption, nothing would change, or nothing was generated and there is no
    trigger (an empty caption is never written over one). A blank caption counts as none."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; one of {', '.join(MODES)}")
    has_caption = bool(existing.strip())
    if has_caption and mode == "skip":
        return None
    kept = split_tags(existing) if has_caption and mode == "append" else []
    first = [t for t in split_tags(trigger) if t not in kept]
    text = join_tags(_unique(first + kept + split_tags(generated)))
    return None if text == existing or not text else text
