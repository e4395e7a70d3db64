"""Dataset health: images without captions, empty captions, captions that
cannot be read (a pipe, too large, undecodable), corrupt or unreadable images,
very small images, exact duplicates and captions longer than CLIP reads (the
session counts them, data/clip_tokens.py). Each problem is a filter with a count.
Checking an image never raises: whatever PIL throws on a bad file becomes an error
message on that image. What the scan passed over (not images in the grid) is
grouped by kind with its count by passed_over_groups."""
from __future__ import annotations

import hashlib
import json
import warnings
from collections import defaultdict
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from pathlib import Path

from .walk import SKIP_KINDS

PROBLEMS = {
    "no_caption": "No caption file",
    "empty_caption": "Empty caption",
    "caption_unreadable": "Caption unreadable",
    "unreadable": "Corrupt / unreadable",
    "too_small": "Very small",
    "duplicate": "Duplicate",
    "over_clip": "Over 75 CLIP tokens (cut)",
}

DEFAULT_MIN_SIDE = 256


@dataclass(frozen=True)
class PassedOver:
    label: str          # "Not a regular file"
    paths: tuple[Path, ...]
    detail: str         # every path with its reason, then what to do, one per line


def passed_over_groups(problems: Iterable) -> list[PassedOver]:
    """The scan's Skipped records (data/walk.py) grouped by kind, in SKIP_KINDS order."""
    by_kind: dict[str, list] = defaultdict(list)
    for p in problems:
        by_kind[p.kind].append(p)
    return [PassedOver(SKIP_KINDS[kind], tuple(p.path for p in found), _detail(found))
            for kind in SKIP_KINDS if (found := by_kind.get(kind))]


DETAIL_LINES = 20


def _detail(found: list) -> str:
    lines = [f"{p.path} {p.reason}." for p in found[:DETAIL_LINES]]
    if len(found) > DETAIL_LINES:
        lines.append(f"... and {len(found) - DETAIL_LINES} more.")
    return "\n".join(lines + [found[0].hint])


@dataclass(frozen=True)
class ImageCheck:
    width: int = 0
    height: int = 0
    error: str = ""  # empty when the image decodes

    @property
    def ok(self) -> bool:
        return not self.error


def image_size(path: str | Path) -> tuple[int, int] | None:
    """Width and height from the header only (no decoding); None if unreadable."""
    from PIL import Image
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path) as im:
                return im.size
    except Exception:  # noqa: BLE001 - any PIL failure means "cannot tell"
        return None


def check_image(path: str | Path) -> ImageCheck:
    """Open, verify and decode the image (JPEGs at reduced scale, which still reads
    the whole stream, so truncation is caught). Slow-ish: run it in a worker."""
    from PIL import Image
    path = Path(path)
    try:
        if path.stat().st_size == 0:
            return ImageCheck(error="empty file (0 bytes)")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path) as im:
                im.verify()
            with Image.open(path) as im:
                size = im.size
                im.draft("RGB", (64, 64))
                im.load()
        return ImageCheck(size[0], size[1])
    except Exception as exc:  # noqa: BLE001 - PIL raises many types on bad files
        msg = str(exc) or type(exc).__name__
        return ImageCheck(error=f"{msg}. Re-export the image or remove it from the dataset.")


def check_images(paths: dict[Hashable, Path],
                 on_progress: Callable[[int, int], None] | None = None,
                 should_stop: Callable[[], bool] | None = None) -> dict[Hashable, ImageCheck]:
    results = {}
    total = len(paths)
    for n, (key, path) in enumerate(paths.items(), 1):
        if should_stop and should_stop():
            break
        results[key] = check_image(path)
        if on_progress and (n % 50 == 0 or n == total):
            on_progress(n, total)
    return results


def _file_hash(path: Path) -> str | None:
    h = hashlib.blake2b(digest_size=20)
    try:
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    except OSError:
        return None
    return h.hexdigest()


def duplicate_groups(paths: dict[Hashable, Path]) -> list[list[Hashable]]:
    """Groups of keys whose files have identical bytes. Only files of equal size
    are hashed, so a dataset without duplicates costs one stat per file."""
    by_size: dict[int, list[Hashable]] = defaultdict(list)
    for key, path in paths.items():
        try:
            size = path.stat().st_size
        except OSError:
            continue
        if size:
            by_size[size].append(key)
    groups = []
    for keys in by_size.values():
        if len(keys) < 2:
            continue
        by_hash: dict[str, list[Hashable]] = defaultdict(list)
        for key in keys:
            digest = _file_hash(paths[key])
            if digest:
                by_hash[digest].append(key)
        groups.extend(g for g in by_hash.values() if len(g) > 1)
    return groups


def caption_problems(caption_exists: bool, text: str) -> set[str]:
    if not caption_exists:
        return {"no_caption"}
    return {"empty_caption"} if not text.strip() else set()


def image_problems(check: ImageCheck, min_side: int = DEFAULT_MIN_SIDE) -> set[str]:
    if not check.ok:
        return {"unreadable"}
    return {"too_small"} if min(check.width, check.height) < min_side else set()


def problem_counts(problems: Iterable[set[str]]) -> dict[str, int]:
    counts = dict.fromkeys(PROBLEMS, 0)
    for found in problems:
        for p in found:
            counts[p] += 1
    return counts


CHUNK = 200


def serve(paths_file: Path, out) -> None:
    """The health check as a child process (the browser starts `python -m
    lora_studio.data.health PATHS.json`): reads {index: path}, writes JSON lines:
    first {"duplicates": [[index, ...], ...]}, then {"checks": {index: [w, h, error]}}
    per chunk of images, flushed as they come."""
    paths = {int(k): Path(v) for k, v in json.loads(Path(paths_file).read_text("utf-8")).items()}
    out.write(json.dumps({"duplicates": duplicate_groups(paths)}) + "\n")
    out.flush()
    keys = list(paths)
    for start in range(0, len(keys), CHUNK):
        checks = check_images({k: paths[k] for k in keys[start:start + CHUNK]})
        out.write(json.dumps({"checks": {k: [c.width, c.height, c.error] for k, c in checks.items()}}) + "\n")
        out.flush()


if __name__ == "__main__":
    import sys
    sys.stdout.reconfigure(encoding="utf-8")
    serve(Path(sys.argv[1]), sys.stdout)
