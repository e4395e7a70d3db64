import shutil
from pathlib import Path

from lora_studio.data.folder_levels import folder_level_slip
from lora_studio.data.scan import scan_images

DEMO = Path(__file__).resolve().parents[1] / "resources" / "demo-images"  # holds 4_demo/


def test_each_folder_level(tmp_path):
    img = tmp_path / "project" / "img"
    shutil.copytree(DEMO, img)
    images = len(list((img / "4_demo").glob("*.png")))
    concept = folder_level_slip(scan_images(img / "4_demo"))
    assert (concept.kind, concept.fix, concept.repeats, concept.trained) == ("concept", img, 4, 1)
    assert concept.samples_per_epoch == 4 * images
    high = folder_level_slip(scan_images(tmp_path / "project"))
    assert (high.kind, high.fix, high.concept, high.samples_per_epoch) == (
        "grandparent", img, "4_demo", 4 * images)
    assert folder_level_slip(scan_images(img)) is None
    # The default repeats already what the name asks: nothing is lost.
    assert folder_level_slip(scan_images(img / "4_demo", default_repeats=4)) is None
    (img / "4_demo").rename(img / "demo")  # no repeat prefix anywhere: nothing to say
    assert folder_level_slip(scan_images(img / "demo")) is None
    assert folder_level_slip(scan_images(tmp_path / "project")) is None
