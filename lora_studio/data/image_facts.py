"""What the dataset browser says about one image and about the open folder: file
size, pixel size and bucket, folder and repeats, caption file, problems; the
message after opening; the filter summary; the folder groups (training and
regularisation images). Plain text, no window."""
from __future__ import annotations

from dataclasses import dataclass

from .buckets import choose_bucket
from .health import PROBLEMS, image_size
from .reg_images import reg_repeats
from .scan import ImageDataset, ImageItem
from .session import CaptionSession
from ..wording import plural


@dataclass(frozen=True)
class BucketSettings:
    resolution: int = 512
    min_side: int = 256
    max_side: int = 1024
    step: int = 64
    enable: bool = True
    no_upscale: bool = False


def human_size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return ""


def image_facts(session: CaptionSession, item: ImageItem, key: int,
                buckets: BucketSettings = BucketSettings()) -> dict:
    """file, size, folder, repeats, dimensions and bucket (when the size is known),
    error, caption (its file, encoding and line endings) and problems."""
    path = session.image_paths[key]
    facts = {"file": path.name, "folder": item.folder, "repeats": item.repeats}
    if item.is_reg:
        facts["group"] = (f"regularisation image of class '{item.class_tokens}'"
                          if item.class_tokens else "regularisation image, no class folder")
    try:
        facts["size"] = human_size(path.stat().st_size)
    except OSError:
        facts["size"] = "?"
    check = session.checks.get(key)
    # Before the health check reaches this image, the header says its size.
    w, h = (check.width, check.height) if check and check.ok else (image_size(path) or (0, 0))
    if w and h:
        facts["dimensions"] = f"{w} × {h}"
        facts["bucket"] = "{} × {}".format(*choose_bucket(
            w, h, buckets.resolution, buckets.min_side, buckets.max_side, buckets.step,
            buckets.enable, buckets.no_upscale))
    if check and not check.ok:
        facts["error"] = check.error
    cf = session.files[key]
    endings = "CRLF" if cf.newline == "\r\n" else "LF"
    missing = (f"no caption file: trains as its class '{item.class_tokens}'"
               if item.is_reg and item.class_tokens else "no caption file yet")
    facts["caption"] = (session.read_errors.get(key)
                        or (f"{cf.path.name} ({cf.encoding}, {endings})" if cf.exists
                            else missing))
    facts["problems"] = ", ".join(PROBLEMS[p] for p in sorted(session.problems(key)))
    return facts


def opened_message(dataset: ImageDataset, not_used: int, removed_temp: int,
                   reg: ImageDataset | None = None, reg_problem: str = "") -> str:
    """The status line after a folder opens (with the job's regularisation images)."""
    skipped = (f" Skipped (0 repeats): {', '.join(dataset.skipped_folders)}."
               if dataset.skipped_folders else "")
    passed = (f" Not used: {not_used} file(s) or folder(s), listed under Health."
              if not_used else "")
    leftovers = (f" Removed {removed_temp} leftover temp file(s) of an interrupted save."
                 if removed_temp else "")
    regs = (f" Regularisation: {plural(reg.images, 'image')} in {reg.root}, "
            f"{reg_samples(dataset, reg)} samples per epoch." if reg is not None else "")
    regs += f" {reg_problem}" if reg_problem else ""
    return (f"{plural(dataset.images, 'image')} in {dataset.root}, "
            f"{dataset.samples_per_epoch} samples per epoch.{regs}{skipped}{passed}{leftovers}")


def reg_samples(dataset: ImageDataset, reg: ImageDataset) -> int:
    return sum(reg_repeats(dataset.samples_per_epoch, [i.repeats for i in reg.items]))


# The dataset browser's folder choice: None shows every image, else (is_reg, folder name),
# the folder None for the whole group.
Group = tuple[bool, str | None] | None


def folder_choices(dataset: ImageDataset, reg: ImageDataset | None,
                   notes: dict[str, str] | None = None) -> list[tuple[str, Group]]:
    """(label, group) of the browser's folder list: the training images and their
    folders, then the regularisation images and their class folders; `notes`: a
    folder's own settings (its concept folder line), by name."""
    out: list[tuple[str, Group]] = [(f"All images ({dataset.images + (reg.images if reg else 0)})",
                                     None)]
    groups = [(False, dataset, "Training images")] + ([(True, reg, "Regularisation images")]
                                                      if reg is not None else [])
    for is_reg, data, title in groups:
        if reg is not None:
            out.append((f"{title} ({data.images})", (is_reg, None)))
        for f in data.folders:
            label = f.name or "(top folder)"
            prefix = "  reg · " if is_reg else ("  " if reg is not None else "")
            note = (notes or {}).get(f.name)
            out.append((f"{prefix}{label} — ×{f.repeats} repeats, {plural(f.images, 'image')}"
                        + (f" · {note}" if note else ""), (is_reg, f.name)))
    return out


def in_group(item: ImageItem, group: Group) -> bool:
    if group is None:
        return True
    is_reg, folder = group
    return item.is_reg == is_reg and (folder is None or item.folder == folder)


def filter_summary(shown: int, total: int, tag: str | None, problem: str | None) -> str:
    """"3 of 9 shown: tag “sks”, empty caption"."""
    parts = ([f"tag “{tag}”"] if tag else []) + ([PROBLEMS[problem].lower()] if problem else [])
    return f"{shown} of {total} shown" + (f": {', '.join(parts)}" if parts else "")
