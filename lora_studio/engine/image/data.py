"""Training samples of an image job: the scanned images, checked and bucketed,
batches drawn per bucket in a seeded order (so a resumed run sees the same
batches), pixels fitted to their bucket, and the caches that let later epochs
skip the VAE and the text encoder(s)."""
from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from lora_studio.config.schema import JobConfig
from lora_studio.data.buckets import BucketReport, bucket_report, choose_bucket, resize_and_crop
from lora_studio.data.captions import CaptionReadError, read_caption
from lora_studio.data.images import SkippedImage, check_images, load_rgb
from lora_studio.data.reg_images import reg_repeats, stand_in_caption
from lora_studio.data.scan import IMAGE_EXTENSIONS, DatasetError, ImageDataset, scan_images
from lora_studio.data.subsets import Subset, SubsetError, parse_subsets, scan_subsets

from lora_studio.runs.events import event

from ..core.control import EngineError


@dataclass(frozen=True)
class TrainImage:
    path: Path
    caption: str
    repeats: int
    folder: str                   # kohya concept folder ("4_demo"), "" for the root
    size: tuple[int, int]         # (width, height), upright
    bucket: tuple[int, int]       # (width, height) it is trained at
    is_reg: bool = False          # a regularisation image: its loss counts prior_loss_weight
    shuffle_caption: bool = False  # its concept folder's (else the dataset's) caption options
    keep_tokens: int = 0


@dataclass(frozen=True)
class ImageSet:
    images: tuple[TrainImage, ...]
    skipped: tuple[SkippedImage, ...]
    report: BucketReport


def refuse_bad_repeats(scan: ImageDataset) -> None:
    """A folder whose 'N_' prefix is out of bounds is not trained without it: refuse."""
    bad = scan.bad_repeat_folders
    if bad:
        names = ", ".join(f"'{p.path.name}'" for p in bad)
        raise EngineError("data", f"The dataset folder(s) {names} in '{scan.root}' "
                          f"{bad[0].reason}.", bad[0].hint)


def scan_warnings(scan: ImageDataset) -> list[SkippedImage]:
    """What the scan passed over, for the run log: pictures in formats that are not
    trained as one line per extension with its count, every other item by name."""
    out = []
    for ext, n in scan.unsupported_formats.items():
        first = next(p.path for p in scan.problems_of("unsupported_format")
                     if p.path.suffix.lower() == ext)
        out.append(SkippedImage(first.parent, f"{n} file(s) skipped (unsupported format {ext}), "
                                f"e.g. '{first}'. Save them as PNG, JPEG or WebP to train on them "
                                f"({', '.join(sorted(IMAGE_EXTENSIONS))} are used)."))
    out += [SkippedImage(p.path, str(p)) for p in scan.problems
            if p.kind not in ("unsupported_format", "repeats_too_large")]
    return out


SKIPPED_LOG_LINES = 50  # a hostile dataset can skip 100,000 files: one event, not a flood


def skipped_log(skipped: tuple[SkippedImage, ...]) -> dict:
    """One warning event naming what was skipped, with the count."""
    shown = "\n".join(s.message for s in skipped[:SKIPPED_LOG_LINES])
    more = (f"\n... and {len(skipped) - SKIPPED_LOG_LINES} more"
            if len(skipped) > SKIPPED_LOG_LINES else "")
    return event("log", level="warning", message=f"Skipped {len(skipped)} image(s) or file(s):\n"
                                                 f"{shown}{more}", skipped=len(skipped))


def _scan(root: Path, caption_extension: str, repeats: int, is_reg: bool = False) -> ImageDataset:
    try:
        scan = scan_images(root, caption_extension, repeats, is_reg)
    except DatasetError as exc:
        raise EngineError("data", exc.message, exc.hint) from None
    refuse_bad_repeats(scan)
    return scan


def scan_job(job: JobConfig, root: Path) -> tuple[list[ImageDataset], list[Subset]]:
    """The scans a job trains from (the dataset folder, or its concept folders, and the
    regularisation images), and its concept folders' settings."""
    ds = job.dataset
    try:
        subsets = parse_subsets(ds.subsets)
        if not subsets:
            scans = [_scan(root, ds.caption_extension, ds.repeats)]
        else:
            found = scan_subsets(root, subsets, ds.caption_extension, ds.repeats)
            scans = [found.train] + ([found.reg] if found.reg else [])
            for scan in scans:
                refuse_bad_repeats(scan)
    except (SubsetError, DatasetError) as exc:
        raise EngineError("data", exc.message, exc.hint) from None
    if ds.reg_path.strip():
        scans.append(_scan(Path(ds.reg_path), ds.caption_extension, 1, is_reg=True))
    return scans, subsets


