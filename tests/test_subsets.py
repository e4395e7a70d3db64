"""Concept folders with settings of their own (dataset.subsets, kohya's dataset config
subsets): the line format, the scan, what check says, the engine honouring each
folder's repeats, caption extension, shuffle / keep tokens and resolution, kohya's
bucket options, and the kohya dataset config TOML import."""
import json
from pathlib import Path

import pytest
from PIL import Image

from lora_studio.config.presets import read_import
from lora_studio.config.validate import check
from lora_studio.data.buckets import bucket_for, bucket_no_upscale, choose_bucket
from lora_studio.data.subsets import (Subset, SubsetError, parse_subset, scan_subsets,
                                      subset_line)
from tests.tiny_jobs import TINY_SD, tiny_sd_job



# ---------------------------------------------------------------- the line format

def test_a_line_reads_its_folder_and_settings_and_writes_back():
    line = "10_sks dog; keep_tokens=1; shuffle_caption=true; num_repeats=3; caption_extension=caption"
    subset = parse_subset(line)
    assert subset == Subset("10_sks dog", repeats=3, caption_extension=".caption",
                            shuffle_caption=True, keep_tokens=1)
    assert parse_subset(subset_line(subset)) == subset
    unshuffled = Subset("x", shuffle_caption=False, keep_tokens=0)
    assert subset_line(unshuffled) == "x; shuffle_caption=false; keep_tokens=0"
    assert parse_subset(subset_line(unshuffled)) == unshuffled
    assert parse_subset("  C:\\data\\reg dir ; is_reg = yes ; class_tokens = a dog ").folder == \
        "C:\\data\\reg dir"
    assert parse_subset("x; class_tokens=a dog; is_reg=true").class_tokens == "a dog"


@pytest.mark.parametrize("line,words", [
    ("; repeats=2", "folder is missing"),
    ("dogs; colour=red", "'colour=red' is not one of the settings"),
    ("dogs; repeats", "'repeats' is not one of the settings"),
    ("dogs; shuffle_caption=maybe", "not true or false"),
    ("dogs; repeats=two", "not a whole number"),
    ("dogs; repeats=0", "not between 1 and 1000"),
    ("dogs; keep_tokens=300", "not between 0 and 255"),
    ("dogs; resolution=500", "not a multiple of 8"),
])
def test_a_bad_line_is_named_with_what_is_wrong(line, words):
    with pytest.raises(SubsetError) as err:
        parse_subset(line)
    assert words in err.value.message and repr(line) in err.value.message
    assert "keep_tokens=1" in err.value.hint


# ---------------------------------------------------------------- a dataset of concepts

def _png(path: Path, size=(64, 64), color="red"):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)


@pytest.fixture
def concepts(tmp_path):
    """data/10_sks dog (2 images, .txt captions), data/style (1 wide image, .caption),
    data/reg dog (2 images, no captions), data/unlisted (1 image, not in any line)."""
    root = tmp_path / "data ü"
    for name in ("a", "b"):
        _png(root / "10_sks dog" / f"{name}.png")
        (root / "10_sks dog" / f"{name}.txt").write_text(f"sks dog, {name}, grass, sun",
                                                         encoding="utf-8")
    _png(root / "style" / "s.png", size=(128, 64), color="blue")
    (root / "style" / "s.caption").write_text("painting, oil, blue", encoding="utf-8")
    (root / "style" / "s.txt").write_text("wrong file", encoding="utf-8")
    for name in ("r1", "r2"):
        _png(root / "reg dog" / f"{name}.png", color="gray")
    _png(root / "unlisted" / "u.png")
    return root


LINES = ["10_sks dog; keep_tokens=1; shuffle_caption=true",
         "style; repeats=3; caption_extension=.caption; resolution=128",
         "reg dog; is_reg=true; class_tokens=dog"]


def test_scan_gives_each_folder_its_own_caption_extension_repeats_and_class(concepts):
    found = scan_subsets(concepts, [parse_subset(line) for line in LINES], ".txt", 1)
    train = {i.image_path.name: i for i in found.train.items}
    assert set(train) == {"a.png", "b.png", "s.png"}  # only the listed folders
    assert train["a.png"].repeats == 10 and train["a.png"].subset == 0  # from '10_'
    assert train["s.png"].repeats == 3 and train["s.png"].caption_path.name == "s.caption"
    assert [(i.image_path.name, i.class_tokens, i.is_reg, i.subset) for i in found.reg.items] == [
        ("r1.png", "dog", True, 2), ("r2.png", "dog", True, 2)]
    assert found.train.samples_per_epoch == 23


