"""Whether a path the user opened is an image dataset or a text dataset, from
what it holds: a file is a text dataset (images are opened as folders); a
folder with pictures within three levels is an image dataset, one with only
.jsonl / .json records a text dataset. A folder with both is what the job is."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from .scan import is_image_file

RECORD_SUFFIXES = (".jsonl", ".json")
IMAGE_DEPTH = 3        # project/img/4_name/a.png: what folder_levels.py still recognises
MAX_FOLDERS_LOOKED_AT = 200  # a huge tree is answered from its first folders, never a hang

Kind = Literal["image", "text"]


def _entries(folder: Path) -> list[os.DirEntry]:
    try:
        with os.scandir(folder) as it:
            return [e for e in it if not e.name.startswith(".")]
    except OSError:
        return []


def _is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()
    except OSError:
        return False


def holds_images(folder: Path, depth: int = IMAGE_DEPTH) -> bool:
    """Whether a picture sits in the folder or in its sub-folders, `depth` levels in all."""
    level, looked = [folder], 0
    for _ in range(depth):
        below = []
        for f in level:
            looked += 1
            if looked > MAX_FOLDERS_LOOKED_AT:
                return False
            entries = _entries(f)
            if any(is_image_file(e.name) for e in entries):
                return True
            below += [Path(e.path) for e in entries if _is_dir(e)]
        level = below
    return False


def holds_records(folder: Path) -> bool:
    return any(e.name.lower().endswith(RECORD_SUFFIXES) for e in _entries(folder))


def dataset_kind(path: str | os.PathLike, job_kind: str) -> Kind:
    """'text' or 'image': how the Dataset tab opens the path. job_kind ('text',
    'image' or 'unknown') decides only for a folder that holds both."""
    path = Path(path)
    if path.is_file():
        return "text"
    records = holds_records(path)
    if not records:
        return "image"
    if holds_images(path):
        return "text" if job_kind == "text" else "image"
    return "text"