def load_image_set(job: JobConfig, root: Path,
                   phase: Callable[..., None] = lambda *args: None) -> ImageSet:
    """Scan, read captions, drop unusable images and bucket. Each image dropped, and
    whatever the scan passed over, is named in `skipped` (the run log shows them).
    Regularisation images (dataset.reg_path, or concept folders with is_reg) come after
    the training images, with the repeats that give an epoch as many of them as training
    samples. A concept folder's own settings (dataset.subsets) replace the dataset's."""
    ds = job.dataset
    phase("scanning the dataset")
    scans, subsets = scan_job(job, root)
    items = [item for scan in scans for item in scan.items]
    sizes, skipped = check_images([item.image_path for item in items],
                                  lambda done, total: phase("checking images", done, total))
    skipped = [s for scan in scans for s in scan_warnings(scan)] + skipped
    images = []
    for item in items:
        if item.image_path not in sizes:
            continue
        try:
            caption = read_caption(item.caption_path).text.strip() if item.caption_path else ""
        except CaptionReadError as exc:
            skipped.append(SkippedImage(item.image_path, str(exc)))
            continue
        subset = subsets[item.subset] if item.subset >= 0 else Subset("")
        caption = caption or stand_in_caption(item, subset.class_tokens)
        w, h = sizes[item.image_path]
        bucket = choose_bucket(w, h, subset.resolution or ds.resolution, ds.min_bucket_reso,
                               ds.max_bucket_reso, ds.bucket_reso_steps, ds.enable_bucket,
                               ds.bucket_no_upscale)
        images.append(TrainImage(
            item.image_path, " ".join(caption.split("\n")), item.repeats, item.folder, (w, h),
            bucket, item.is_reg,
            ds.shuffle_caption if subset.shuffle_caption is None else subset.shuffle_caption,
            ds.keep_tokens if subset.keep_tokens is None else subset.keep_tokens))
    if not any(not im.is_reg for im in images):
        raise EngineError("data", f"No usable images in '{root}' ({len(skipped)} skipped"
                          f"{': ' + skipped[0].message if skipped else ''}).",
                          "Put .png / .jpg / .webp images (with .txt captions beside them) in the "
                          "dataset folder or its 'N_name' sub-folders.")
    images = with_reg_repeats(images)
    report = bucket_report((im.bucket, im.repeats) for im in images)
    return ImageSet(tuple(images), tuple(skipped), report)


def with_reg_repeats(images: list[TrainImage]) -> list[TrainImage]:
    """The training images, then the reg images that are used, each with the repeats
    that make an epoch's reg samples match its training samples (kohya's cycling)."""
    train = [im for im in images if not im.is_reg]
    reg = [im for im in images if im.is_reg]
    counts = reg_repeats(sum(im.repeats for im in train), [im.repeats for im in reg])
    return train + [replace(im, repeats=n) for im, n in zip(reg, counts) if n]


@dataclass(frozen=True)
class MicroBatch:
    epoch: int
    indices: tuple[int, ...]      # into ImageSet.images
    slots: tuple[int, ...]        # each sample's place in the epoch, whatever the batch size


def epoch_batches(images: tuple[TrainImage, ...], batch_size: int, seed: int,
                  epoch: int) -> list[MicroBatch]:
    """The micro-batches of one epoch: each image ``repeats`` times, a batch never mixes
    buckets, the order depends only on (seed, epoch). A sample's slot numbers it within
    the epoch before batching, so its noise and augmentation (sample_seed) stay the
    same when only the batch size changes."""
    rng = random.Random(seed * 1_000_003 + epoch)
    by_bucket: dict[tuple[int, int], list[int]] = {}
    for index, image in enumerate(images):
        by_bucket.setdefault(image.bucket, []).extend([index] * image.repeats)
    batches, slot = [], 0
    for bucket in sorted(by_bucket):
        indices = by_bucket[bucket]
        rng.shuffle(indices)
        samples = [(index, slot + i) for i, index in enumerate(indices)]
        slot += len(indices)
        batches += [samples[i:i + batch_size] for i in range(0, len(samples), batch_size)]
    rng.shuffle(batches)
    return [MicroBatch(epoch, tuple(i for i, _ in b), tuple(s for _, s in b)) for b in batches]


def sample_seed(seed: int, epoch: int, slot: int) -> int:
    """The seed of one sample's noise, timestep, crop, flip and caption choices."""
    return (seed * 1_000_003 + epoch) * 1_000_003 + slot


