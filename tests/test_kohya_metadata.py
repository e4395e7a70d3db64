"""kohya-format metadata as sd-scripts' train_network.py writes it: every key it writes,
each in the type sd-scripts holds it in before str(), the optimizer as its class path,
bucket counts with repeats, sd_v2_v, modelspec 1.0.1, and the sshs_* hashes as
sd-scripts' precalculate_safetensors_hashes computes them."""
import hashlib
import json
import re

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save

from lora_studio.engine.core.optim import build_optimizer
from lora_studio.engine.image.export import export_kohya
from lora_studio.engine.image.kohya_metadata import (OPTIMIZER_CLASS, TrainFacts,
                                                     base_model_version, optimizer_args,
                                                     optimizer_text)
from test_sd_engine import TINY_SD, make_job

# The keys train_network.py (sd-scripts, 2026) writes for a folder dataset, with the type
# of the argparse value it calls str() on; "?" after a type: None when the option is unset.
SD_SCRIPTS_KEYS = {
    "ss_session_id": "int", "ss_training_started_at": "float", "ss_output_name": "str",
    "ss_learning_rate": "float", "ss_text_encoder_lr": "float?", "ss_unet_lr": "float?",
    "ss_num_train_images": "int", "ss_num_validation_images": "int",
    "ss_num_reg_images": "int", "ss_num_batches_per_epoch": "int", "ss_num_epochs": "int",
    "ss_gradient_checkpointing": "bool", "ss_gradient_accumulation_steps": "int",
    "ss_max_train_steps": "int", "ss_lr_warmup_steps": "int", "ss_lr_scheduler": "str",
    "ss_network_module": "str", "ss_network_dim": "int", "ss_network_alpha": "float",
    "ss_network_dropout": "float?", "ss_mixed_precision": "str", "ss_full_fp16": "bool",
    "ss_v2": "bool", "ss_base_model_version": "str", "ss_clip_skip": "int?",
    "ss_max_token_length": "int?", "ss_cache_latents": "bool", "ss_seed": "int",
    "ss_lowram": "bool", "ss_noise_offset": "float?", "ss_multires_noise_iterations": "int?",
    "ss_multires_noise_discount": "float", "ss_adaptive_noise_scale": "float?",
    "ss_zero_terminal_snr": "bool", "ss_training_comment": "str?", "ss_optimizer": "str",
    "ss_max_grad_norm": "float", "ss_caption_dropout_rate": "float",
    "ss_caption_dropout_every_n_epochs": "int?", "ss_caption_tag_dropout_rate": "float",
    "ss_face_crop_aug_range": "str?", "ss_prior_loss_weight": "float",
    "ss_min_snr_gamma": "float?", "ss_scale_weight_norms": "float?",
    "ss_ip_noise_gamma": "float?", "ss_debiased_estimation": "bool",
    "ss_noise_offset_random_strength": "bool", "ss_ip_noise_gamma_random_strength": "bool",
    "ss_loss_type": "str", "ss_huber_schedule": "str", "ss_huber_scale": "float",
    "ss_huber_c": "float", "ss_fp8_base": "bool", "ss_fp8_base_unet": "bool",
    "ss_validation_seed": "int?", "ss_validation_split": "float",
    "ss_max_validation_steps": "int?", "ss_validate_every_n_epochs": "int?",
    "ss_validate_every_n_steps": "int?", "ss_resize_interpolation": "str?",
    "ss_batch_size_per_device": "int", "ss_total_batch_size": "int",
    "ss_resolution": "tuple", "ss_color_aug": "bool", "ss_flip_aug": "bool",
    "ss_random_crop": "bool", "ss_shuffle_caption": "bool", "ss_enable_bucket": "bool",
    "ss_bucket_no_upscale": "bool", "ss_min_bucket_reso": "int", "ss_max_bucket_reso": "int",
    "ss_keep_tokens": "int", "ss_dataset_dirs": "json", "ss_reg_dataset_dirs": "json",
    "ss_tag_frequency": "json", "ss_bucket_info": "json", "ss_sd_model_name": "str",
    "ss_sd_model_hash": "hex8", "ss_new_sd_model_hash": "hex64",
    "ss_training_finished_at": "float", "ss_steps": "int", "ss_epoch": "int",
    "sshs_model_hash": "hex64", "sshs_legacy_hash": "hex8",
}
FORMATS = {
    "int": r"-?\d+", "float": r"-?(\d+\.\d+(e[-+]\d+)?|\d+e[-+]\d+)", "bool": r"True|False",
    "tuple": r"\(\d+, \d+\)", "hex8": r"[0-9a-f]{8}", "hex64": r"[0-9a-f]{64}", "str": r".+",
}


