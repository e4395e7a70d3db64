"""What the dataset browser says about one image and about the open folder: file
size, pixel size and bucket, folder and repeats, caption file, problems; the
message after opening; the filter summary. Plain text, no window."""
from __future__ import annotations

from dataclasses import dataclass

from .buckets import bucket_for
from .health import PROBLEMS, image_size
from .scan import ImageDataset, ImageItem
from .session import CaptionSession


@dataclass(frozen=True)
class BucketSettings:
    resolution: int = 512
    min_side: int = 256
    max_side: int = 1024
    step: int = 64


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
    try:
        facts["size"] = human_size(path.stat().st_size)
    except OSError:
        facts["size"] = "?"
    check = session.checks.get(key)
    # Before the health check reaches this image, the header says its size.
    w, h = (check.width, check.height) if check and check.ok else (image_size(path) or (0, 0))
    if w and h:
        facts["dimensions"] = f"{w} × {h}"
        facts["bucket"] = "{} × {}".format(*bucket_for(w, h, buckets.resolution, buckets.min_side,
                                                       buckets.max_side, buckets.step))
    if check and not check.ok:
        facts["error"] = check.error
    cf = session.files[key]
    endings = "CRLF" if cf.newline == "\r\n" else "LF"
    facts["caption"] = (session.read_errors.get(key)
                        or (f"{cf.path.name} ({cf.encoding}, {endings})" if cf.exists
                            else "no caption file yet"))
    facts["problems"] = ", ".join(PROBLEMS[p] for p in sorted(session.problems(key)))
    return facts


def opened_message(dataset: ImageDataset, not_used: int, removed_temp: int) -> str:
    """The status line after a folder opens."""
    skipped = (f" Skipped (0 repeats): {', '.join(dataset.skipped_folders)}."
               if dataset.skipped_folders else "")
    passed = (f" Not used: {not_used} file(s) or folder(s), listed under Health."
              if not_used else "")
    leftovers = (f" Removed {removed_temp} leftover temp file(s) of an interrupted save."
                 if removed_temp else "")
    return (f"{dataset.images} images in {dataset.root}, "
            f"{dataset.samples_per_epoch} samples per epoch.{skipped}{passed}{leftovers}")


def filter_summary(shown: int, total: int, tag: str | None, problem: str | None) -> str:
    """"3 of 9 shown: tag “sks”, empty caption"."""
    parts = ([f"tag “{tag}”"] if tag else []) + ([PROBLEMS[problem].lower()] if problem else [])
    return f"{shown} of {total} shown" + (f": {', '.join(parts)}" if parts else "")
