"""Image samples during training: one image per sample prompt, same seed every time,
so samples compare across steps."""
from __future__ import annotations

from pathlib import Path

import torch

from ...config.schema import JobConfig
from ...runs.events import Emit, event
from .loss import clip_skip_embeds, skips_layers
from .model import SDModel


def _prompt(model: SDModel, prompt: str, clip_skip: int) -> dict:
    """The pipeline's prompt arguments, conditioned as in training: with clip skip, the
    prompt and the empty negative one both from the same layer (as kohya's samples)."""
    if not skips_layers(model, clip_skip):
        return {"prompt": prompt}
    with torch.no_grad():
        return {"prompt_embeds": clip_skip_embeds(model, [prompt], model.pipe.device, clip_skip),
                "negative_prompt_embeds": clip_skip_embeds(model, [""], model.pipe.device,
                                                           clip_skip)}


def write_samples(model: SDModel, job: JobConfig, folder: Path, step: int, emit: Emit) -> list[Path]:
    """One image per sample prompt, same seed every time, so samples compare across steps."""
    pipe, res = model.pipe, job.dataset.resolution
    written = []
    modules = [pipe.unet, *model.text_encoders]
    modes = [m.training for m in modules]
    for m in modules:
        m.eval()
    try:
        for i, prompt in enumerate(job.output.sample_prompts):
            generator = torch.Generator(device="cpu").manual_seed(job.training.seed)
            image = pipe(**_prompt(model, prompt, job.model.clip_skip),
                         num_inference_steps=job.output.sample_steps, height=res, width=res,
                         generator=generator).images[0]
            path = folder / f"step-{step:06d}-{i:02d}.png"
            image.save(path)
            written.append(path)
            emit(event("sample", step=step, path=str(path), prompt=prompt, kind="image"))
    finally:
        for m, mode in zip(modules, modes):
            m.train(mode)
    return written
