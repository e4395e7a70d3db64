"""Image loading, aspect-ratio buckets and caption options for image training."""
import random

import numpy as np
import pytest
from PIL import Image

from lora_studio.data.buckets import bucket_for, bucket_report, bucket_resolutions, resize_and_crop
from lora_studio.data.caption_options import captions_vary, prepare_caption
from lora_studio.data.images import ImageLoadError, check_images, load_rgb


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("imgs ünï")
    Image.new("RGB", (40, 20), "red").save(d / "good.png")
    (d / "zero.png").write_bytes(b"")
    (d / "garbage.jpg").write_bytes(b"this is not an image at all" * 10)
    Image.new("RGB", (64, 64), "blue").save(d / "full.jpg", quality=95)
    data = (d / "full.jpg").read_bytes()
    (d / "truncated.jpg").write_bytes(data[: len(data) // 2])
    Image.new("CMYK", (30, 10), (0, 255, 255, 0)).save(d / "cmyk.jpg")
    Image.fromarray(np.full((8, 12), 65535, dtype=np.uint16)).save(d / "sixteen.png")
    rgba = Image.new("RGBA", (10, 10), (0, 0, 0, 0))
    rgba.putpixel((0, 0), (0, 0, 255, 255))
    rgba.save(d / "alpha.png")
    pal = Image.new("P", (10, 10), 0)
    pal.putpalette([0, 255, 0] + [0, 0, 0] * 255)
    pal.save(d / "palette.png", transparency=0)
    rotated = Image.new("RGB", (40, 20), "green")
    exif = rotated.getexif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    rotated.save(d / "rotated.jpg", exif=exif)
    return d


def test_good_and_converted_images_become_rgb(image_dir):
    assert load_rgb(image_dir / "good.png").size == (40, 20)
    cmyk = load_rgb(image_dir / "cmyk.jpg")
    assert cmyk.mode == "RGB" and cmyk.getpixel((5, 5))[0] > 200  # cyan-free magenta+yellow = red
    sixteen = load_rgb(image_dir / "sixteen.png")
    assert sixteen.mode == "RGB" and sixteen.getpixel((0, 0)) == (255, 255, 255)


def test_transparency_is_composited_on_white(image_dir):
    alpha = load_rgb(image_dir / "alpha.png")
    assert alpha.getpixel((5, 5)) == (255, 255, 255)
    assert alpha.getpixel((0, 0)) == (0, 0, 255)
    assert load_rgb(image_dir / "palette.png").getpixel((3, 3)) == (255, 255, 255)


def test_exif_orientation_is_applied(image_dir):
    assert load_rgb(image_dir / "rotated.jpg").size == (20, 40)


@pytest.mark.parametrize("name, words", [("zero.png", "empty"), ("garbage.jpg", "corrupt"),
                                         ("truncated.jpg", "truncated"), ("missing.png", "cannot be read")])
def test_bad_images_give_a_named_error(image_dir, name, words):
    with pytest.raises(ImageLoadError) as err:
        load_rgb(image_dir / name)
    assert name in str(err.value) and words in str(err.value)


def test_check_images_skips_bad_files_without_raising(image_dir):
    paths = sorted(image_dir.iterdir())
    sizes, skipped = check_images(paths)
    assert {p.name for p in sizes} == {"good.png", "full.jpg", "cmyk.jpg", "sixteen.png", "alpha.png",
                                       "palette.png", "rotated.jpg"}
    assert {s.path.name for s in skipped} == {"zero.png", "garbage.jpg", "truncated.jpg"}
    assert sizes[image_dir / "rotated.jpg"] == (20, 40)


def test_buckets_have_about_the_target_area_and_step():
    buckets = bucket_resolutions(512, 256, 1024, 64)
    assert (512, 512) in buckets
    for w, h in buckets:
        assert w % 64 == 0 and h % 64 == 0 and 256 <= min(w, h) and max(w, h) <= 1024
        assert w * h <= 512 * 512
    assert bucket_for(1920, 1080, 512) == (683 // 64 * 64, 384)  # 640x384: closest to 16:9
    assert bucket_for(1000, 1000, 512) == (512, 512)
    w, h = bucket_for(600, 1800, 512)
    assert h > w


def test_resize_and_crop_covers_the_bucket_without_distortion():
    size, box = resize_and_crop(200, 100, (128, 128))
    assert size == (256, 128) and box == (64, 0, 192, 128)
    _, left_box = resize_and_crop(200, 100, (128, 128), position=(0.0, 0.5))
    assert left_box[0] == 0


def test_bucket_report_counts_images_and_repeats():
    report = bucket_report([((64, 64), 4), ((64, 64), 4), ((128, 64), 1)])
    assert report.images == {(64, 64): 2, (128, 64): 1}
    assert report.samples == {(64, 64): 8, (128, 64): 1}
    lines = report.lines(batch_size=2)
    assert lines[0].startswith("64x64: 2 images, 8 per epoch")
    assert "smaller batch" in lines[1]


def test_caption_shuffle_keeps_first_tokens():
    caption = "sks, a, b, c, d, e, f"
    rng = random.Random(0)
    outs = {prepare_caption(caption, rng, shuffle=True, keep_tokens=1) for _ in range(20)}
    assert len(outs) > 1
    assert all(o.startswith("sks, ") and sorted(o.split(", ")) == sorted(caption.split(", "))
               for o in outs)
    assert prepare_caption(caption, rng) == caption


def test_caption_dropout_rate():
    rng = random.Random(0)
    outs = [prepare_caption("a, b", rng, dropout_rate=0.3) for _ in range(1000)]
    assert 200 < outs.count("") < 400
    assert all(o in ("", "a, b") for o in outs)
    assert captions_vary(False, 0.0) is False and captions_vary(True, 0.0) and captions_vary(False, 0.1)
