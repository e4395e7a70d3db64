"""The denoising loss of Stable Diffusion training, and the text conditioning it
needs. Each sample's noise and timestep come from a generator of its own, seeded by
its place in the run, so a sample is trained the same way whatever batch it is in."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .data import TrainImage
from .model import SDModel


@dataclass
class Cond:
    hidden: torch.Tensor                    # (B, tokens, dim) cross-attention states
    pooled: torch.Tensor | None = None      # SDXL: text_encoder_2's projection


def skips_layers(model: SDModel, clip_skip: int) -> bool:
    """Whether ``clip_skip`` changes the conditioning: SDXL conditions on its encoders'
    penultimate layer already, and kohya ignores clip skip for it."""
    return clip_skip > 1 and not model.is_sdxl


def clip_skip_embeds(model: SDModel, texts: list[str], device, clip_skip: int) -> torch.Tensor:
    """SD 1.x / 2.x conditioning from the text encoder's hidden_states[-clip_skip] through
    its final layer norm, as kohya trains and A1111 generates (1 = the last layer).
    diffusers' own clip_skip reaches for ``text_model``, which transformers 5's
    CLIPTextModel no longer has."""
    pipe = model.pipe
    encoder, tokenizer = pipe.text_encoder, pipe.tokenizer
    ids = tokenizer(texts, padding="max_length", max_length=tokenizer.model_max_length,
                    truncation=True, return_tensors="pt")
    mask = ids.attention_mask.to(device) if getattr(encoder.config, "use_attention_mask", False) \
        else None
    out = encoder(ids.input_ids.to(device), attention_mask=mask, output_hidden_states=True)
    norm = getattr(encoder, "final_layer_norm", None) or encoder.text_model.final_layer_norm
    return norm(out.hidden_states[-clip_skip]).to(encoder.dtype)


def encode_text(model: SDModel, captions: list[str], device, clip_skip: int = 1) -> Cond:
    """``clip_skip`` as kohya counts it (see clip_skip_embeds); SDXL ignores it."""
    pipe = model.pipe
    if model.is_sdxl:
        hidden, _, pooled, _ = pipe.encode_prompt(prompt=captions, device=device,
                                                  num_images_per_prompt=1,
                                                  do_classifier_free_guidance=False)
        return Cond(hidden, pooled)
    if skips_layers(model, clip_skip):
        return Cond(clip_skip_embeds(model, captions, device, clip_skip))
    hidden, _ = pipe.encode_prompt(captions, device, 1, False)
    return Cond(hidden)


def sdxl_time_ids(image: TrainImage, crop_top_left: tuple[int, int]) -> list[int]:
    """SDXL's size conditioning: original (h, w), crop (top, left), target (h, w)."""
    (w, h), (bw, bh) = image.size, image.bucket
    return [h, w, crop_top_left[0], crop_top_left[1], bh, bw]


def draw_noise(generators: Sequence[torch.Generator], shape: tuple[int, ...],
               num_timesteps: int, noise_offset: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(noise of shape (B, *shape), timesteps (B,)) on the CPU, one sample per generator."""
    noises, timesteps = [], []
    for generator in generators:
        noise = torch.randn(shape, generator=generator)
        if noise_offset:
            # A per-channel shift lets the model learn overall brightness (very dark / light images).
            noise = noise + noise_offset * torch.randn(shape[0], 1, 1, generator=generator)
        noises.append(noise)
        timesteps.append(torch.randint(0, num_timesteps, (1,), generator=generator))
    return torch.stack(noises), torch.cat(timesteps)


def diffusion_loss(unet, noise_scheduler, latents: torch.Tensor, cond: Cond,
                   time_ids: torch.Tensor | None, prediction_type: str, noise_offset: float,
                   min_snr_gamma: float, generators: Sequence[torch.Generator],
                   dtype: torch.dtype = torch.float32,
                   timesteps: torch.Tensor | None = None) -> torch.Tensor:
    """The denoising loss of each sample of a batch of clean latents, shape (B,): the
    mean squared error over its latent, min-SNR weighted when asked. ``generators``:
    one per sample; ``dtype``: the UNet's weights'; ``timesteps``: fixed ones (the
    validation loss) instead of drawn ones."""
    from diffusers.training_utils import compute_snr

    noise, drawn = draw_noise(generators, tuple(latents.shape[1:]),
                              noise_scheduler.config.num_train_timesteps, noise_offset)
    timesteps = drawn if timesteps is None else timesteps
    noise = noise.to(latents.device, latents.dtype)
    timesteps = timesteps.to(latents.device)
    noisy = noise_scheduler.add_noise(latents, noise, timesteps)
    if prediction_type == "v_prediction":
        target = noise_scheduler.get_velocity(latents, noise, timesteps)
    else:
        target = noise
    added = None
    if time_ids is not None:
        added = {"text_embeds": cond.pooled, "time_ids": time_ids}
    pred = unet(noisy.to(dtype), timesteps, cond.hidden.to(dtype),
                added_cond_kwargs=added, return_dict=False)[0]
    per_sample = F.mse_loss(pred.float(), target.float(), reduction="none").mean(dim=(1, 2, 3))
    if not min_snr_gamma:
        return per_sample
    snr = compute_snr(noise_scheduler, timesteps)
    weight = torch.clamp(snr, max=min_snr_gamma)
    weight = weight / (snr + 1) if prediction_type == "v_prediction" else weight / snr
    return per_sample * weight
