"""Regularisation images (DreamBooth prior preservation) as kohya's sd-scripts use
them: a folder of ``N_class/`` folders (``1_dog/``) whose images keep the model's
idea of the class while the LoRA learns the concept. Each epoch trains as many reg
samples as training samples: the reg images are taken in order with their repeats
until that count is reached, then, if they fall short, given one more repeat each in
turn. Their loss is multiplied by the prior loss weight. A reg image without a
caption file is captioned with its class (the folder's name after ``N_``)."""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from .scan import ImageItem


def reg_repeats(train_samples: int, repeats: Sequence[int]) -> list[int]:
    """How often each reg image is trained per epoch (0: not used), so that the reg
    samples match `train_samples` as kohya's DreamBoothDataset makes them."""
    out = [0] * len(repeats)
    if not repeats or train_samples <= 0:
        return out
    n, first = 0, True
    while n < train_samples:
        for i, r in enumerate(repeats):
            if first:
                out[i] = r
                n += r
            else:
                out[i] += 1
                n += 1
            if n >= train_samples:
                break
        first = False
    return out


def stand_in_caption(item: ImageItem, line_class_tokens: str | None) -> str:
    """What an image trains on when its caption is empty or missing, as kohya does: a
    regularisation image's class, or a concept folder line's class_tokens; else ""."""
    return item.class_tokens if item.is_reg or line_class_tokens else ""


def _resolved(path: str | os.PathLike) -> Path:
    try:
        return Path(path).resolve()
    except OSError:
        return Path(os.path.abspath(path))


def nesting(train: str | os.PathLike, reg: str | os.PathLike) -> str | None:
    """'same', 'reg_in_train' or 'train_in_reg' when one folder holds the other (the
    training scan would pick up the reg images, or the other way round), else None."""
    t, r = _resolved(train), _resolved(reg)
    if t == r:
        return "same"
    if t in r.parents:
        return "reg_in_train"
    if r in t.parents:
        return "train_in_reg"
    return None
