import json
from pathlib import Path

import pytest

from lora_studio.config import parse_job
from lora_studio.config.kohya import SIMPLE_KEYS, convert_kohya, parse_resolution
from lora_studio.config.fields import SPECS

DATA = Path(__file__).parent / "data"


def load(name: str) -> dict:
    return json.loads((DATA / name).read_text(encoding="utf-8"))


def test_sd15_gui_config_maps_every_supported_key():
    result = convert_kohya(load("kohya-sd15-character.json"))
    job, findings = parse_job(result.data)
    assert not [f for f in findings if f.level == "error"], findings
    assert job.model.path == "D:/models/v1-5-pruned-emaonly.safetensors" and job.model.family == "sd1"
    assert job.dataset.path == "D:/lora/Anna Müller/img"
    assert (job.dataset.resolution, job.dataset.keep_tokens, job.dataset.shuffle_caption) == (512, 1, True)
    assert job.dataset.bucket_reso_steps == 64  # 64.0 in the file
    assert (job.network.rank, job.network.alpha, job.network.train_text_encoder) == (32, 16.0, True)
    opt = job.optimizer
    assert (opt.optimizer, opt.learning_rate, opt.text_encoder_lr, opt.unet_lr) == (
        "AdamW8bit", 1e-4, 5e-5, None)  # unet_lr equals the learning rate: nothing separate
    assert opt.weight_decay == 0.05 and opt.lr_scheduler == "cosine_with_restarts"
    assert opt.lr_warmup_steps == 160  # 10 % of 1600 steps
    tr = job.training
    assert (tr.epochs, tr.max_steps, tr.batch_size, tr.seed) == (10, 1600, 2, 1234)
    assert (tr.mixed_precision, tr.noise_offset, tr.min_snr_gamma) == ("fp16", 0.05, 5.0)
    out = job.output
    assert (out.output_name, out.save_every_n_steps, out.sample_every_n_steps) == ("anna_muller_v1", 400, 200)
    assert out.sample_prompts == ["annamuller, portrait, smiling", "annamuller, full body, in a garden"]
    assert result.meta["description"] == "trigger: annamuller"
    assert {"clip_skip", "max_token_length", "save_precision", "lr_scheduler_num_cycles"} <= set(
        result.unsupported_set)
    assert "xformers" not in result.unsupported and "logging_dir" not in result.unsupported
    listed = [f for f in result.findings if f.rule == "kohya-unsupported" and not f.path]
    assert "clip_skip = 2" in listed[0].message


def test_values_that_do_not_fit_become_findings():
    result = convert_kohya(load("kohya-sdxl-prodigy-loha.json"))
    by_path: dict[str, list] = {}
    for f in result.findings:
        by_path.setdefault(f.path, []).append(f)
    assert "network_alpha" in by_path["network.alpha"][0].message
    assert "alpha" not in result.data["network"]
    assert result.data["model"]["family"] == "sdxl"
    assert result.data["dataset"]["resolution"] == 896  # 1024x768 as a square of similar area
    assert result.data["network"]["train_text_encoder"] is False  # network_train_unet_only
    # Prodigy's lr = 1 would wreck an AdamW run: the rates are not carried over.
    assert "learning_rate" not in result.data["optimizer"]
    assert any("Prodigy" in f.message for f in by_path["optimizer.optimizer"])
    # max_train_epochs overrides max_train_steps in kohya_ss.
    assert result.data["training"]["epochs"] == 25 and "max_steps" not in result.data["training"]
    assert "noise_offset" not in result.data["training"]  # Multires noise
    assert any("reg_data_dir" in f.message for f in by_path["dataset.path"])
    assert "huggingface_token" not in result.unsupported
    assert all(f.level in ("warning", "info") for f in result.findings)


@pytest.mark.parametrize("config,path,expected", [
    ({"v2": True, "v_parameterization": True}, "model.prediction_type", "v_prediction"),
    ({"v2": "true"}, "model.family", "sd2"),
    ({"lr_warmup_steps": "25", "lr_warmup": 10}, "optimizer.lr_warmup_steps", 25),
    ({"learning_rate": 0, "unet_lr": "2e-4"}, "optimizer.learning_rate", 2e-4),
    ({"text_encoder_lr": 0, "unet_lr": 1e-4}, "network.train_text_encoder", False),
    ({"lr_scheduler": "adafactor"}, "optimizer.lr_scheduler", "constant"),
    ({"optimizer": "pagedadamw8bit"}, "optimizer.optimizer", "PagedAdamW8bit"),
])
def test_special_mappings(config, path, expected):
    section, key = path.split(".")
    assert convert_kohya(config).data[section][key] == expected


def test_warmup_percent_without_step_count_is_explained():
    result = convert_kohya({"lr_warmup": "5", "epoch": 4})
    assert "lr_warmup_steps" not in result.data.get("optimizer", {})
    assert any(f.path == "optimizer.lr_warmup_steps" and f.level == "warning" for f in result.findings)


def test_garbage_never_raises():
    nasty = {k: v for k, v in zip(SIMPLE_KEYS, [[1], {"a": 1}, "nan", "1e999", True, "x"] * 10)}
    nasty.update(max_resolution=[1, 2, 3], sample_prompts=7, optimizer=None, lr_scheduler=3,
                 optimizer_args="weight_decay=lots", LoRA_type=None)
    result = convert_kohya(nasty)
    parse_job(result.data)
    assert len(result.findings) > 5


def test_simple_keys_point_at_real_fields():
    assert all(path in SPECS for path, _ in SIMPLE_KEYS.values())


@pytest.mark.parametrize("text,side", [("512,512", 512), ("768x768", 768), (1024, 1024),
                                       ([640, 640], 640), ("512, 768", 640)])
def test_parse_resolution(text, side):
    assert parse_resolution(text)[0] == side


@pytest.mark.parametrize("text", ["wide", "0,512", "", True, "1,2,3"])
def test_parse_resolution_rejects(text):
    with pytest.raises(ValueError):
        parse_resolution(text)


@pytest.mark.parametrize("config,path", [({"LoRA_type": "Kohya LoCon"}, "network.rank"),
                                         ({"flux1_checkbox": True}, "model.family"),
                                         ({"lr_scheduler": "inverse_sqrt"}, "optimizer.lr_scheduler")])
def test_unsupported_choices_warn(config, path):
    result = convert_kohya(config)
    assert [f.level for f in result.findings if f.path == path] == ["warning"]
