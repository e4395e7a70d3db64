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
    from ...config.model_info import target_candidates
    return job.network.target_modules or target_candidates(info) or "all-linear"


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
    config = LoraConfig(r=job.network.rank, lora_alpha=job.network.alpha,
                        lora_dropout=job.network.dropout, target_modules=target_modules(job, info),
                        task_type="CAUSAL_LM")
    return get_peft_model(base, config)
