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
    assert opt.lr_scheduler_num_cycles == 3 and opt.lr_scheduler_power == 1.0  # power "" = unset
    assert job.model.clip_skip == 2 and job.network.stop_text_encoder_training == 0
    assert opt.lr_warmup_steps == 160  # 10 % of 1600 steps
    tr = job.training
    assert (tr.epochs, tr.max_steps, tr.batch_size, tr.seed) == (10, 1600, 2, 1234)
    assert (tr.mixed_precision, tr.noise_offset, tr.min_snr_gamma) == ("fp16", 0.05, 5.0)
    out = job.output
    assert (out.output_name, out.save_every_n_steps, out.sample_every_n_steps) == ("anna_muller_v1", 400, 200)
    # the per-prompt options stay with their prompt (sample_prompts.py reads them)
    assert out.sample_prompts == [
        "annamuller, portrait, smiling --n lowres, blurry --w 512 --h 512 --d 1 --l 7 --s 28",
        "annamuller, full body, in a garden --w 512 --h 768"]
    assert (out.save_every_n_epochs, out.save_precision, out.sample_sampler) == (1, "fp16", "Euler a")
    assert result.meta["description"] == "trigger: annamuller"
    assert result.unsupported == {}  # the rest asks for what LoRA Studio does (max_token_length 75 ...)
    assert not {"clip_skip", "lr_scheduler_num_cycles", "lr_scheduler_power", "text_encoder_lr",
                "stop_text_encoder_training", "save_precision", "save_every_n_epochs",
                "sample_sampler", "sample_every_n_epochs", "save_last_n_epochs",
                "save_last_n_steps"} & set(result.unsupported)
    assert not [f for f in result.findings if f.rule == "kohya-unsupported" and not f.path]


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
    assert (result.data["network"]["algo"], result.data["network"]["conv_rank"],
            result.data["network"]["conv_alpha"]) == ("loha", 8, 4.0)
    assert not {"conv_dim", "conv_alpha", "LoRA_type"} & set(result.unsupported)
    # Prodigy is LoRA Studio's too: its rate of 1 and its optimizer_args come along.
    assert result.data["optimizer"]["optimizer"] == "Prodigy"
    assert result.data["optimizer"]["learning_rate"] == 1.0
    assert {k: result.data["optimizer"][k] for k in ("d_coef", "decouple", "use_bias_correction",
                                                     "safeguard_warmup", "weight_decay")} == {
        "d_coef": 2.0, "decouple": True, "use_bias_correction": True, "safeguard_warmup": True,
        "weight_decay": 0.01}
    assert "optimizer.optimizer" not in by_path
    assert "clip_skip" not in result.data["model"]  # 1 is the default (and SDXL ignores it)
    # max_train_epochs overrides max_train_steps in kohya_ss.
    assert result.data["training"]["epochs"] == 25 and "max_steps" not in result.data["training"]
    assert "noise_offset" not in result.data["training"]  # Multires noise
    # Regularisation images come along (kohya's reg folder of N_class folders).
    assert result.data["dataset"]["reg_path"] == "/data/reg"
    assert "reg_data_dir" not in result.unsupported and "dataset.path" not in by_path
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