def _check(root, **dataset):
    data = {"model": {"path": str(TINY_SD)}, "dataset": {"path": str(root), **dataset}}
    return check(data)[1]


def test_check_counts_concept_folders_and_their_reg_images(concepts):
    findings = _check(concepts, subsets=LINES)
    assert not [f for f in findings if f.level == "error"], findings
    counts = next(f for f in findings if f.rule == "reg-counts")
    assert counts.path == "dataset.subsets"
    assert "2 regularisation image(s)" in counts.message and "beside the 23" in counts.message


@pytest.mark.parametrize("lines,rule,words", [
    (["nowhere; repeats=2"], "subset-folder-missing", "Concept folder 'nowhere'"),
    (["style; colour=red"], "subset-invalid", "colour=red"),
])
def test_check_names_a_bad_concept_folder(concepts, lines, rule, words):
    found = [f for f in _check(concepts, subsets=lines) if f.rule == rule]
    assert found and found[0].level == "error" and found[0].path == "dataset.subsets"
    assert words in found[0].message


def test_check_warns_about_an_empty_concept_folder(concepts):
    (concepts / "empty").mkdir()
    found = [f for f in _check(concepts, subsets=LINES + ["empty"]) if f.rule == "subset-empty"]
    assert found and "'empty'" in found[0].message


def _job(root, **dataset):
    return tiny_sd_job(root, max_bucket_reso=256, **dataset)


def test_engine_honours_each_folders_settings(concepts):
    from lora_studio.engine.image.data import load_image_set

    image_set = load_image_set(_job(concepts, subsets=LINES, keep_tokens=0), concepts)
    by_name = {im.path.name: im for im in image_set.images}
    dog, style, reg = by_name["a.png"], by_name["s.png"], by_name["r1.png"]
    assert (dog.repeats, dog.shuffle_caption, dog.keep_tokens) == (10, True, 1)
    assert (style.repeats, style.shuffle_caption, style.keep_tokens) == (3, False, 0)
    assert style.caption == "painting, oil, blue"       # its own caption extension
    assert reg.is_reg and reg.caption == "dog"           # class tokens, no caption file
    assert dog.bucket == (64, 64)                        # the job's resolution
    assert style.bucket == (128, 128)                    # its own 128: a bucket of 128² area
    assert "u.png" not in by_name


def test_a_run_trains_each_folder_with_its_caption_options(concepts, tmp_path, monkeypatch):
    from lora_studio.engine import image
    from lora_studio.engine.core import trainer
    from lora_studio.engine.image import train as image_train
    from lora_studio.runs.layout import RunDir

    seen = []
    real = image_train.prepare_caption

    def recording(caption, rng, shuffle, keep_tokens, dropout):
        seen.append((caption.split(",")[0], shuffle, keep_tokens))
        return real(caption, rng, shuffle, keep_tokens, dropout)

    monkeypatch.setattr(image_train, "prepare_caption", recording)
    events = []
    job = _job(concepts, subsets=LINES[:2], shuffle_caption=False)
    job = job.model_copy(update={"training": job.training.model_copy(
        update={"max_steps": 0, "epochs": 1, "batch_size": 4})})
    trainer.train(job, RunDir(tmp_path / "run").ensure(), events.append, lambda: False,
                  image.prepare)
    assert events[-1]["status"] == "completed"
    assert set(seen) == {("sks dog", True, 1), ("painting", False, 0)}
    assert sum(1 for s in seen if s[0] == "sks dog") == 20 and len(seen) == 23


# ---------------------------------------------------------------- kohya's bucket options

@pytest.mark.parametrize("size", [(300, 200), (64, 64), (513, 1024), (2000, 1000), (1000, 3000),
                                  (700, 700), (96, 4000), (520, 510)])
