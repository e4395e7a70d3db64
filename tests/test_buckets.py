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