@pytest.mark.parametrize("config,expected", [
    ({"LoRA_type": "Standard", "conv_dim": 8, "conv_alpha": 1}, ("lora", 0, 0.0, -1)),
    ({"LoRA_type": "Kohya LoCon", "conv_dim": 8, "conv_alpha": 1}, ("locon", 8, 1.0, -1)),
    ({"LoRA_type": "LyCORIS/LoCon", "conv_dim": "4", "conv_alpha": "2"}, ("locon", 4, 2.0, -1)),
    ({"LoRA_type": "LyCORIS/LoHa", "conv_dim": 8, "conv_alpha": 4, "factor": 4}, ("loha", 8, 4.0, -1)),
    ({"LoRA_type": "LyCORIS/LoKr", "conv_dim": 8, "conv_alpha": 4, "factor": 4}, ("lokr", 8, 4.0, 4)),
    ({"network_module": "networks.lora", "network_args": ["conv_dim=16", "conv_alpha=8"]},
     ("locon", 16, 8.0, -1)),
    ({"network_module": "networks.lora"}, ("lora", 0, 0.0, -1)),
    ({"network_module": "lycoris.kohya", "network_args": "conv_dim=4 conv_alpha=1 algo=lokr factor=8"},
     ("lokr", 4, 1.0, 8)),
    ({"network_module": "lycoris.kohya", "network_args": ["algo=loha"]}, ("loha", 0, 0.0, -1)),
    ({"network_module": "lycoris.kohya"}, ("locon", 0, 0.0, -1)),  # LyCORIS's default algo
])
def test_lycoris_types_and_their_conv_settings_map(config, expected):
    result = convert_kohya(config)
    job, findings = parse_job(result.data)
    net = job.network
    assert (net.algo, net.conv_rank, net.conv_alpha, net.lokr_factor) == expected
    assert not result.unsupported_set and not [f for f in result.findings if f.level == "warning"]


@pytest.mark.parametrize("config,path", [({"LoRA_type": "LyCORIS/iA3"}, "network.algo"),
                                         ({"network_module": "networks.dylora"}, "network.algo"),
                                         ({"network_module": "lycoris.kohya",
                                           "network_args": ["algo=loha", "preset=full"]}, "network.algo"),
                                         ({"flux1_checkbox": True}, "model.family"),
                                         ({"lr_scheduler": "inverse_sqrt"}, "optimizer.lr_scheduler")])
def test_unsupported_choices_warn(config, path):
    result = convert_kohya(config)
    assert [f.level for f in result.findings if f.path == path] == ["warning"]


@pytest.mark.parametrize("name,expected", [("Prodigy", "Prodigy"), ("DAdaptAdam", "DAdaptAdam"),
                                           ("DAdaptation", "DAdaptAdam"),
                                           ("AdamWScheduleFree", "AdamWScheduleFree"),
                                           ("adafactor", "Adafactor")])
def test_optimizer_names_map_to_ours(name, expected):
    result = convert_kohya({"optimizer": name, "learning_rate": 1.0})
    assert result.data["optimizer"]["optimizer"] == expected
    assert not [f for f in result.findings if f.level == "warning"], result.findings
    job, findings = parse_job(result.data)
    assert job.optimizer.optimizer == expected and not findings


@pytest.mark.parametrize("args,relative,warmup", [
    ("", True, False),                                   # kohya's default: relative step
    ("scale_parameter=False relative_step=False warmup_init=False", False, False),
    ("scale_parameter=True relative_step=True warmup_init=True", True, True),
    ("relative_step=False warmup_init=True", True, True),  # kohya turns it on for warmup_init
])
def test_adafactor_relative_step_follows_kohya(args, relative, warmup):
    result = convert_kohya({"optimizer": "Adafactor", "optimizer_args": args,
                            "learning_rate": "0.0001", "lr_scheduler": "adafactor"})
    job, _ = parse_job(result.data)
    assert (job.optimizer.adafactor_relative_step, job.optimizer.adafactor_warmup_init) == (
        relative, warmup)
    assert not [f for f in result.findings if f.level == "warning"], result.findings


def test_adafactor_scale_parameter_that_does_not_match_is_reported():
    result = convert_kohya({"optimizer": "Adafactor", "optimizer_args": "relative_step=False"})
    assert result.data["optimizer"].get("adafactor_relative_step") is None
    assert any("scale_parameter=True" in f.message and f.level == "warning"
               for f in result.findings)


