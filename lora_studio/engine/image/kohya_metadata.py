"""The `ss_*` and `modelspec.*` metadata of a kohya-format LoRA, key for key as kohya's
sd-scripts writes them (train_network.py, library/train_util.py, library/sai_model_spec.py),
so A1111's and ComfyUI's metadata viewers, Civitai and kohya's own tools read our files
as theirs.

sd-scripts keeps each value as its argparse type and writes ``str(value)``: an int is
"4", a float "16.0" (ss_network_alpha) or "0.0001", a bool "True", an unset option
"None", a tuple "(512, 512)", the dataset facts JSON. SS_METADATA below gives each key's
value in that type, in sd-scripts' order; options LoRA Studio does not have are written
with sd-scripts' defaults. ss_sd_scripts_commit_hash is left out: these files do not come
from sd-scripts. Not written either, as sd-scripts does not without a dataset config:
ss_datasets.
"""
from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from lora_studio import __version__
from lora_studio.config.network import KOHYA_MODULE, kohya_network_args
from lora_studio.config.optimizers import changed_options
from lora_studio.config.schema import JobConfig
from lora_studio.fsutil import sha256_file


@dataclass(frozen=True)
class TrainFacts:
    """What the metadata needs beyond job.toml, measured during the run. Stored as JSON in
    final/'s header; fields added later have defaults so older runs still export."""
    family: str
    prediction_type: str
    base_model: str
    base_model_file: str          # the weights file hashed (single file, or the UNet's)
    steps: int
    epochs: int
    num_train_images: int         # training images x repeats: samples per epoch
    tag_frequency: dict[str, dict[str, int]]
    dataset_dirs: dict[str, dict[str, int]]
    buckets: dict[str, int]       # "WxH" -> images
    started_at: float
    finished_at: float
    bucket_samples: dict[str, int] = field(default_factory=dict)   # "WxH" -> images x repeats
    mean_img_ar_error: float = 0.0
    reg_dataset_dirs: dict[str, dict[str, int]] = field(default_factory=dict)
    num_reg_images: int = 0       # regularisation images x repeats
    batches_per_epoch: int = 0
    max_train_steps: int = 0      # the steps the run was set to train
    num_epochs: int = 0           # the epochs the run was set to train


def aspect_error(size: tuple[int, int], bucket: tuple[int, int]) -> float:
    """sd-scripts' BucketManager.select_bucket: |bucket aspect - image aspect|."""
    return abs(bucket[0] / bucket[1] - size[0] / size[1])


def clip_skip(job: JobConfig, facts: TrainFacts) -> int | None:
    """SDXL always conditions on its penultimate layer: no clip skip to record."""
    return None if facts.family == "sdxl" else job.model.clip_skip


# sd-scripts' optimizer_class.__module__ + "." + __name__ per optimizer (ss_optimizer).
OPTIMIZER_CLASS = {
    "AdamW": "torch.optim.adamw.AdamW",
    "AdamW8bit": "bitsandbytes.optim.adamw.AdamW8bit",
    "PagedAdamW8bit": "bitsandbytes.optim.adamw.PagedAdamW8bit",
    "Lion8bit": "bitsandbytes.optim.lion.Lion8bit",
    "Adafactor": "transformers.optimization.Adafactor",
    "Prodigy": "prodigyopt.prodigy.Prodigy",
    "DAdaptAdam": "dadaptation.dadapt_adam.DAdaptAdam",
    "AdamWScheduleFree": "schedulefree.adamw_schedulefree.AdamWScheduleFree",
}


def optimizer_args(job: JobConfig) -> dict[str, object]:
    """The keyword arguments engine/core/optim.py passes besides the learning rate, as
    kohya lists --optimizer_args."""
    opt = job.optimizer
    args: dict[str, object] = {"weight_decay": opt.weight_decay}
    if opt.optimizer == "Adafactor":
        relative = opt.adafactor_relative_step
        args.update(scale_parameter=relative, relative_step=relative,
                    warmup_init=relative and opt.adafactor_warmup_init)
    elif opt.optimizer == "AdamWScheduleFree":
        args["warmup_steps"] = opt.lr_warmup_steps
    args.update(changed_options(opt))
    return args


