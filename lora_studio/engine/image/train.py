"""The image family's side of a run (SD 1.x, SD 2.x incl. v-prediction, SDXL): LoRA on
the UNet and optionally the text encoder(s) with their own learning rates, cached
latents and text embeddings, noise offset, min-SNR weighting, samples with a fixed
seed."""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ...config.schema import JobConfig
from ...data.buckets import resize_and_crop
from ...data.caption_options import captions_vary, prepare_caption
from ...runs.events import event
from ...runs.item_loss import dataset_root, item_key
from ...wording import plural
from ..core.family import Exported, RunContext
from ..core.item_losses import ItemLossMeter
from ..core.optim import TRAIN_UNTIL_STEP
from .data import (ImageSet, LatentCache, MicroBatch, PixelCache, TrainImage, epoch_batches,
                   latent_caching_possible, load_image_set, pixels, sample_seed, skipped_log)
from .export import diffusers_unsupported, export_sd, facts_from_run, write_final
from .export import export_epoch
from .lora import UNET, add_lora, load_lora_state, lora_state
from .loss import Cond, diffusion_loss, encode_text, sdxl_time_ids
from .model import SDModel, load_sd
from .samples import write_samples
from .validation import EvalItem, eval_batches, held_out_images


@dataclass
class ImageTrainee:
    job: JobConfig
    ctx: RunContext
    base: SDModel
    adapted: dict[str, torch.nn.Module]      # the components with a LoRA, by pipeline name
    image_set: ImageSet
    noise_scheduler: object
    latent_cache: LatentCache | None
    cache_text: bool
    text_cache: dict[str, Cond] = field(default_factory=dict)
    eval_images: tuple[TrainImage, ...] = ()   # held out: the validation loss
    pixel_cache: PixelCache | None = None      # decoded images, when latents are not cached
    eval_metric = "eval_loss"                  # no generated answers to score

    def __post_init__(self):
        self.family = self.base.family
        self.model = self.base.pipe.unet
        # A model's .dtype walks all its modules (diffusers' get_parameter_dtype), 5 ms
        # on the tiny UNet: read once, the base weights keep their dtype all run.
        self.unet_dtype, self.vae_dtype = self.model.dtype, self.base.pipe.vae.dtype
        opt = self.job.optimizer
        unet_params = [p for p in self.model.parameters() if p.requires_grad]
        self.param_groups = [{"params": unet_params, "lr": opt.unet_lr or opt.learning_rate}]
        te_params = [p for name, module in self.adapted.items() if name != UNET
                     for p in module.parameters() if p.requires_grad]
        if te_params:
            self.param_groups.append({"params": te_params,
                                      "lr": opt.text_encoder_lr or opt.learning_rate,
                                      TRAIN_UNTIL_STEP: self.job.network.stop_text_encoder_training})
        self.started_facts = {"samples_per_epoch": sum(im.repeats for im in self.image_set.images),
                              "eval_images": len(self.eval_images)}
        root = dataset_root(self.job.dataset.path)
        self.item_losses = ItemLossMeter([item_key(im.path, root) for im in self.image_set.images],
                                         "image", root, self.ctx.device)

    @property
    def dataset_size(self) -> int:
        return len(self.image_set.images)

    def epoch_batches(self, epoch: int) -> list[MicroBatch]:
        tr = self.job.training
        return epoch_batches(self.image_set.images, tr.batch_size, tr.seed, epoch)

    def batch_items(self, batch: MicroBatch) -> int:
        return len(batch.indices)

    def encode_pixels(self, px: torch.Tensor) -> torch.Tensor:
        """Latents of a (B, 3, H, W) batch of pixels."""
        vae = self.base.pipe.vae
        with torch.no_grad():
            # The distribution's mode, not a sample: the same latents cached or not.
            dist = vae.encode(px.to(self.ctx.device, self.vae_dtype)).latent_dist
            return dist.mode() * vae.config.scaling_factor

    def _latents(self, image: TrainImage, rng: random.Random, augment: bool = True,
                 encode_now: bool = True) -> tuple[torch.Tensor, tuple[int, int]]:
        """The image's latents and crop; with ``encode_now`` False, an image that is not
        cached comes back as pixels, for the caller to encode with its batch."""
        ds = self.job.dataset

        def encode(px: torch.Tensor) -> torch.Tensor:
            return self.encode_pixels(px.unsqueeze(0))[0]

        if self.latent_cache is not None:
            crop = resize_and_crop(*image.size, image.bucket)[1]
            latents = self.latent_cache.get(image, lambda: encode(pixels(image, rng).tensor))
            return latents, (crop[1], crop[0])
        px = pixels(image, rng, ds.random_crop and augment, ds.flip_aug and augment,
                    self.pixel_cache)
        return (encode(px.tensor) if encode_now else px.tensor), px.crop_top_left

    def cache_latents(self) -> None:
        """Encode every image before the first step, with progress: the same latents
        the first epoch would cache (no random crop or flip when caching)."""
        images = self.image_set.images + self.eval_images
        for done, image in enumerate(images):
            self.ctx.phase("caching latents", done, len(images))
            self._latents(image, random.Random(0))
        self.ctx.phase("caching latents", len(images), len(images))

    def _cond(self, captions: list[str]) -> Cond:
        if not self.cache_text:
            return encode_text(self.base, captions, self.ctx.device, self.job.model.clip_skip)
        missing = [c for c in dict.fromkeys(captions) if c not in self.text_cache]
        if missing:
            with torch.no_grad():
                fresh = encode_text(self.base, missing, self.ctx.device, self.job.model.clip_skip)
            for i, caption in enumerate(missing):
                self.text_cache[caption] = Cond(fresh.hidden[i:i + 1],
                                                None if fresh.pooled is None else fresh.pooled[i:i + 1])
        conds = [self.text_cache[c] for c in captions]
        pooled = torch.cat([c.pooled for c in conds]) if self.base.is_sdxl else None
        return Cond(torch.cat([c.hidden for c in conds]), pooled)

    def loss_sum(self, model, batch: MicroBatch) -> torch.Tensor:
        ds, tr = self.job.dataset, self.job.training
        latents, crops, captions, generators = [], [], [], []
        for index, slot in zip(batch.indices, batch.slots):
            seed = sample_seed(tr.seed, batch.epoch, slot)
            rng = random.Random(seed)          # crop, flip and caption choices
            image = self.image_set.images[index]
            lat, crop = self._latents(image, rng, encode_now=False)
            latents.append(lat)
            crops.append(sdxl_time_ids(image, crop))
            captions.append(prepare_caption(image.caption, rng, image.shuffle_caption,
                                            image.keep_tokens, ds.caption_dropout_rate))
            generators.append(torch.Generator().manual_seed(seed))   # noise and timestep
        latents_t = torch.stack(latents)
        if self.latent_cache is None:  # pixels: one VAE call for the batch
            latents_t = self.encode_pixels(latents_t)
        latents_t = latents_t.to(self.ctx.device, torch.float32)
        cond = self._cond(captions)
        time_ids = torch.tensor(crops, device=self.ctx.device, dtype=cond.hidden.dtype) \
            if self.base.is_sdxl else None
        losses = diffusion_loss(model, self.noise_scheduler, latents_t, cond, time_ids,
                                self.base.prediction_type, tr.noise_offset, tr.min_snr_gamma,
                                generators, self.unet_dtype)
        weighted = losses * self.loss_weights(batch).to(losses.device)
        self.item_losses.add(batch.indices, weighted)
        return weighted.sum()

    def loss_weights(self, batch: MicroBatch) -> torch.Tensor:
        """1 for a training image, the prior loss weight for a regularisation image."""
        prior = self.job.dataset.prior_loss_weight
        return torch.tensor([prior if self.image_set.images[i].is_reg else 1.0
                             for i in batch.indices])

    def eval_batches(self) -> list[tuple[EvalItem, ...]]:
        return eval_batches(self.eval_images, self.noise_scheduler.config.num_train_timesteps,
                            self.job.training.batch_size)

    def eval_items(self, batch: tuple[EvalItem, ...]) -> int:
        return len(batch)

    def eval_loss_sum(self, model, batch: tuple[EvalItem, ...]) -> torch.Tensor:
        """The summed plain denoising loss of held-out images at fixed timesteps and noise
        (validation.py): the same weights give the same value."""
        latents, crops = [], []
        images = [self.eval_images[item.image] for item in batch]
        for image in images:
            lat, crop = self._latents(image, random.Random(0), augment=False)
            latents.append(lat)
            crops.append(sdxl_time_ids(image, crop))
        cond = self._cond([image.caption for image in images])
        time_ids = torch.tensor(crops, device=self.ctx.device, dtype=cond.hidden.dtype) \
            if self.base.is_sdxl else None
        return diffusion_loss(model, self.noise_scheduler,
                              torch.stack(latents).to(self.ctx.device, torch.float32), cond,
                              time_ids, self.base.prediction_type, 0.0, 0.0,
                              [torch.Generator().manual_seed(item.noise_seed) for item in batch],
                              self.base.pipe.unet.dtype,
                              torch.tensor([item.timestep for item in batch],
                                           device=self.ctx.device)).sum()

    def set_train(self, mode: bool) -> None:
        for module in self.adapted.values():
            module.train(mode)

    def trainable_state(self) -> dict[str, torch.Tensor]:
        return lora_state(self.adapted)

    def load_trainable_state(self, tensors: dict[str, torch.Tensor]) -> None:
        load_lora_state(self.adapted, tensors)

    def sample(self, step: int) -> None:
        if self.job.output.sample_prompts:
            write_samples(self.base, self.job, self.ctx.run.samples, step, self.ctx.emit)

    def write_epoch(self, epoch: int, step: int, steps_per_epoch: int,
                    started_at: float) -> list[Exported]:
        facts = facts_from_run(self.job, self.base, self.image_set, step, steps_per_epoch,
                               started_at)
        return [export_epoch(self.ctx.run, self.job, lora_state(self.adapted), facts, epoch)]

    def write_final(self, step: int, steps_per_epoch: int, started_at: float) -> list[Exported]:
        facts = facts_from_run(self.job, self.base, self.image_set, step, steps_per_epoch,
                               started_at)
        write_final(self.ctx.run, self.job, lora_state(self.adapted), facts)
        why_not = diffusers_unsupported(self.job.network)
        if why_not:
            self.ctx.emit(event("log", level="info", message=f"No diffusers export: {why_not}; "
                                "the kohya file loads in ComfyUI and A1111."))
        return export_sd(self.ctx.run, self.job, ("kohya",) if why_not else ("kohya", "diffusers"))


