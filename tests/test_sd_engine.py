"""Image LoRA training on the tiny Stable Diffusion pipeline of resources/: both
export formats load with diffusers' load_lora_weights and give the images the
trained pipeline gave; v-prediction; SDXL; resume; pickle refusal."""
import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

from lora_studio.config.parse import parse_job
from lora_studio.engine import image
from lora_studio.engine.core import trainer
from lora_studio.engine.core.control import EngineError
from lora_studio.engine.image.model import resolve_model
from lora_studio.runs.layout import RunDir
from exact import Grads, assert_same_checkpoint

ROOT = Path(__file__).resolve().parents[1]
TINY_SD = ROOT / "resources" / "tiny-sd"
DEMO_IMAGES = ROOT / "resources" / "demo-images"
sys.path.insert(0, str(ROOT / "resources"))
import make_tiny_sd  # noqa: E402

PROMPT = "sks, red circle, white background"


def make_job(model_path, **sections):
    data = {
        "model": {"path": str(model_path)},
        "dataset": {"path": str(DEMO_IMAGES), "resolution": 64, "min_bucket_reso": 64,
                    "max_bucket_reso": 128},
        "network": {"rank": 4, "alpha": 8.0},
        "optimizer": {"learning_rate": 1e-2},
        "training": {"max_steps": 4, "batch_size": 2},
        "output": {"output_name": "tiny lora ü"},
    }
    for section, values in sections.items():
        data.setdefault(section, {}).update(values)
    job, findings = parse_job(data)
    assert not [f for f in findings if f.level == "error"], findings
    return job


def train_sd(job, run, emit, stop, resume=None):
    return trainer.train(job, run, emit, stop, image.prepare, resume)


def run_dir(tmp_path, name="run"):
    return RunDir(tmp_path / name).ensure()


