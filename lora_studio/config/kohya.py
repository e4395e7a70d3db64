"""Import the LoRA config JSON that the kohya_ss GUI saves and ships as presets.

kohya_ss writes numbers as numbers or as strings ("0.0001", "1234"), uses "" for
"not set", and names things its own way (``network_dim``, ``max_resolution``
"1024,1024", ``lr_warmup`` in percent of the run). Every key we can express is
mapped to a dotted JobConfig path; a value that does not fit becomes a Finding
and the default stays; the keys we have no equivalent for are returned so the
user sees what was left behind.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

from .fields import SPECS, set_in
from .findings import Finding
from .optimizers import NO_BETAS, OPTIMIZER_OPTIONS
from .kohya_dataset import convert_dataset_config
from .samplers import sampler_name
from .schema import SCHEMA_VERSION

# kohya key -> (JobConfig path, kind). Values of "" mean "not set" and are skipped.
SIMPLE_KEYS: dict[str, tuple[str, str]] = {
    "pretrained_model_name_or_path": ("model.path", "str"),
    "train_data_dir": ("dataset.path", "str"),
    "reg_data_dir": ("dataset.reg_path", "str"),
    "prior_loss_weight": ("dataset.prior_loss_weight", "float"),
    "caption_extension": ("dataset.caption_extension", "str"),
    "enable_bucket": ("dataset.enable_bucket", "bool"),
    "min_bucket_reso": ("dataset.min_bucket_reso", "int"),
    "max_bucket_reso": ("dataset.max_bucket_reso", "int"),
    "bucket_reso_steps": ("dataset.bucket_reso_steps", "int"),
    "bucket_no_upscale": ("dataset.bucket_no_upscale", "bool"),
    "random_crop": ("dataset.random_crop", "bool"),
    "flip_aug": ("dataset.flip_aug", "bool"),
    "shuffle_caption": ("dataset.shuffle_caption", "bool"),
    "keep_tokens": ("dataset.keep_tokens", "int"),
    "caption_dropout_rate": ("dataset.caption_dropout_rate", "float"),
    "cache_latents": ("dataset.cache_latents", "bool"),
    "cache_latents_to_disk": ("dataset.cache_latents_to_disk", "bool"),
    "network_dim": ("network.rank", "int"),
    "network_alpha": ("network.alpha", "float"),
    "network_dropout": ("network.dropout", "float"),
    "max_grad_norm": ("optimizer.max_grad_norm", "float"),
    "train_batch_size": ("training.batch_size", "int"),
    "gradient_accumulation_steps": ("training.gradient_accumulation_steps", "int"),
    "mixed_precision": ("training.mixed_precision", "str"),
    "gradient_checkpointing": ("training.gradient_checkpointing", "bool"),
    "seed": ("training.seed", "int"),
    "min_snr_gamma": ("training.min_snr_gamma", "float"),
    "num_processes": ("training.processes", "int"),
    "output_name": ("output.output_name", "str"),
    "output_dir": ("output.output_dir", "str"),
    "save_every_n_steps": ("output.save_every_n_steps", "int"),
    "save_every_n_epochs": ("output.save_every_n_epochs", "int"),
    "sample_every_n_steps": ("output.sample_every_n_steps", "int"),
    "sample_every_n_epochs": ("output.sample_every_n_epochs", "int"),
    "lr_scheduler_num_cycles": ("optimizer.lr_scheduler_num_cycles", "int"),
    "lr_scheduler_power": ("optimizer.lr_scheduler_power", "float"),
}

# Keys read by the special cases in convert_kohya (several keys feed one field, or
# one key needs a conversion).
SPECIAL_KEYS = frozenset({
    "max_resolution", "sdxl", "v2", "v_parameterization", "LoRA_type", "flux1_checkbox",
    "sd3_checkbox", "learning_rate", "unet_lr", "text_encoder_lr", "network_train_unet_only",
    "lr_scheduler", "lr_warmup", "lr_warmup_steps", "optimizer", "optimizer_args", "epoch",
    "max_train_epochs", "max_train_steps", "sample_prompts", "noise_offset", "noise_offset_type",
    "training_comment", "metadata_title", "metadata_author", "metadata_description",
    "clip_skip", "stop_text_encoder_training", "stop_text_encoder_training_pct",
    "save_precision", "save_last_n_epochs", "save_last_n_epochs_state", "save_last_n_steps",
    "save_last_n_steps_state", "sample_sampler", "conv_dim", "conv_alpha", "factor",
    "network_module", "network_args", "dataset_config",
})

# Things LoRA Studio decides by itself (attention kernels, data loader workers,
# logging, uploads, launcher settings): nothing to carry over, nothing to report.
HANDLED_AUTOMATICALLY = frozenset({
    "xformers", "mem_eff_attn", "sdpa", "max_data_loader_n_workers", "persistent_data_loader_workers",
    "num_cpu_threads_per_process", "save_model_as", "logging_dir", "log_with", "log_tracker_name",
    "log_tracker_config", "log_config", "log_prefix", "use_wandb", "wandb_api_key", "wandb_run_name",
    "huggingface_repo_id", "huggingface_token", "huggingface_repo_type", "huggingface_repo_visibility",
    "huggingface_path_in_repo", "save_state_to_huggingface", "resume_from_huggingface", "async_upload",
    "save_as_bool", "model_list", "dynamo_backend", "dynamo_mode", "dynamo_use_dynamic",
    "dynamo_use_fullgraph", "main_process_port", "num_machines", "multi_gpu", "gpu_ids",
    "extra_accelerate_launch_args", "highvram", "lowvram", "metadata_license", "metadata_tags",
    "vae_batch_size", "save_state", "save_state_on_train_end",
})

ANY = object()  # NOT_IMPORTED: whatever the value, nothing is lost
_FLUX_SD3 = "a Flux / SD3 setting; LoRA Studio trains SD 1.x, 2.x and SDXL"
_LYCORIS = "a LyCORIS option LoRA Studio's LoCon / LoHa / LoKr do not have"
# kohya_ss keys with no setting of ours: key -> (the value at which kohya does what LoRA
# Studio does, or ANY; why it is not imported). A key at that value (or "") loses nothing
# and is not listed; any other value is listed as not imported, with the why.
NOT_IMPORTED: dict[str, tuple[Any, str]] = {
    # what LoRA Studio does anyway at kohya's default
    "max_token_length": (75, "captions are cut at CLIP's 75 tokens"),
    "min_timestep": (0, "every timestep is trained"), "max_timestep": (1000, "every timestep is trained"),
    "loss_type": ("l2", "the loss is the mean squared error"),
    "huber_c": (ANY, "only used with loss_type huber / smooth_l1"),
    "huber_schedule": (ANY, "only used with loss_type huber / smooth_l1"),
    "huber_scale": (ANY, "only used with loss_type huber / smooth_l1"),
    "caption_dropout_every_n_epochs": (0, "no whole-epoch caption dropout"),
    "multires_noise_iterations": (0, "no multi-resolution noise"),
    "multires_noise_discount": (ANY, "only used with multires_noise_iterations"),
    "adaptive_noise_scale": (0, "no adaptive noise scale"),
    "noise_offset_random_strength": (False, "the noise offset is fixed"),
    "ip_noise_gamma": (0, "no input perturbation noise"),
    "ip_noise_gamma_random_strength": (False, "no input perturbation noise"),
    "color_aug": (False, "no colour augmentation"), "weighted_captions": (False, "no caption weights"),
    "masked_loss": (False, "no masked loss"), "debiased_estimation_loss": (False, "no debiased estimation"),
    "scale_v_pred_loss_like_noise_pred": (False, "v-prediction loss is not rescaled"),
    "v_pred_like_loss": (0, "no v-prediction-like loss"),
    "scale_weight_norms": (0, "no max-norm regularisation"),
    "full_fp16": (False, "weights train in fp32 under mixed precision"),
    "full_bf16": (False, "weights train in fp32 under mixed precision"),
    "fp8_base": (False, "no fp8 base weights"), "fp8_base_unet": (False, "no fp8 base weights"),
    "mem_eff_save": (False, "adapters are small; saved whole"),
    "sdxl_no_half_vae": (ANY, "the VAE runs in fp32 when its config asks for it"),
    "sdxl_cache_text_encoder_outputs": (ANY, "text embeddings are cached whenever the text "
                                             "encoder is not trained"),
    "skip_cache_check": (ANY, "the latent cache is checked by file size and time"),
    "lr_scheduler_type": ("", "no custom scheduler classes"),
    "lr_scheduler_args": ("", "no custom scheduler arguments"),
    "loraplus_lr_ratio": (0, "LoRA+ is for text LoRAs"),
    "loraplus_unet_lr_ratio": (0, "LoRA+ is for text LoRAs"),
    "loraplus_text_encoder_lr_ratio": (0, "LoRA+ is for text LoRAs"),
    "rank_dropout": (0, "no rank dropout"), "module_dropout": (0, "no module dropout"),
    "rank_dropout_scale": (False, _LYCORIS), "LyCORIS_preset": ("full", _LYCORIS),
    "use_tucker": (False, _LYCORIS), "use_scalar": (False, _LYCORIS), "use_cp": (False, _LYCORIS),
    "constrain": (0, _LYCORIS), "rescaled": (False, _LYCORIS), "decompose_both": (False, _LYCORIS),
    "dora_wd": (False, _LYCORIS), "bypass_mode": (False, _LYCORIS), "train_norm": (False, _LYCORIS),
    "unit": (1, _LYCORIS), "train_on_input": (ANY, "an iA3 option"),
    "block_dims": ("", "no per-block ranks"), "block_alphas": ("", "no per-block ranks"),
    "conv_block_dims": ("", "no per-block ranks"), "conv_block_alphas": ("", "no per-block ranks"),
    "down_lr_weight": ("", "no per-block learning rates"),
    "mid_lr_weight": ("", "no per-block learning rates"),
    "up_lr_weight": ("", "no per-block learning rates"),
    "block_lr_zero_threshold": ("", "no per-block learning rates"),
    "network_weights": ("", "training starts from a new LoRA, not a saved one"),
    "lora_network_weights": ("", "training starts from a new LoRA, not a saved one"),
    "dim_from_weights": (False, "training starts from a new LoRA, not a saved one"),
    "resume": ("", "resume a LoRA Studio run from its Runs tab"),
    "vae": ("", "the model's own VAE is used"),
    "no_token_padding": (False, "a DreamBooth option"),
    "additional_parameters": ("", "extra sd-scripts command-line options"),
    # settings of the models LoRA Studio does not train (the family check names them)
    **{key: (ANY, _FLUX_SD3) for key in (
        "ae", "clip_l", "clip_g", "t5xxl", "t5xxl_lr", "t5xxl_max_token_length", "train_t5xxl",
        "apply_t5_attn_mask", "discrete_flow_shift", "guidance_scale", "model_prediction_type",
        "timestep_sampling", "split_mode", "split_qkv", "train_blocks", "train_double_block_indices",
        "train_single_block_indices", "img_attn_dim", "img_mlp_dim", "img_mod_dim", "txt_attn_dim",
        "txt_mlp_dim", "txt_mod_dim", "single_dim", "single_mod_dim", "in_dims", "enable_all_linear",
        "flux1_cache_text_encoder_outputs", "flux1_cache_text_encoder_outputs_to_disk",
        "cpu_offload_checkpointing", "blocks_to_swap", "flux_fused_backward_pass",
        "sd3_cache_text_encoder_outputs", "sd3_cache_text_encoder_outputs_to_disk", "sd3_clip_l",
        "sd3_clip_g", "sd3_t5xxl", "sd3_text_encoder_batch_size", "weighting_scheme",
        "logit_mean", "logit_std", "mode_scale")},
}

ADAPTIVE_OPTIMIZERS = ("prodigy", "dadapt")
# kohya's 'DAdaptation' is D-Adaptation's AdamPreprint variant, the paper's first Adam.
OPTIMIZER_ALIASES = {"dadaptation": "DAdaptAdam", "dadaptadampreprint": "DAdaptAdam"}
# optimizer_args with a setting of ours (config/optimizers.py says which optimizers take
# them): kohya's name -> (optimizer field, kind). 'betas' and 'weight_decay' are read apart.
OPTIMIZER_ARGS = {"d_coef": ("d_coef", "float"), "decouple": ("decouple", "bool"),
                  "use_bias_correction": ("use_bias_correction", "bool"),
                  "safeguard_warmup": ("safeguard_warmup", "bool")}
ADAFACTOR_ARGS = ("relative_step", "scale_parameter", "warmup_init")
SCHEDULER_ALIASES = {"adafactor": "constant"}
# kohya_ss's LoRA_type -> network.algo ("Kohya LoCon" is sd-scripts' LoRA with conv_dim).
KOHYA_LORA_TYPES = {"standard": "lora", "kohya locon": "locon", "locon": "locon",
                    "lycoris/locon": "locon", "lycoris/loha": "loha", "lycoris/lokr": "lokr"}
# sd-scripts' network_module; LyCORIS's module says which algo in network_args.
NETWORK_MODULES = {"networks.lora": "lora", "lycoris.kohya": "lycoris"}
# LyCORIS's algo names (its "lora" adapts the convs too: LoCon).
LYCORIS_ALGOS = {"lora": "locon", "locon": "locon", "loha": "loha", "lokr": "lokr"}
NETWORK_ARGS = ("conv_dim", "conv_alpha", "algo", "factor")  # the network_args imported
SAVE_PRECISIONS = {"fp16": "fp16", "bf16": "bf16", "float": "fp32", "fp32": "fp32"}
_UNSET = object()


@dataclass
class KohyaImport:
    data: dict                     # nested JobConfig data, only the keys the file set
    meta: dict                     # [meta] table for the preset: name, description, ...
    findings: list[Finding] = field(default_factory=list)
    unsupported: dict[str, Any] = field(default_factory=dict)  # kohya keys with no equivalent

    @property
    def unsupported_set(self) -> dict[str, Any]:
        """The unsupported keys that carry a value (not "", 0, false or empty)."""
        return {k: v for k, v in self.unsupported.items() if _is_set(v)}


def _is_set(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip() not in ("", "0", "0.0")
    return bool(value)


def _coerce(value: Any, kind: str) -> Any:
    """A kohya value as `kind`; _UNSET for ""/None; ValueError when it does not fit."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return _UNSET
    if kind == "str":
        if isinstance(value, (dict, list)):
            raise ValueError("expected text")
        return str(value).strip()
    if kind == "bool":
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("true", "1", "yes", "on"):
            return True
        if text in ("false", "0", "no", "off"):
            return False
        raise ValueError("expected true or false")
    if isinstance(value, bool) or isinstance(value, (dict, list)):
        raise ValueError("expected a number")
    number = float(value)  # "1e-4", "0.0001", 64.0 all read; "abc" raises ValueError
    if not math.isfinite(number):
        raise ValueError("expected a finite number")
    if kind == "int":
        if number != int(number):
            raise ValueError("expected a whole number")
        return int(number)
    return number


