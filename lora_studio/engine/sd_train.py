"""Stable Diffusion LoRA training (SD 1.x, SD 2.x incl. v-prediction, SDXL) on the
shared optimizer-step loop (loop.py): LoRA on the UNet and optionally the text
encoder(s) with their own learning rates, cached latents and text embeddings,
noise offset, min-SNR weighting, samples with a fixed seed."""
from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from lora_studio.config.model_info import IMAGE_DEFAULT_TARGETS, TEXT_ENCODER_DEFAULT_TARGETS
from lora_studio.config.schema import JobConfig
from lora_studio.data.buckets import resize_and_crop
from lora_studio.data.caption_options import captions_vary, prepare_caption
from lora_studio.runs.events import Emit, event
from lora_studio.runs.layout import RunDir

from .checkpoint import load_checkpoint, restore_rng, save_checkpoint_in_step
from .control import EngineError
from .loop import (LoopHooks, LoopOutcome, LoopSpec, make_accelerator, steps_per_epoch, total_steps,
                   train_loop)
from .optim import build_optimizer, build_scheduler
from .sd_data import (ImageSet, LatentCache, TrainImage, epoch_batches, latent_caching_possible,
                      load_image_set, pixels)
from .sd_export import Exported, export_sd, facts_from_run, write_final
from .sd_model import SDModel, load_sd

SD_OOM_HINT = ("Lower training.batch_size (raise gradient_accumulation_steps to keep the effective "
               "batch), enable training.gradient_checkpointing, keep dataset.cache_latents on, lower "
               "dataset.resolution, or use bf16/fp16 mixed precision.")
# Components that get a LoRA, as named in the pipeline and in diffusers' LoRA files.
UNET = "unet"
TEXT_ENCODERS = ("text_encoder", "text_encoder_2")


@dataclass(frozen=True)
class MicroBatch:
    epoch: int
    position: int                 # index of this micro-batch in the epoch
    indices: tuple[int, ...]      # into ImageSet.images


@dataclass
class Cond:
    hidden: torch.Tensor                    # (B, tokens, dim) cross-attention states
    pooled: torch.Tensor | None = None      # SDXL: text_encoder_2's projection


def add_lora(model: SDModel, job: JobConfig) -> dict[str, torch.nn.Module]:
    """Put LoRA layers in the UNet (and the text encoders when asked); everything
    else stays frozen. Returns the adapted components by pipeline name."""
    from peft import LoraConfig, inject_adapter_in_model

    pipe = model.pipe
    for module in (pipe.unet, pipe.vae, *model.text_encoders):
        module.requires_grad_(False)
    net = job.network

    def config(targets):
        return LoraConfig(r=net.rank, lora_alpha=net.alpha, lora_dropout=net.dropout,
                          init_lora_weights="gaussian", target_modules=list(targets))

    pipe.unet.add_adapter(config(net.target_modules or IMAGE_DEFAULT_TARGETS))
    adapted = {UNET: pipe.unet}
    if net.train_text_encoder:
        for name, encoder in zip(TEXT_ENCODERS, model.text_encoders):
            # peft directly: transformers' own add_adapter wants a newer peft than the UNet's.
            inject_adapter_in_model(config(TEXT_ENCODER_DEFAULT_TARGETS), encoder)
            adapted[name] = encoder
    for module in adapted.values():
        for p in module.parameters():
            if p.requires_grad:
                p.data = p.data.float()  # LoRA weights train in fp32 whatever the base dtype
    return adapted


def lora_state(adapted: dict[str, torch.nn.Module]) -> dict[str, torch.Tensor]:
    """The trained tensors with PEFT names, prefixed by component ('unet.' ...)."""
    from peft import get_peft_model_state_dict

    return {f"{name}.{key}": value.detach().float().cpu()
            for name, module in adapted.items()
            for key, value in get_peft_model_state_dict(module).items()}


def load_lora_state(adapted: dict[str, torch.nn.Module], tensors: dict[str, torch.Tensor]) -> None:
    from peft import set_peft_model_state_dict

    for name, module in adapted.items():
        prefix = name + "."
        own = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        result = set_peft_model_state_dict(module, own)
        if getattr(result, "unexpected_keys", None):
            raise ValueError(f"checkpoint tensors do not fit the {name} LoRA: "
                             f"{result.unexpected_keys[:3]}")