def well_formed(value: str, kind: str) -> bool:
    if kind.endswith("?"):
        return value == "None" or well_formed(value, kind[:-1])
    if kind == "json":
        json.loads(value)
        return True
    return re.fullmatch(FORMATS[kind], value) is not None


def facts(**changes) -> TrainFacts:
    values = dict(
        family="sd1", prediction_type="epsilon", base_model=str(TINY_SD),
        base_model_file=str(TINY_SD / "unet" / "diffusion_pytorch_model.safetensors"),
        steps=12, epochs=3, num_train_images=10,
        tag_frequency={"5_cat": {"cat": 2}}, dataset_dirs={"5_cat": {"n_repeats": 5, "img_count": 2}},
        buckets={"64x64": 1, "64x128": 1}, bucket_samples={"64x64": 5, "64x128": 5},
        mean_img_ar_error=0.05, reg_dataset_dirs={"1_cat": {"n_repeats": 1, "img_count": 3}},
        num_reg_images=3, batches_per_epoch=5, max_train_steps=20, num_epochs=5,
        started_at=1_765_000_000.25, finished_at=1_765_000_100.5)
    return TrainFacts(**{**values, **changes})


def big_lora() -> dict[str, torch.Tensor]:
    """PEFT-named tensors over 1.1 MiB, so the legacy hash (64 KiB from 1 MiB) reads tensors."""
    g = torch.Generator().manual_seed(0)
    module = "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"
    return {f"{module}.lora_A.weight": torch.randn(4, 160_000, generator=g),
            f"{module}.lora_B.weight": torch.randn(320, 4, generator=g)}


@pytest.fixture
def exported(tmp_path):
    job = make_job(TINY_SD, network={"rank": 4, "alpha": 16},
                   dataset={"prior_loss_weight": 0.5},
                   optimizer={"optimizer": "Prodigy", "learning_rate": 1.0},
                   training={"batch_size": 2, "gradient_accumulation_steps": 3})
    done = export_kohya(big_lora(), job, facts(), tmp_path / "cat.safetensors",
                        {"lora_studio.version": "x"}, "fp16")
    with safe_open(str(done.path), framework="pt") as fh:
        return job, done.path, fh.metadata()


def test_every_key_sd_scripts_writes_is_there_in_its_format(exported):
    _, _, meta = exported
    missing = sorted(set(SD_SCRIPTS_KEYS) - set(meta))
    assert not missing
    wrong = {k: meta[k] for k, kind in SD_SCRIPTS_KEYS.items() if not well_formed(meta[k], kind)}
    assert not wrong


def test_values_follow_sd_scripts_conventions(exported):
    _, _, meta = exported
    assert meta["ss_network_alpha"] == "16.0" and meta["ss_network_dim"] == "4"
    assert meta["ss_optimizer"] == "prodigyopt.prodigy.Prodigy(weight_decay=0.01)"
    assert meta["ss_total_batch_size"] == "6"      # batch x GPUs x accumulation
    assert meta["ss_clip_skip"] == "1" and meta["modelspec.encoder_layer"] == "1"
    assert meta["ss_resolution"] == "(64, 64)"
    bucket_info = json.loads(meta["ss_bucket_info"])
    counts = {tuple(b["resolution"]): b["count"] for b in bucket_info["buckets"].values()}
    assert counts == {(64, 64): 5, (64, 128): 5}   # images x repeats
    assert bucket_info["mean_img_ar_error"] == 0.05
    assert json.loads(meta["ss_reg_dataset_dirs"]) == {"1_cat": {"n_repeats": 1, "img_count": 3}}
    assert meta["ss_num_reg_images"] == "3" and meta["ss_num_batches_per_epoch"] == "5"
    assert meta["ss_prior_loss_weight"] == "0.5"
    assert meta["ss_max_train_steps"] == "20" and meta["ss_num_epochs"] == "5"
    assert meta["ss_steps"] == "12" and meta["ss_epoch"] == "3"
    assert meta["ss_sd_model_name"] == "tiny-sd"
    assert meta["modelspec.sai_model_spec"] == "1.0.1"
    assert meta["modelspec.architecture"] == "stable-diffusion-v1/lora"
    assert meta["modelspec.implementation"] == "diffusers"
    assert meta["lora_studio.version"] == "x"
    assert "ss_network_args" not in meta   # sd-scripts writes it only for --network_args