def optimizer_text(job: JobConfig) -> str:
    """'torch.optim.adamw.AdamW(weight_decay=0.01)', as sd-scripts writes ss_optimizer."""
    args = ",".join(f"{k}={v}" for k, v in optimizer_args(job).items())
    return OPTIMIZER_CLASS[job.optimizer.optimizer] + (f"({args})" if args else "")


def base_model_version(facts: TrainFacts) -> str:
    """sd-scripts' model_version: 'sd_v1', 'sd_v2', 'sd_v2_v' (SD 2 v-prediction), 'sdxl_base_v1-0'."""
    if facts.family == "sdxl":
        return "sdxl_base_v1-0"
    version = "sd_v2" if facts.family == "sd2" else "sd_v1"
    return version + ("_v" if facts.prediction_type == "v_prediction" else "")


def session_id(facts: TrainFacts) -> int:
    """sd-scripts draws a random 0..2**32 per training session; this one is drawn from the
    session's start time, so every epoch file and the final one of a session share it."""
    return int.from_bytes(hashlib.sha256(repr(facts.started_at).encode()).digest()[:4], "little")


def bucket_info(facts: TrainFacts) -> dict:
    """sd-scripts' dataset.bucket_info: each bucket's resolution and its images counted
    with their repeats, and the mean aspect error of the images against their buckets."""
    counts = facts.bucket_samples or facts.buckets
    return {"buckets": {i: {"resolution": [int(x) for x in reso.split("x")], "count": n}
                        for i, (reso, n) in enumerate(sorted(counts.items(), key=_reso_order))},
            "mean_img_ar_error": facts.mean_img_ar_error}


def _reso_order(item: tuple[str, int]) -> tuple[int, int]:
    w, h = (int(x) for x in item[0].split("x"))
    return w, h


def model_name(facts: TrainFacts) -> str:
    """The base model's file or folder name, or the id as given when it is not on disk."""
    return Path(facts.base_model).name if Path(facts.base_model).exists() else facts.base_model


