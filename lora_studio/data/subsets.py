"""Concept folders with settings of their own, as kohya's dataset config gives them
(``[[datasets.subsets]]``). Each is one line of ``dataset.subsets``::

    10_sks dog; keep_tokens=1; shuffle_caption=true
    style; repeats=2; caption_extension=.caption; resolution=768
    ../reg/1_dog; is_reg=true; class_tokens=dog

The folder first (relative to the dataset folder, or absolute), then ``key=value``
settings separated by ';'. A setting left out is the dataset's: repeats from the
folder's 'N_' prefix else the dataset's repeats. When lines are given, only their
folders train (as in kohya, where a dataset config replaces train_data_dir); each
folder's images are scanned with the sub-folders below it.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace
from pathlib import Path

from ..errors import HintedError
from .scan import (MAX_REPEATS, ConceptFolder, DatasetError, ImageDataset, RepeatPrefixError,
                   normalize_caption_extension, parse_repeat_folder, scan_images)


@dataclass(frozen=True)
class Subset:
    folder: str
    repeats: int | None = None
    caption_extension: str | None = None
    shuffle_caption: bool | None = None
    keep_tokens: int | None = None
    resolution: int | None = None
    class_tokens: str | None = None
    is_reg: bool = False


# key -> (kind, minimum, maximum); kohya's own names are read as ours.
KEYS: dict[str, tuple[str, int | None, int | None]] = {
    "repeats": ("int", 1, MAX_REPEATS),
    "caption_extension": ("str", None, None),
    "shuffle_caption": ("bool", None, None),
    "keep_tokens": ("int", 0, 255),
    "resolution": ("int", 64, 4096),
    "class_tokens": ("str", None, None),
    "is_reg": ("bool", None, None),
}
ALIASES = {"num_repeats": "repeats", "image_dir": "folder"}
_TRUE, _FALSE = ("true", "yes", "1", "on"), ("false", "no", "0", "off")


class SubsetError(HintedError):
    """A dataset.subsets line that cannot be read."""

    def __init__(self, line: str, problem: str):
        super().__init__("subset", f"dataset.subsets line {line!r}: {problem}.",
                         "Write the folder, then settings separated by ';', e.g. "
                         "'10_sks dog; keep_tokens=1; caption_extension=.caption' (settings: "
                         f"{', '.join(KEYS)}).")


def _value(line: str, key: str, text: str):
    kind, low, high = KEYS[key]
    if kind == "str":
        if not text:
            raise SubsetError(line, f"{key} is empty")
        return text
    if kind == "bool":
        if text.lower() in _TRUE:
            return True
        if text.lower() in _FALSE:
            return False
        raise SubsetError(line, f"{key}={text!r} is not true or false")
    try:
        number = int(text)
    except ValueError:
        raise SubsetError(line, f"{key}={text!r} is not a whole number") from None
    if not low <= number <= high:
        raise SubsetError(line, f"{key}={number} is not between {low} and {high}")
    if key == "resolution" and number % 8:
        raise SubsetError(line, f"resolution={number} is not a multiple of 8")
    return number


def parse_subset(line: str) -> Subset:
    folder, *settings = [part.strip() for part in line.split(";")]
    if not folder:
        raise SubsetError(line, "the folder is missing")
    values: dict = {"folder": folder}
    for setting in filter(None, settings):
        key, sep, text = setting.partition("=")
        key = ALIASES.get(key.strip(), key.strip())
        if not sep or key not in KEYS:
            raise SubsetError(line, f"'{setting}' is not one of the settings")
        values[key] = _value(line, key, text.strip().strip("\"'"))
    if values.get("caption_extension"):
        values["caption_extension"] = normalize_caption_extension(values["caption_extension"])
    return Subset(**values)


def parse_subsets(lines: list[str]) -> list[Subset]:
    """The subsets of non-blank lines; SubsetError naming the first bad line."""
    return [parse_subset(line) for line in lines if line.strip()]


def subset_line(subset: Subset) -> str:
    """The line that parses back to `subset`, its settings in KEYS order."""
    parts = [subset.folder]
    for f in fields(Subset)[1:]:
        value = getattr(subset, f.name)
        if value is not None and not (f.name == "is_reg" and not value):
            parts.append(f"{f.name}={str(value).lower() if isinstance(value, bool) else value}")
    return "; ".join(parts)


def largest_resolution(lines: list[str], resolution: int) -> int:
    """The largest resolution the concept folders train at (the dataset's when no line
    sets one, or the lines cannot be read: check names them)."""
    try:
        return max([resolution] + [s.resolution for s in parse_subsets(lines) if s.resolution])
    except SubsetError:
        return resolution


def subset_folder(root: str | os.PathLike, subset: Subset) -> Path:
    return Path(root) / subset.folder  # an absolute folder replaces the root


@dataclass(frozen=True)
class SubsetScan:
    """What the subsets hold: the training images and the reg ones (None: no reg
    subset), each item's `subset` its line's index."""
    train: ImageDataset
    reg: ImageDataset | None


def _folder_name(name: str, default: int) -> tuple[int, str]:
    """(repeats, class) the folder's own name gives: '10_sks dog' -> (10, 'sks dog')."""
    try:
        repeats, class_tokens = parse_repeat_folder(name, default)
    except RepeatPrefixError:
        return default, name
    return repeats or default, class_tokens


def scan_subsets(root: str | os.PathLike, subsets: list[Subset], caption_extension: str,
                 default_repeats: int) -> SubsetScan:
    """Scan each subset's folder with its own caption extension and repeats;
    DatasetError (naming the line's folder) when one is missing."""
    train: list[ImageDataset] = []
    reg: list[ImageDataset] = []
    for index, subset in enumerate(subsets):
        folder = subset_folder(root, subset)
        repeats, class_tokens = _folder_name(folder.name, default_repeats)
        try:
            scan = scan_images(folder, subset.caption_extension or caption_extension,
                               subset.repeats or repeats, subset.is_reg)
        except DatasetError as exc:
            what = {"missing": f"'{folder}' does not exist.",
                    "not_a_folder": f"'{folder}' is a file, not a folder."}
            raise DatasetError(exc.reason, f"Concept folder '{subset.folder}': "
                               f"{what.get(exc.reason, exc.message)}", exc.hint) from None
        (reg if subset.is_reg else train).append(_one_concept(scan, subset, index, class_tokens))
    return SubsetScan(merged(Path(root), caption_extension, train),
                      merged(Path(root), caption_extension, reg) if reg else None)


def _one_concept(scan: ImageDataset, subset: Subset, index: int, class_tokens: str
                 ) -> ImageDataset:
    """A subset folder's images as one concept: the line's repeats when it sets them
    (else each 'N_' sub-folder keeps its own), the line's class else the folder's."""
    items = tuple(replace(item, folder=subset.folder, subset=index,
                          repeats=subset.repeats or item.repeats,
                          class_tokens=subset.class_tokens or item.class_tokens or class_tokens)
                  for item in scan.items)
    folders = (ConceptFolder(subset.folder, items[0].repeats, len(items)),) if items else ()
    return ImageDataset(scan.root, scan.caption_extension, items, folders, scan.skipped_folders,
                        scan.problems)


def merged(root: Path, caption_extension: str, scans: list[ImageDataset]) -> ImageDataset:
    return ImageDataset(root, normalize_caption_extension(caption_extension),
                        tuple(i for s in scans for i in s.items),
                        tuple(f for s in scans for f in s.folders),
                        tuple(f for s in scans for f in s.skipped_folders),
                        tuple(p for s in scans for p in s.problems))
