"""An imported kohya_ss config trains with exactly its settings (issue 17): a full
kohya_ss v25 GUI LoRA config (every key the GUI saves, plus sd-scripts' network_module
and network_args that LyCORIS users add) with Prodigy and its optimizer_args, clip skip
2, LoCon and save_every_n_epochs. Only the paths, the resolution and the data (two
tiny images, one step an epoch) are changed to fit the tiny pipeline."""
import json
import shutil

import pytest
from safetensors import safe_open

from lora_studio.config import parse_job
from lora_studio.config.fields import set_in
from lora_studio.config.kohya import (HANDLED_AUTOMATICALLY, NOT_IMPORTED, SIMPLE_KEYS,
                                      SPECIAL_KEYS, convert_kohya)
from lora_studio.engine.core import trainer
from lora_studio.engine.image import loss
from test_kohya import DATA, load
from test_sd_engine import DEMO_IMAGES, TINY_SD, run_dir, train_sd

FIXTURE = "kohya-v25-sd15-locon-prodigy.json"


def test_every_key_of_a_full_gui_config_is_mapped_or_explained():
    config = load(FIXTURE)
    assert len(config) > 200
    tables = set(SIMPLE_KEYS) | SPECIAL_KEYS | HANDLED_AUTOMATICALLY | set(NOT_IMPORTED)
    assert set(config) <= tables, set(config) - tables   # no key unknown to the importer
    result = convert_kohya(config)
    # every value asks for what LoRA Studio does, so nothing is listed as not imported
    assert result.unsupported == {}
    assert not [f for f in result.findings if f.level != "info"], result.findings
    assert all(why for _, why in NOT_IMPORTED.values())


def test_a_setting_we_lack_is_listed_with_why_and_an_unknown_key_as_such():
    config = {**load(FIXTURE), "max_token_length": 225, "masked_loss": True, "my_own_flag": 3}
    result = convert_kohya(config)
    assert set(result.unsupported) == {"max_token_length", "masked_loss", "my_own_flag"}
    [listed] = [f for f in result.findings if f.rule == "kohya-unsupported" and not f.path]
    assert "max_token_length = 225 (captions are cut at CLIP's 75 tokens)" in listed.message
    assert "masked_loss = True (no masked loss)" in listed.message
    assert "my_own_flag = 3" in listed.message


def test_optimizer_args_map_and_what_does_not_is_named():
    config = {"optimizer": "Prodigy", "learning_rate": 1.0,
              "optimizer_args": "d_coef=0.5 decouple=False betas=0.9,0.99,0.98 d0=1e-5"}
    result = convert_kohya(config)
    opt = parse_job(result.data)[0].optimizer
    assert (opt.d_coef, opt.decouple, opt.beta1, opt.beta2) == (0.5, False, 0.9, 0.99)
    [left] = [f for f in result.findings if "not imported" in f.message]
    assert "beta3=0.98" in left.message and "d0=1e-5" in left.message
    # an argument the optimizer does not take is named, not put in a setting
    adamw = convert_kohya({"optimizer": "AdamW", "optimizer_args": "d_coef=2 betas=0.8,0.9"})
    assert parse_job(adamw.data)[0].optimizer.d_coef == 1.0
    assert (adamw.data["optimizer"]["beta1"], adamw.data["optimizer"]["beta2"]) == (0.8, 0.9)
    assert any("d_coef=2" in f.message for f in adamw.findings)


@pytest.fixture(scope="module")
def imported_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("kohya import")
    images = tmp / "img" / "1_mira"
    images.mkdir(parents=True)
    for name in ("purple_star", "red_circle"):
        for ext in (".png", ".txt"):
            shutil.copy(DEMO_IMAGES / "4_demo" / f"{name}{ext}", images / f"{name}{ext}")
    result = convert_kohya(load(FIXTURE))
    data = result.data
    for path, value in {"model.path": str(TINY_SD), "dataset.path": str(tmp / "img"),
                        "dataset.resolution": 64, "dataset.min_bucket_reso": 64,
                        "dataset.max_bucket_reso": 128, "output.output_dir": str(tmp / "runs"),
                        "output.sample_prompts": ["mira, smiling --w 64 --h 64 --s 2 --d 42"]
                        }.items():
        set_in(data, path, value)
    job, findings = parse_job(data)
    assert not [f for f in findings if f.level == "error"], findings
    built, skips = [], []
    mp = pytest.MonkeyPatch()
    real_build, real_skip = trainer.build_optimizer, loss.clip_skip_embeds

    def build(*args, **kwargs):
        built.append(real_build(*args, **kwargs))
        return built[-1]

    def skip(model, texts, device, clip_skip):
        skips.append(clip_skip)
        return real_skip(model, texts, device, clip_skip)
    mp.setattr(trainer, "build_optimizer", build)
    mp.setattr(loss, "clip_skip_embeds", skip)
    run = run_dir(tmp)
    events = []
    try:
        trained = train_sd(job, run, events.append, lambda: False)
    finally:
        mp.undo()
    return job, run, trained, events, built, skips


def test_the_imported_job_trains_with_prodigy_as_configured(imported_run):
    job, run, trained, events, built, skips = imported_run
    assert events[-1]["type"] == "finished" and events[-1]["status"] == "completed"
    [optimizer] = built
    assert type(optimizer).__name__ == "Prodigy" and type(optimizer).__module__.startswith(
        "prodigyopt")
    defaults = optimizer.defaults
    assert (defaults["d_coef"], defaults["decouple"], defaults["use_bias_correction"],
            defaults["safeguard_warmup"]) == (2.0, True, True, True)
    assert defaults["weight_decay"] == 0.01 and tuple(defaults["betas"]) == (0.9, 0.99)
    assert [g["initial_lr"] for g in optimizer.param_groups] == [1.0, 1.0]  # UNet, TE
    assert job.optimizer.lr_scheduler == "cosine_with_restarts"
    assert job.optimizer.lr_scheduler_num_cycles == 2


def test_the_imported_job_conditions_on_clip_skip_2(imported_run):
    job, run, trained, events, built, skips = imported_run
    assert job.model.clip_skip == 2 and skips and set(skips) == {2}


def test_the_imported_job_adapts_the_convs_as_locon(imported_run):
    job, run, trained, events, built, skips = imported_run
    net = job.network
    assert (net.algo, net.rank, net.alpha, net.conv_rank, net.conv_alpha) == (
        "locon", 16, 8.0, 8, 4.0)
    path = next(p for p in run.exports.iterdir() if p.name == "mira_locon_v1.safetensors")
    with safe_open(str(path), framework="pt") as fh:
        conv = "lora_unet_down_blocks_0_resnets_0_conv1"
        down = fh.get_tensor(f"{conv}.lora_down.weight")
        assert down.shape[0] == 8 and down.dim() == 4          # conv rank, a 3x3 conv
        assert float(fh.get_tensor(f"{conv}.alpha")) == 4.0
        assert down.dtype.itemsize == 2                        # save_precision fp16


def test_the_imported_job_writes_each_saved_epoch(imported_run):
    job, run, trained, events, built, skips = imported_run
    assert (job.training.epochs, job.output.save_every_n_epochs) == (2, 1)
    assert [e["step"] for e in events if e["type"] == "progress"] == [1, 2]
    assert (run.exports / "mira_locon_v1-000001.safetensors").is_file()
    samples = [e for e in events if e["type"] == "sample"]
    assert {e["step"] for e in samples} == {1, 2}                 # sample_every_n_epochs 1
