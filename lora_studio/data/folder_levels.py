"""kohya's convention puts the repeats in the name of the folder *below* the one
given as the dataset (`img/4_demo/`): opened one level too deep (`4_demo/`
itself) or one too high (`project/`, holding `img/4_demo/`), the images train
with the default repeats and the 4 is lost without a word. folder_level_slip
names the slip and the folder to open instead."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from .scan import DatasetError, ImageDataset, RepeatPrefixError, parse_repeat_folder, scan_images


@dataclass(frozen=True)
class FolderLevelSlip:
    kind: Literal["concept", "grandparent"]  # the concept folder itself / one level above
    opened: Path
    fix: Path       # the folder to open instead
    concept: str    # "4_demo": the folder whose name carries the repeats
    repeats: int    # what that name asks for
    trained: int    # what its images get as opened
    samples_per_epoch: int | None  # with `fix` opened; None when it cannot be scanned

    @property
    def message(self) -> str:
        why = ("it is opened as the dataset folder itself" if self.kind == "concept"
               else f"'{self.opened.name}' is one level above the dataset folder")
        return (f"These images sit in '{self.concept}', which means {self.repeats} repeats, but "
                f"{why}: they train {self.trained}× each. Open '{self.fix.name}' to use the "
                f"repeats.")

    @property
    def fix_label(self) -> str:
        samples = (f" ({self.samples_per_epoch} samples per epoch)"
                   if self.samples_per_epoch is not None else "")
        return f"Open '{self.fix.name}'{samples}"


def _repeats(name: str) -> int | None:
    """The N of an 'N_name' folder; None for any other name."""
    try:
        repeats, concept = parse_repeat_folder(name, 0)
    except RepeatPrefixError:
        return None
    return repeats if concept != name and repeats > 0 else None


def _samples(folder: Path, caption_extension: str, default_repeats: int) -> int | None:
    try:
        return scan_images(folder, caption_extension, default_repeats).samples_per_epoch
    except DatasetError:
        return None


def folder_level_slip(dataset: ImageDataset) -> FolderLevelSlip | None:
    """The slip in how the scanned dataset folder was chosen, or None when the
    repeats in its folder names are used as their names say."""
    root = dataset.root
    named = _repeats(root.name)
    own = [i for i in dataset.items if not i.folder]  # they train with the default repeats
    if named is not None and own and named != own[0].repeats:
        return FolderLevelSlip("concept", root, root.parent, root.name, named, own[0].repeats,
                               _samples(root.parent, dataset.caption_extension, own[0].repeats))
    # One level too high: a plain top folder whose images sit in its 'N_' sub-folders.
    lost: dict[str, tuple[str, int, int]] = {}
    for item in dataset.items:
        parts = item.image_path.relative_to(root).parts
        if len(parts) >= 3 and _repeats(parts[0]) is None:
            repeats = _repeats(parts[1])
            if repeats is not None and repeats != item.repeats:
                lost.setdefault(parts[0], (parts[1], repeats, item.repeats))  # the default
    if not lost:
        return None
    top = max(lost, key=lambda name: sum(i.folder == name for i in dataset.items))
    concept, repeats, trained = lost[top]
    return FolderLevelSlip("grandparent", root, root / top, concept, repeats, trained,
                           _samples(root / top, dataset.caption_extension, trained))

