"""Aspect-ratio buckets, as kohya's sd-scripts make them: every bucket has about
resolution² pixels, sides are multiples of `step` between `min_side` and
`max_side` (rounded out to multiples of `step`), and an image goes to the bucket of
its own size, else to the one with the nearest aspect ratio. With kohya's
bucket_no_upscale an image is never enlarged: its bucket is its own size (scaled
down to resolution² pixels when larger) cut down to multiples of `step`."""
from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache


@lru_cache(maxsize=32)
def bucket_resolutions(resolution: int, min_side: int = 256, max_side: int = 1024,
                       step: int = 64) -> tuple[tuple[int, int], ...]:
    """All (width, height) buckets, sorted."""
    # kohya moves min down and max up to multiples of the step before making buckets;
    # unlike kohya, never down to 0 (a min below one step).
    min_side = max(step, min_side - min_side % step)
    max_side += -max_side % step
    max_area = resolution * resolution
    side = int(math.sqrt(max_area) // step) * step
    resos = {(side, side)}
    width = min_side
    while width <= max_side:
        height = min(max_side, int((max_area // width) // step) * step)
        if height >= min_side:
            resos.add((width, height))
            resos.add((height, width))
        width += step
    return tuple(sorted(resos))


def bucket_for(width: int, height: int, resolution: int, min_side: int = 256,
               max_side: int = 1024, step: int = 64) -> tuple[int, int]:
    """The (width, height) bucket an image of this size falls into."""
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    buckets = bucket_resolutions(resolution, min_side, max_side, step)
    if (width, height) in buckets:  # kohya's choice even where another bucket has the same aspect
        return width, height
    aspect = width / height
    return min(buckets, key=lambda wh: abs(wh[0] / wh[1] - aspect))


def _round_to_step(x: float, step: int) -> int:
    x = int(x + 0.5)
    return x - x % step


def bucket_no_upscale(width: int, height: int, resolution: int, step: int = 64
                      ) -> tuple[int, int]:
    """kohya's bucket for an image with bucket_no_upscale (BucketManager.select_bucket):
    an image over resolution² pixels is scaled down to that area, its side along the
    aspect ratio closest to the image's rounded to the step; the bucket is that size
    cut down to multiples of the step, never larger than the image. Unlike kohya, a
    side is never cut down to 0 (an image narrower than one step gets one step)."""
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    max_area = resolution * resolution
    aspect = width / height
    if width * height > max_area:
        resized_w = math.sqrt(max_area * aspect)
        resized_h = max_area / resized_w
        w_rounded = _round_to_step(resized_w, step)
        h_in_w = max(step, _round_to_step(w_rounded / aspect, step))
        h_rounded = _round_to_step(resized_h, step)
        w_in_h = max(step, _round_to_step(h_rounded * aspect, step))
        if abs(w_rounded / h_in_w - aspect) < abs(w_in_h / max(h_rounded, 1) - aspect):
            width, height = w_rounded, int(w_rounded / aspect + 0.5)
        else:
            width, height = int(h_rounded * aspect + 0.5), h_rounded
    return max(step, width - width % step), max(step, height - height % step)


def choose_bucket(width: int, height: int, resolution: int, min_side: int = 256,
                  max_side: int = 1024, step: int = 64, enable: bool = True,
                  no_upscale: bool = False) -> tuple[int, int]:
    """The bucket of an image under a job's bucket settings: the square of the
    resolution without bucketing, kohya's no-upscale bucket, else bucket_for."""
    if not enable:
        return resolution, resolution
    if no_upscale:
        return bucket_no_upscale(width, height, resolution, step)
    return bucket_for(width, height, resolution, min_side, max_side, step)


def resize_and_crop(width: int, height: int, bucket: tuple[int, int],
                    position: tuple[float, float] = (0.5, 0.5)
                    ) -> tuple[tuple[int, int], tuple[int, int, int, int]]:
    """How to fit an image into its bucket without distorting it: the size to
    resize to (covering the bucket) and the (left, top, right, bottom) crop box.
    position is where the crop sits along the overflowing axis, 0..1 (0.5 = centre)."""
    bw, bh = bucket
    scale = max(bw / width, bh / height)
    rw, rh = max(bw, round(width * scale)), max(bh, round(height * scale))
    left = round((rw - bw) * min(max(position[0], 0.0), 1.0))
    top = round((rh - bh) * min(max(position[1], 0.0), 1.0))
    return (rw, rh), (left, top, left + bw, top + bh)


@dataclass(frozen=True)
class BucketReport:
    """How a dataset falls into buckets: images and samples per epoch (repeats
    counted) for each (width, height)."""
    images: dict[tuple[int, int], int]
    samples: dict[tuple[int, int], int]

    def lines(self, batch_size: int = 1) -> list[str]:
        out = []
        for (w, h), n in sorted(self.images.items(), key=lambda kv: (-kv[1], kv[0])):
            line = f"{w}x{h}: {n} image{'s' if n != 1 else ''}, {self.samples[(w, h)]} per epoch"
            if self.samples[(w, h)] < batch_size:
                line += f" (fewer than the batch size {batch_size}: trained as a smaller batch)"
            out.append(line)
        return out


def bucket_report(assignments: Iterable[tuple[tuple[int, int], int]]) -> BucketReport:
    """assignments: (bucket, repeats) for each image."""
    images: Counter = Counter()
    samples: Counter = Counter()
    for bucket, repeats in assignments:
        images[bucket] += 1
        samples[bucket] += repeats
    return BucketReport(dict(images), dict(samples))
