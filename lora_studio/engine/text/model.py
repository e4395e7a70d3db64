"""The base model of a text job, and the LoRA put in it (transformers + peft)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ...config.schema import JobConfig
from ..core.control import EngineError, is_refused_pickle, refused_pickle

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def resolve_model(job: JobConfig):
    """The ModelInfo of job.model.path (a local folder or a cached Hub id)."""
    from ...config.model_info import ModelInfoError, inspect_model
    try:
        return inspect_model(job.model.path, allow_pickle=job.model.allow_pickle)
    except ModelInfoError as exc:
        raise EngineError("config", exc.message, exc.hint) from exc


def weights_dtype(job: JobConfig, on_cuda: bool) -> torch.dtype:
    if job.model.dtype != "auto":
        return _DTYPES[job.model.dtype]
    if on_cuda and job.training.mixed_precision in ("fp16", "bf16"):
        return torch.float16 if job.training.mixed_precision == "fp16" else torch.bfloat16
    return torch.float32


def load_tokenizer(path: Path):
    from transformers import AutoTokenizer
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_base_model(job: JobConfig, path: Path, quantize: bool = True):
    from transformers import AutoModelForCausalLM
    on_cuda = torch.cuda.is_available()
    kwargs: dict[str, Any] = {"dtype": weights_dtype(job, on_cuda)}
    if not job.model.allow_pickle:  # never unpickle .bin weights unless the user opted in
        kwargs["use_safetensors"] = True
    if quantize and (job.model.load_in_4bit or job.model.load_in_8bit):
        if not on_cuda:
            raise EngineError("config", "Loading the base in 4-bit or 8-bit (QLoRA) needs an NVIDIA "
                                        "GPU with CUDA; none was found.",
                              "Set model.load_in_4bit and model.load_in_8bit to false to train on "
                              "this machine.")
        from transformers import BitsAndBytesConfig
        compute = torch.bfloat16 if job.training.mixed_precision == "bf16" else torch.float16
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=job.model.load_in_4bit, load_in_8bit=job.model.load_in_8bit and
            not job.model.load_in_4bit, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=compute)
        kwargs["device_map"] = {"": torch.cuda.current_device()}
    try:
        return AutoModelForCausalLM.from_pretrained(str(path), **kwargs)
    except Exception as exc:
        if is_refused_pickle(exc):
            raise refused_pickle(path) from None
        if not isinstance(exc, (OSError, ValueError)):
            raise
        raise EngineError("config", f"Cannot load the text model from {path}: {exc}",
                          "Check that the folder holds a causal language model (config.json and "
                          "safetensors weights).") from exc


def target_modules(job: JobConfig, info) -> list[str] | str:
    from ...config.model_info import ALL_LINEAR, text_targets
    targets = job.network.target_modules or text_targets(info, job.network.target_preset)
    return ALL_LINEAR if ALL_LINEAR in targets else targets


# network.init_lora_weights -> LoraConfig's init_lora_weights. LoftQ is applied after the
# adapter is added, to the 4-bit base (replace_lora_weights_loftq); it starts as default.
PEFT_INIT = {"default": True, "gaussian": "gaussian", "pissa": "pissa", "olora": "olora",
             "loftq": True}
MUTATING_INITS = ("pissa", "olora")  # they rewrite the base weights: exports are converted


def build_peft_model(job: JobConfig, info, base):
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    gc = job.training.gradient_checkpointing
    if job.model.load_in_4bit or job.model.load_in_8bit:
        base = prepare_model_for_kbit_training(
            base, use_gradient_checkpointing=gc,
            gradient_checkpointing_kwargs={"use_reentrant": False})
    elif gc:
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if gc:
        base.config.use_cache = False
    net = job.network
    config = LoraConfig(r=net.rank, lora_alpha=net.alpha, lora_dropout=net.dropout,
                        target_modules=target_modules(job, info), task_type="CAUSAL_LM",
                        use_dora=net.use_dora, use_rslora=net.use_rslora,
                        init_lora_weights=PEFT_INIT[net.init_lora_weights],
                        modules_to_save=list(net.modules_to_save) or None)
    model = get_peft_model(base, config)
    if net.init_lora_weights == "loftq":
        from peft import replace_lora_weights_loftq
        replace_lora_weights_loftq(model)
    return model


def initial_adapter(job: JobConfig, model) -> dict | None:
    """The adapter as a base-mutating init (PiSSA, OLoRA) left it, for the export's
    conversion to a plain LoRA; None for the other inits."""
    if job.network.init_lora_weights not in MUTATING_INITS:
        return None
    from peft import get_peft_model_state_dict
    return {k: v.detach().clone() for k, v in get_peft_model_state_dict(model).items()}


def loraplus_groups(model, job: JobConfig) -> list[dict]:
    """The optimizer groups of PEFT's LoRA+ helper (B matrices at ratio x the learning
    rate, embeddings' LoRA at its own rate), for the core to build its optimizer with."""
    from peft.optimizers import create_loraplus_optimizer

    class Groups:  # stands in for the optimizer class: keeps the groups PEFT built
        def __init__(self, groups, **defaults):
            self.groups = groups

    opt = job.optimizer
    made = create_loraplus_optimizer(model, Groups, lr=opt.learning_rate,
                                     loraplus_lr_ratio=job.network.loraplus_lr_ratio,
                                     loraplus_weight_decay=opt.weight_decay)
    return [group for group in made.groups if group["params"]]