def test_no_upscale_never_makes_an_image_larger(size):
    w, h = size
    for step in (32, 64):
        bw, bh = bucket_no_upscale(w, h, 512, step)
        assert bw <= w and bh <= h, (size, step, (bw, bh))
        assert bw % step == 0 and bh % step == 0
        assert bw * bh <= 512 * 512 * 1.05


def test_no_upscale_buckets_as_kohya_does():
    assert bucket_no_upscale(300, 200, 512, 64) == (256, 192)    # its own size, cut to the step
    assert bucket_no_upscale(300, 200, 512, 32) == (288, 192)
    assert bucket_no_upscale(1000, 500, 512, 64) == (640, 320)   # scaled down to 512² first
    assert bucket_no_upscale(1000, 500, 512, 32) == (704, 352)
    # without the option a small image is enlarged to a bucket of the resolution's area
    assert bucket_for(300, 200, 512, 256, 1024, 64) == (640, 384)
    assert choose_bucket(300, 200, 512, 256, 1024, 64, no_upscale=True) == (256, 192)
    assert choose_bucket(300, 200, 512, enable=False, no_upscale=True) == (512, 512)


def test_bucket_step_32_gives_finer_buckets_than_64():
    assert bucket_for(100, 60, 128, 64, 256, 64) == (128, 128)
    assert bucket_for(100, 60, 128, 64, 256, 32) == (160, 96)


def test_engine_buckets_with_no_upscale_and_the_step(concepts):
    from lora_studio.engine.image.data import load_image_set

    # s.png is 128 x 64: with a resolution of 256 it is enlarged to a 256 x 128 bucket
    lines = ["style; caption_extension=.caption"]
    plain = load_image_set(_job(concepts, subsets=lines, resolution=256), concepts)
    kept = load_image_set(_job(concepts, subsets=lines, resolution=256, bucket_no_upscale=True),
                          concepts)
    assert plain.images[0].bucket == (256, 128)
    assert kept.images[0].bucket == (128, 64)
    _png(concepts / "odd" / "o.png", size=(100, 60))
    fine = load_image_set(_job(concepts, subsets=["odd"], resolution=128, bucket_reso_steps=32),
                          concepts)
    coarse = load_image_set(_job(concepts, subsets=["odd"], resolution=128,
                                 bucket_reso_steps=64), concepts)
    assert fine.images[0].bucket == (160, 96) and coarse.images[0].bucket == (128, 128)


# ---------------------------------------------------------------- the kohya TOML import

DATASET_TOML = '''
[general]
shuffle_caption = true
caption_extension = ".txt"
keep_tokens = 1
bucket_no_upscale = true
bucket_reso_steps = 32

[[datasets]]
resolution = 512
batch_size = 2
enable_bucket = true

  [[datasets.subsets]]
  image_dir = "{root}/10_sks dog"
  num_repeats = 10
  class_tokens = "sks dog"

  [[datasets.subsets]]
  image_dir = "{root}/reg dog"
  is_reg = true
  class_tokens = "dog"
  color_aug = true

[[datasets]]
resolution = [768, 768]
  [[datasets.subsets]]
  image_dir = "{root}/style"
  caption_extension = ".caption"
  keep_tokens = 0
  shuffle_caption = false
'''


def test_kohya_config_imports_its_dataset_config_toml(concepts, tmp_path):
    folder = tmp_path / "kohya cfg"
    folder.mkdir()
    (folder / "dataset.toml").write_text(DATASET_TOML.format(root=concepts.as_posix()),
                                         encoding="utf-8")
    (folder / "lora.json").write_text(json.dumps({
        "pretrained_model_name_or_path": str(TINY_SD), "train_data_dir": "/ignored",
        "dataset_config": "dataset.toml", "prior_loss_weight": 0.5, "network_dim": 4}),
        encoding="utf-8")
    pending = read_import(folder / "lora.json")
    ds = pending.data["dataset"]
    assert ds["path"] == str(concepts)
    assert ds["subsets"] == ["10_sks dog; repeats=10; class_tokens=sks dog",
                             "reg dog; repeats=1; class_tokens=dog; is_reg=true",
                             "style; repeats=1; caption_extension=.caption; "
                             "shuffle_caption=false; keep_tokens=0; resolution=768"]
    assert (ds["shuffle_caption"], ds["keep_tokens"], ds["caption_extension"]) == (True, 1, ".txt")
    assert (ds["bucket_no_upscale"], ds["bucket_reso_steps"], ds["resolution"]) == (True, 32, 512)
    assert ds["prior_loss_weight"] == 0.5 and pending.data["training"]["batch_size"] == 2
    # what has no equivalent is listed, nothing else
    assert set(pending.unsupported) == {"datasets[0].subsets[1].color_aug"}
    job, findings = check(pending.data)
    assert not [f for f in findings if f.level == "error"], findings
    assert job.dataset.subsets == ds["subsets"]


