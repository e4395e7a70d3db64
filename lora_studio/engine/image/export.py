"""Image LoRA files: what a run keeps in final/ and the two export formats.

- final/adapter.safetensors: the trained LoRA tensors with PEFT names per component
  ("unet.", "text_encoder.", "text_encoder_2."), not scaled, and in its header the
  facts the exports need (rank, alpha, family, dataset statistics).
- kohya / A1111 / ComfyUI: one .safetensors with `lora_unet_*` / `lora_te_*`
  (`lora_te1_*` / `lora_te2_*` for SDXL) modules holding `lora_down.weight`,
  `lora_up.weight` (LoRA, LoCon) or LyCORIS's `hada_w1_a`... (LoHa) / `lokr_w1`...
  (LoKr), and `alpha`, and the `ss_*` / `modelspec.*` metadata those tools show. A LoKr
  module whose two factors are both full matrices has no rank for a loader to divide
  alpha by (ComfyUI and A1111 then apply it at scale 1), so its alpha / rank is folded
  into `lokr_w1`. UNet module names use diffusers' spelling, which A1111, ComfyUI and
  diffusers all map (kohya itself writes SDXL UNet names in the original spelling).
- diffusers / PEFT: `pytorch_lora_weights.safetensors` as `pipeline.save_lora_weights`
  lays it out. alpha/rank is folded into `lora_B`, so loaders that assume
  alpha == rank (as diffusers does without extra metadata) give the trained strength.
  LoCon likewise. diffusers 0.42's Stable Diffusion pipelines load only LoRA keys
  (LoKr only for Flux 2 / Z-Image), so LoHa and LoKr have no diffusers file.

Every file is written atomically; its SHA-256 is returned and announced.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path

import torch

from lora_studio.config.network import NO_DIFFUSERS, rank_alpha
from lora_studio.config.schema import JobConfig, NetworkConfig
from lora_studio.data.tags import tag_counts
from lora_studio.fsutil import settle, sha256_file, temp_beside, temp_dir_beside
from lora_studio.runs.exports import IMAGE_ADAPTER, default_name, find_format
from lora_studio.runs.layout import RunDir

from ..core.control import EngineError
from ..core.family import Exported
from ..core.metadata import training_metadata
from ..core.safetensors_io import atomic_save_safetensors, read_metadata
from .data import epoch_batches
from .kohya_metadata import TrainFacts, aspect_error, kohya_metadata

ADAPTER_FILE = IMAGE_ADAPTER
DIFFUSERS_FILE = "pytorch_lora_weights.safetensors"
FACTS_KEY = "lora_studio.sd_facts"
KOHYA_PREFIX = {"unet": "lora_unet", "text_encoder": "lora_te", "text_encoder_2": "lora_te2"}
# PEFT's tensor names per module -> kohya's / LyCORIS's.
KOHYA_SUFFIXES = {
    "lora_A.weight": "lora_down.weight", "lora_B.weight": "lora_up.weight",
    "hada_w1_a": "hada_w1_a", "hada_w1_b": "hada_w1_b",
    "hada_w2_a": "hada_w2_a", "hada_w2_b": "hada_w2_b",
    "lokr_w1": "lokr_w1", "lokr_w2": "lokr_w2", "lokr_w2_a": "lokr_w2_a", "lokr_w2_b": "lokr_w2_b",
}
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def cast(tensors: dict[str, torch.Tensor], precision: str | None) -> dict[str, torch.Tensor]:
    """The floating tensors in the save precision (runs.exports.PRECISIONS); None: as they are."""
    if precision is None:
        return tensors
    dtype = DTYPES[precision]
    return {k: v.to(dtype) if v.is_floating_point() else v for k, v in tensors.items()}


def _addnet_hashes(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> tuple[str, str]:
    """sshs_model_hash / sshs_legacy_hash as kohya precomputes them (for the additional-
    networks extension): over the file as written with only its ss_* metadata, the new
    hash covering the tensor bytes after the header."""
    from safetensors.torch import save

    data = save(tensors, {k: v for k, v in metadata.items() if k.startswith("ss_")})
    header_len = int.from_bytes(data[:8], "little")
    model_hash = hashlib.sha256(data[8 + header_len:]).hexdigest()
    legacy = hashlib.sha256(data[0x100000:0x110000]).hexdigest()[:8]
    return model_hash, legacy


# ---------------------------------------------------------------- final/

def facts_from_run(job: JobConfig, model, image_set, steps: int, per_epoch: int,
                   started_at: float) -> TrainFacts:
    train = [im for im in image_set.images if not im.is_reg]
    reg = [im for im in image_set.images if im.is_reg]
    info = model.info
    weights = info.weight_files[0] if info.weight_files else info.path
    tr = job.training
    per_epoch = max(per_epoch, 1)
    planned = tr.max_steps or tr.epochs * per_epoch
    return TrainFacts(
        family=model.family, prediction_type=model.prediction_type, base_model=str(info.source),
        base_model_file=str(weights), steps=steps, epochs=-(-steps // per_epoch),
        num_train_images=sum(im.repeats for im in train),
        tag_frequency={folder: dict(tag_counts(im.caption for im in images))
                       for folder, images in _by_folder(job, image_set.images).items()},
        dataset_dirs=_dirs(job, train), reg_dataset_dirs=_dirs(job, reg),
        num_reg_images=sum(im.repeats for im in reg),
        buckets={f"{w}x{h}": n for (w, h), n in image_set.report.images.items()},
        bucket_samples={f"{w}x{h}": n for (w, h), n in image_set.report.samples.items()},
        mean_img_ar_error=(sum(aspect_error(im.size, im.bucket) for im in image_set.images)
                           / max(len(image_set.images), 1)),
        batches_per_epoch=len(epoch_batches(image_set.images, tr.batch_size, tr.seed, 0)),
        max_train_steps=planned, num_epochs=-(-planned // per_epoch),
        started_at=started_at, finished_at=time.time())


def _by_folder(job: JobConfig, images) -> dict[str, list]:
    by_folder: dict[str, list] = {}
    for image in images:
        by_folder.setdefault(image.folder or Path(job.dataset.path).name, []).append(image)
    return by_folder


def _dirs(job: JobConfig, images) -> dict[str, dict[str, int]]:
    """sd-scripts' ss_dataset_dirs: each folder's repeats and image count."""
    return {folder: {"n_repeats": found[0].repeats, "img_count": len(found)}
            for folder, found in _by_folder(job, images).items()}


def write_final(run: RunDir, job: JobConfig, tensors: dict[str, torch.Tensor],
                facts: TrainFacts) -> Path:
    metadata = training_metadata(job, family=facts.family, steps=facts.steps,
                                 dataset_size=facts.num_train_images, base_model=facts.base_model)
    metadata[FACTS_KEY] = json.dumps(facts.__dict__, ensure_ascii=False)
    return atomic_save_safetensors(tensors, run.final / ADAPTER_FILE, metadata)


def read_final(run: RunDir) -> tuple[dict[str, torch.Tensor], TrainFacts, dict[str, str]]:
    from safetensors.torch import load_file

    path = run.final / ADAPTER_FILE
    if not path.exists():
        raise EngineError("config", f"{run.root} has no trained image LoRA in final/ yet.",
                          f"Let the run finish, or resume it: lora-studio train --resume \"{run.root}\".")
    metadata = read_metadata(path)
    return load_file(path), TrainFacts(**json.loads(metadata[FACTS_KEY])), metadata


# ---------------------------------------------------------------- formats

def classic_name(key: str) -> str:
    """Text-encoder names as CLIPTextModel had them before transformers 5 flattened it
    ('text_encoder.encoder.layers.0...' -> 'text_encoder.text_model.encoder.layers.0...'):
    the names A1111, ComfyUI and older diffusers look for (diffusers strips the prefix
    again where the model lacks it)."""
    component, _, path = key.partition(".")
    if component in ("text_encoder", "text_encoder_2") and \
            path.startswith(("encoder.", "embeddings.", "final_layer_norm.")):
        return f"{component}.text_model.{path}"
    return key


def split_key(key: str) -> tuple[str, str]:
    """'unet.down...to_q.hada_w1_a' -> ('unet.down...to_q', 'hada_w1_a')."""
    for suffix in KOHYA_SUFFIXES:
        if key.endswith("." + suffix):
            return key[: -len(suffix) - 1], suffix
    raise ValueError(f"{key} is not a LoRA, LoHa or LoKr tensor this exporter knows")


def by_module(tensors: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    """{'unet.down_blocks.0...to_q': {'lora_A.weight': ..., 'lora_B.weight': ...}}."""
    out: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        module, suffix = split_key(key)
        out.setdefault(module, {})[suffix] = value
    return dict(sorted(out.items()))


def module_scale(net: NetworkConfig, module: str) -> float:
    rank, alpha = rank_alpha(net, module.partition(".")[2])
    return alpha / rank


def diffusers_unsupported(net: NetworkConfig) -> str | None:
    return NO_DIFFUSERS.get(net.algo)


def to_diffusers(tensors: dict[str, torch.Tensor], net: NetworkConfig) -> dict[str, torch.Tensor]:
    if diffusers_unsupported(net):
        raise EngineError("config", f"No diffusers file for a {net.algo} network: "
                          f"{diffusers_unsupported(net)}.",
                          "Export the kohya format: it loads in ComfyUI and A1111.")
    out = {}
    for module, parts in by_module(tensors).items():
        scale = module_scale(net, module)
        for suffix, v in parts.items():
            out[classic_name(f"{module}.{suffix}")] = \
                (v * scale if suffix == "lora_B.weight" else v).contiguous()
    return out


def kohya_name(module: str, family: str) -> str:
    """'unet.down_blocks.0.attentions.0...attn1.to_q' -> 'lora_unet_down_blocks_0_..._attn1_to_q'."""
    component, _, path = classic_name(module).partition(".")
    prefix = KOHYA_PREFIX[component]
    if family == "sdxl" and component == "text_encoder":
        prefix = "lora_te1"
    return f"{prefix}_{path.replace('.', '_')}"


def to_kohya(tensors: dict[str, torch.Tensor], family: str,
             net: NetworkConfig) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for module, parts in by_module(tensors).items():
        name = kohya_name(module, family)
        alpha = rank_alpha(net, module.partition(".")[2])[1]
        full_kron = "lokr_w1" in parts and "lokr_w2" in parts
        for suffix, v in parts.items():
            if full_kron and suffix == "lokr_w1":
                v = v * module_scale(net, module)
            out[f"{name}.{KOHYA_SUFFIXES[suffix]}"] = v.contiguous()
        out[f"{name}.alpha"] = torch.tensor(float(alpha))
    return out


def export_kohya(tensors, job: JobConfig, facts: TrainFacts, path: Path,
                 extra_metadata: dict[str, str], precision: str | None = None) -> Exported:
    """``path``, or beside it with a -2 suffix when another file is there (fsutil.settle)."""
    weights = cast(to_kohya(tensors, facts.family, job.network), precision)
    metadata = {**extra_metadata, **kohya_metadata(job, facts)}
    metadata["sshs_model_hash"], metadata["sshs_legacy_hash"] = _addnet_hashes(weights, metadata)
    fd, tmp = temp_beside(path)
    os.close(fd)
    try:
        atomic_save_safetensors(weights, tmp, metadata)
        path = settle(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return Exported("kohya", path, sha256_file(path))


def export_diffusers(tensors, job: JobConfig, folder: Path, extra_metadata: dict[str, str],
                     precision: str | None = None) -> Exported:
    """``folder``, or beside it with a -2 suffix when it holds something else."""
    tmp = temp_dir_beside(folder)
    try:
        weights = cast(to_diffusers(tensors, job.network), precision)
        atomic_save_safetensors(weights, tmp / DIFFUSERS_FILE, {"format": "pt", **extra_metadata})
        folder = settle(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    path = folder / DIFFUSERS_FILE
    return Exported("diffusers", path, sha256_file(path))


def epoch_file_name(output_name: str, epoch: int) -> str:
    """kohya's name of an epoch's LoRA: 'my_lora-000003.safetensors'."""
    return f"{output_name}-{epoch:06d}.safetensors"


def export_epoch(run: RunDir, job: JobConfig, tensors: dict[str, torch.Tensor],
                 facts: TrainFacts, epoch: int) -> Exported:
    """The LoRA as it is after ``epoch`` in the run's exports/, kohya format in the
    job's save precision, so epochs compare side by side in ComfyUI or A1111."""
    metadata = training_metadata(job, family=facts.family, steps=facts.steps,
                                 dataset_size=facts.num_train_images, base_model=facts.base_model)
    extra = {k: v for k, v in metadata.items() if k.startswith("lora_studio.")}
    run.exports.mkdir(parents=True, exist_ok=True)
    return export_kohya(tensors, job, facts, run.exports / epoch_file_name(
        job.output.output_name, epoch), extra, job.output.save_precision)


