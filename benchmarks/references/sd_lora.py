"""The reference an image LoRA run is timed against: a UNet LoRA trained the way
diffusers' examples/text_to_image/train_text_to_image_lora.py trains it — peft
LoRA on the attention projections of a frozen UNet (gaussian init, in the weight
dtype unless fp16), the VAE encoding every batch (a latent sample, not cached),
the text encoder every batch, epsilon noise at a uniform timestep, MSE, clipping
and AdamW, all under accelerate's mixed precision.

One difference, in the reference's favour: the images are decoded, resized and
centre-cropped once up front instead of by a DataLoader worker each epoch.
benchmarks/gpu_check.py calls train(); nothing here reads the command line.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

DEFAULT_TARGETS = ("to_k", "to_q", "to_v", "to_out.0")


def load_images(items: Sequence[tuple[Path, str]], resolution: int):
    """(pixels in [-1, 1], C x H x W; caption) per image: the script's Resize (shorter
    side), CenterCrop and Normalize([0.5], [0.5])."""
    import numpy as np
    import torch
    from PIL import Image

    out = []
    for path, caption in items:
        with Image.open(path) as img:
            img = img.convert("RGB")
            scale = resolution / min(img.size)
            img = img.resize((max(resolution, round(img.width * scale)),
                              max(resolution, round(img.height * scale))), Image.BILINEAR)
            left, top = (img.width - resolution) // 2, (img.height - resolution) // 2
            img = img.crop((left, top, left + resolution, top + resolution))
            px = torch.from_numpy(np.asarray(img, dtype=np.float32) / 127.5 - 1.0).permute(2, 0, 1)
        out.append((px.contiguous(), caption))
    return out


def train(model_dir: Path, items: Sequence[tuple[Path, str]], *, resolution: int, batch_size: int,
          steps: int, rank: int, alpha: float, targets: Sequence[str] = DEFAULT_TARGETS,
          mixed_precision: str = "bf16", learning_rate: float = 1e-4, seed: int = 0,
          on_step: Callable[[int, float], None] = lambda step, loss: None,
          on_model: Callable[[object], None] = lambda unet: None,
          save_dir: Path | None = None) -> None:
    """`steps` optimizer steps on the SD 1.x pipeline in `model_dir`; `on_step(step,
    loss)` after each (the caller times them), `on_model(unet)` once the LoRA is in; the
    UNet LoRA is saved to `save_dir` at the end when given, as the script saves it."""
    import torch
    import torch.nn.functional as F
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from diffusers.optimization import get_scheduler
    from diffusers.training_utils import cast_training_params
    from peft import LoraConfig
    from transformers import CLIPTextModel, CLIPTokenizer

    accelerator = Accelerator(mixed_precision=mixed_precision)
    set_seed(seed)
    noise_scheduler = DDPMScheduler.from_pretrained(model_dir, subfolder="scheduler")
    tokenizer = CLIPTokenizer.from_pretrained(model_dir, subfolder="tokenizer")
    text_encoder = CLIPTextModel.from_pretrained(model_dir, subfolder="text_encoder")
    vae = AutoencoderKL.from_pretrained(model_dir, subfolder="vae")
    unet = UNet2DConditionModel.from_pretrained(model_dir, subfolder="unet")
    for module in (unet, vae, text_encoder):
        module.requires_grad_(False)
    weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(mixed_precision, torch.float32)
    unet_lora_config = LoraConfig(r=rank, lora_alpha=alpha, init_lora_weights="gaussian",
                                  target_modules=list(targets))
    unet.to(accelerator.device, dtype=weight_dtype)
    vae.to(accelerator.device, dtype=weight_dtype)
    text_encoder.to(accelerator.device, dtype=weight_dtype)
    unet.add_adapter(unet_lora_config)
    if mixed_precision == "fp16":
        cast_training_params(unet, dtype=torch.float32)
    lora_layers = [p for p in unet.parameters() if p.requires_grad]
    on_model(unet)
    optimizer = torch.optim.AdamW(lora_layers, lr=learning_rate, betas=(0.9, 0.999),
                                  weight_decay=1e-2, eps=1e-08)

    images = load_images(items, resolution)
    ids = tokenizer([caption for _, caption in images], max_length=tokenizer.model_max_length,
                    padding="max_length", truncation=True, return_tensors="pt").input_ids
    dataset = [{"pixel_values": px, "input_ids": ids[i]} for i, (px, _) in enumerate(images)]
    loader = torch.utils.data.DataLoader(dataset, shuffle=True, batch_size=batch_size)
    lr_scheduler = get_scheduler("constant", optimizer=optimizer, num_warmup_steps=0,
                                 num_training_steps=steps)
    unet, optimizer, loader, lr_scheduler = accelerator.prepare(unet, optimizer, loader, lr_scheduler)

    unet.train()
    step = 0
    while step < steps:
        for batch in loader:
            with accelerator.accumulate(unet):
                latents = vae.encode(batch["pixel_values"].to(dtype=weight_dtype)).latent_dist.sample()
                latents = latents * vae.config.scaling_factor
                noise = torch.randn_like(latents)
                timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps,
                                          (latents.shape[0],), device=latents.device).long()
                noisy_latents = noise_scheduler.add_noise(latents, noise, timesteps)
                encoder_hidden_states = text_encoder(batch["input_ids"], return_dict=False)[0]
                model_pred = unet(noisy_latents, timesteps, encoder_hidden_states, return_dict=False)[0]
                loss = F.mse_loss(model_pred.float(), noise.float(), reduction="mean")
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(lora_layers, 1.0)
                optimizer.step()
                lr_scheduler.step()
                optimizer.zero_grad()
            if accelerator.sync_gradients:
                step += 1
                on_step(step, loss.item())
                if step >= steps:
                    break
    if save_dir is not None:
        from diffusers import StableDiffusionPipeline
        from diffusers.utils import convert_state_dict_to_diffusers
        from peft.utils import get_peft_model_state_dict
        unet = accelerator.unwrap_model(unet).to(torch.float32)
        StableDiffusionPipeline.save_lora_weights(
            save_directory=save_dir, safe_serialization=True,
            unet_lora_layers=convert_state_dict_to_diffusers(get_peft_model_state_dict(unet)))
    accelerator.free_memory()