Value = Callable[[JobConfig, TrainFacts], object]
# (key, value) in sd-scripts' order; ss_steps, ss_epoch and ss_training_finished_at are
# what sd-scripts sets when it saves.
SS_METADATA: tuple[tuple[str, Value], ...] = (
    ("ss_session_id", lambda j, f: session_id(f)),
    ("ss_training_started_at", lambda j, f: f.started_at),
    ("ss_output_name", lambda j, f: j.output.output_name),
    ("ss_learning_rate", lambda j, f: j.optimizer.learning_rate),
    ("ss_text_encoder_lr", lambda j, f: j.optimizer.text_encoder_lr or j.optimizer.learning_rate),
    ("ss_unet_lr", lambda j, f: j.optimizer.unet_lr or j.optimizer.learning_rate),
    ("ss_num_train_images", lambda j, f: f.num_train_images),
    ("ss_num_validation_images", lambda j, f: 0),
    ("ss_num_reg_images", lambda j, f: f.num_reg_images),
    ("ss_num_batches_per_epoch", lambda j, f: f.batches_per_epoch),
    ("ss_num_epochs", lambda j, f: f.num_epochs or f.epochs),
    ("ss_gradient_checkpointing", lambda j, f: j.training.gradient_checkpointing),
    ("ss_gradient_accumulation_steps", lambda j, f: j.training.gradient_accumulation_steps),
    ("ss_max_train_steps", lambda j, f: f.max_train_steps or f.steps),
    ("ss_lr_warmup_steps", lambda j, f: j.optimizer.lr_warmup_steps),
    ("ss_lr_scheduler", lambda j, f: j.optimizer.lr_scheduler),
    ("ss_network_module", lambda j, f: KOHYA_MODULE[j.network.algo]),
    ("ss_network_dim", lambda j, f: j.network.rank),
    ("ss_network_alpha", lambda j, f: float(j.network.alpha)),
    ("ss_network_dropout", lambda j, f: float(j.network.dropout) or None),
    ("ss_mixed_precision", lambda j, f: j.training.mixed_precision),
    ("ss_full_fp16", lambda j, f: False),
    ("ss_v2", lambda j, f: f.family == "sd2"),
    ("ss_base_model_version", lambda j, f: base_model_version(f)),
    ("ss_clip_skip", clip_skip),
    ("ss_max_token_length", lambda j, f: None),
    ("ss_cache_latents", lambda j, f: j.dataset.cache_latents),
    ("ss_seed", lambda j, f: j.training.seed),
    ("ss_lowram", lambda j, f: False),
    ("ss_noise_offset", lambda j, f: j.training.noise_offset or None),
    ("ss_multires_noise_iterations", lambda j, f: None),
    ("ss_multires_noise_discount", lambda j, f: 0.3),
    ("ss_adaptive_noise_scale", lambda j, f: None),
    ("ss_zero_terminal_snr", lambda j, f: False),
    ("ss_training_comment", lambda j, f: None),
    ("ss_optimizer", lambda j, f: optimizer_text(j)),
    ("ss_max_grad_norm", lambda j, f: float(j.optimizer.max_grad_norm)),
    ("ss_caption_dropout_rate", lambda j, f: float(j.dataset.caption_dropout_rate)),
    ("ss_caption_dropout_every_n_epochs", lambda j, f: None),
    ("ss_caption_tag_dropout_rate", lambda j, f: 0.0),
    ("ss_face_crop_aug_range", lambda j, f: None),
    ("ss_prior_loss_weight", lambda j, f: float(j.dataset.prior_loss_weight)),
    ("ss_min_snr_gamma", lambda j, f: j.training.min_snr_gamma or None),
    ("ss_scale_weight_norms", lambda j, f: None),
    ("ss_ip_noise_gamma", lambda j, f: None),
    ("ss_debiased_estimation", lambda j, f: False),
    ("ss_noise_offset_random_strength", lambda j, f: False),
    ("ss_ip_noise_gamma_random_strength", lambda j, f: False),
    ("ss_loss_type", lambda j, f: "l2"),
    ("ss_huber_schedule", lambda j, f: "snr"),
    ("ss_huber_scale", lambda j, f: 1.0),
    ("ss_huber_c", lambda j, f: 0.1),
    ("ss_fp8_base", lambda j, f: False),
    ("ss_fp8_base_unet", lambda j, f: False),
    ("ss_validation_seed", lambda j, f: None),
    ("ss_validation_split", lambda j, f: 0.0),
    ("ss_max_validation_steps", lambda j, f: None),
    ("ss_validate_every_n_epochs", lambda j, f: None),
    ("ss_validate_every_n_steps", lambda j, f: None),
    ("ss_resize_interpolation", lambda j, f: None),
    # A folder dataset (sd-scripts without --dataset_config).
    ("ss_batch_size_per_device", lambda j, f: j.training.batch_size),
    ("ss_total_batch_size", lambda j, f: j.training.batch_size * j.training.processes
        * j.training.gradient_accumulation_steps),
    ("ss_resolution", lambda j, f: (j.dataset.resolution, j.dataset.resolution)),
    ("ss_color_aug", lambda j, f: False),
    ("ss_flip_aug", lambda j, f: j.dataset.flip_aug),
    ("ss_random_crop", lambda j, f: j.dataset.random_crop),
    ("ss_shuffle_caption", lambda j, f: j.dataset.shuffle_caption),
    ("ss_enable_bucket", lambda j, f: j.dataset.enable_bucket),
    ("ss_bucket_no_upscale", lambda j, f: False),
    ("ss_min_bucket_reso", lambda j, f: j.dataset.min_bucket_reso),
    ("ss_max_bucket_reso", lambda j, f: j.dataset.max_bucket_reso),
    ("ss_keep_tokens", lambda j, f: j.dataset.keep_tokens),
    ("ss_dataset_dirs", lambda j, f: json.dumps(f.dataset_dirs, ensure_ascii=False)),
    ("ss_reg_dataset_dirs", lambda j, f: json.dumps(f.reg_dataset_dirs, ensure_ascii=False)),
    ("ss_tag_frequency", lambda j, f: json.dumps(f.tag_frequency, ensure_ascii=False)),
    # sd-scripts keeps no bucket info without bucketing: json.dumps(None).
    ("ss_bucket_info", lambda j, f: json.dumps(bucket_info(f) if j.dataset.enable_bucket
                                               else None)),
    ("ss_sd_model_name", lambda j, f: model_name(f)),
    ("ss_training_finished_at", lambda j, f: f.finished_at),
    ("ss_steps", lambda j, f: f.steps),
    ("ss_epoch", lambda j, f: f.epochs),
)

