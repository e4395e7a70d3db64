"""Load the Stable Diffusion base of an image job: a diffusers folder, a single-file
checkpoint (as people download them) or a Hub id from the local cache. Nothing is
downloaded; the family comes from the model files (config/model_info.py)."""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import torch

from lora_studio.config.model_info import (ModelInfo, ModelInfoError, hub_download_command,
                                          inspect_model)
from lora_studio.config.schema import JobConfig

from ..core.control import EngineError, is_refused_pickle, refused_pickle

SD_FAMILIES = ("sd1", "sd2", "sdxl")


@dataclass
class SDModel:
    pipe: object                  # StableDiffusionPipeline or StableDiffusionXLPipeline
    family: str                   # sd1 / sd2 / sdxl
    prediction_type: str          # epsilon / v_prediction
    info: ModelInfo

    @property
    def is_sdxl(self) -> bool:
        return self.family == "sdxl"

    @property
    def text_encoders(self) -> list:
        encoders = [self.pipe.text_encoder]
        if self.is_sdxl:
            encoders.append(self.pipe.text_encoder_2)
        return encoders


def weight_dtype(job: JobConfig) -> torch.dtype:
    """dtype of the frozen base weights: job.model.dtype, or what mixed precision computes in."""
    named = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
    if job.model.dtype != "auto":
        return named[job.model.dtype]
    return {"fp16": torch.float16, "bf16": torch.bfloat16}.get(job.training.mixed_precision,
                                                               torch.float32)


def resolve_model(job: JobConfig) -> ModelInfo:
    """The model the job names, with its family; EngineError('config') when it is missing,
    a pickle file without opt-in, or not a Stable Diffusion model."""
    try:
        info = inspect_model(job.model.path, allow_pickle=job.model.allow_pickle)
    except ModelInfoError as exc:
        raise EngineError("config", exc.message, exc.hint) from None
    family = job.model.family if job.model.family in SD_FAMILIES else info.family
    if family is None and info.format == "pickle":
        raise EngineError("config", f"The family of the pickle checkpoint '{info.path.name}' cannot "
                                    "be detected without loading it.",
                          "Set model.family to sd1, sd2 or sdxl.")
    if family not in SD_FAMILIES:
        raise EngineError("config", f"'{info.path.name}' is a {family} model, not Stable Diffusion.",
                          "Pick an SD 1.x, SD 2.x or SDXL model for an image job.")
    return replace(info, family=family) if family != info.family else info


# Diffusers repos whose small config files describe a single-file checkpoint of each
# family; the first one found in the local Hugging Face cache is used.
CONFIG_REPOS = {
    "sd1": ("stable-diffusion-v1-5/stable-diffusion-v1-5", "runwayml/stable-diffusion-v1-5",
            "CompVis/stable-diffusion-v1-4"),
    "sd2": ("stabilityai/stable-diffusion-2-1", "stabilityai/stable-diffusion-2"),
    "sd2-base": ("stabilityai/stable-diffusion-2-1-base", "stabilityai/stable-diffusion-2-base"),
    "sdxl": ("stabilityai/stable-diffusion-xl-base-1.0",),
}


def single_file_config(info: ModelInfo, prediction_type: str) -> Path:
    """A local diffusers config folder for a single-file checkpoint. diffusers itself
    would download one when none is cached; LoRA Studio never downloads."""
    from lora_studio.config.model_info import find_in_hf_cache

    family = info.family
    if family == "sd2" and "epsilon" in (info.prediction_type, prediction_type):
        family = "sd2-base"
    for repo in CONFIG_REPOS[family]:
        folder = find_in_hf_cache(repo)
        if folder is not None and (folder / "model_index.json").is_file():
            return folder
    repo = CONFIG_REPOS[family][0]
    raise EngineError(
        "config", f"'{info.path.name}' is a single-file {info.family} checkpoint and the diffusers "
                  f"configuration that describes it ({repo}) is not in your Hugging Face cache.",
        f"Download the small config files once (no weights): "
        f"{hub_download_command(repo, '*.json', '*.txt')}, or convert the checkpoint to a "
        "diffusers folder.")


def load_sd(job: JobConfig) -> SDModel:
    """Load the pipeline on the CPU in the job's weight dtype. A single-file
    checkpoint is described by its family's diffusers configs from the local cache."""
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    info = resolve_model(job)
    cls = StableDiffusionXLPipeline if info.family == "sdxl" else StableDiffusionPipeline
    dtype = weight_dtype(job)
    try:
        if info.format == "diffusers":
            pipe = cls.from_pretrained(info.path, dtype=dtype, local_files_only=True)
        else:
            config = single_file_config(info, job.model.prediction_type)
            pipe = cls.from_single_file(str(info.path), config=str(config), dtype=dtype,
                                        local_files_only=True)
    except Exception as exc:
        if is_refused_pickle(exc):
            raise refused_pickle(info.path) from None
        if not isinstance(exc, (OSError, ValueError, KeyError, RuntimeError)):
            raise
        hint = ("The checkpoint may not match its family's configuration; set model.family, or "
                "convert it to a diffusers folder.") if info.format != "diffusers" else \
            "The model folder is incomplete or damaged: download it again."
        first_line = str(exc).splitlines()[0] if str(exc) else repr(exc)
        raise EngineError("config", f"Cannot load '{info.path}': {first_line}", hint) from exc
    pipe.set_progress_bar_config(disable=True)
    if dtype == torch.float16 and getattr(pipe.vae.config, "force_upcast", True):
        pipe.vae.to(torch.float32)  # the SD VAE overflows in fp16
    prediction = job.model.prediction_type
    if prediction == "auto":
        prediction = pipe.scheduler.config.get("prediction_type", "epsilon")
    return SDModel(pipe=pipe, family=info.family, prediction_type=prediction, info=info)