def test_sshs_hashes_are_sd_scripts_precalculated_ones(exported):
    """precalculate_safetensors_hashes: the tensors saved again with only the ss_* metadata;
    sshs_model_hash is the SHA-256 of what follows the header, sshs_legacy_hash the first
    8 hex of the SHA-256 of 64 KiB from 1 MiB."""
    _, path, meta = exported
    data = save(load_file(path), {k: v for k, v in meta.items() if k.startswith("ss_")})
    header = int.from_bytes(data[:8], "little")
    assert meta["sshs_model_hash"] == hashlib.sha256(data[8 + header:]).hexdigest()
    assert meta["sshs_legacy_hash"] == hashlib.sha256(data[0x100000:0x110000]).hexdigest()[:8]
    # Not the file's own bytes: those hold modelspec.* and the other keys too.
    assert meta["sshs_legacy_hash"] != hashlib.sha256(path.read_bytes()[0x100000:0x110000]
                                                      ).hexdigest()[:8]


@pytest.mark.parametrize("family, prediction, version, arch", [
    ("sd1", "epsilon", "sd_v1", "stable-diffusion-v1/lora"),
    ("sd2", "epsilon", "sd_v2", "stable-diffusion-v2-512/lora"),
    ("sd2", "v_prediction", "sd_v2_v", "stable-diffusion-v2-768-v/lora"),
    ("sdxl", "epsilon", "sdxl_base_v1-0", "stable-diffusion-xl-v1-base/lora"),
])
def test_base_model_version_and_architecture(tmp_path, family, prediction, version, arch):
    f = facts(family=family, prediction_type=prediction)
    assert base_model_version(f) == version
    done = export_kohya(big_lora(), make_job(TINY_SD), f, tmp_path / "x.safetensors", {})
    with safe_open(str(done.path), framework="pt") as fh:
        meta = fh.metadata()
    assert meta["ss_base_model_version"] == version and meta["modelspec.architecture"] == arch
    assert meta["ss_v2"] == str(family == "sd2")
    assert meta["modelspec.prediction_type"] == ("v" if prediction == "v_prediction" else "epsilon")
    assert (meta["ss_clip_skip"] == "None") == (family == "sdxl")


def test_older_runs_facts_without_the_new_fields_still_export(tmp_path):
    old = {k: v for k, v in facts().__dict__.items()
           if k in ("family", "prediction_type", "base_model", "base_model_file", "steps",
                    "epochs", "num_train_images", "tag_frequency", "dataset_dirs", "buckets",
                    "started_at", "finished_at")}
    done = export_kohya(big_lora(), make_job(TINY_SD), TrainFacts(**old),
                        tmp_path / "old.safetensors", {})
    with safe_open(str(done.path), framework="pt") as fh:
        meta = fh.metadata()
    assert meta["ss_max_train_steps"] == "12" and meta["ss_num_epochs"] == "3"
    counts = [b["count"] for b in json.loads(meta["ss_bucket_info"])["buckets"].values()]
    assert counts == [1, 1]


@pytest.mark.parametrize("name, relative", [
    ("AdamW", False), ("Adafactor", False), ("Adafactor", True), ("Prodigy", False),
    ("DAdaptAdam", False), ("AdamWScheduleFree", False)])