def parse_resolution(value: Any) -> tuple[int, str]:
    """kohya's "W,H" (also "WxH", 512 or [W, H]) as our square side, plus a note
    when the area was not square. ValueError when it is not a resolution."""
    if isinstance(value, bool):
        raise ValueError("not a resolution")
    if isinstance(value, (int, float)):
        sides = [value]
    elif isinstance(value, (list, tuple)):
        sides = list(value)
    else:
        sides = [s for s in re.split(r"[,x×\s]+", str(value).strip()) if s]
    if not 1 <= len(sides) <= 2:
        raise ValueError("not a resolution")
    width, height = (int(_coerce(s, "int")) for s in (sides * 2)[:2])
    if width <= 0 or height <= 0:
        raise ValueError("not a resolution")
    if width == height:
        return width, ""
    # kohya buckets by area; our resolution is the side of a square of that area.
    side = max(64, round(math.sqrt(width * height) / 64) * 64)
    return side, (f"{width}x{height} is not square; it was converted to {side}, the side of a "
                  f"square of about the same area (bucketing keeps your aspect ratios).")


def _prompt_lines(value: Any) -> list[str]:
    """Sample prompts, one a line with its '--w 512 --s 20' options (sample_prompts.py
    reads them); comments and blank lines left out, as kohya does."""
    lines = value if isinstance(value, list) else str(value).splitlines()
    return [text for text in (str(line).strip() for line in lines)
            if text and not text.startswith("#")]