# modelspec (sai_model_spec.py) architecture per family; SD 2 by prediction type.
MODELSPEC_ARCH = {"sd1": "stable-diffusion-v1", "sdxl": "stable-diffusion-xl-v1-base",
                  "sd2": "stable-diffusion-v2-512", "sd2_v": "stable-diffusion-v2-768-v"}
MODELSPEC_VERSION = "1.0.1"   # ModelSpecMetadata.sai_model_spec in sd-scripts


def modelspec(job: JobConfig, facts: TrainFacts) -> dict[str, str]:
    """build_metadata's keys for a LoRA: architecture/lora, the implementation (SGM for
    SDXL LoRAs, else diffusers), title, date, resolution, prediction type, encoder layer."""
    v = facts.prediction_type == "v_prediction"
    arch = MODELSPEC_ARCH["sd2_v" if facts.family == "sd2" and v else facts.family]
    spec = {
        "modelspec.sai_model_spec": MODELSPEC_VERSION,
        "modelspec.architecture": f"{arch}/lora",
        "modelspec.implementation": ("https://github.com/Stability-AI/generative-models"
                                     if facts.family == "sdxl" else "diffusers"),
        "modelspec.title": job.output.output_name,
        "modelspec.date": time.strftime("%Y-%m-%dT%H:%M:%S",
                                        time.localtime(int(facts.finished_at))),
        "modelspec.resolution": f"{job.dataset.resolution}x{job.dataset.resolution}",
        "modelspec.prediction_type": "v" if v else "epsilon",
        "modelspec.implementation_version": f"lora-studio/{__version__}",
    }
    layer = clip_skip(job, facts)
    if layer is not None:
        spec["modelspec.encoder_layer"] = str(layer)
    return spec


def base_model_hashes(facts: TrainFacts) -> dict[str, str]:
    """A1111's old 8-hex hash and its SHA-256 of the base model's weights file."""
    path = Path(facts.base_model_file)
    if not path.is_file():
        return {}
    with open(path, "rb") as fh:
        fh.seek(0x100000)
        legacy = hashlib.sha256(fh.read(0x10000)).hexdigest()[:8]
    return {"ss_sd_model_hash": legacy, "ss_new_sd_model_hash": sha256_file(path)}


def kohya_metadata(job: JobConfig, facts: TrainFacts) -> dict[str, str]:
    """Every ss_* key as sd-scripts' str(value), then modelspec.*; ss_network_args only
    when the network has arguments (as sd-scripts writes it only for --network_args)."""
    ss = {key: str(value(job, facts)) for key, value in SS_METADATA}
    args = kohya_network_args(job.network)
    if args:
        ss["ss_network_args"] = json.dumps(args)
    return {**ss, **base_model_hashes(facts), **modelspec(job, facts)}