def images(pipe, steps=2, size=64):
    generator = torch.Generator().manual_seed(7)
    return pipe(PROMPT, num_inference_steps=steps, height=size, width=size, generator=generator,
                output_type="np").images


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One SD 1.x run with UNet + text-encoder LoRA (alpha != rank), checkpoints every 2 steps."""
    tmp = tmp_path_factory.mktemp("sd run")
    job = make_job(TINY_SD, network={"train_text_encoder": True},
                   output={"save_every_n_steps": 2, "sample_every_n_steps": 4,
                           "sample_prompts": [PROMPT], "sample_steps": 2})
    events = []
    run = run_dir(tmp)
    result = train_sd(job, run, events.append, lambda: False)
    return job, run, result, events


def test_run_reports_progress_samples_and_exports(trained):
    job, run, result, events = trained
    types = [e["type"] for e in events]
    assert types[-1] == "finished" and events[-1]["status"] == "completed"
    assert [e["step"] for e in events if e["type"] == "progress"] == [1, 2, 3, 4]
    samples = [e for e in events if e["type"] == "sample"]
    assert len(samples) == 1 and Path(samples[0]["path"]).is_file()
    assert any(e["type"] == "log" and "64x64" in e["message"] for e in events)
    finished = events[-1]
    for path, digest in finished["sha256"].items():
        import hashlib
        assert hashlib.sha256(Path(path).read_bytes()).hexdigest() == digest
    assert (run.final / "adapter.safetensors").is_file()


@pytest.mark.parametrize("fmt", ["kohya", "diffusers"])
def test_export_loads_in_diffusers_and_gives_the_trained_images(trained, fmt):
    from diffusers import StableDiffusionPipeline

    job, run, result, _ = trained
    reference = images(result.trainee.base.pipe)
    export = {e.format: e.path for e in result.exports}[fmt]
    pipe = StableDiffusionPipeline.from_pretrained(TINY_SD)
    pipe.set_progress_bar_config(disable=True)
    base = images(pipe)
    pipe.load_lora_weights(str(export.parent), weight_name=export.name)
    loaded = images(pipe)
    # The LoRA changed the output (so the comparison below means something)...
    assert np.abs(base - reference).max() > 1e-3
    # ...and the file reproduces it.
    np.testing.assert_allclose(loaded, reference, atol=2e-4)


def test_kohya_keys_and_metadata(trained):
    job, run, result, _ = trained
    path = {e.format: e.path for e in result.exports}["kohya"]
    with safe_open(str(path), framework="pt") as fh:
        keys = set(fh.keys())
        meta = fh.metadata()
        alpha = fh.get_tensor(next(k for k in keys if k.endswith(".alpha")))
    assert "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.lora_down.weight" in keys
    assert "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_out_0.lora_up.weight" in keys
    assert "lora_te_text_model_encoder_layers_0_self_attn_q_proj.alpha" in keys
    assert all(k.startswith(("lora_unet_", "lora_te_")) for k in keys)
    assert float(alpha) == 8.0
    assert meta["ss_network_dim"] == "4" and meta["ss_network_alpha"] == "8.0"
    assert meta["ss_base_model_version"] == "sd_v1"
    assert meta["ss_resolution"] == "(64, 64)"
    assert meta["ss_num_train_images"] == "24" and meta["ss_steps"] == "4"
    assert json.loads(meta["ss_tag_frequency"])["4_demo"]["sks"] == 6
    buckets = json.loads(meta["ss_bucket_info"])["buckets"].values()
    assert sum(b["count"] for b in buckets) == 24          # counted with their repeats
    assert meta["ss_total_batch_size"] == "2" and meta["ss_num_batches_per_epoch"] == "12"
    assert meta["ss_optimizer"] == "torch.optim.adamw.AdamW(weight_decay=0.01)"
    assert meta["modelspec.architecture"] == "stable-diffusion-v1/lora"
    assert meta["modelspec.title"] == "tiny lora ü"
    assert meta["modelspec.resolution"] == "64x64"
    assert len(meta["sshs_model_hash"]) == 64 and len(meta["sshs_legacy_hash"]) == 8
    assert len(meta["ss_new_sd_model_hash"]) == 64


def test_cli_export_repeats_the_bytes_the_run_exported(trained, capsys):
    from lora_studio.cli import main
    from lora_studio.config.jobfile import write_job_toml
    from lora_studio.engine.exports import export_run

    job, run, result, events = trained
    write_job_toml(job, run.job_toml)
    announced = events[-1]["sha256"]
    kohya = {e.format: e.path for e in result.exports}["kohya"]
    assert main(["export", str(run.root)]) == 0  # kohya is the image default
    assert capsys.readouterr().out.splitlines() == [
        f"{kohya}  (kohya, SHA-256 {announced[str(kohya)]})"]
    (diffusers,) = export_run(run.root, "diffusers")
    assert diffusers.sha256 == announced[str(diffusers.path)]
    assert main(["export", str(run.root), "--format", "merged"]) == 1
    assert "'merged' is not an export format for image runs" in capsys.readouterr().err


def test_export_as_chosen_folder_name_and_precision_never_overwrites(trained, tmp_path, capsys):
    from lora_studio.cli import main
    from lora_studio.config.jobfile import write_job_toml
    from lora_studio.engine.exports import export_run

    job, run, result, events = trained
    write_job_toml(job, run.job_toml)
    auto = {e.format: e for e in result.exports}["kohya"]
    folder = tmp_path / "my LoRAs é"
    assert main(["export", str(run.root), "--output", str(folder), "--name", "cat v2",
                 "--precision", "fp16"]) == 0
    half = folder / "cat v2.safetensors"
    assert capsys.readouterr().out.startswith(f"{half}  (kohya, SHA-256 ")
    with safe_open(half, "pt") as fh, safe_open(auto.path, "pt") as full:
        assert fh.keys() == full.keys()
        for key in fh.keys():
            assert fh.get_tensor(key).dtype == torch.float16, key
            assert torch.equal(fh.get_tensor(key), full.get_tensor(key).half()), key
        assert fh.metadata()["ss_network_dim"] == "4"

    (same,) = export_run(run.root, "kohya", folder, "cat v2", "fp16")
    assert same.path == half and sorted(p.name for p in folder.iterdir()) == ["cat v2.safetensors"]
    before = half.read_bytes()
    (beside,) = export_run(run.root, "kohya", folder, "cat v2.safetensors", "fp32")
    assert beside.path == folder / "cat v2-2.safetensors" and half.read_bytes() == before
    assert beside.sha256 == auto.sha256   # fp32 is the trained precision

    # Into the run's exports/ under the automatic export's name: written beside it.
    (bf16,) = export_run(run.root, "kohya", precision="bf16")
    assert bf16.path == auto.path.with_name(auto.path.stem + "-2.safetensors")
    assert hashlib.sha256(auto.path.read_bytes()).hexdigest() == auto.sha256
    (diffusers,) = export_run(run.root, "diffusers", folder, "cat v2 diffusers", "fp16")
    assert diffusers.path == folder / "cat v2 diffusers" / "pytorch_lora_weights.safetensors"
    with safe_open(diffusers.path, "pt") as fh:
        assert {fh.get_tensor(k).dtype for k in fh.keys()} == {torch.float16}
    bf16.path.unlink()


def test_a_later_run_in_the_process_may_change_mixed_precision(tmp_path):
    from lora_studio.engine.core.loop import make_accelerator

    make_accelerator("bf16")  # an earlier run's setting, left in accelerate's global state
    result = train_sd(make_job(TINY_SD, training={"max_steps": 1}), run_dir(tmp_path),
                      lambda ev: None, lambda: False)
    assert result.exports


def test_resume_continues_with_the_same_losses(trained, tmp_path):
    job, run, result, events = trained
    uninterrupted = [e["loss"] for e in events if e["type"] == "progress"]
    resumed_events = []
    resumed = run_dir(tmp_path)
    train_sd(job, resumed, resumed_events.append, lambda: False,
             resume=run.checkpoints / "step-000002")
    losses = [e["loss"] for e in resumed_events if e["type"] == "progress"]
    assert [e["step"] for e in resumed_events if e["type"] == "progress"] == [3, 4]
    assert losses == uninterrupted[2:]
    assert_same_checkpoint(resumed.checkpoints / "step-000004", run.checkpoints / "step-000004")


def test_accumulation_splits_a_step_without_changing_it(tmp_path):
    """Four images, one bucket: batch 4 x accumulation 1 and batch 2 x 2 train the same
    samples per step, each with its own noise and timestep, so the UNet and text
    encoder gradients, the update and the loss are the same."""
    import shutil
    folder = tmp_path / "data" / "1_four"
    folder.mkdir(parents=True)
    for path in sorted((DEMO_IMAGES / "4_demo").iterdir())[:8]:  # 4 images + captions
        shutil.copy(path, folder / path.name)
    runs = {}
    for name, (batch, accumulation) in {"whole": (4, 1), "split": (2, 2)}.items():
        job = make_job(TINY_SD, dataset={"path": str(tmp_path / "data"), "enable_bucket": False},
                       network={"train_text_encoder": True},
                       training={"max_steps": 0, "epochs": 2, "batch_size": batch,
                                 "gradient_accumulation_steps": accumulation})
        events = []
        with Grads() as grads:
            result = train_sd(job, run_dir(tmp_path, name), events.append, lambda: False)
        runs[name] = grads, result, [e["loss"] for e in events if e["type"] == "progress"]
    (whole, one, one_losses), (split, two, two_losses) = runs["whole"], runs["split"]
    assert len(whole.steps) == 2 and len(one.trainee.image_set.images) == 4
    # the second step starts from weights that already differ by float noise
    whole.assert_same_as(split, rtol=1e-3)
    # Adam's first steps divide by |gradient|: where it is near zero, float noise moves
    # the update by a fraction of the learning rate, hence the absolute tolerance
    state = two.trainee.trainable_state()
    for key, value in one.trainee.trainable_state().items():
        assert torch.allclose(value, state[key], rtol=0, atol=0.01 * job.optimizer.learning_rate), key
    assert one_losses == pytest.approx(two_losses, rel=1e-5)


def test_cancel_leaves_a_resumable_checkpoint(tmp_path):
    job = make_job(TINY_SD, training={"max_steps": 3})
    events = []
    run = run_dir(tmp_path)
    train_sd(job, run, events.append, lambda: len([e for e in events if e["type"] == "progress"]) >= 1)
    assert events[-1]["type"] == "finished" and events[-1]["status"] == "cancelled"
    assert run.latest_checkpoint().name == "step-000001"
    assert not (run.final / "adapter.safetensors").exists()


def test_v_prediction_model_trains_on_velocity(tmp_path):
    folder = make_tiny_sd.save(make_tiny_sd.build_sd(tmp_path, prediction_type="v_prediction"),
                               tmp_path / "tiny-sd2")
    job = make_job(folder, training={"max_steps": 2, "min_snr_gamma": 5.0, "noise_offset": 0.05})
    events = []
    result = train_sd(job, run_dir(tmp_path), events.append, lambda: False)
    assert result.trainee.base.family == "sd2" and result.trainee.base.prediction_type == "v_prediction"
    losses = [e["loss"] for e in events if e["type"] == "progress"]
    assert len(losses) == 2 and all(np.isfinite(losses))
    path = {e.format: e.path for e in result.exports}["kohya"]
    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata()
    assert meta["modelspec.architecture"] == "stable-diffusion-v2-768-v/lora"
    assert meta["modelspec.prediction_type"] == "v" and meta["ss_v2"] == "True"


def test_loss_targets_velocity_or_noise_with_min_snr_and_offset():
    from diffusers import DDPMScheduler
    from diffusers.training_utils import compute_snr

    from lora_studio.engine.image.loss import Cond, diffusion_loss

    scheduler = DDPMScheduler(num_train_timesteps=1000, prediction_type="v_prediction")
    latents = torch.randn(2, 4, 8, 8)
    seen = {}

    class Oracle(torch.nn.Module):
        dtype = torch.float32

        def forward(self, noisy, t, hidden, added_cond_kwargs=None, return_dict=False):
            seen["t"] = t
            return (torch.zeros_like(noisy),)

    def loss(prediction, offset, gamma):
        generators = [torch.Generator().manual_seed(s) for s in (11, 12)]
        return diffusion_loss(Oracle(), scheduler, latents, Cond(torch.zeros(2, 77, 8)), None,
                              prediction, offset, gamma, generators)

    # each sample's noise is the first draw of its own generator, its timestep comes after
    noise = torch.stack([torch.randn(4, 8, 8, generator=torch.Generator().manual_seed(s))
                         for s in (11, 12)])
    loss_v = loss("v_prediction", 0.0, 0.0)
    assert loss_v.shape == (2,)
    velocity = scheduler.get_velocity(latents, noise, seen["t"])
    assert torch.allclose(loss_v, velocity.pow(2).mean(dim=(1, 2, 3)), rtol=1e-5)
    loss_eps = loss("epsilon", 0.0, 0.0)
    assert torch.allclose(loss_eps, noise.pow(2).mean(dim=(1, 2, 3)), rtol=1e-5)
    loss_snr = loss("epsilon", 0.0, 5.0)
    snr = compute_snr(scheduler, seen["t"])
    expected = noise.pow(2).mean(dim=(1, 2, 3)) * torch.clamp(snr, max=5.0) / snr
    assert torch.allclose(loss_snr, expected, rtol=1e-5)
    assert not torch.allclose(loss("epsilon", 0.5, 0.0), loss_eps, rtol=1e-3)


def test_sdxl_two_text_encoders_export_and_reload(tmp_path):
    from diffusers import StableDiffusionXLPipeline

    folder = make_tiny_sd.save(make_tiny_sd.build_sdxl(tmp_path), tmp_path / "tiny-sdxl")
    job = make_job(folder, network={"train_text_encoder": True}, training={"max_steps": 2})
    result = train_sd(job, run_dir(tmp_path), lambda ev: None, lambda: False)
    assert result.trainee.base.family == "sdxl"
    path = {e.format: e.path for e in result.exports}["kohya"]
    with safe_open(str(path), framework="pt") as fh:
        keys = set(fh.keys())
        assert fh.metadata()["ss_base_model_version"] == "sdxl_base_v1-0"
    assert any(k.startswith("lora_te1_") for k in keys) and any(k.startswith("lora_te2_") for k in keys)
    assert not any(k.startswith("lora_te_") for k in keys)
    reference = images(result.trainee.base.pipe)
    pipe = StableDiffusionXLPipeline.from_pretrained(folder)
    pipe.set_progress_bar_config(disable=True)
    pipe.load_lora_weights(str(path.parent), weight_name=path.name)
    np.testing.assert_allclose(images(pipe), reference, atol=2e-4)


def test_pickle_checkpoints_are_refused_unless_allowed(tmp_path):
    ckpt = tmp_path / "model.ckpt"
    ckpt.write_bytes(b"not really a pickle")
    with pytest.raises(EngineError) as err:
        resolve_model(make_job(ckpt))
    assert err.value.kind == "config" and "pickle" in err.value.message
    with pytest.raises(EngineError) as err:
        resolve_model(make_job(ckpt, model={"allow_pickle": True}))
    assert "model.family" in err.value.hint  # opted in: now only the family is missing
    assert resolve_model(make_job(ckpt, model={"allow_pickle": True, "family": "sd1"})).family == "sd1"


def fake_hub_cache(tmp_path, monkeypatch, repo_id, files_from, keep=lambda f: True):
    """A Hugging Face cache in tmp_path holding `repo_id` with the files of `files_from`."""
    import shutil

    import huggingface_hub.constants

    hub = tmp_path / "hub"
    repo = hub / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / ("0" * 40)
    for f in files_from.rglob("*"):
        if f.is_file() and keep(f):
            (snapshot / f.relative_to(files_from)).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(f, snapshot / f.relative_to(files_from))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(hub))
    return snapshot


@pytest.fixture
def single_file(tmp_path, monkeypatch):
    """The tiny pipeline as an original-format checkpoint, and a Hugging Face cache
    holding only the configs of stable-diffusion-v1-5, as after
    'hf download ... --include *.json --include *.txt'."""
    checkpoint = make_tiny_sd.to_single_file(TINY_SD, tmp_path / "my model ü.safetensors")
    snapshot = fake_hub_cache(tmp_path, monkeypatch, "stable-diffusion-v1-5/stable-diffusion-v1-5",
                              TINY_SD, keep=lambda f: f.suffix in (".json", ".txt"))
    return checkpoint, snapshot


def test_hub_id_loads_from_the_local_cache(tmp_path, monkeypatch):
    from lora_studio.engine.image.model import load_sd

    fake_hub_cache(tmp_path, monkeypatch, "someone/tiny-sd", TINY_SD)
    model = load_sd(make_job("someone/tiny-sd"))
    assert model.family == "sd1" and model.info.format == "diffusers"
    with pytest.raises(EngineError) as err:
        load_sd(make_job("someone/not-downloaded"))
    assert "'hf download someone/not-downloaded'" in err.value.hint


def test_single_file_checkpoint_loads_with_cached_configs(single_file):
    from diffusers import StableDiffusionPipeline

    from lora_studio.engine.image.model import load_sd

    checkpoint, _ = single_file
    model = load_sd(make_job(checkpoint))
    assert model.family == "sd1" and model.info.format == "single_file"
    reference = StableDiffusionPipeline.from_pretrained(TINY_SD)
    for name in ("unet", "vae", "text_encoder"):
        ours, theirs = getattr(model.pipe, name).state_dict(), getattr(reference, name).state_dict()
        assert ours.keys() == theirs.keys()
        assert all(torch.equal(ours[k].reshape(theirs[k].shape), theirs[k]) for k in theirs)


def test_single_file_without_cached_configs_says_what_to_download(single_file):
    import shutil

    from lora_studio.engine.image.model import load_sd

    checkpoint, snapshot = single_file
    shutil.rmtree(snapshot)
    with pytest.raises(EngineError) as err:
        load_sd(make_job(checkpoint))
    assert "not in your Hugging Face cache" in err.value.message
    assert ('hf download stable-diffusion-v1-5/stable-diffusion-v1-5 --include "*.json" '
            '--include "*.txt"') in err.value.hint


# ---- the image set, batches and caches (no model needed) ----

def test_image_set_skips_bad_images_by_name_and_buckets_the_rest(tmp_path):
    from PIL import Image

    from lora_studio.engine.image.data import epoch_batches, load_image_set

    folder = tmp_path / "data set" / "3_thing"
    folder.mkdir(parents=True)
    Image.new("RGB", (128, 64), "red").save(folder / "wide.png")
    Image.new("RGB", (64, 128), "blue").save(folder / "tall.png")
    Image.new("RGB", (64, 64), "green").save(folder / "square.png")
    (folder / "wide.txt").write_bytes(b"sks, wide\r\nthing\r\n")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 cut")
    job = make_job(TINY_SD, dataset={"path": str(tmp_path / "data set"), "resolution": 96})
    image_set = load_image_set(job, Path(job.dataset.path))
    assert [s.path.name for s in image_set.skipped] == ["broken.jpg"]
    assert "broken.jpg" in image_set.skipped[0].message
    by_name = {im.path.name: im for im in image_set.images}
    assert by_name["wide.png"].bucket == (128, 64) and by_name["tall.png"].bucket == (64, 128)
    assert by_name["wide.png"].caption == "sks, wide thing" and by_name["square.png"].caption == ""
    assert image_set.report.samples == {(128, 64): 3, (64, 128): 3, (64, 64): 3}

    batches = epoch_batches(image_set.images, 2, seed=1, epoch=0)
    assert sorted(i for b in batches for i in b.indices) == sorted([0, 1, 2] * 3)
    assert sorted(s for b in batches for s in b.slots) == list(range(9))
    assert all(len({image_set.images[i].bucket for i in b.indices}) == 1 for b in batches)
    assert batches == epoch_batches(image_set.images, 2, seed=1, epoch=0)
    assert batches != epoch_batches(image_set.images, 2, seed=1, epoch=1)


def test_pixels_crop_and_flip(tmp_path):
    import random

    from PIL import Image

    from lora_studio.engine.image.data import TrainImage, pixels

    img = Image.new("RGB", (100, 50), "black")
    img.paste((255, 255, 255), (0, 0, 50, 50))  # left half white
    img.save(tmp_path / "half.png")
    image = TrainImage(tmp_path / "half.png", "", 1, "", (100, 50), (64, 64))
    centre = pixels(image, random.Random(0))
    assert centre.tensor.shape == (3, 64, 64) and centre.crop_top_left == (0, 32)
    assert centre.tensor[:, :, 0].mean() > 0.9 and centre.tensor[:, :, -1].mean() < -0.9
    flips = {pixels(image, random.Random(s), flip=True).tensor[0, 0, 0].item() > 0 for s in range(8)}
    assert flips == {True, False}
    crops = {pixels(image, random.Random(s), random_crop=True).crop_top_left for s in range(8)}
    assert len(crops) > 1


def pil_pixels(image, rng, random_crop, flip):
    """How pixels were made before the pixel cache (decode, resize, crop, flip in PIL every
    step): the cache must give the same tensors from the same random draws."""
    import numpy as np
    from PIL import Image

    from lora_studio.data.buckets import resize_and_crop
    from lora_studio.data.images import load_rgb

    img = load_rgb(image.path)
    position = (rng.random(), rng.random()) if random_crop else (0.5, 0.5)
    size, box = resize_and_crop(img.width, img.height, image.bucket, position)
    img = img.resize(size, Image.Resampling.LANCZOS).crop(box)
    if flip and rng.random() < 0.5:
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    arr = np.asarray(img, dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous(), (box[1], box[0])


def test_pixel_cache_gives_the_same_pixels_and_draws_within_its_budget(tmp_path, monkeypatch):
    import os
    import random

    from PIL import Image

    from lora_studio.data.images import ImageLoadError
    from lora_studio.engine.image import data

    noise = torch.Generator().manual_seed(0)
    shapes = [((97, 61), (64, 64)), ((61, 130), (64, 128)), ((200, 90), (128, 64))]
    train_images = []
    for i, (size, bucket) in enumerate(shapes):
        rgb = torch.randint(0, 256, (size[1], size[0], 3), generator=noise, dtype=torch.uint8)
        Image.fromarray(rgb.numpy()).save(tmp_path / f"{i}.png")
        train_images.append(data.TrainImage(tmp_path / f"{i}.png", "", 1, "", size, bucket))
    decoded = []
    real_load = data.load_rgb
    monkeypatch.setattr(data, "load_rgb", lambda path: decoded.append(path) or real_load(path))
    cache = data.PixelCache()
    for seed in range(6):
        for image in train_images:
            for crop, flip in ((True, True), (False, False), (True, False)):
                cached_rng, pil_rng = random.Random(seed), random.Random(seed)
                got = data.pixels(image, cached_rng, crop, flip, cache)
                want, want_crop = pil_pixels(image, pil_rng, crop, flip)
                assert torch.equal(got.tensor, want) and got.crop_top_left == want_crop
                assert cached_rng.random() == pil_rng.random()  # same draws: captions stay
    assert len(decoded) == len(train_images) and len(cache) == len(train_images)
    assert cache.used_bytes == sum(cache.get(im).array.nbytes for im in train_images)

    # An edited file is decoded again; past the budget an image is decoded every time.
    Image.new("RGB", (97, 61), "white").save(tmp_path / "0.png")
    os.utime(tmp_path / "0.png", ns=(1, 1))
    assert data.pixels(train_images[0], random.Random(0), cache=cache).tensor.min() == 1.0
    small = data.PixelCache(budget_bytes=cache.get(train_images[1]).array.nbytes)
    decoded.clear()
    for _ in range(3):
        for image in train_images[1:]:
            data.pixels(image, random.Random(0), cache=small)
    assert len(small) == 1 and decoded.count(train_images[2].path) == 3
    assert decoded.count(train_images[1].path) == 1
    # A file removed during the run is named, as without the cache.
    train_images[2].path.unlink()
    with pytest.raises(ImageLoadError, match="2.png"):
        data.pixels(train_images[2], random.Random(0), cache=cache)


def test_uncached_latents_steps_see_the_same_pixels_with_the_pixel_cache(tmp_path, monkeypatch):
    """A few micro-batches of a random-crop, flipped run: the pixels the VAE encodes and the
    losses are those of decoding every image every step."""
    from lora_studio.engine.core.family import RunContext
    from lora_studio.engine.image import data, train

    job = make_job(TINY_SD, dataset={"cache_latents": False, "random_crop": True,
                                     "flip_aug": True, "shuffle_caption": True})
    ctx = RunContext(run_dir(tmp_path), lambda ev: None, torch.device("cpu"), True, 1)
    trainee = train.prepare(job, ctx)
    assert trainee.latent_cache is None and trainee.pixel_cache is not None
    encoded = []
    real_encode = trainee.encode_pixels
    trainee.encode_pixels = lambda px: encoded.append(px.clone()) or real_encode(px)
    captions = []
    real_cond = trainee._cond
    trainee._cond = lambda c: captions.append(list(c)) or real_cond(c)
    batches = trainee.epoch_batches(0)[:4] + trainee.epoch_batches(1)[:4]

    def run_batches():
        with torch.no_grad():
            return [trainee.loss_sum(trainee.model, batch) for batch in batches]

    cached_losses = run_batches()
    assert len(trainee.pixel_cache) == len({i for b in batches for i in b.indices})
    cached_pixels, cached_captions = encoded[:], captions[:]
    encoded.clear(), captions.clear()
    trainee.pixel_cache = None
    monkeypatch.setattr(data, "pixels", lambda image, rng, crop=False, flip=False, cache=None:
                        data.Pixels(*pil_pixels(image, rng, crop, flip)))
    monkeypatch.setattr(train, "pixels", data.pixels)
    decoded_losses = run_batches()
    assert len(encoded) == len(cached_pixels) == len(batches)
    for got, want in zip(cached_pixels, encoded):
        assert torch.equal(got, want)
    assert cached_captions == captions
    assert [loss.item() for loss in cached_losses] == [loss.item() for loss in decoded_losses]


def test_latent_cache_on_disk_is_reused(tmp_path):
    from PIL import Image

    from lora_studio.engine.image.data import LatentCache, TrainImage

    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    image = TrainImage(tmp_path / "a.png", "", 1, "", (8, 8), (64, 64))
    calls = []

    def encode():
        calls.append(1)
        return torch.ones(4, 8, 8)

    cache = LatentCache(tmp_path / "cache")
    assert torch.equal(cache.get(image, encode), torch.ones(4, 8, 8))
    cache.get(image, encode)
    assert torch.equal(LatentCache(tmp_path / "cache").get(image, encode), torch.ones(4, 8, 8))
    assert len(calls) == 1 and len(list((tmp_path / "cache").glob("*.safetensors"))) == 1
    memory = LatentCache()
    memory.get(image, encode)
    memory.get(image, encode)
    assert len(calls) == 2


def test_text_embeddings_are_encoded_once_per_caption(monkeypatch):
    from lora_studio.engine.core.family import RunContext
    from lora_studio.engine.image import train as image_train
    from lora_studio.engine.image.data import ImageSet
    from lora_studio.engine.image.model import load_sd

    job = make_job(TINY_SD)
    model = load_sd(job)
    encoded = []
    real = image_train.encode_text

    def counting(model, captions, device, clip_skip=1):
        encoded.extend(captions)
        return real(model, captions, device, clip_skip)

    monkeypatch.setattr(image_train, "encode_text", counting)
    ctx = RunContext(RunDir(Path("unused")), lambda ev: None, torch.device("cpu"), True, 1)
    trainee = image_train.ImageTrainee(job=job, ctx=ctx, base=model, adapted={}, image_set=ImageSet(
        (), (), None), noise_scheduler=None, latent_cache=None, cache_text=True)
    first = trainee._cond(["a red circle", "a blue square", "a red circle"])
    second = trainee._cond(["a blue square"])
    assert encoded == ["a red circle", "a blue square"]
    assert first.hidden.shape[0] == 3 and torch.equal(second.hidden[0], first.hidden[1])


class _RunsCode:
    """A pickle payload that would create a folder when unpickled without the guard."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        import os
        return (os.mkdir, (self.marker,))


def test_an_allowed_pickle_checkpoint_loads_as_tensors_only(single_file, tmp_path):
    from safetensors.torch import load_file

    from lora_studio.engine.image.model import load_sd

    checkpoint, _ = single_file
    tensors = load_file(checkpoint)
    plain, evil, marker = tmp_path / "plain.ckpt", tmp_path / "evil.ckpt", tmp_path / "code ran"
    torch.save({"state_dict": tensors}, plain)
    torch.save({"state_dict": tensors, "extra": _RunsCode(marker)}, evil)
    allowed = {"allow_pickle": True, "family": "sd1"}
    assert load_sd(make_job(plain, model=allowed)).family == "sd1"
    with pytest.raises(EngineError) as err:
        load_sd(make_job(evil, model=allowed))
    assert err.value.kind == "config" and "evil.ckpt' holds more than weights" in err.value.message
    assert ".safetensors" in err.value.hint
    assert not marker.exists()
