"""Image samples during training: one image per sample prompt, with the job's sampler,
steps, size and seed unless the prompt line's kohya options (--n --w --h --s --l --d
--ss) say otherwise, the same settings every time, so samples compare across steps.
Each PNG carries A1111's ``parameters`` text, which A1111, ComfyUI and Civitai read."""
from __future__ import annotations

from pathlib import Path

import torch

from ...config.sample_prompts import parse_sample_prompt
from ...config.samplers import SAMPLERS
from ...config.schema import JobConfig
from ...runs.events import Emit, event
from ...runs.xy_grid import a1111_parameters
from .loss import clip_skip_embeds, skips_layers
from .model import SDModel

CFG = 7.5   # the CFG scale of a prompt without --l: diffusers' and kohya's default


def sample_settings(job: JobConfig, line: str) -> dict:
    """What one sample prompt line draws with (a1111_parameters' keys)."""
    sp, out, side = parse_sample_prompt(line), job.output, job.dataset.resolution
    return {"prompt": sp.prompt, "negative_prompt": sp.negative or "",
            "steps": sp.steps or out.sample_steps, "sampler": sp.sampler or out.sample_sampler,
            "cfg": CFG if sp.cfg is None else sp.cfg,
            "seed": job.training.seed if sp.seed is None else sp.seed,
            "width": sp.width or side, "height": sp.height or side}


def _prompt(model: SDModel, prompt: str, negative: str, clip_skip: int) -> dict:
    """The pipeline's prompt arguments, conditioned as in training: with clip skip, the
    prompt and the negative one both from the same layer (as kohya's samples)."""
    if not skips_layers(model, clip_skip):
        return {"prompt": prompt, "negative_prompt": negative or None}
    with torch.no_grad():
        return {"prompt_embeds": clip_skip_embeds(model, [prompt], model.pipe.device, clip_skip),
                "negative_prompt_embeds": clip_skip_embeds(model, [negative], model.pipe.device,
                                                           clip_skip)}


def _scheduler(config, sampler: str):
    import diffusers
    cls_name, options = SAMPLERS[sampler]
    return getattr(diffusers, cls_name).from_config(config, **options)


def write_samples(model: SDModel, job: JobConfig, folder: Path, step: int, emit: Emit) -> list[Path]:
    from PIL.PngImagePlugin import PngInfo

    pipe = model.pipe
    written = []
    modules = [pipe.unet, *model.text_encoders]
    modes = [m.training for m in modules]
    own_scheduler = pipe.scheduler    # the pipeline outside sampling keeps the model's own
    for m in modules:
        m.eval()
    try:
        for i, line in enumerate(job.output.sample_prompts):
            s = sample_settings(job, line)
            pipe.scheduler = _scheduler(own_scheduler.config, s["sampler"])
            generator = torch.Generator(device="cpu").manual_seed(s["seed"])
            image = pipe(**_prompt(model, s["prompt"], s["negative_prompt"], job.model.clip_skip),
                         num_inference_steps=s["steps"], guidance_scale=s["cfg"],
                         height=s["height"], width=s["width"], generator=generator).images[0]
            info = PngInfo()
            info.add_text("parameters", a1111_parameters(s))
            path = folder / f"step-{step:06d}-{i:02d}.png"
            image.save(path, pnginfo=info)
            written.append(path)
            emit(event("sample", step=step, path=str(path), prompt=line, kind="image"))
    finally:
        pipe.scheduler = own_scheduler
        for m, mode in zip(modules, modes):
            m.train(mode)
    return written