def encode_text(model: SDModel, captions: list[str], device) -> Cond:
    pipe = model.pipe
    if model.is_sdxl:
        hidden, _, pooled, _ = pipe.encode_prompt(prompt=captions, device=device,
                                                  num_images_per_prompt=1,
                                                  do_classifier_free_guidance=False)
        return Cond(hidden, pooled)
    hidden, _ = pipe.encode_prompt(captions, device, 1, False)
    return Cond(hidden)


def sdxl_time_ids(image: TrainImage, crop_top_left: tuple[int, int]) -> list[int]:
    """SDXL's size conditioning: original (h, w), crop (top, left), target (h, w)."""
    (w, h), (bw, bh) = image.size, image.bucket
    return [h, w, crop_top_left[0], crop_top_left[1], bh, bw]


def diffusion_loss(unet, noise_scheduler, latents: torch.Tensor, cond: Cond,
                   time_ids: torch.Tensor | None, prediction_type: str, noise_offset: float,
                   min_snr_gamma: float, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The denoising loss of one batch of clean latents; `dtype` is the UNet's weights'."""
    from diffusers.training_utils import compute_snr

    noise = torch.randn_like(latents)
    if noise_offset:
        # A per-channel shift lets the model learn overall brightness (very dark / light images).
        noise = noise + noise_offset * torch.randn(latents.shape[0], latents.shape[1], 1, 1,
                                                   device=latents.device, dtype=latents.dtype)
    timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (latents.shape[0],),
                              device=latents.device).long()
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
    if not min_snr_gamma:
        return F.mse_loss(pred.float(), target.float())
    snr = compute_snr(noise_scheduler, timesteps)
    weight = torch.clamp(snr, max=min_snr_gamma)
    weight = weight / (snr + 1) if prediction_type == "v_prediction" else weight / snr
    per_sample = F.mse_loss(pred.float(), target.float(), reduction="none").mean(dim=(1, 2, 3))
    return (per_sample * weight).mean()


@dataclass
class SDTrainer:
    """What one micro-batch needs: the model, the images and the caches."""
    job: JobConfig
    model: SDModel
    unet: torch.nn.Module          # as prepared by accelerate (autocast, DDP)
    images: tuple[TrainImage, ...]
    noise_scheduler: object
    device: torch.device
    latent_cache: LatentCache | None
    cache_text: bool
    text_cache: dict[str, Cond] = field(default_factory=dict)

    def _latents(self, image: TrainImage, rng: random.Random) -> tuple[torch.Tensor, tuple[int, int]]:
        vae = self.model.pipe.vae
        ds = self.job.dataset

        def encode(px: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                # The distribution's mode, not a sample: the same latents cached or not.
                dist = vae.encode(px.unsqueeze(0).to(self.device, vae.dtype)).latent_dist
                return (dist.mode() * vae.config.scaling_factor)[0]

        if self.latent_cache is not None:
            crop = resize_and_crop(*image.size, image.bucket)[1]
            latents = self.latent_cache.get(image, lambda: encode(pixels(image, rng).tensor))
            return latents, (crop[1], crop[0])
        px = pixels(image, rng, ds.random_crop, ds.flip_aug)
        return encode(px.tensor), px.crop_top_left

    def _cond(self, captions: list[str]) -> Cond:
        if not self.cache_text:
            return encode_text(self.model, captions, self.device)
        missing = [c for c in dict.fromkeys(captions) if c not in self.text_cache]
        if missing:
            with torch.no_grad():
                fresh = encode_text(self.model, missing, self.device)
            for i, caption in enumerate(missing):
                self.text_cache[caption] = Cond(fresh.hidden[i:i + 1],
                                                None if fresh.pooled is None else fresh.pooled[i:i + 1])
        conds = [self.text_cache[c] for c in captions]
        pooled = torch.cat([c.pooled for c in conds]) if self.model.is_sdxl else None
        return Cond(torch.cat([c.hidden for c in conds]), pooled)

    def loss(self, batch: MicroBatch) -> torch.Tensor:
        ds, tr = self.job.dataset, self.job.training
        # Crop, flip and caption choices depend only on the batch's place in the run.
        rng = random.Random(hash((tr.seed, batch.epoch, batch.position)))
        latents, crops, captions = [], [], []
        for index in batch.indices:
            image = self.images[index]
            lat, crop = self._latents(image, rng)
            latents.append(lat)
            crops.append(sdxl_time_ids(image, crop))
            captions.append(prepare_caption(image.caption, rng, ds.shuffle_caption, ds.keep_tokens,
                                            ds.caption_dropout_rate))
        latents_t = torch.stack(latents).to(self.device, torch.float32)
        cond = self._cond(captions)
        time_ids = torch.tensor(crops, device=self.device, dtype=cond.hidden.dtype) \
            if self.model.is_sdxl else None
        return diffusion_loss(self.unet, self.noise_scheduler, latents_t, cond, time_ids,
                              self.model.prediction_type, tr.noise_offset, tr.min_snr_gamma,
                              self.model.pipe.unet.dtype)


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
            image = pipe(prompt, num_inference_steps=job.output.sample_steps, height=res, width=res,
                         generator=generator).images[0]
            path = folder / f"step-{step:06d}-{i:02d}.png"
            image.save(path)
            written.append(path)
            emit(event("sample", step=step, path=str(path), prompt=prompt, kind="image"))
    finally:
        for m, mode in zip(modules, modes):
            m.train(mode)
    return written


@dataclass
class SDRunResult:
    outcome: LoopOutcome
    model: SDModel
    adapted: dict[str, torch.nn.Module]
    image_set: ImageSet
    exports: list[Exported]


def train_sd(job: JobConfig, run: RunDir, emit: Emit, stop: Callable[[], bool],
             resume: Path | None = None) -> SDRunResult:
    """Train an image LoRA into `run`; returns the model as it is at the end."""
    from accelerate.utils import set_seed
    from diffusers import DDPMScheduler

    tr, ds = job.training, job.dataset
    if tr.mixed_precision == "fp16" and not torch.cuda.is_available():
        raise EngineError("config", "fp16 mixed precision needs an NVIDIA GPU; none was found.",
                          "Set training.mixed_precision to 'no' (or 'bf16' on a recent CPU).")
    started_at = time.time()
    # Accumulation is the shared loop's (accelerate's own would scale the loss twice).
    accelerator = make_accelerator(tr.mixed_precision)
    set_seed(tr.seed)
    main = accelerator.is_main_process
    emit_main = emit if main else (lambda ev: None)
    model = load_sd(job)
    pipe = model.pipe
    image_set = load_image_set(job, Path(ds.path))
    for skipped in image_set.skipped:
        emit_main(event("log", level="warning", message=f"Skipped image: {skipped.message}"))
    emit_main(event("log", level="info", message="Buckets: " + "; ".join(
        image_set.report.lines(tr.batch_size))))
    pipe.to(accelerator.device)
    adapted = add_lora(model, job)
    if tr.gradient_checkpointing:
        pipe.unet.enable_gradient_checkpointing()
        for name in adapted:
            if name != UNET:
                adapted[name].gradient_checkpointing_enable()
    params_unet = [p for p in pipe.unet.parameters() if p.requires_grad]
    groups = [{"params": params_unet, "lr": job.optimizer.unet_lr or job.optimizer.learning_rate}]
    params_te = [p for n, m in adapted.items() if n != UNET for p in m.parameters() if p.requires_grad]
    if params_te:
        groups.append({"params": params_te,
                       "lr": job.optimizer.text_encoder_lr or job.optimizer.learning_rate})
    optimizer = build_optimizer(groups, job.optimizer, accelerator.device.type == "cuda")

    n_proc, rank = accelerator.num_processes, accelerator.process_index

    def batches_of(epoch: int) -> list[MicroBatch]:
        all_batches = epoch_batches(image_set.images, tr.batch_size, tr.seed, epoch)
        # Every process gets the same number of micro-batches, or collectives hang.
        padded = -(-len(all_batches) // n_proc) * n_proc
        all_batches += all_batches[: padded - len(all_batches)]
        return [MicroBatch(epoch, pos, tuple(b)) for pos, b in enumerate(all_batches)][rank::n_proc]

    per_epoch = steps_per_epoch(len(batches_of(0)), tr.gradient_accumulation_steps)
    total = total_steps(tr.max_steps, tr.epochs, per_epoch)
    scheduler = build_scheduler(optimizer, job.optimizer, total)
    unet, optimizer = accelerator.prepare(pipe.unet, optimizer)
    for name, module in adapted.items():
        if name != UNET:
            module.train()
    start = 0
    if resume is not None:
        ckpt = load_checkpoint(resume)
        load_lora_state(adapted, ckpt.trainable)
        optimizer.load_state_dict(ckpt.optimizer)
        scheduler.load_state_dict(ckpt.scheduler)
        restore_rng(ckpt.rng)
        start = ckpt.step
    emit_main(event("started", family=model.family, total_steps=total, start_step=start,
                    dataset_size=len(image_set.images),
                    samples_per_epoch=sum(im.repeats for im in image_set.images),
                    trainable_params=sum(p.numel() for p in params_unet + params_te),
                    device=str(accelerator.device), processes=n_proc, run_dir=str(run.root),
                    resumed_from=str(resume) if resume else None))

    cache_folder = run.root / "cache" / "latents" if ds.cache_latents_to_disk else None
    trainer = SDTrainer(
        job=job, model=model, unet=unet, images=image_set.images, device=accelerator.device,
        noise_scheduler=DDPMScheduler.from_config(pipe.scheduler.config,
                                                  prediction_type=model.prediction_type),
        latent_cache=LatentCache(cache_folder) if latent_caching_possible(job) else None,
        cache_text=not params_te and not captions_vary(ds.shuffle_caption, ds.caption_dropout_rate))

    def save(step: int) -> Path | None:
        return save_checkpoint_in_step(accelerator, emit, run.checkpoints, step,
                                       trainable=lambda: lora_state(adapted),
                                       optimizer=optimizer, scheduler=scheduler,
                                       state={"family": model.family, "total_steps": total,
                                              "images": len(image_set.images)})

    def sample(step: int) -> None:
        if main and job.output.sample_prompts:
            with accelerator.autocast():
                write_samples(model, job, run.samples, step, emit)

    spec = LoopSpec(total_steps=total, steps_per_epoch=per_epoch,
                    gradient_accumulation_steps=tr.gradient_accumulation_steps,
                    max_grad_norm=job.optimizer.max_grad_norm,
                    save_every_n_steps=job.output.save_every_n_steps,
                    sample_every_n_steps=job.output.sample_every_n_steps,
                    mixed_precision=tr.mixed_precision)
    hooks = LoopHooks(epoch_batches=batches_of, compute_loss=trainer.loss, save_checkpoint=save,
                      sample=sample)
    params = params_unet + params_te
    outcome = train_loop(accelerator, unet, optimizer, scheduler, params, spec, hooks, emit_main,
                         stop, start_step=start)
    for module in (pipe.unet, *model.text_encoders):
        module.eval()
    result = SDRunResult(outcome, model, adapted, image_set, [])
    if outcome.status == "cancelled":
        emit_main(event("finished", status="cancelled", step=outcome.step,
                        checkpoint=str(outcome.checkpoint) if outcome.checkpoint else None))
        return result
    save(outcome.step)
    if main:
        facts = facts_from_run(job, model, image_set, outcome.step, per_epoch, started_at)
        write_final(run, job, lora_state(adapted), facts)
        result.exports = export_sd(run, job)
        for done in result.exports:
            emit(event("log", level="info", message=f"Exported {done.format} LoRA {done.path} "
                                                    f"(SHA-256 {done.sha256})"))
    emit_main(event("finished", status="completed", step=outcome.step, final=str(run.final),
                    files=[str(d.path) for d in result.exports],
                    sha256={str(d.path): d.sha256 for d in result.exports}))
    return result