class _Converter:
    def __init__(self, config: dict):
        self.config = config
        self.data: dict = {}
        self.findings: list[Finding] = []

    def get(self, key: str, kind: str, path: str) -> Any:
        """The key's value as `kind`, _UNSET when absent or empty; a Finding when it does not fit."""
        if key not in self.config:
            return _UNSET
        try:
            return _coerce(self.config[key], kind)
        except (TypeError, ValueError) as exc:
            self.warn(path, f"kohya '{key}' = {self.config[key]!r} could not be read ({exc}); "
                            f"the default was kept.", f"Set {path} yourself.", "kohya-value")
            return _UNSET

    def put(self, path: str, value: Any) -> None:
        if value is not _UNSET:
            set_in(self.data, path, value)

    def warn(self, path: str, message: str, hint: str, rule: str = "kohya-unsupported") -> None:
        self.findings.append(Finding(path, "warning", message, hint, rule))

    def info(self, path: str, message: str, hint: str) -> None:
        self.findings.append(Finding(path, "info", message, hint, "kohya-converted"))

    def simple(self) -> None:
        for key, (path, kind) in SIMPLE_KEYS.items():
            self.put(path, self.get(key, kind, path))

    def family(self) -> None:
        lora_type = str(self.config.get("LoRA_type", "Standard") or "Standard")
        flux = self.get("flux1_checkbox", "bool", "model.family") is True or lora_type == "Flux1"
        sd3 = self.get("sd3_checkbox", "bool", "model.family") is True
        if flux or sd3:
            self.warn("model.family", f"This is a {'Flux' if flux else 'SD3'} config; LoRA Studio trains "
                      "Stable Diffusion 1.x, 2.x and SDXL only.",
                      "Pick an SD 1.x / 2.x / SDXL base model and set model.family.")
        elif self.get("sdxl", "bool", "model.family") is True:
            self.put("model.family", "sdxl")
        elif self.get("v2", "bool", "model.family") is True:
            self.put("model.family", "sd2")
        else:
            self.put("model.family", "sd1")
        if self.get("v_parameterization", "bool", "model.prediction_type") is True:
            self.put("model.prediction_type", "v_prediction")

    def network(self) -> None:
        """network.algo from kohya_ss's LoRA_type or sd-scripts' network_module +
        network_args, with the conv rank / alpha and LoKr factor they carry."""
        args = self.network_args()
        lora_type = str(self.config.get("LoRA_type", "Standard") or "Standard")
        module = str(self.config.get("network_module", "") or "")
        if module:
            algo = NETWORK_MODULES.get(module)
            if algo == "lycoris":
                algo = LYCORIS_ALGOS.get(args.get("algo", "lora").lower())
            elif algo == "lora" and _is_set(args.get("conv_dim", "")):
                algo = "locon"  # kohya's own LoRA with conv_dim is its LoCon
            what = f"network_module '{module}'" + (f" algo={args['algo']}" if "algo" in args else "")
            left = [f"{k}={v}" for k, v in args.items() if k not in NETWORK_ARGS]
            if left:
                self.warn("network.algo", f"Network arguments not imported: {' '.join(left)}.",
                          "Check whether your results depended on them.")
        else:
            algo = KOHYA_LORA_TYPES.get(lora_type.lower())
            args = {k: self.config[k] for k in ("conv_dim", "conv_alpha", "factor") if k in self.config}
            what = f"LoRA type '{lora_type}'"
        if algo is None:
            if lora_type != "Flux1":
                self.warn("network.algo", f"{what} is not supported; a standard LoRA with the same "
                          "rank and alpha is imported instead.",
                          "Expect a somewhat different result than kohya_ss gave; pick "
                          "network.algo (lora, locon, loha or lokr) yourself.")
            return
        self.put("network.algo", algo)
        if algo == "lora":
            return  # kohya_ss's Standard type ignores its conv fields
        for key, path, kind in (("conv_dim", "network.conv_rank", "int"),
                                ("conv_alpha", "network.conv_alpha", "float")) + \
                ((("factor", "network.lokr_factor", "int"),) if algo == "lokr" else ()):
            if _is_set(args.get(key, "")):
                try:
                    self.put(path, _coerce(args[key], kind))
                except (TypeError, ValueError):
                    self.warn(path, f"kohya '{key}' = {args[key]!r} is not a number; the default "
                              "was kept.", f"Set {path} yourself.", "kohya-value")

    def network_args(self) -> dict[str, str]:
        """sd-scripts' network_args ("conv_dim=8 algo=loha" or a list of such) by name."""
        value = self.config.get("network_args", [])
        items = value if isinstance(value, list) else str(value).split()
        return {key.strip(): val.strip().strip("\"'")
                for key, _, val in (str(item).partition("=") for item in items) if key.strip()}

    def resolution(self) -> None:
        if not _is_set(self.config.get("max_resolution", "")):
            return
        try:
            side, note = parse_resolution(self.config["max_resolution"])
        except (TypeError, ValueError):
            self.warn("dataset.resolution", f"kohya 'max_resolution' = {self.config['max_resolution']!r} "
                      "is not a resolution; the default was kept.",
                      "Set dataset.resolution, e.g. 512 for SD 1.x or 1024 for SDXL.", "kohya-value")
            return
        self.put("dataset.resolution", side)
        if note:
            self.info("dataset.resolution", note, "Change dataset.resolution if you prefer another size.")

    def optimizer_and_rates(self) -> None:
        name = self.get("optimizer", "str", "optimizer.optimizer")
        choices = {c.lower(): c for c in SPECS["optimizer.optimizer"].choices}
        adaptive = False
        if name is not _UNSET:
            if name.lower() in choices:
                self.put("optimizer.optimizer", choices[name.lower()])
            elif name.lower() in OPTIMIZER_ALIASES:
                self.put("optimizer.optimizer", OPTIMIZER_ALIASES[name.lower()])
                self.info("optimizer.optimizer", f"Optimizer '{name}' (D-Adaptation's AdamPreprint) "
                          f"became {OPTIMIZER_ALIASES[name.lower()]}, the closest LoRA Studio has.",
                          "Pick another optimizer if you prefer.")
            else:
                adaptive = name.lower().startswith(ADAPTIVE_OPTIMIZERS)
                self.warn("optimizer.optimizer", f"Optimizer '{name}' is not supported; AdamW is used.",
                          f"Pick one of {', '.join(choices.values())} if you prefer another.")
        self.adafactor(self.optimizer_args())
        lr = self.get("learning_rate", "float", "optimizer.learning_rate")
        unet = self.get("unet_lr", "float", "optimizer.unet_lr")
        te = self.get("text_encoder_lr", "float", "optimizer.text_encoder_lr")
        rates = [r for r in (lr, unet, te) if r is not _UNSET]
        if adaptive and any(r >= 0.1 for r in rates):
            # Prodigy / DAdaptation want lr≈1; with AdamW that would wreck the run in a step.
            self.warn("optimizer.learning_rate", f"The learning rates ({', '.join(f'{r:g}' for r in rates)}) "
                      f"are meant for the adaptive optimizer '{name}' and were not imported.",
                      "The default 1e-4 is used; adjust optimizer.learning_rate if needed.")
        else:
            if lr is not _UNSET and lr > 0:
                self.put("optimizer.learning_rate", lr)
            elif unet is not _UNSET and unet > 0:
                self.put("optimizer.learning_rate", unet)
            base = self.data.get("optimizer", {}).get("learning_rate")
            if unet is not _UNSET and unet > 0 and unet != base:
                self.put("optimizer.unet_lr", unet)
            if te is not _UNSET and te > 0 and te != base:
                self.put("optimizer.text_encoder_lr", te)
        unet_only = self.get("network_train_unet_only", "bool", "network.train_text_encoder")
        if unet_only is _UNSET:
            # kohya_ss trains the text encoder unless its learning rate is 0.
            unet_only = te is not _UNSET and te == 0
        self.put("network.train_text_encoder", not unet_only)

    def optimizer_args(self) -> dict[str, bool]:
        """Imports the arguments LoRA Studio has settings for; returns Adafactor's."""
        args = self.get("optimizer_args", "str", "optimizer.optimizer")
        if args is _UNSET:
            return {}
        name = self.data.get("optimizer", {}).get("optimizer")
        left, adafactor = [], {}
        for item in args.split():
            key, _, value = item.partition("=")
            key, value = key.strip(), value.strip().strip("\"'")
            try:
                if key == "weight_decay":
                    self.put("optimizer.weight_decay", _coerce(value, "float"))
                    continue
                if name == "Adafactor" and key in ADAFACTOR_ARGS and value:
                    adafactor[key] = _coerce(value, "bool")
                    continue
                if name == "AdamWScheduleFree" and key == "warmup_steps":
                    self.put("optimizer.lr_warmup_steps", _coerce(value, "int"))
                    continue
                if key in OPTIMIZER_ARGS and name in OPTIMIZER_OPTIONS[OPTIMIZER_ARGS[key][0]]:
                    field_name, kind = OPTIMIZER_ARGS[key]
                    self.put(f"optimizer.{field_name}", _coerce(value, kind))
                    continue
                if key == "betas" and name not in NO_BETAS:
                    betas = [_coerce(b, "float") for b in value.strip("()[]").split(",")]
                    if len(betas) in (2, 3) and all(0 <= b < 1 for b in betas[:2]):
                        self.put("optimizer.beta1", betas[0])
                        self.put("optimizer.beta2", betas[1])
                        if len(betas) == 2:
                            continue
                        item = f"beta3={betas[2]:g}"  # Prodigy's third: its own default kept
            except (TypeError, ValueError):
                pass
            left.append(item)
        if left:
            self.warn("optimizer.optimizer", f"Optimizer arguments not imported: {' '.join(left)}.",
                      "LoRA Studio uses each optimizer's standard settings.")
        return adafactor

    def adafactor(self, args: dict[str, bool]) -> None:
        """kohya's Adafactor uses the relative step unless relative_step=False (and turns it
        on for warmup_init); the weights' scale comes with it, as transformers' defaults."""
        if self.data.get("optimizer", {}).get("optimizer") != "Adafactor":
            return
        warmup = args.get("warmup_init", False)
        relative = args.get("relative_step", True) or warmup
        if relative:
            self.put("optimizer.adafactor_relative_step", True)
            self.put("optimizer.adafactor_warmup_init", warmup)
            if "relative_step" not in args:
                self.info("optimizer.adafactor_relative_step", "kohya's Adafactor uses its relative "
                          "step unless optimizer_args say relative_step=False: it was turned on.",
                          "Turn it off to train with the learning rate and scheduler instead.")
        if args.get("scale_parameter", True) != relative:
            self.warn("optimizer.adafactor_relative_step", f"Adafactor's scale_parameter="
                      f"{not relative} with relative_step={relative} was not imported: LoRA Studio "
                      "scales the step by the weights' size exactly when it uses the relative step.",
                      "Expect a somewhat different result than kohya_ss gave.")

    def text_encoder(self) -> None:
        clip_skip = self.get("clip_skip", "int", "model.clip_skip")
        if clip_skip is not _UNSET and clip_skip > 1:
            if self.data.get("model", {}).get("family") == "sdxl":
                self.info("model.clip_skip", f"clip_skip = {clip_skip} was not imported: SDXL always "
                          "uses its text encoders' penultimate layer, and kohya ignores clip_skip "
                          "for it too.", "Nothing to do.")
            else:
                self.put("model.clip_skip", clip_skip)
        steps = self.get("stop_text_encoder_training", "int", "network.stop_text_encoder_training")
        if steps is not _UNSET and steps > 0:
            self.put("network.stop_text_encoder_training", steps)
            return
        # kohya_ss's GUI asks for a share of the run and converts it with the step count.
        percent = self.get("stop_text_encoder_training_pct", "float",
                           "network.stop_text_encoder_training")
        if percent is _UNSET or percent <= 0:
            return
        max_steps = self.data.get("training", {}).get("max_steps", 0)
        if max_steps:
            stop = math.ceil(max_steps * percent / 100)
            self.put("network.stop_text_encoder_training", stop)
            self.info("network.stop_text_encoder_training", f"kohya's 'stop text encoder training' "
                      f"at {percent:g}% of {max_steps} steps became step {stop}.",
                      "Adjust network.stop_text_encoder_training if needed.")
        else:
            self.warn("network.stop_text_encoder_training", f"kohya's 'stop text encoder training' at "
                      f"{percent:g}% of the run could not be converted: the run's length depends on "
                      "your dataset.", "Set network.stop_text_encoder_training (about that share of "
                      "the total steps).")

    def scheduler_and_warmup(self) -> None:
        name = self.get("lr_scheduler", "str", "optimizer.lr_scheduler")
        if name in SCHEDULER_ALIASES:
            self.info("optimizer.lr_scheduler", f"LR scheduler '{name}' became "
                      f"'{SCHEDULER_ALIASES[name]}', the closest LoRA Studio has.",
                      "Pick another scheduler if you prefer.")
            name = SCHEDULER_ALIASES[name]
        if name is not _UNSET:
            if name in SPECS["optimizer.lr_scheduler"].choices:
                self.put("optimizer.lr_scheduler", name)
            else:
                self.warn("optimizer.lr_scheduler", f"LR scheduler '{name}' is not supported; 'constant' "
                          "is used.", f"Pick one of {', '.join(SPECS['optimizer.lr_scheduler'].choices)}.")
        steps = self.get("lr_warmup_steps", "int", "optimizer.lr_warmup_steps")
        if steps is not _UNSET and steps > 0:
            self.put("optimizer.lr_warmup_steps", steps)
            return
        percent = self.get("lr_warmup", "float", "optimizer.lr_warmup_steps")
        if percent is _UNSET or percent <= 0:
            return
        max_steps = self.data.get("training", {}).get("max_steps", 0)
        if max_steps:
            warmup = round(max_steps * percent / 100)
            self.put("optimizer.lr_warmup_steps", warmup)
            self.info("optimizer.lr_warmup_steps", f"kohya's warmup of {percent:g}% of {max_steps} steps "
                      f"became {warmup} warmup steps.", "Adjust optimizer.lr_warmup_steps if needed.")
        else:
            self.warn("optimizer.lr_warmup_steps", f"kohya's warmup of {percent:g}% of the run could not be "
                      "converted: the run's length depends on your dataset.",
                      "Set optimizer.lr_warmup_steps (about that share of the total steps).")

    def run_length(self) -> None:
        explicit_epochs = self.get("max_train_epochs", "int", "training.epochs")
        epochs = explicit_epochs
        if epochs is _UNSET or epochs <= 0:
            epochs = self.get("epoch", "int", "training.epochs")
        if epochs is not _UNSET and epochs > 0:
            self.put("training.epochs", epochs)
        steps = self.get("max_train_steps", "int", "training.max_steps")
        if steps is _UNSET or steps <= 0:
            return
        if explicit_epochs is not _UNSET and explicit_epochs > 0:
            # kohya's max_train_epochs wins over max_train_steps; keep that meaning.
            self.info("training.max_steps", f"max_train_steps = {steps} was not imported because "
                      f"max_train_epochs = {explicit_epochs} overrides it in kohya_ss.",
                      "Set training.max_steps to stop after a number of steps instead.")
        else:
            self.put("training.max_steps", steps)

    def noise_and_samples(self) -> None:
        noise_type = str(self.config.get("noise_offset_type", "Original") or "Original")
        if noise_type.lower() == "original":
            self.put("training.noise_offset", self.get("noise_offset", "float", "training.noise_offset"))
        else:
            self.warn("training.noise_offset", f"Noise offset type '{noise_type}' is not supported; no "
                      "noise offset is imported.", "Set training.noise_offset (0.05-0.1) if you want one.")
        if _is_set(self.config.get("sample_prompts", "")):
            self.put("output.sample_prompts", _prompt_lines(self.config["sample_prompts"]))
        name = self.get("sample_sampler", "str", "output.sample_sampler")
        if name is not _UNSET:
            if sampler_name(name):
                self.put("output.sample_sampler", sampler_name(name))
            else:
                self.warn("output.sample_sampler", f"Sampler '{name}' is not available for samples; "
                          f"'{SPECS['output.sample_sampler'].default}' is used.",
                          f"Pick one of {', '.join(SPECS['output.sample_sampler'].choices)}.")

    def saving(self) -> None:
        precision = self.get("save_precision", "str", "output.save_precision")
        if precision is not _UNSET:
            if precision.lower() in SAVE_PRECISIONS:
                self.put("output.save_precision", SAVE_PRECISIONS[precision.lower()])
            else:
                self.warn("output.save_precision", f"kohya 'save_precision' = {precision!r} is not a "
                          "precision; the exports stay fp32.", "Set output.save_precision to fp16, "
                          "bf16 or fp32.", "kohya-value")
        # kohya keeps the last N epochs' files, or those of the last N steps: as a count of
        # checkpoints, the larger of them (so nothing kohya kept is deleted)
        counts = []
        for key in ("save_last_n_epochs", "save_last_n_epochs_state"):
            n = self.get(key, "int", "output.save_last_n")
            if n is not _UNSET and n > 0:
                counts.append(n)
        every = self.data.get("output", {}).get("save_every_n_steps", 0)
        for key in ("save_last_n_steps", "save_last_n_steps_state"):
            n = self.get(key, "int", "output.save_last_n")
            if n is _UNSET or n <= 0:
                continue
            if every:
                counts.append(n // every + 1)
                self.info("output.save_last_n", f"kohya's '{key}' = {n} with a save every {every} "
                          f"steps keeps the last {n // every + 1} checkpoints.",
                          "Adjust output.save_last_n if needed.")
            else:
                self.warn("output.save_last_n", f"kohya's '{key}' = {n} was not imported: without "
                          "save_every_n_steps there are no step checkpoints to keep.",
                          "Set output.save_last_n to the number of checkpoints to keep.")
        if counts:
            self.put("output.save_last_n", max(counts))

    def meta(self, fallback_name: str) -> dict:
        def text(key: str) -> str:
            value = self.config.get(key, "")
            return value.strip() if isinstance(value, str) else ""
        name = text("metadata_title") or text("output_name") or fallback_name
        description = text("metadata_description") or text("training_comment") \
            or "Imported from a kohya_ss LoRA config."
        family = self.data.get("model", {}).get("family", "auto")
        return {"name": name, "description": description, "model_family": family, "vram_class": "",
                "schema_version": SCHEMA_VERSION, "author": text("metadata_author")}


def convert_kohya(config: dict, fallback_name: str = "kohya import",
                  dataset_config: dict | None = None) -> KohyaImport:
    """Map a kohya_ss LoRA config (parsed JSON) to JobConfig data, with the dataset config
    TOML it names (parsed; None when it names none or it could not be read). Never
    raises for bad values."""
    conv = _Converter(config)
    conv.simple()
    conv.family()
    conv.network()
    conv.resolution()
    conv.run_length()
    conv.optimizer_and_rates()
    conv.scheduler_and_warmup()
    conv.text_encoder()
    conv.noise_and_samples()
    conv.saving()
    known = set(SIMPLE_KEYS) | SPECIAL_KEYS | HANDLED_AUTOMATICALLY
    unsupported = {k: v for k, v in config.items() if k not in known and not _as_we_do(k, v)}
    if dataset_config is not None:
        found = convert_dataset_config(dataset_config, lambda v: parse_resolution(v)[0],
                                       f"dataset_config '{config.get('dataset_config', '')}'")
        for path, value in found.values.items():
            set_in(conv.data, path, value)
        conv.findings += found.findings
        unsupported.update(found.unsupported)
    result = KohyaImport(conv.data, conv.meta(fallback_name), conv.findings, unsupported)
    listed = list(result.unsupported_set)
    if listed:
        result.findings.append(Finding(
            "", "warning", f"{len(listed)} kohya_ss setting(s) have no equivalent in LoRA Studio and "
            f"were not imported: {', '.join(_shown(k, unsupported[k]) for k in listed)}.",
            "Check whether your results depended on them.", "kohya-unsupported"))
    return result


def _as_we_do(key: str, value: Any) -> bool:
    """Whether a NOT_IMPORTED key's value asks for what LoRA Studio does anyway."""
    if key not in NOT_IMPORTED:
        return False
    same = NOT_IMPORTED[key][0]
    try:
        if same is ANY or _coerce(value, "str") is _UNSET:
            return True
        if isinstance(same, bool):
            return _coerce(value, "bool") == same
        if isinstance(same, (int, float)):
            return _coerce(value, "float") == same
        return _coerce(value, "str").lower() == same
    except (TypeError, ValueError):
        return False


def _shown(key: str, value: Any) -> str:
    text = str(value)
    shown = f"{key} = {text}" if isinstance(value, (int, float, str)) and len(text) <= 30 else key
    return f"{shown} ({NOT_IMPORTED[key][1]})" if key in NOT_IMPORTED else shown