def prepare(job: JobConfig, ctx: RunContext) -> ImageTrainee:
    from diffusers import DDPMScheduler
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.disable_progress_bar()  # the engine reports through events
    ds, tr = job.dataset, job.training
    ctx.phase("loading the model")
    base = load_sd(job)
    pipe = base.pipe
    image_set = load_image_set(job, Path(ds.path), ctx.phase)
    if image_set.skipped:
        ctx.emit(skipped_log(image_set.skipped))
    image_set, eval_images = held_out_images(job, image_set, ctx.emit, ctx.phase)
    ctx.emit(event("log", level="info", message="Buckets: " + "; ".join(
        image_set.report.lines(tr.batch_size))))
    reg = [im for im in image_set.images if im.is_reg]
    if reg:
        ctx.emit(event("log", level="info", message=(
            f"Regularisation: {plural(len(reg), 'image')}, {sum(im.repeats for im in reg)} samples per "
            f"epoch beside {sum(im.repeats for im in image_set.images if not im.is_reg)} "
            f"training samples, loss weight {ds.prior_loss_weight:g}.")))
    elif ds.reg_path.strip():
        ctx.emit(event("log", level="warning", message=f"No usable regularisation images in "
                       f"'{ds.reg_path}'; training goes on without them."))
    pipe.to(ctx.device)
    adapted = add_lora(base, job)
    if tr.gradient_checkpointing:
        pipe.unet.enable_gradient_checkpointing()
        for name in adapted:
            if name != UNET:
                adapted[name].gradient_checkpointing_enable()
    trains_text = any(name != UNET for name in adapted)
    cache_folder = ctx.run.root / "cache" / "latents" if ds.cache_latents_to_disk else None
    caches_latents = latent_caching_possible(job)
    trainee = ImageTrainee(
        job=job, ctx=ctx, base=base, adapted=adapted, image_set=image_set,
        noise_scheduler=DDPMScheduler.from_config(pipe.scheduler.config,
                                                  prediction_type=base.prediction_type),
        latent_cache=LatentCache(cache_folder) if caches_latents else None,
        # With latents cached each image is decoded once anyway: no pixels to keep.
        pixel_cache=None if caches_latents else PixelCache(),
        cache_text=not trains_text and not captions_vary(
            any(im.shuffle_caption for im in image_set.images), ds.caption_dropout_rate),
        eval_images=eval_images)
    if trainee.latent_cache is not None and ctx.num_processes == 1:
        trainee.cache_latents()  # several processes each fill their own share as they train
    return trainee
