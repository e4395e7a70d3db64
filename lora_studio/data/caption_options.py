"""The caption a training step sees: kohya's shuffle_caption with keep_tokens
(the first N comma-separated tags, e.g. a trigger word, stay in front) and
caption dropout (a fraction of steps trained on the empty caption, which keeps
the LoRA usable without its trigger words)."""
from __future__ import annotations

import random

from .tags import join_tags, split_tags


def prepare_caption(caption: str, rng: random.Random, shuffle: bool = False,
                    keep_tokens: int = 0, dropout_rate: float = 0.0) -> str:
    if dropout_rate > 0.0 and rng.random() < dropout_rate:
        return ""
    if not shuffle:
        return caption
    tags = split_tags(caption)
    kept, rest = tags[:keep_tokens], tags[keep_tokens:]
    rng.shuffle(rest)
    return join_tags(kept + rest)


def captions_vary(shuffle: bool, dropout_rate: float) -> bool:
    """Whether a caption can differ between epochs (then text embeddings cannot be cached)."""
    return shuffle or dropout_rate > 0.0