def test_ss_optimizer_names_the_class_and_arguments_the_engine_builds(name, relative):
    """The optimizers a CPU can build (the 8-bit ones need CUDA)."""
    from lora_studio.config.optimizers import missing_package
    if missing_package(name):
        pytest.skip(f"{missing_package(name)} is not installed")
    job = make_job(TINY_SD, optimizer={"optimizer": name, "weight_decay": 0.05,
                                       "adafactor_relative_step": relative,
                                       "lr_warmup_steps": 7})
    built = build_optimizer([{"params": [torch.nn.Parameter(torch.zeros(2))]}], job.optimizer,
                            on_cuda=False)
    cls = type(built)
    assert OPTIMIZER_CLASS[name] == f"{cls.__module__}.{cls.__name__}"
    for key, value in optimizer_args(job).items():
        assert built.defaults[key] == value, key


def test_ss_optimizer_lists_the_optimizer_options_a_kohya_user_would_have_typed():
    job = make_job(TINY_SD, optimizer={"optimizer": "Prodigy", "learning_rate": 1.0,
                                       "d_coef": 2.0, "safeguard_warmup": True, "beta2": 0.99})
    assert optimizer_text(job) == ("prodigyopt.prodigy.Prodigy(weight_decay=0.01,d_coef=2.0,"
                                   "safeguard_warmup=True,betas=(0.9, 0.99))")
    built = build_optimizer([{"params": [torch.nn.Parameter(torch.zeros(2))]}], job.optimizer,
                            on_cuda=False)
    for key, value in optimizer_args(job).items():
        assert built.defaults[key] == value, key
    # DAdaptAdam's own default is coupled decay: ours (decoupled) is listed
    dadapt = make_job(TINY_SD, optimizer={"optimizer": "DAdaptAdam", "learning_rate": 1.0})
    assert optimizer_text(dadapt).endswith("DAdaptAdam(weight_decay=0.01,decouple=True)")


def test_every_optimizer_of_the_schema_has_a_class_path():
    from typing import get_args

    from lora_studio.config.schema import Optimizer
    assert set(OPTIMIZER_CLASS) == set(get_args(Optimizer))


def test_facts_count_training_and_regularisation_images_apart():
    """sd-scripts: ss_num_train_images and ss_dataset_dirs are the training images (with
    repeats), ss_num_reg_images and ss_reg_dataset_dirs the regularisation ones; the bucket
    counts include repeats; batches are the epoch's micro-batches."""
    from types import SimpleNamespace as NS

    from lora_studio.data.buckets import bucket_report
    from lora_studio.engine.image.export import facts_from_run

    def image(folder, repeats, bucket, size, is_reg=False):
        return NS(folder=folder, repeats=repeats, bucket=bucket, size=size, caption="cat, sofa",
                  is_reg=is_reg)
    images = (image("5_cat", 5, (64, 64), (100, 100)), image("5_cat", 5, (64, 128), (50, 100)),
              image("1_cat", 3, (64, 64), (120, 100), is_reg=True))
    image_set = NS(images=images,
                   report=bucket_report((im.bucket, im.repeats) for im in images))
    model = NS(family="sd1", prediction_type="epsilon",
               info=NS(source=str(TINY_SD), weight_files=[], path=TINY_SD))
    job = make_job(TINY_SD, training={"batch_size": 2, "max_steps": 0, "epochs": 4})
    f = facts_from_run(job, model, image_set, steps=7, per_epoch=7, started_at=1.0)
    assert f.num_train_images == 10 and f.num_reg_images == 3
    assert f.dataset_dirs == {"5_cat": {"n_repeats": 5, "img_count": 2}}
    assert f.reg_dataset_dirs == {"1_cat": {"n_repeats": 3, "img_count": 1}}
    assert f.bucket_samples == {"64x64": 8, "64x128": 5}
    assert f.batches_per_epoch == 7          # 8 samples in one bucket, 5 in the other, by 2
    assert f.max_train_steps == 28 and f.num_epochs == 4 and f.epochs == 1
    assert f.mean_img_ar_error == pytest.approx((0 + 0 + abs(1 - 1.2)) / 3)
    assert f.tag_frequency["5_cat"] == {"cat": 2, "sofa": 2}
