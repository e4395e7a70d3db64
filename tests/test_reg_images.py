"""Regularisation images (DreamBooth prior preservation) as kohya's sd-scripts use
them: scanned from 'N_class' folders, cycled so an epoch has as many reg samples as
training samples, captioned with their class when they have no caption, their loss
weighted by prior_loss_weight; check's findings and the kohya import."""
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image

from lora_studio.config.kohya import convert_kohya
from lora_studio.config.validate import check
from lora_studio.data.reg_images import nesting, reg_repeats, stand_in_caption
from lora_studio.data.scan import ImageItem, scan_images
from tests.tiny_jobs import TINY_SD, tiny_sd_job

ROOT = Path(__file__).resolve().parents[1]
DEMO_IMAGES = ROOT / "resources" / "demo-images"


@pytest.mark.parametrize("train,repeats,expected", [
    (10, [1, 1, 1], [4, 3, 3]),      # cycled: one more repeat each in turn
    (2, [1, 1, 1], [1, 1, 0]),       # more reg images than samples: the last is not used
    (5, [2, 2], [3, 2]),             # folder repeats first, then one by one
    (3, [2, 2], [2, 2]),             # kohya registers a whole image's repeats
    (0, [1, 1], [0, 0]),
    (4, [], []),
])
def test_reg_repeats_match_the_training_samples_as_kohya_cycles_them(train, repeats, expected):
    assert reg_repeats(train, repeats) == expected


def test_a_reg_image_without_caption_trains_on_its_class():
    dog = ImageItem(Path("d.png"), None, 1, "1_dog", class_tokens="dog", is_reg=True)
    assert stand_in_caption(dog, None) == "dog"
    sks = ImageItem(Path("s.png"), None, 1, "10_sks", class_tokens="sks")
    assert stand_in_caption(sks, None) == ""  # a folder name alone captions nothing
    assert stand_in_caption(sks, "sks") == "sks"


def _png(path: Path, color="gray", size=(64, 64)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)
    return path


@pytest.fixture
def project(tmp_path):
    """project/img (the demo's 4_demo: 6 images x 4) and project/reg/1_dog (3 images,
    one captioned) and reg/2_cat (1 image)."""
    img = tmp_path / "my project" / "img"
    shutil.copytree(DEMO_IMAGES, img)
    reg = tmp_path / "my project" / "reg"
    for name in ("a", "b", "c"):
        _png(reg / "1_dog" / f"{name}.png", "brown")
    (reg / "1_dog" / "a.txt").write_text("a photo of a dog", encoding="utf-8")
    _png(reg / "2_cat" / "z.png", "black")
    return img, reg


def test_scan_marks_reg_images_with_their_class(project):
    _, reg = project
    scan = scan_images(reg, is_reg=True)
    assert all(i.is_reg for i in scan.items)
    assert [(i.image_path.name, i.class_tokens, i.repeats) for i in scan.items] == [
        ("a.png", "dog", 1), ("b.png", "dog", 1), ("c.png", "dog", 1), ("z.png", "cat", 2)]
    assert not any(i.is_reg for i in scan_images(DEMO_IMAGES).items)


def test_nesting_of_train_and_reg_folders(tmp_path):
    (tmp_path / "img" / "reg").mkdir(parents=True)
    assert nesting(tmp_path / "img", tmp_path / "img") == "same"
    assert nesting(tmp_path / "img", tmp_path / "img" / "reg") == "reg_in_train"
    assert nesting(tmp_path / "img" / "reg", tmp_path / "img") == "train_in_reg"
    assert nesting(tmp_path / "img", tmp_path / "reg") is None


def _check(dataset: dict, base_dir=None):
    data = {"model": {"path": str(TINY_SD)}, "dataset": dataset}
    return check(data, base_dir=base_dir)[1]


def _rules(findings, path="dataset.reg_path"):
    return {f.rule: f for f in findings if f.path == path}


def test_check_counts_reg_images_and_samples(project):
    img, reg = project
    findings = _check({"path": str(img), "reg_path": str(reg), "prior_loss_weight": 0.5})
    counts = _rules(findings)["reg-counts"]
    # 24 training samples; reg: dog a,b,c once and cat twice (5), cycled up to 24.
    assert counts.level == "info"
    assert "4 regularisation image(s) in 2 folder(s)" in counts.message
    assert "trains 24 of them beside the 24 training samples (loss weight 0.5)" in counts.message
    assert not [f for f in findings if f.level == "error"]


def test_check_says_when_reg_images_go_unused(project, tmp_path):
    img, reg = project
    for i in range(30):
        _png(reg / "1_dog" / f"more{i:02}.png")
    counts = _rules(_check({"path": str(img), "reg_path": str(reg)}))["reg-counts"]
    assert "are not used: there are more than training samples" in counts.message


@pytest.mark.parametrize("where,rule,level", [
    ("missing", "reg-missing", "error"),
    ("file", "reg-missing", "error"),
    ("inside", "reg-nested", "error"),
    ("same", "reg-nested", "error"),
    ("empty", "reg-empty", "warning"),
])
def test_check_refuses_a_reg_folder_that_cannot_work(project, tmp_path, where, rule, level):
    img, reg = project
    paths = {"missing": tmp_path / "nowhere", "file": img / "4_demo" / "red_circle.png",
             "inside": img / "reg", "same": img, "empty": tmp_path / "empty reg"}
    (tmp_path / "empty reg").mkdir()
    if where == "inside":
        shutil.copytree(reg, img / "reg")
    found = _rules(_check({"path": str(img), "reg_path": str(paths[where])}))
    assert found[rule].level == level
    assert found[rule].hint