def export_sd(run: RunDir, job: JobConfig, formats: tuple[str, ...] = ("kohya", "diffusers"),
              out_dir: Path | None = None, name: str | None = None,
              precision: str | None = None) -> list[Exported]:
    """The run's image LoRA in ``out_dir`` (the run's exports/): `<name>.safetensors`
    (kohya / A1111 / ComfyUI) and `<name>-diffusers/pytorch_lora_weights.safetensors`,
    as many as asked, in ``precision`` (None: the job's output.save_precision); an
    existing different file is never replaced."""
    precision = precision or job.output.save_precision
    tensors, facts, metadata = read_final(run)
    extra = {k: v for k, v in metadata.items() if k.startswith("lora_studio.") and k != FACTS_KEY}
    out_dir = out_dir or run.exports
    out_dir.mkdir(parents=True, exist_ok=True)

    def target(fmt: str) -> Path:
        return out_dir / (find_format(fmt).file_name(name) if name else
                          default_name(fmt, job.output.output_name))
    done = []
    if "kohya" in formats:
        done.append(export_kohya(tensors, job, facts, target("kohya"), extra, precision))
    if "diffusers" in formats:
        done.append(export_diffusers(tensors, job, target("diffusers"), extra, precision))
    return done


def export(run: RunDir, job: JobConfig, fmt: str, out_dir: Path | None = None,
           name: str | None = None, precision: str | None = None) -> list[Exported]:
    return export_sd(run, job, (fmt,), out_dir, name, precision)