@dataclass(frozen=True)
class Pixels:
    tensor: torch.Tensor            # (3, H, W) in [-1, 1]
    crop_top_left: tuple[int, int]  # (top, left), for SDXL's size conditioning


def image_key(image: TrainImage) -> str:
    """The image file as it is now (path, size, mtime) at its bucket: an edited file or
    another bucket is a different key."""
    st = image.path.stat()
    ident = f"{image.path}|{st.st_size}|{st.st_mtime_ns}|{image.bucket}"
    return hashlib.sha256(ident.encode("utf-8")).hexdigest()[:32]


@dataclass(frozen=True)
class Resized:
    array: np.ndarray               # (H, W, 3) uint8, covering the bucket, not yet cropped
    source_size: tuple[int, int]    # (width, height) as decoded, upright


def resized(image: TrainImage) -> Resized:
    """The image decoded and resized to cover its bucket: the part of `pixels` that does
    not depend on the crop position or the flip."""
    img = load_rgb(image.path)
    size = resize_and_crop(img.width, img.height, image.bucket)[0]
    return Resized(np.asarray(img.resize(size, Image.Resampling.LANCZOS)), img.size)


# An image decoded and resized (uint8) takes bucket area x 3 bytes and more, 3 MiB at 1024 px:
# 1 GiB holds about 340 such images, or 1,300 at 512 px. Per process: a multi-GPU run holds
# one cache in each.
PIXEL_CACHE_BYTES = 1 << 30


class PixelCache:
    """Images decoded and resized to their bucket, kept for later epochs when latents are
    not cached (random crop or flip, or caching off): a step then only crops, flips and
    scales, as a loop that decodes its dataset once before training does. The first images
    that fit the budget are kept and never evicted: a shuffled epoch would evict an LRU's
    images before their next use, so beyond the budget the rest are decoded every step."""

    def __init__(self, budget_bytes: int = PIXEL_CACHE_BYTES):
        self.budget_bytes = budget_bytes
        self.used_bytes = 0
        self._memory: dict[str, Resized] = {}

    def __len__(self) -> int:
        return len(self._memory)

    def get(self, image: TrainImage) -> Resized:
        try:
            key = image_key(image)
        except OSError:  # gone since the scan: decoding it raises the error that names it
            return resized(image)
        found = self._memory.get(key)
        if found is not None:
            return found
        fresh = resized(image)
        if self.used_bytes + fresh.array.nbytes <= self.budget_bytes:
            self._memory[key] = fresh
            self.used_bytes += fresh.array.nbytes
        return fresh


def pixels(image: TrainImage, rng: random.Random, random_crop: bool = False,
           flip: bool = False, cache: PixelCache | None = None) -> Pixels:
    """The image resized to cover its bucket and cropped to it. The random draws (crop
    position, then flip) are the same with or without `cache`, and so are the pixels."""
    source = cache.get(image) if cache is not None else resized(image)
    position = (rng.random(), rng.random()) if random_crop else (0.5, 0.5)
    left, top, right, bottom = resize_and_crop(*source.source_size, image.bucket, position)[1]
    arr = source.array[top:bottom, left:right]
    if flip and rng.random() < 0.5:
        arr = arr[:, ::-1]
    arr = arr.astype(np.float32) / 127.5 - 1.0
    return Pixels(torch.from_numpy(arr).permute(2, 0, 1).contiguous(), (top, left))


class LatentCache:
    """VAE latents per image, filled on first use. In memory, or as one safetensors
    file per image under `folder` (kept across a resume of the same run)."""

    def __init__(self, folder: Path | None = None):
        self.folder = folder
        self._memory: dict[str, torch.Tensor] = {}
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)

    def get(self, image: TrainImage, encode: Callable[[], torch.Tensor]) -> torch.Tensor:
        key = image_key(image)
        if self.folder is None:
            if key not in self._memory:
                self._memory[key] = encode().cpu()
            return self._memory[key]
        path = self.folder / f"{key}.safetensors"
        if path.exists():
            return load_file(path)["latents"]
        latents = encode().cpu().contiguous()
        tmp = path.with_suffix(".tmp")
        save_file({"latents": latents}, tmp)
        tmp.replace(path)
        return latents


def latent_caching_possible(job: JobConfig) -> bool:
    """Cached latents fix the crop and the flip, so random ones rule caching out."""
    return job.dataset.cache_latents and not job.dataset.random_crop and not job.dataset.flip_aug
