"""What the Dataset tab shows of an image folder under the job's settings: the
folder's images (or, when the job lists concept folders, those folders' images with
their lines' repeats and caption extensions), then the job's regularisation images as
a group of their own, and where a new caption of each image goes. Decodes nothing."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .reg_images import nesting, stand_in_caption
from .scan import DatasetError, ImageDataset, ImageItem, caption_path_for, scan_images
from .subsets import (Subset, SubsetError, merged, parse_subsets, scan_subsets,
                      subset_folder, subset_line)


@dataclass(frozen=True)
class BrowseScan:
    train: ImageDataset
    reg: ImageDataset | None
    subsets: tuple[Subset, ...]   # the concept folder lines shown; () for the folder itself
    note: str = ""                # what of the job's could not be shown, and why

    @property
    def items(self) -> tuple[ImageItem, ...]:
        return self.train.items + (self.reg.items if self.reg else ())

    def caption_paths(self) -> list[Path]:
        """Each item's caption file, or where a new one goes (its line's extension)."""
        def extension(item: ImageItem) -> str:
            line = self.subsets[item.subset] if item.subset >= 0 else None
            return (line and line.caption_extension) or self.train.caption_extension
        return [item.caption_path or caption_path_for(item.image_path, extension(item))
                for item in self.items]

    def stand_in_captions(self) -> list[str]:
        """What each item trains on while it has no caption (its class), else ""."""
        return [stand_in_caption(item, self.subsets[item.subset].class_tokens
                                 if item.subset >= 0 else None) for item in self.items]

    def folder_notes(self) -> dict[str, str]:
        """A concept folder's own settings, by its name, for the folder list."""
        out = {}
        for subset in self.subsets:
            own = subset_line(Subset(subset.folder, None, *_settings(subset)))
            out[subset.folder] = own.partition("; ")[2]
        return out


def _settings(subset: Subset) -> tuple:
    return (subset.caption_extension, subset.shuffle_caption, subset.keep_tokens,
            subset.resolution, subset.class_tokens, False)


def browse_scan(root: str | os.PathLike, caption_extension: str, default_repeats: int,
                subset_lines: list[str] = (), reg_path: str = "") -> BrowseScan:
    """DatasetError when `root` itself cannot be scanned; a concept folder line or reg
    folder that cannot be shown is said in `note` and the rest is shown."""
    root = Path(root)
    subsets, train, reg, notes = [], None, None, []
    try:
        subsets = parse_subsets(list(subset_lines))
        if subsets:
            found = scan_subsets(root, subsets, caption_extension, default_repeats)
            train, reg = found.train, found.reg
    except (SubsetError, DatasetError) as exc:
        subsets = []
        notes.append(f"The job's concept folders are not shown: {exc.message}")
    if train is None:
        train = scan_images(root, caption_extension, default_repeats)
    folders = [subset_folder(root, s) for s in subsets if not s.is_reg] or [root]
    extra, note = reg_for_browser(folders, reg_path, caption_extension)
    if extra is not None:
        reg = extra if reg is None else merged(extra.root, caption_extension, [reg, extra])
    return BrowseScan(train, reg, tuple(subsets), " ".join(notes + ([note] if note else [])))


def reg_for_browser(train_folders: list[Path], reg_path: str, caption_extension: str
                    ) -> tuple[ImageDataset | None, str]:
    """The job's regularisation images to show beside the training folders, or None and
    why not (nothing set: no reason)."""
    if not reg_path.strip():
        return None, ""
    folder = Path(reg_path)
    if not folder.is_dir():
        return None, f"The regularisation folder '{reg_path}' was not found."
    if any(nesting(train, folder) for train in train_folders):
        return None, (f"The regularisation folder '{folder}' and this folder hold one "
                      "another, so its images are not shown as a group of their own.")
    try:
        reg = scan_images(folder, caption_extension, 1, is_reg=True)
    except DatasetError as exc:
        return None, exc.message
    return (reg, "") if reg.images else (None, f"The regularisation folder '{folder}' holds "
                                               "no images.")
