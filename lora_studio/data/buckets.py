"""Aspect-ratio buckets, as kohya's sd-scripts make them: every bucket has about
resolution² pixels, sides are multiples of `step` between `min_side` and
`max_side` (rounded out to multiples of `step`), and an image goes to the bucket of
its own size, else to the one with the nearest aspect ratio."""
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