def test_scheduler_text_encoder_and_schedule_free_keys_import_without_loss():
    config = {"optimizer": "AdamWScheduleFree", "optimizer_args": "warmup_steps=30 weight_decay=0.1",
              "learning_rate": "0.0005", "lr_scheduler": "polynomial", "lr_scheduler_power": "2",
              "lr_scheduler_num_cycles": 4, "clip_skip": "2", "text_encoder_lr": "5e-05",
              "unet_lr": "0.0005", "stop_text_encoder_training": 120, "max_train_steps": 400}
    result = convert_kohya(config)
    job, findings = parse_job(result.data)
    assert not findings and result.unsupported == {}
    assert not [f for f in result.findings if f.level == "warning"], result.findings
    opt = job.optimizer
    assert (opt.optimizer, opt.lr_warmup_steps, opt.weight_decay) == ("AdamWScheduleFree", 30, 0.1)
    assert (opt.lr_scheduler, opt.lr_scheduler_power, opt.lr_scheduler_num_cycles) == (
        "polynomial", 2.0, 4)
    assert (opt.learning_rate, opt.text_encoder_lr) == (5e-4, 5e-5)
    assert (job.model.clip_skip, job.network.stop_text_encoder_training) == (2, 120)
    assert job.network.train_text_encoder


def test_stop_text_encoder_percent_becomes_steps_of_the_run():
    result = convert_kohya({"stop_text_encoder_training_pct": 25, "max_train_steps": "1001"})
    assert result.data["network"]["stop_text_encoder_training"] == 251  # kohya_ss rounds up
    assert any(f.path == "network.stop_text_encoder_training" and f.level == "info"
               for f in result.findings)
    unknown = convert_kohya({"stop_text_encoder_training_pct": 25, "epoch": 4})
    assert "stop_text_encoder_training" not in unknown.data.get("network", {})
    assert [f.level for f in unknown.findings if f.path == "network.stop_text_encoder_training"] \
        == ["warning"]


def test_clip_skip_on_sdxl_is_left_out_as_kohya_ignores_it():
    result = convert_kohya({"sdxl": True, "clip_skip": 2})
    assert "clip_skip" not in result.data["model"] and "clip_skip" not in result.unsupported
    assert any(f.path == "model.clip_skip" and "penultimate" in f.message for f in result.findings)


@pytest.mark.parametrize("config,path,expected", [
    ({"save_precision": "float"}, "output.save_precision", "fp32"),
    ({"save_precision": "bf16"}, "output.save_precision", "bf16"),
    ({"save_last_n_epochs": 3}, "output.save_last_n", 3),
    ({"save_last_n_epochs": "2", "save_last_n_epochs_state": 4}, "output.save_last_n", 4),
    # kohya keeps the saves of the last 200 steps: with one every 100, that and two before
    ({"save_every_n_steps": 100, "save_last_n_steps": 200}, "output.save_last_n", 3),
    ({"sample_every_n_epochs": "2"}, "output.sample_every_n_epochs", 2),
    ({"sample_sampler": "k_euler"}, "output.sample_sampler", "Euler"),
    ({"sample_sampler": "dpmsolver++"}, "output.sample_sampler", "DPM++ 2M"),
])
def test_saving_and_sampling_keys_map(config, path, expected):
    result = convert_kohya(config)
    job, findings = parse_job(result.data)
    section, key = path.split(".")
    assert getattr(getattr(job, section), key) == expected
    assert not result.unsupported_set and not [f for f in findings if f.level == "error"]


@pytest.mark.parametrize("config,path", [({"sample_sampler": "k_dpm_2_a"}, "output.sample_sampler"),
                                         ({"save_precision": "fp8"}, "output.save_precision"),
                                         ({"save_last_n_steps": 300}, "output.save_last_n")])
def test_saving_and_sampling_values_we_cannot_use_are_reported(config, path):
    result = convert_kohya(config)
    assert [f.level for f in result.findings if f.path == path] == ["warning"]
    assert path.split(".")[1] not in result.data.get("output", {})