def test_a_dataset_config_that_cannot_be_read_is_named(tmp_path):
    (tmp_path / "lora.json").write_text(json.dumps({"dataset_config": "missing.toml"}),
                                        encoding="utf-8")
    pending = read_import(tmp_path / "lora.json")
    notes = [f for f in pending.findings if f.rule == "kohya-dataset-config"]
    assert notes and "missing.toml" in notes[0].message
    assert "dataset_config" not in pending.unsupported


def test_kohya_json_maps_bucket_no_upscale():
    from lora_studio.config.kohya import convert_kohya
    result = convert_kohya({"bucket_no_upscale": True, "bucket_reso_steps": 32})
    assert result.data["dataset"] == {"bucket_no_upscale": True, "bucket_reso_steps": 32}
    assert not result.unsupported_set


def test_a_reg_folder_inside_the_dataset_folder_is_fine_when_concept_folders_leave_it_out(
        concepts):
    reg = concepts / "reg"
    _png(reg / "1_dog" / "r.png")
    lines = ["10_sks dog", "style; caption_extension=.caption"]
    rules = {f.rule: f for f in _check(concepts, subsets=lines, reg_path=str(reg))}
    assert "reg-nested" not in rules and "reg-counts" in rules
    # listed as a concept folder too, it would train twice: refused
    rules = {f.rule: f for f in _check(concepts, subsets=lines + ["reg"], reg_path=str(reg))}
    assert rules["reg-nested"].level == "error"


def test_relative_image_dirs_are_found_beside_the_dataset_config(tmp_path):
    project = tmp_path / "kohya project"
    _png(project / "img" / "dog" / "a.png")
    _png(project / "img" / "cat" / "b.png")
    (project / "dataset.toml").write_text(
        '[[datasets]]\n[[datasets.subsets]]\nimage_dir = "img/dog"\nnum_repeats = 2\n'
        '[[datasets.subsets]]\nimage_dir = "img/cat"\n', encoding="utf-8")
    (project / "lora.json").write_text(json.dumps({"dataset_config": "dataset.toml"}),
                                       encoding="utf-8")
    ds = read_import(project / "lora.json").data["dataset"]
    assert Path(ds["path"]) == (project / "img").resolve()
    assert ds["subsets"] == ["dog; repeats=2", "cat; repeats=1"]


def test_the_vram_estimate_counts_the_largest_concept_resolution():
    from lora_studio.hardware.estimate import latent_size

    plain = _job_data(resolution=512, max_bucket_reso=1024)
    larger = _job_data(resolution=512, max_bucket_reso=1024,
                       subsets=["a", "b; resolution=768", "c; resolution=640"])
    unreadable = _job_data(resolution=512, subsets=["b; resolution=huge"])
    assert latent_size(plain) == (64, 64)
    assert latent_size(larger) == (96, 96)
    assert latent_size(unreadable) == (64, 64)


def _job_data(**dataset):
    from lora_studio.config.schema import DatasetConfig, JobConfig
    return JobConfig(dataset=DatasetConfig(**dataset))


def test_check_counts_images_a_line_captions_with_its_class_as_captioned(concepts):
    _png(concepts / "plain" / "p.png")
    _png(concepts / "classed" / "c.png")
    findings = _check(concepts, subsets=["plain", "classed; class_tokens=a cat", "style"])
    missing = [f for f in findings if f.rule == "images-uncaptioned"]
    assert len(missing) == 1 and missing[0].path == "dataset.subsets"
    # style's s.png has a .txt beside it; p.png nothing; c.png is captioned by its class
    assert missing[0].message == "1 of 3 images have no caption file: p.png."
