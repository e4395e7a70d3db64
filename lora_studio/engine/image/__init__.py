"""The image family: Stable Diffusion 1.x / 2.x / SDXL LoRA (diffusers + peft).

model.py loads the pipeline; data.py reads, buckets and batches the images and caches
latents; lora.py puts the LoRA in; loss.py is the denoising loss; samples.py draws
during training; train.py is the family's Trainee; export.py writes final/ and the
kohya and diffusers files.
"""
from .export import export
from .train import prepare

OOM_HINT = ("Lower training.batch_size (raise gradient_accumulation_steps to keep the effective "
            "batch), enable training.gradient_checkpointing, keep dataset.cache_latents on, lower "
            "dataset.resolution, or use bf16/fp16 mixed precision.")

__all__ = ["OOM_HINT", "export", "prepare"]
