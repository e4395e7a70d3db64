import math

import numpy as np
import pytest

from lora_studio.data.buckets import bucket_for, bucket_resolutions


@pytest.mark.parametrize("resolution,lo,hi,step", [(512, 256, 1024, 64), (1024, 512, 2048, 64),
                                                   (768, 256, 1024, 32)])
def test_buckets_keep_area_step_and_limits(resolution, lo, hi, step):
    buckets = bucket_resolutions(resolution, lo, hi, step)
    assert (resolution // step * step,) * 2 in buckets
    for w, h in buckets:
        assert w * h <= resolution * resolution
        assert w % step == 0 and h % step == 0
        assert lo <= w <= hi and lo <= h <= hi
        assert (h, w) in buckets


def test_image_goes_to_nearest_aspect():
    assert bucket_for(1000, 1000, 512) == (512, 512)
    assert bucket_for(1920, 1080, 512) == (640, 384)
    assert bucket_for(1080, 1920, 512) == (384, 640)
    assert bucket_for(400, 300, 512) == (576, 448)  # small images use the same buckets
    assert bucket_for(10000, 100, 512) == (1024, 256)  # extreme aspect: the widest bucket
    with pytest.raises(ValueError):
        bucket_for(0, 10, 512)


# kohya's rule, transcribed from kohya-ss/sd-scripts (library/model_util.py
# make_bucket_resolutions; library/train_util.py BaseDataset.adjust_min_max_bucket_reso_by_steps
# and BucketManager.select_bucket, its upscaling branch, kohya's default) to check ours against.
def kohya_adjust_min_max(min_bucket_reso, max_bucket_reso, bucket_reso_steps):
    if min_bucket_reso % bucket_reso_steps != 0:
        min_bucket_reso = min_bucket_reso - min_bucket_reso % bucket_reso_steps
    if max_bucket_reso % bucket_reso_steps != 0:
        max_bucket_reso = max_bucket_reso + bucket_reso_steps - max_bucket_reso % bucket_reso_steps
    return min_bucket_reso, max_bucket_reso


def kohya_make_bucket_resolutions(max_reso, min_size=256, max_size=1024, divisible=64):
    max_width, max_height = max_reso
    max_area = max_width * max_height
    resos = set()
    width = int(math.sqrt(max_area) // divisible) * divisible
    resos.add((width, width))
    width = min_size
    while width <= max_size:
        height = min(max_size, int((max_area // width) // divisible) * divisible)
        if height >= min_size:
            resos.add((width, height))
            resos.add((height, width))
        width += divisible
    resos = list(resos)
    resos.sort()
    return resos


def kohya_select_buckets(resos, sizes):
    """select_bucket for many (width, height) at once: the image's own size when it is a
    bucket, else the first bucket (in sorted order) with the least aspect-ratio error."""
    aspect_ratios = np.array([w / h for w, h in resos])
    image_aspects = np.array([w / h for w, h in sizes])
    nearest = np.abs(aspect_ratios[None, :] - image_aspects[:, None]).argmin(axis=1)
    predefined = set(resos)
    return [size if size in predefined else resos[i] for size, i in zip(sizes, nearest)]


# Irregular sides from 64 to 4096 (about 3% apart), every pairing of them, the extreme
# aspects, and for every bucket its own size and twice it.
SIDES = sorted({int(64 * 1.043 ** k) for k in range(100)} | {4096})
SWEEP = [(w, h) for w in SIDES for h in SIDES] + [(1, 4096), (4096, 1), (10000, 100), (100, 10000),
                                                  (3, 2), (2, 3), (1, 1), (8192, 8191)]


def _ties(resos):
    """Images whose aspect lies exactly halfway between two neighbouring buckets' aspects."""
    by_aspect = sorted(resos, key=lambda r: r[0] / r[1])
    return [(a * d + b * c, 2 * b * d) for (a, b), (c, d) in zip(by_aspect, by_aspect[1:])]


@pytest.mark.parametrize("resolution,lo,hi,step", [
    (512, 256, 1024, 64), (768, 256, 1024, 64), (1024, 256, 1024, 64),  # kohya's defaults
    (512, 256, 768, 64), (1024, 512, 2048, 64), (768, 256, 1024, 32),  # the built-in presets, finer steps
    (512, 300, 1000, 64), (640, 200, 1100, 48),  # min / max that are not multiples of the step
    # Past kohya's own check (resolution above max), which we only warn about: the square
    # buckets 1024 and 1280 share an aspect, and an image of a bucket's size gets that bucket.
    (1280, 256, 1024, 64)])
def test_buckets_and_choice_match_kohya_on_a_sweep(resolution, lo, hi, step):
    kohya_lo, kohya_hi = kohya_adjust_min_max(lo, hi, step)
    resos = kohya_make_bucket_resolutions((resolution, resolution), kohya_lo, kohya_hi, step)
    assert list(bucket_resolutions(resolution, lo, hi, step)) == resos
    sizes = SWEEP + [(w * k, h * k) for w, h in resos for k in (1, 2)] + _ties(resos)
    expected = kohya_select_buckets(resos, sizes)
    got = [bucket_for(w, h, resolution, lo, hi, step) for w, h in sizes]
    wrong = [(size, g, e) for size, g, e in zip(sizes, got, expected) if g != e]
    assert not wrong, f"{len(wrong)} of {len(sizes)} differ, e.g. (size, ours, kohya's) {wrong[:5]}"