def test_reg_images_without_a_class_are_named(project):
    img, reg = project
    _png(reg / "loose.png")
    found = _rules(_check({"path": str(img), "reg_path": str(reg)}))
    assert "loose.png" in found["reg-without-class"].message


def test_a_relative_reg_folder_is_found_beside_the_preset(project):
    img, reg = project
    findings = _check({"path": "img", "reg_path": "reg"}, base_dir=img.parent)
    assert "reg-counts" in _rules(findings)


def test_prior_weight_without_reg_is_a_note(project):
    img, _ = project
    found = _rules(_check({"path": str(img), "prior_loss_weight": 0.3}),
                   "dataset.prior_loss_weight")
    assert found["prior-weight-without-reg"].level == "info"


def test_kohya_import_maps_reg_folder_and_prior_weight():
    result = convert_kohya({"train_data_dir": "/data/img", "reg_data_dir": "/data/reg",
                            "prior_loss_weight": "0.75"})
    assert result.data["dataset"]["reg_path"] == "/data/reg"
    assert result.data["dataset"]["prior_loss_weight"] == 0.75
    assert not result.unsupported_set and not [f for f in result.findings
                                               if f.rule == "kohya-unsupported"]


# ---------------------------------------------------------------- the engine

def test_engine_loads_reg_images_cycled_and_captioned_with_their_class(project):
    from lora_studio.engine.image.data import epoch_batches, load_image_set

    img, reg = project
    image_set = load_image_set(tiny_sd_job(img, reg_path=str(reg)), img)
    train = [im for im in image_set.images if not im.is_reg]
    regs = [im for im in image_set.images if im.is_reg]
    assert sum(im.repeats for im in train) == 24
    # 1+1+1+2 in the first round, then one more each in turn up to 24
    assert [(im.path.name, im.caption, im.repeats) for im in regs] == [
        ("a.png", "a photo of a dog", 6), ("b.png", "dog", 6), ("c.png", "dog", 6),
        ("z.png", "cat", 6)]
    batches = epoch_batches(image_set.images, 2, 42, 0)
    seen = [image_set.images[i] for b in batches for i in b.indices]
    assert len(seen) == 48 and sum(im.is_reg for im in seen) == 24


@pytest.fixture(scope="module")
def reg_trainee(tmp_path_factory):
    """A prepared tiny SD trainee over the demo images and two reg images."""
    from lora_studio.engine.core.family import RunContext
    from lora_studio.engine.image import prepare
    from lora_studio.runs.layout import RunDir

    tmp = tmp_path_factory.mktemp("reg run")
    img = tmp / "img"
    shutil.copytree(DEMO_IMAGES, img)
    reg = tmp / "reg"
    _png(reg / "1_shape" / "grey.png", "gray")
    _png(reg / "1_shape" / "white.png", "white")
    job = tiny_sd_job(img, reg_path=str(reg))
    ctx = RunContext(RunDir(tmp / "run").ensure(), lambda ev: None, torch.device("cpu"), True, 1)
    return prepare(job, ctx)


def test_reg_loss_is_weighted_by_prior_loss_weight(reg_trainee):
    """A hand check: with weight 0 a batch of (training, reg) image has the training
    image's loss alone; with 0.5 the reg image's loss counts half."""
    from lora_studio.engine.image.data import MicroBatch

    trainee = reg_trainee
    images = trainee.image_set.images
    t = next(i for i, im in enumerate(images) if not im.is_reg)
    r = next(i for i, im in enumerate(images) if im.is_reg and im.bucket == images[t].bucket)
    both = MicroBatch(0, (t, r), (3, 7))
    alone_t, alone_r = MicroBatch(0, (t,), (3,)), MicroBatch(0, (r,), (7,))
    model = trainee.model
    ds = trainee.job.dataset

    def loss(batch, weight):
        trainee.job = trainee.job.model_copy(update={"dataset": ds.model_copy(
            update={"prior_loss_weight": weight})})
        with torch.no_grad():
            return float(trainee.loss_sum(model, batch))

    lt, lr = loss(alone_t, 1.0), loss(alone_r, 1.0)
    assert lr > 0
    assert loss(both, 0.0) == pytest.approx(lt, rel=1e-5)
    assert loss(both, 0.5) == pytest.approx(lt + 0.5 * lr, rel=1e-5)
    assert loss(both, 1.0) == pytest.approx(lt + lr, rel=1e-5)
    trainee.job = trainee.job.model_copy(update={"dataset": ds})


def test_a_run_with_reg_images_trains_and_says_so(project, tmp_path):
    from lora_studio.engine import image
    from lora_studio.engine.core import trainer
    from lora_studio.runs.layout import RunDir

    img, reg = project
    events = []
    trainer.train(tiny_sd_job(img, reg_path=str(reg), prior_loss_weight=0.5),
                  RunDir(tmp_path / "run").ensure(), events.append, lambda: False, image.prepare)
    assert events[-1]["type"] == "finished" and events[-1]["status"] == "completed"
    logs = [e["message"] for e in events if e["type"] == "log"]
    assert any(m.startswith("Regularisation: 4 images, 24 samples per epoch beside 24 "
                            "training samples, loss weight 0.5") for m in logs)
    started = next(e for e in events if e["type"] == "started")
    assert started.get("samples_per_epoch") == 48
