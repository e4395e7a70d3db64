"""Cross-field and model-aware validation: every problem becomes a Finding with the
field it is about, a message in plain words and a hint that says what to change.

Errors block a run, warnings do not, info are notes. The model is inspected from its
config files and safetensors headers only (model_info.py, cached), the dataset with a
scan that decodes nothing (data/scan.py), so this is cheap enough to run on every edit.

`gpu` describes the machine (config.gpu.GpuFacts, or any object with the same
attributes); None means "unknown" and skips the hardware rules.
"""
from __future__ import annotations

import importlib.util
import math
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..data.chat_template import TemplateProblem, preflight
from ..data.captions import caption_read_errors
from ..data.folder_levels import folder_level_slip
from ..data.reg_images import nesting, reg_repeats
from ..data.subsets import SubsetError, merged, parse_subsets, scan_subsets, subset_folder
from ..data.scan import (IMAGE_EXTENSIONS, DatasetError, ImageDataset, count_records, scan_images,
                         scan_text_files)
from ..data.text_sources import (SourceError, cached_hub_dataset, hub_hint, looks_like_hub_id,
                                 parse_columns, parse_mix)
from ..data.walk import SKIP_KINDS, Skipped
from .fields import SPECS, get_value
from .findings import Finding
from .gpu import GIB
from .optimizers import (ADAPTIVE, ADAPTIVE_LR_LOW, INSTALL_OPTIMIZERS, SCHEDULE_FREE, missing_package,
                         unused_options)
from .jobfile import job_to_dict
from .model_info import (IMAGE_DEFAULT_TARGETS, TEXT_ENCODER_DEFAULT_TARGETS, Layers, ModelInfo,
                         ModelInfoError, inspect_model, matching_layers, target_candidates)
from .network import NO_DIFFUSERS
from .parse import parse_job
from .paths import path_candidates, resolve_local_path
from .sample_prompts import OPTIONS as PROMPT_OPTIONS
from .sample_prompts import parse_sample_prompt
from .schema import JobConfig
from .trust import risks

# Every rule id validate() can emit, with what it checks (for docs and `check --rules`).
RULES: dict[str, str] = {
    "model-path-empty": "no base model is set",
    "model-not-found": "the model path does not exist and the id is not in the Hugging Face cache",
    "model-pickle": "a pickle checkpoint without 'Allow pickle checkpoints'",
    "model-pickle-weights": "a model folder whose weights are only pickle files",
    "model-unreadable": "a damaged or unsupported model file or folder",
    "model-no-weights": "a model folder without weight files",
    "model-uninspectable": "a pickle checkpoint that cannot be checked without loading it",
    "family-unknown": "the model family cannot be detected and is set to auto",
    "family-mismatch": "the declared model family differs from the model's",
    "family-detected": "which family 'auto' detected",
    "not-causal-lm": "a text model without a language-model head",
    "dataset-path-empty": "no dataset is set",
    "dataset-missing": "the dataset path does not exist",
    "dataset-unreadable": "the dataset cannot be read (permissions, bad JSON, not UTF-8)",
    "dataset-format": "the dataset is not the kind of file or folder the job needs",
    "format-vs-kind": "the data format does not fit the job (images vs text)",
    "dataset-empty": "the dataset holds no images or no records",
    "images-uncaptioned": "images without a caption file",
    "captions-empty": "caption files that hold only blanks",
    "folders-skipped": "'0_name' folders, which have zero repeats",
    "repeats-too-large": "an 'N_name' folder whose N is over the repeats limit (not scanned)",
    "dataset-passed-over": "pipes, devices, broken links, unreadable or twice-linked folders, "
                           "oversized captions: named and not used",
    "images-unsupported-format": "pictures in formats that are not trained on, counted per type",
    "repeat-folder-level": "a kohya 'N_name' folder opened itself, or from one level too high, "
                           "so its repeats are not used",
    "captions-unreadable": "caption files that cannot be decoded as text",
    "reg-missing": "a regularisation folder that does not exist or is not a folder",
    "reg-empty": "a regularisation folder without images",
    "reg-nested": "a regularisation folder inside the dataset folder, or the other way round",
    "reg-counts": "how many regularisation images an epoch trains, and those left unused",
    "reg-without-class": "regularisation images outside an 'N_class' folder and without captions",
    "prior-weight-without-reg": "a prior loss weight set without regularisation images",
    "subset-invalid": "a concept folder line (dataset.subsets) that cannot be read",
    "subset-folder-missing": "a concept folder that does not exist",
    "subset-empty": "a concept folder without images",
    "no-upscale-without-buckets": "never upscale set while aspect-ratio bucketing is off",
    "quant-both": "4-bit and 8-bit loading both on",
    "quant-image-job": "4-/8-bit loading on an image job",
    "quant-needs-cuda": "4-/8-bit loading without an NVIDIA GPU",
    "optimizer-8bit-needs-cuda": "an 8-bit optimizer without an NVIDIA GPU",
    "bf16-unsupported": "bf16 on a GPU without bf16",
    "precision-on-cpu": "fp16 / bf16 without a GPU",
    "dtype-vs-precision": "weights dtype and mixed precision disagree",
    "fp16-sdxl-vae": "fp16 with the SDXL VAE (NaN risk)",
    "sdxl-low-vram": "SDXL on a small GPU without gradient checkpointing",
    "processes-vs-gpus": "more processes than GPUs",
    "alpha-vs-rank": "alpha more than twice the rank",
    "network-option-unused": "conv rank / alpha or LoKr factor set for a network type that has no "
                             "such layers or factor, or LoRA dropout with LoHa / LoKr",
    "network-no-diffusers": "LoHa / LoKr, which export only the kohya format (diffusers cannot "
                            "load them)",
    "rank-exceeds-width": "rank larger than a targeted layer's width",
    "target-modules-absent": "target modules the model does not have",
    "train-te-text-job": "'Train text encoder' on a text job",
    "te-lr-without-te": "a text encoder learning rate while the text encoder is not trained",
    "separate-lr-text-job": "UNet / text encoder learning rates on a text job",
    "lr-very-high": "a learning rate above 1e-3",
    "optimizer-package-missing": "Prodigy / DAdaptAdam / AdamWScheduleFree without its package",
    "adaptive-optimizer-lr": "Prodigy / DAdaptAdam with a learning rate far below 1.0",
    "relative-step-ignores": "Adafactor's relative step with learning rates or a schedule it ignores",
    "optimizer-option-unused": "Prodigy / DAdaptAdam options or betas set for an optimizer that "
                               "does not take them",
    "adafactor-option-unused": "Adafactor options with another optimizer, or warmup init without "
                               "relative step",
    "schedule-free-scheduler": "a schedule-free optimizer with an LR schedule it replaces",
    "scheduler-option-unused": "cycles or power set for a scheduler that does not use them",
    "clip-skip-sdxl": "clip skip on SDXL, which always uses its penultimate layer",
    "stop-te-without-te": "stopping the text encoder while it is not trained",
    "stop-te-beyond-run": "stopping the text encoder at or after the end of the run",
    "warmup-longer-than-run": "warmup as long as the whole run",
    "warmup-with-constant": "warmup steps with the 'constant' scheduler, which ignores them",
    "steps-and-epochs": "max steps set while epochs is changed too",
    "batch-larger-than-dataset": "a batch larger than the dataset",
    "accumulation-exceeds-dataset": "one optimizer step needing more samples than an epoch has",
    "save-every-beyond-run": "a checkpoint interval as long as the run or longer",
    "sample-every-beyond-run": "a sample interval as long as the run or longer",
    "save-epochs-beyond-run": "a checkpoint interval in epochs as long as the run or longer",
    "sample-epochs-beyond-run": "a sample interval in epochs as long as the run or longer",
    "keep-last-without-saves": "keeping the last N checkpoints while only the final one is saved",
    "sample-prompt-options": "an image sample prompt's option (--w, --s, --ss ...) that cannot "
                             "be read",
    "sample-prompts-missing": "sampling on without prompts",
    "prompts-without-sampling": "prompts given while sampling is off",
    "output-dir-not-writable": "a runs folder that cannot be created or written",
    "resolution-multiple-of-8": "a resolution that is not a multiple of 8",
    "resolution-multiple-of-64": "a resolution that is not a multiple of 64",
    "resolution-vs-model": "a resolution far from the model's native one",
    "bucket-min-above-max": "min bucket side above max bucket side",
    "resolution-outside-buckets": "a resolution outside the bucket range",
    "bucket-step-multiple-of-8": "a bucket step that is not a multiple of 8",
    "keep-tokens-without-shuffle": "keep tokens without caption shuffling",
    "caption-dropout-high": "a caption dropout of 50% or more",
    "cache-latents-disables-augmentation": "random crop / flip with cached latents",
    "cache-to-disk-without-cache": "latents cached to disk while caching is off",
    "v-prediction-on-sd1": "v-prediction on an SD 1.x model",
    "prediction-type-mismatch": "a prediction type different from the model's",
    "noise-offset-high": "a noise offset above 0.2",
    "max-seq-past-positions": "max sequence length past the model's positions",
    "eval-without-data": "evaluation or early stopping set, but no held-out records to use",
    "eval-path-missing": "an eval dataset that does not exist",
    "eval-images-empty": "an eval image folder that holds no images, or is not a folder",
    "eval-images": "how many held-out images the eval loss is measured on",
    "eval-split-leaves-none": "a held-out share that leaves no images to train on",
    "eval-metric-unmeasured": "early stopping on a generation metric no evaluation measures",
    "eval-metrics-not-installed": "generation metrics asked for without sacrebleu / rouge-score",
    "patience-without-evaluations": "early stopping without evaluations during the run",
    "dataset-columns-invalid": "a column map line that is not role=column",
    "dataset-mix-invalid": "a mix line that cannot be read, or a source that is not there",
    "streaming-with-mix": "datasets mixed in while the dataset is streamed from disk",
    "init-mutates-quantized-base": "PiSSA / OLoRA initialisation on a 4-/8-bit base",
    "loftq-needs-4bit": "LoftQ initialisation without a 4-bit base",
    "dora-with-mutating-init": "DoRA with PiSSA / OLoRA initialisation (no plain-LoRA export)",
    "modules-to-save-size": "layers trained in full, with what they add to the adapter",
    "responses-only-plain-text": "loss on responses only with plain-text records",
    "setting-not-used": "settings changed from their defaults that this kind of job ignores",
    "preset-allows-pickle": "pickle checkpoints allowed (a pickle file can carry code)",
    "preset-custom-template": "a chat template of the preset's own, with how it renders",
    "chat-template-fails": "a chat template that fails, or runs past its time or size budget",
    "preset-output-elsewhere": "a runs folder given as an absolute path, or with ~ or ..",
    "output-name-reserved": "an output name that is '.', '..', ends in a dot or is a Windows device",
}

FAMILY_NAMES = {"text": "a text model", "sd1": "Stable Diffusion 1.x", "sd2": "Stable Diffusion 2.x",
                "sdxl": "SDXL"}
TEXT_FORMATS = ("prompt_response", "alpaca", "messages", "text")
LR_HIGH = 1e-3
FIRST_NAMES = 5  # how many file names a finding lists


def _title(path: str) -> str:
    return f"'{SPECS[path].title}'"


def _names(paths: Iterable[Path], total: int) -> str:
    shown = [p.name for p in list(paths)[:FIRST_NAMES]]
    more = f" and {total - len(shown)} more" if total > len(shown) else ""
    return ", ".join(shown) + more


@dataclass
class Context:
    """What the rules look at: the job and the facts gathered once per validation."""
    job: JobConfig
    gpu: Any
    base_dir: Path | None
    model: ModelInfo | None = None
    family: str = "auto"            # declared, else detected; "auto" when unknown
    images: ImageDataset | None = None
    reg: ImageDataset | None = None  # the regularisation images, when a reg folder is set
    text_records: int | None = None

    @property
    def kind(self) -> str:
        if self.family == "auto":
            return "unknown"
        return "text" if self.family == "text" else "image"

    @property
    def reg_samples(self) -> int:
        """Reg samples per epoch: as many as training samples, as kohya cycles them."""
        if self.images is None or self.reg is None:
            return 0
        return sum(reg_repeats(self.images.samples_per_epoch, [i.repeats for i in self.reg.items]))

    @property
    def samples_per_epoch(self) -> int | None:
        if self.images is not None:
            return self.images.samples_per_epoch + self.reg_samples
        return self.text_records

    @property
    def total_steps(self) -> int | None:
        return estimate_total_steps(self.job, self.samples_per_epoch)

    @property
    def cuda(self) -> bool | None:
        return None if self.gpu is None else bool(getattr(self.gpu, "cuda_available", False))


def estimate_total_steps(job: JobConfig, samples_per_epoch: int | None) -> int | None:
    """Optimizer steps of the run: max steps, else epochs x steps per epoch (partial
    batches and accumulation groups count as a step). None when the dataset size is unknown."""
    t = job.training
    if t.max_steps:
        return t.max_steps
    if not samples_per_epoch:
        return None
    batches = math.ceil(samples_per_epoch / (t.batch_size * t.processes))
    return t.epochs * math.ceil(batches / t.gradient_accumulation_steps)


# ---------------------------------------------------------------- facts: model and dataset

_MODEL_RULES = {"empty": "model-path-empty", "missing": "model-not-found", "pickle": "model-pickle",
                "malformed": "model-unreadable", "unsupported": "model-unreadable"}


def _model_facts(ctx: Context) -> list[Finding]:
    m = ctx.job.model
    try:
        info = inspect_model(m.path, ctx.base_dir, allow_pickle=m.allow_pickle)
    except ModelInfoError as exc:
        ctx.family = m.family
        return [Finding("model.path", "error", exc.message, exc.hint, _MODEL_RULES[exc.reason])]
    ctx.model = info
    ctx.family = m.family if m.family != "auto" else (info.family or "auto")
    out = []
    if info.format == "pickle":
        out.append(Finding("model.path", "info", " ".join(info.notes),
                           "Use a .safetensors version of the model to get these checks.",
                           "model-uninspectable"))
        if m.family == "auto":
            out.append(Finding("model.family", "error",
                               f"The model family of '{info.path.name}' cannot be detected from a "
                               "pickle checkpoint.",
                               f"Set {_title('model.family')} to sd1, sd2 or sdxl.", "family-unknown"))
        return out
    if info.pickle_weights and not m.allow_pickle:
        out.append(Finding("model.path", "error",
                           f"The weights in '{info.path.name}' are pickle files (.bin / .pt), which "
                           "can run code hidden in them when loaded.",
                           "Get the .safetensors version of this model. If you trust these files, "
                           f"turn on {_title('model.allow_pickle')}.", "model-pickle-weights"))
    elif not info.weight_files and not info.pickle_weights:
        out.append(Finding("model.path", "error", f"'{info.path}' has no weight files (.safetensors).",
                           "The download is incomplete: download the model again, including its "
                           ".safetensors files.", "model-no-weights"))
    if m.family != "auto" and info.family and m.family != info.family:
        out.append(Finding("model.family", "error",
                           f"The model is {FAMILY_NAMES[info.family]}, but {_title('model.family')} "
                           f"is set to {FAMILY_NAMES[m.family]}.",
                           f"Set {_title('model.family')} to '{info.family}' or to 'auto'.",
                           "family-mismatch"))
    elif m.family == "auto" and info.family:
        out.append(Finding("model.family", "info",
                           f"Detected {FAMILY_NAMES[info.family]} ({info.format.replace('_', '-')}).",
                           "Nothing to do; set the family by hand only if this is wrong.",
                           "family-detected"))
    if info.causal_lm is False:
        out.append(Finding("model.path", "warning",
                           f"'{info.path.name}' ({', '.join(info.architectures)}) is not a "
                           "text-generating (causal) language model; training will probably fail.",
                           "Pick a chat or base LLM (its config.json lists an architecture ending in "
                           "ForCausalLM).", "not-causal-lm"))
    return out


def _folder_has_images(folder: Path) -> bool:
    with os.scandir(folder) as entries:
        return any(e.is_file() and Path(e.name).suffix.lower() in IMAGE_EXTENSIONS for e in entries)


def _dataset_facts(ctx: Context) -> list[Finding]:
    ds = ctx.job.dataset
    if not ds.path.strip():
        return [Finding("dataset.path", "error", "No dataset is set.",
                        "Choose your image folder or your .jsonl / .json file.", "dataset-path-empty")]
    path = resolve_local_path(ds.path, ctx.base_dir)
    if path is None and ctx.kind == "text" and looks_like_hub_id(ds.path):
        path = cached_hub_dataset(ds.path.strip())
        if path is None:
            return [Finding("dataset.path", "error", f"'{ds.path.strip()}' is not a file or folder "
                            "here, nor a dataset in your Hugging Face cache.",
                            hub_hint(ds.path.strip()), "dataset-missing")]
    if path is None:
        tried = [str(p) for p in path_candidates(ds.path, ctx.base_dir)]
        where = f" (looked at {', '.join(tried)})" if tried != [ds.path.strip()] else ""
        return [Finding("dataset.path", "error", f"The dataset '{ds.path.strip()}' was not found{where}.",
                        "Check the path for typos, or pick it with Browse.", "dataset-missing")]
    rules = {"missing": "dataset-missing", "unreadable": "dataset-unreadable",
             "not_a_folder": "dataset-format", "wrong_format": "dataset-format"}
    try:
        if ctx.kind == "image":
            if ds.subsets:
                return _subset_facts(ctx, path) + _reg_facts(ctx, path)
            ctx.images = scan_images(path, ds.caption_extension, ds.repeats)
            return _image_dataset_findings(ctx.images) + _reg_facts(ctx, path)
        if ctx.kind == "text":
            if path.is_dir() and _folder_has_images(path):
                return [Finding("dataset.path", "error", f"'{path.name}' is a folder of images, but "
                                "the model is a text model.",
                                "Pick a .jsonl / .json file of text records, or an image model.",
                                "dataset-format")]
            files = scan_text_files(path)
            ctx.text_records = count_records(files)
            out = _passed_over(files.problems)
            if not ctx.text_records:
                out.append(Finding("dataset.path", "error", f"'{path.name}' holds no records.",
                                   "Add records (one JSON object per line in a .jsonl file).",
                                   "dataset-empty"))
            return out
    except DatasetError as exc:
        return [Finding("dataset.path", "error", exc.message, exc.hint, rules[exc.reason])]
    return []


def _passed_over(problems: Iterable[Skipped]) -> list[Finding]:
    """One warning per kind of thing not used, with its count and the first names."""
    by_kind: dict[str, list[Skipped]] = {}
    for p in problems:
        if p.kind not in ("repeats_too_large", "unsupported_format"):
            by_kind.setdefault(p.kind, []).append(p)
    return [Finding("dataset.path", "warning",
                    f"{SKIP_KINDS[kind]}: {len(found)} item(s) not used: "
                    + "; ".join(f"{p.path} {p.reason}" for p in found[:FIRST_NAMES])
                    + (f"; and {len(found) - FIRST_NAMES} more" if len(found) > FIRST_NAMES else "")
                    + ".", found[0].hint, "dataset-passed-over")
            for kind, found in by_kind.items()]


def _image_dataset_findings(data: ImageDataset, levels: bool = True) -> list[Finding]:
    """levels: look for a kohya folder opened one level off (not for concept folders,
    which are named one by one)."""
    out = [Finding("dataset.path", "error", f"Folder '{p.path.name}' {p.reason}.", p.hint,
                   "repeats-too-large") for p in data.bad_repeat_folders]
    out += _passed_over(data.problems)
    formats = data.unsupported_formats
    if formats:
        files = data.problems_of("unsupported_format")
        counts = ", ".join(f"{n} {ext}" for ext, n in formats.items())
        out.append(Finding("dataset.path", "warning",
                           f"{len(files)} picture(s) in formats that are not trained on ({counts}): "
                           f"{_names((p.path for p in files), len(files))}.", files[0].hint,
                           "images-unsupported-format"))
    if data.skipped_folders:
        out.append(Finding("dataset.path", "info",
                           f"Folder(s) {', '.join(data.skipped_folders)} have 0 repeats and are skipped.",
                           "Rename a folder to '1_name' or more to train on it.", "folders-skipped"))
    if not data.images:
        out.append(Finding("dataset.path", "error", f"No images ({', '.join(sorted(IMAGE_EXTENSIONS))}) "
                           f"were found in '{data.root}'.",
                           "Put your images in this folder or in 'N_name' sub-folders "
                           "(e.g. '10_mycharacter').", "dataset-empty"))
        return out
    missing = data.uncaptioned_items
    if missing:
        other_ext = (f" If your captions use another extension, set {_title('dataset.caption_extension')}."
                     if not data.captioned else "")
        out.append(Finding("dataset.path", "warning",
                           f"{len(missing)} of {data.images} images have no caption file "
                           f"({data.caption_extension}): "
                           f"{_names((i.image_path for i in missing), len(missing))}.",
                           f"Write a caption file beside each image with the same name "
                           f"(photo.png -> photo{data.caption_extension}). Images without one train "
                           f"with an empty caption.{other_ext}", "images-uncaptioned"))
    passed_over = {p.path for p in data.problems}
    unreadable = caption_read_errors(i.caption_path for i in data.items
                                     if i.caption_path and i.caption_path not in passed_over)
    if unreadable:
        errors = list(unreadable.values())
        out.append(Finding("dataset.path", "warning",
                           f"{len(errors)} caption file(s) cannot be read, so training skips their "
                           "images: " + "; ".join(f"{e.path.name} {e.reason}"
                                                 for e in errors[:FIRST_NAMES])
                           + (f"; and {len(errors) - FIRST_NAMES} more" if len(errors) > FIRST_NAMES
                              else "") + ".", errors[0].hint, "captions-unreadable"))
    empty = data.empty_caption_items
    if empty:
        out.append(Finding("dataset.path", "warning",
                           f"{len(empty)} caption file(s) are empty: "
                           f"{_names((i.caption_path for i in empty), len(empty))}.",
                           "Write a caption in each (at least your trigger word).", "captions-empty"))
    slip = folder_level_slip(data) if levels else None
    if slip is not None:
        samples = (f" ({slip.samples_per_epoch} samples per epoch instead of "
                   f"{data.samples_per_epoch})" if slip.samples_per_epoch is not None else "")
        out.append(Finding("dataset.path", "warning", slip.message,
                           f"Set {_title('dataset.path')} to '{slip.fix}'{samples}.",
                           "repeat-folder-level"))
    return out


REG_NESTING = {
    "same": ("is also the dataset folder", "Keep the regularisation images in a folder of "
             "their own, beside the dataset folder (e.g. 'reg/1_dog')."),
    "reg_in_train": ("is inside the dataset folder, so its images would also train as a "
                     "concept", "Move it out, beside the dataset folder (e.g. 'project/reg' "
                     "next to 'project/img')."),
    "train_in_reg": ("holds the dataset folder, so the training images would also count as "
                     "regularisation images", "Keep the two folders side by side (e.g. "
                     "'project/img' and 'project/reg')."),
}


def _reg_facts(ctx: Context, train_path: Path) -> list[Finding]:
    """The regularisation images: the reg folder's, if one is set, with those of concept
    folders marked is_reg (already in ctx.reg), and how many an epoch trains."""
    return _reg_folder_facts(ctx, train_path) + _reg_counts(ctx)


def _reg_folder_facts(ctx: Context, train_path: Path) -> list[Finding]:
    ds = ctx.job.dataset
    if not ds.reg_path.strip():
        return []
    path = resolve_local_path(ds.reg_path, ctx.base_dir)
    if path is None or not path.is_dir():
        what = "was not found" if path is None else "is a file, not a folder"
        return [Finding("dataset.reg_path", "error", f"The regularisation folder "
                        f"'{ds.reg_path.strip()}' {what}.",
                        "Pick the folder holding your 'N_class' folders (e.g. 'reg' with "
                        "'1_dog' in it), or empty the field to train without them.",
                        "reg-missing")]
    nested = next(filter(None, (nesting(folder, path)
                                for folder in _train_folders(ctx, train_path))), None)
    if nested:
        what, hint = REG_NESTING[nested]
        return [Finding("dataset.reg_path", "error", f"The regularisation folder '{path}' "
                        f"{what}.", hint, "reg-nested")]
    try:
        reg = scan_images(path, ds.caption_extension, 1, is_reg=True)
    except DatasetError as exc:
        return [Finding("dataset.reg_path", "error", exc.message, exc.hint, "reg-missing")]
    out = [Finding("dataset.reg_path", f.level, f"Regularisation images: {f.message}", f.hint,
                   f.rule) for f in _passed_over(reg.problems)]
    if not reg.images:
        out.append(Finding("dataset.reg_path", "warning", f"The regularisation folder '{path}' "
                           "holds no images; training goes on without them.",
                           "Put pictures of the class in 'N_class' folders inside it (e.g. "
                           "'1_dog/dog1.png'), or empty the field.", "reg-empty"))
        return out
    ctx.reg = reg if ctx.reg is None else merged(reg.root, ds.caption_extension, [ctx.reg, reg])
    unnamed = [i for i in reg.items if not i.class_tokens and i.caption_path is None]
    if unnamed:
        out.append(Finding("dataset.reg_path", "warning",
                           f"{len(unnamed)} regularisation image(s) have neither a caption file "
                           "nor an 'N_class' folder whose name gives their class: "
                           f"{_names((i.image_path for i in unnamed), len(unnamed))}. They "
                           "train with an empty caption.",
                           "Move them into a folder named after their class, e.g. '1_dog'.",
                           "reg-without-class"))
    return out


def _train_folders(ctx: Context, train_path: Path) -> list[Path]:
    """The folders whose images train: the dataset folder, or its concept folders."""
    try:
        subsets = parse_subsets(ctx.job.dataset.subsets)
    except SubsetError:
        subsets = []  # named by _subset_facts
    return [subset_folder(train_path, s) for s in subsets if not s.is_reg] or [train_path]


def _reg_counts(ctx: Context) -> list[Finding]:
    reg, ds = ctx.reg, ctx.job.dataset
    train = ctx.images.samples_per_epoch if ctx.images else 0
    if reg is None or not train:
        return []
    used = reg_repeats(train, [i.repeats for i in reg.items])
    unused = sum(1 for n in used if n == 0)
    left = (f" {unused} of them are not used: there are more than training samples."
            if unused else "")
    return [Finding("dataset.reg_path" if ds.reg_path.strip() else "dataset.subsets", "info",
                    f"{reg.images} regularisation image(s) in {len(reg.folders)} "
                    f"folder(s); each epoch trains {sum(used)} of them beside the "
                    f"{train} training samples (loss weight {ds.prior_loss_weight:g})."
                    + left, "Nothing to do." if not unused else
                    "Nothing to do; raise the repeats of your concept folders to use "
                    "more of them.", "reg-counts")]


def _subset_uncaptioned(train: ImageDataset, subsets: list) -> list[Finding]:
    """Images of the concept folders without a caption file (in their line's extension)
    that will train with an empty caption: a line's class_tokens captions its own."""
    missing = [i for i in train.items
               if i.caption_path is None and not subsets[i.subset].class_tokens]
    if not missing:
        return []
    return [Finding("dataset.subsets", "warning",
                    f"{len(missing)} of {train.images} images have no caption file: "
                    f"{_names((i.image_path for i in missing), len(missing))}.",
                    "Write a caption file beside each image with the same name and the "
                    "extension of its concept folder line (photo.png -> photo.txt), or give "
                    "the line class_tokens=... to caption them. Images without either train "
                    "with an empty caption.", "images-uncaptioned")]


def _subset_facts(ctx: Context, root: Path) -> list[Finding]:
    """Scan the concept folders (dataset.subsets), each with its own settings."""
    ds = ctx.job.dataset
    try:
        subsets = parse_subsets(ds.subsets)
        found = scan_subsets(root, subsets, ds.caption_extension, ds.repeats)
    except SubsetError as exc:
        return [Finding("dataset.subsets", "error", exc.message, exc.hint, "subset-invalid")]
    except DatasetError as exc:
        return [Finding("dataset.subsets", "error", exc.message,
                        "Fix the folder in its line (relative folders are inside the dataset "
                        "folder), or remove the line.", "subset-folder-missing")]
    ctx.images, ctx.reg = found.train, found.reg
    out = [f for f in _image_dataset_findings(found.train, levels=False)
           if f.rule != "images-uncaptioned"] + _subset_uncaptioned(found.train, subsets)
    items = found.train.items + (found.reg.items if found.reg else ())
    empty = [s.folder for i, s in enumerate(subsets) if not any(it.subset == i for it in items)]
    if empty:
        out.append(Finding("dataset.subsets", "warning", f"Concept folder(s) "
                           f"{', '.join(repr(f) for f in empty)} hold no images.",
                           "Put images in them, or remove their lines.", "subset-empty"))
    return out


# ---------------------------------------------------------------- rules

Rule = Callable[[Context], Iterable[Finding]]
_CHECKS: list[Rule] = []


def _check(fn: Rule) -> Rule:
    _CHECKS.append(fn)
    return fn


@_check
def _quantisation(ctx: Context) -> Iterable[Finding]:
    m = ctx.job.model
    if m.load_in_4bit and m.load_in_8bit:
        yield Finding("model.load_in_8bit", "error", "4-bit and 8-bit loading are both on.",
                      "Turn one of them off: 4-bit (QLoRA) saves the most memory.", "quant-both")
    quant = "4-bit" if m.load_in_4bit else "8-bit" if m.load_in_8bit else ""
    path = "model.load_in_4bit" if m.load_in_4bit else "model.load_in_8bit"
    if quant and ctx.kind == "image":
        yield Finding(path, "error", f"{quant} loading is only for text models.",
                      f"Turn off {_title(path)}; for less memory on image models use gradient "
                      "checkpointing and a smaller batch.", "quant-image-job")
    if quant and ctx.cuda is False:
        yield Finding(path, "error", f"{quant} loading needs an NVIDIA GPU with CUDA, and none was found.",
                      f"Turn off {_title(path)} to train on the CPU (slow), or train on a machine "
                      "with an NVIDIA GPU.", "quant-needs-cuda")


@_check
def _optimizer_needs_cuda(ctx: Context) -> Iterable[Finding]:
    opt = ctx.job.optimizer.optimizer
    if "8bit" in opt and ctx.cuda is False:
        yield Finding("optimizer.optimizer", "error", f"{opt} needs an NVIDIA GPU with CUDA, and none "
                      "was found.", "Choose AdamW (or Adafactor) instead.", "optimizer-8bit-needs-cuda")


def _wants(ctx: Context, precision: str, dtype: str) -> str | None:
    """The field asking for `precision`, if any."""
    if ctx.job.training.mixed_precision == precision:
        return "training.mixed_precision"
    return "model.dtype" if ctx.job.model.dtype == dtype else None


@_check
def _precision_vs_hardware(ctx: Context) -> Iterable[Finding]:
    bf16 = _wants(ctx, "bf16", "bfloat16")
    fp16 = _wants(ctx, "fp16", "float16")
    if ctx.cuda and bf16 and not getattr(ctx.gpu, "supports_bf16", False):
        name = getattr(ctx.gpu, "name", "") or "This GPU"
        yield Finding(bf16, "error", f"{name} does not support bf16 (it needs an RTX 30xx / A100 or newer).",
                      f"Set {_title(bf16)} to fp16 instead.", "bf16-unsupported")
    if ctx.cuda is False and fp16:
        yield Finding(fp16, "error", "fp16 needs an NVIDIA GPU; no GPU was found.",
                      f"Set {_title(fp16)} to '{'no' if fp16.startswith('training') else 'float32'}' "
                      "to train on the CPU.", "precision-on-cpu")
    if ctx.cuda is False and bf16:
        yield Finding(bf16, "warning", "bf16 without a GPU runs on the CPU, which is very slow.",
                      f"Set {_title(bf16)} to '{'no' if bf16.startswith('training') else 'float32'}' "
                      "unless your CPU is known to be fast in bf16.", "precision-on-cpu")


@_check
def _dtype_vs_precision(ctx: Context) -> Iterable[Finding]:
    dtype, mixed = ctx.job.model.dtype, ctx.job.training.mixed_precision
    if (dtype, mixed) in (("float16", "bf16"), ("bfloat16", "fp16")):
        want = "bfloat16" if mixed == "bf16" else "float16"
        yield Finding("model.dtype", "warning",
                      f"The weights are loaded in {dtype} but training runs in {mixed}.",
                      f"Set {_title('model.dtype')} to 'auto' or '{want}'.", "dtype-vs-precision")


@_check
def _fp16_sdxl_vae(ctx: Context) -> Iterable[Finding]:
    fp16 = _wants(ctx, "fp16", "float16")
    if ctx.family == "sdxl" and fp16 and not (ctx.model and ctx.model.vae_force_upcast is False):
        yield Finding(fp16, "warning", "SDXL's VAE overflows in fp16: images can turn into NaN "
                      "(black samples, loss 'nan').",
                      "Use bf16 if your GPU supports it (RTX 30xx or newer), or a model with the "
                      "fp16-fixed SDXL VAE.", "fp16-sdxl-vae")


@_check
def _sdxl_low_vram(ctx: Context) -> Iterable[Finding]:
    vram = getattr(ctx.gpu, "total_vram_bytes", 0) if ctx.cuda else 0
    if ctx.family == "sdxl" and 0 < vram < 12 * GIB and not ctx.job.training.gradient_checkpointing:
        yield Finding("training.gradient_checkpointing", "warning",
                      f"SDXL on a {vram / GIB:.0f} GB GPU without gradient checkpointing will likely "
                      "run out of memory.", f"Turn on {_title('training.gradient_checkpointing')}.",
                      "sdxl-low-vram")


@_check
def _processes(ctx: Context) -> Iterable[Finding]:
    n = ctx.job.training.processes
    if n > 1 and ctx.gpu is not None:
        have = getattr(ctx.gpu, "device_count", 0) if ctx.cuda else 0
        if not ctx.cuda:
            # accelerate runs the processes on the CPU (gloo): slow, but it tries a
            # multi-GPU preset end to end before renting the machine for it.
            yield Finding("training.processes", "warning", f"No NVIDIA GPU was found: the {n} processes "
                          "will share the CPU, which is only useful to try a multi-GPU setup.",
                          f"Set {_title('training.processes')} to 1 to train on this machine.",
                          "processes-vs-gpus")
        elif have < n:
            yield Finding("training.processes", "error", f"Training on {n} GPUs was asked, but "
                          f"{have} {'is' if have == 1 else 'are'} available.",
                          f"Set {_title('training.processes')} to {max(have, 1)}.", "processes-vs-gpus")


@_check
def _alpha_vs_rank(ctx: Context) -> Iterable[Finding]:
    net = ctx.job.network
    if net.alpha > 2 * net.rank:
        yield Finding("network.alpha", "warning",
                      f"Alpha {net.alpha:g} is more than twice the rank {net.rank}: updates are scaled "
                      f"x{net.alpha / net.rank:g}, like a much higher learning rate.",
                      f"Set {_title('network.alpha')} to {net.rank} (same as the rank) or "
                      f"{max(net.rank // 2, 1)} (half).", "alpha-vs-rank")


# The network settings only some network.algo values use.
CONV_SETTINGS = (("conv_rank", 0), ("conv_alpha", 0.0))


@_check
def _network_algo(ctx: Context) -> Iterable[Finding]:
    net = ctx.job.network
    if ctx.kind != "image":
        return
    algo = _title("network.algo")
    if net.algo == "lora":
        for name, default in CONV_SETTINGS:
            if getattr(net, name) != default:
                yield Finding(f"network.{name}", "warning",
                              f"{_title(f'network.{name}')} is not used: a plain LoRA adapts no "
                              "conv layers.", f"Set {algo} to locon (or loha / lokr) to train the "
                              f"conv layers, or set {_title(f'network.{name}')} back to 0.",
                              "network-option-unused")
    if net.algo != "lokr" and net.lokr_factor != -1:
        yield Finding("network.lokr_factor", "warning",
                      f"{_title('network.lokr_factor')} is only used by LoKr.",
                      f"Set {algo} to lokr, or set it back to -1.", "network-option-unused")
    if net.algo in ("loha", "lokr") and net.dropout:
        yield Finding("network.dropout", "warning",
                      f"{_title('network.dropout')} is not applied to {net.algo} layers.",
                      f"Set it to 0, or use {algo} lora / locon for dropout.", "network-option-unused")
    if net.algo in NO_DIFFUSERS:
        yield Finding("network.algo", "info",
                      f"A {net.algo} network exports only the kohya format (ComfyUI, A1111): "
                      "diffusers' Stable Diffusion pipelines cannot load it.",
                      "Use locon if you need a diffusers file.", "network-no-diffusers")


def _job_layers(ctx: Context) -> tuple[list[str], Layers]:
    """The targets a LoRA of this job gets (explicit or the defaults) and the layers
    they are looked up in."""
    info, net = ctx.model, ctx.job.network
    assert info is not None
    layers: Layers = dict(info.linear_layers)
    if ctx.kind == "text":
        explicit = [t for t in net.target_modules if t != "all-linear"]
        return explicit or target_candidates(info), layers
    defaults = list(IMAGE_DEFAULT_TARGETS)
    if net.train_text_encoder:
        for name, in_out in info.text_encoder_layers.items():
            if name not in layers or min(in_out) < min(layers[name]):
                layers[name] = in_out
        defaults += TEXT_ENCODER_DEFAULT_TARGETS
    return list(net.target_modules) or defaults, layers


def _model_known(ctx: Context) -> bool:
    return ctx.model is not None and ctx.model.family is not None and ctx.kind == ctx.model.kind


@_check
def _rank_vs_width(ctx: Context) -> Iterable[Finding]:
    if not _model_known(ctx):
        return
    targets, layers = _job_layers(ctx)
    hit = {n for t in targets for n in matching_layers(t, layers)}
    if not hit:
        return
    name = min(sorted(hit), key=lambda n: min(layers[n]))
    width = min(layers[name])
    rank = ctx.job.network.rank
    if rank > width:
        yield Finding("network.rank", "error", f"rank {rank} exceeds {name} width {width}; valid 1..{width}",
                      f"Set {_title('network.rank')} to {width} or less (8-64 is plenty for most "
                      f"LoRAs), or leave {name} out of the target modules.", "rank-exceeds-width")


@_check
def _targets_exist(ctx: Context) -> Iterable[Finding]:
    if not _model_known(ctx) or not ctx.job.network.target_modules:
        return
    assert ctx.model is not None
    _, layers = _job_layers(ctx)
    missing = [t for t in ctx.job.network.target_modules
               if t != "all-linear" and not matching_layers(t, layers)]
    if not missing:
        return
    in_te = [t for t in missing if matching_layers(t, ctx.model.text_encoder_layers)]
    have = ", ".join(sorted(layers)[:30])
    hint = (f"{', '.join(in_te)} {'is a' if len(in_te) == 1 else 'are'} text encoder layer(s): turn on "
            f"{_title('network.train_text_encoder')} to train them. " if in_te else "")
    level = "error" if ctx.model.layers_complete else "warning"
    yield Finding("network.target_modules", level,
                  f"Target module(s) {', '.join(missing)} not found in this model.",
                  f"{hint}Layers it has: {have}. Fix or remove the missing names, or leave the list "
                  "empty for the usual defaults.", "target-modules-absent")


@_check
def _text_encoder_settings(ctx: Context) -> Iterable[Finding]:
    net, opt = ctx.job.network, ctx.job.optimizer
    if ctx.kind == "text":
        if net.train_text_encoder:
            yield Finding("network.train_text_encoder", "warning",
                          "Text models have no separate text encoder; this setting is ignored.",
                          f"Turn off {_title('network.train_text_encoder')}.", "train-te-text-job")
        for path in ("optimizer.unet_lr", "optimizer.text_encoder_lr"):
            if get_value(ctx.job, path) is not None:
                yield Finding(path, "warning", f"{_title(path)} only applies to image models and is "
                              "ignored here.", f"Clear it and use {_title('optimizer.learning_rate')}.",
                              "separate-lr-text-job")
    elif ctx.kind == "image" and opt.text_encoder_lr is not None and not net.train_text_encoder:
        yield Finding("optimizer.text_encoder_lr", "warning",
                      "A text encoder learning rate is set, but the text encoder is not trained.",
                      f"Turn on {_title('network.train_text_encoder')}, or clear this value.",
                      "te-lr-without-te")


def _relative_step(ctx: Context) -> bool:
    opt = ctx.job.optimizer
    return opt.optimizer == "Adafactor" and opt.adafactor_relative_step


@_check
def _learning_rate(ctx: Context) -> Iterable[Finding]:
    if ctx.job.optimizer.optimizer in ADAPTIVE or _relative_step(ctx):
        return  # their rates mean something else: _optimizer_rules
    for path in ("optimizer.learning_rate", "optimizer.unet_lr", "optimizer.text_encoder_lr"):
        lr = get_value(ctx.job, path)
        if lr is not None and lr > LR_HIGH:
            yield Finding(path, "warning", f"{SPECS[path].title} {lr:g} is very high for a LoRA; "
                          "training will likely break (loss 'nan' or garbage outputs).",
                          "Try 1e-4 (0.0001). Image LoRAs rarely need more than 5e-4.", "lr-very-high")


@_check
def _warmup(ctx: Context) -> Iterable[Finding]:
    opt = ctx.job.optimizer
    own_schedule = opt.optimizer in SCHEDULE_FREE or _relative_step(ctx)
    if opt.lr_warmup_steps and opt.lr_scheduler == "constant" and not own_schedule:
        yield Finding("optimizer.lr_warmup_steps", "warning",
                      "The 'constant' scheduler ignores warmup steps.",
                      "Choose 'constant_with_warmup' as the LR scheduler, or set warmup to 0.",
                      "warmup-with-constant")
    total = ctx.total_steps
    if total and opt.lr_warmup_steps >= total:
        yield Finding("optimizer.lr_warmup_steps", "warning",
                      f"Warmup ({opt.lr_warmup_steps} steps) is as long as the whole run (about {total} "
                      "steps): the learning rate never reaches its set value.",
                      f"Set {_title('optimizer.lr_warmup_steps')} to about a tenth of the run, "
                      f"e.g. {total // 10}.", "warmup-longer-than-run")


def _effective_rates(ctx: Context) -> list[tuple[str, float]]:
    """(field, rate) of each rate the optimizer's groups train with."""
    opt = ctx.job.optimizer
    if ctx.kind != "image":
        return [("optimizer.learning_rate", opt.learning_rate)]
    rates = [("optimizer.unet_lr", opt.unet_lr) if opt.unet_lr is not None
             else ("optimizer.learning_rate", opt.learning_rate)]
    if ctx.job.network.train_text_encoder:
        rates.append(("optimizer.text_encoder_lr", opt.text_encoder_lr)
                     if opt.text_encoder_lr is not None
                     else ("optimizer.learning_rate", opt.learning_rate))
    return list(dict.fromkeys(rates))


@_check
def _optimizer_rules(ctx: Context) -> Iterable[Finding]:
    opt = ctx.job.optimizer
    name = opt.optimizer
    package = missing_package(name)
    if package:
        yield Finding("optimizer.optimizer", "error",
                      f"{name} needs the '{package}' package, which is not installed.",
                      f"Install the optional optimizers: {INSTALL_OPTIMIZERS}. Or choose AdamW.",
                      "optimizer-package-missing")
    if name in ADAPTIVE:
        for path, rate in _effective_rates(ctx):
            if rate <= ADAPTIVE_LR_LOW:
                yield Finding(path, "warning",
                              f"{name} finds its own step size and multiplies it by the learning "
                              f"rate: {SPECS[path].title} {rate:g} makes every step {1 / rate:,.0f} "
                              "times smaller, so the LoRA barely trains.",
                              "Set it to 1.0 (0.5 or so only to hold the text encoder back).",
                              "adaptive-optimizer-lr")
    if _relative_step(ctx):
        ignored = [SPECS[p].title for p in ("optimizer.learning_rate", "optimizer.unet_lr",
                                            "optimizer.text_encoder_lr", "optimizer.lr_scheduler",
                                            "optimizer.lr_warmup_steps")
                   if get_value(ctx.job, p) != SPECS[p].default]
        if ignored:
            yield Finding("optimizer.adafactor_relative_step", "info",
                          "With relative step Adafactor sets its own step size; "
                          f"{', '.join(ignored)} {'is' if len(ignored) == 1 else 'are'} not used.",
                          "Nothing to do; turn relative step off to use them.",
                          "relative-step-ignores")
    if name != "Adafactor" and (opt.adafactor_relative_step or opt.adafactor_warmup_init):
        path = "optimizer.adafactor_relative_step" if opt.adafactor_relative_step \
            else "optimizer.adafactor_warmup_init"
        yield Finding(path, "warning", f"{_title(path)} is set, but the optimizer is {name}: "
                      "it is not used.", "Choose Adafactor, or turn it off.",
                      "adafactor-option-unused")
    elif opt.adafactor_warmup_init and not opt.adafactor_relative_step:
        yield Finding("optimizer.adafactor_warmup_init", "warning",
                      "Warmup init only works with Adafactor's relative step; it is not used.",
                      f"Turn on {_title('optimizer.adafactor_relative_step')} too, or turn this off.",
                      "adafactor-option-unused")
    unused = unused_options(opt)
    if unused:
        titles = ", ".join(SPECS[f"optimizer.{f}"].title for f in unused)
        yield Finding(f"optimizer.{unused[0]}", "warning", f"{titles} "
                      f"{'is' if len(unused) == 1 else 'are'} set, but {name} does not use "
                      f"{'it' if len(unused) == 1 else 'them'}.",
                      "Reset to the default, or choose an optimizer that takes "
                      f"{'it' if len(unused) == 1 else 'them'} (see each setting's help).",
                      "optimizer-option-unused")
    if name in SCHEDULE_FREE and opt.lr_scheduler not in ("constant", "constant_with_warmup"):
        yield Finding("optimizer.lr_scheduler", "warning",
                      f"{name} replaces the LR schedule: '{opt.lr_scheduler}' is not used; the rate "
                      f"stays constant after the optimizer's own warmup ({opt.lr_warmup_steps} "
                      "steps).", "Choose 'constant'.", "schedule-free-scheduler")
    for path, default, scheduler in (("optimizer.lr_scheduler_num_cycles", 1, "cosine_with_restarts"),
                                     ("optimizer.lr_scheduler_power", 1.0, "polynomial")):
        if get_value(ctx.job, path) != default and opt.lr_scheduler != scheduler:
            yield Finding(path, "warning", f"{_title(path)} only applies to the '{scheduler}' "
                          f"scheduler; '{opt.lr_scheduler}' does not use it.",
                          f"Choose '{scheduler}', or set it back to {default:g}.",
                          "scheduler-option-unused")


@_check
def _text_encoder_use(ctx: Context) -> Iterable[Finding]:
    clip_skip, net = ctx.job.model.clip_skip, ctx.job.network
    if ctx.family == "sdxl" and clip_skip > 1:
        yield Finding("model.clip_skip", "warning",
                      f"SDXL always conditions on its text encoders' penultimate layer; clip skip "
                      f"{clip_skip} is not used (kohya ignores it for SDXL too).",
                      "Set it back to 1.", "clip-skip-sdxl")
    stop = net.stop_text_encoder_training
    if ctx.kind != "image" or not stop:
        return
    if not net.train_text_encoder:
        yield Finding("network.stop_text_encoder_training", "warning",
                      "The text encoder would stop training after a number of steps, but it is "
                      "not trained at all.",
                      f"Turn on {_title('network.train_text_encoder')}, or set this to 0.",
                      "stop-te-without-te")
    elif ctx.total_steps and stop >= ctx.total_steps:
        yield Finding("network.stop_text_encoder_training", "warning",
                      f"The text encoder would stop after step {stop}, but the run has about "
                      f"{ctx.total_steps} steps: it trains to the end.",
                      f"Set it below {ctx.total_steps}, or to 0.", "stop-te-beyond-run")


@_check
def _run_length(ctx: Context) -> Iterable[Finding]:
    t, out = ctx.job.training, ctx.job.output
    if t.max_steps and t.epochs != 1:
        yield Finding("training.epochs", "warning",
                      f"Max steps is {t.max_steps}, so Epochs ({t.epochs}) is ignored.",
                      f"Set {_title('training.max_steps')} to 0 to train by epochs, or leave "
                      "Epochs at 1.", "steps-and-epochs")
    total = ctx.total_steps
    if not total:
        return
    for path, rule, what in (("output.save_every_n_steps", "save-every-beyond-run", "checkpoint"),
                             ("output.sample_every_n_steps", "sample-every-beyond-run", "sample")):
        every = get_value(ctx.job, path)
        # An interval of the whole run is no better than one past it: the last step is the
        # end of the run, which has its final adapter and sample anyway.
        if every >= total:
            yield Finding(path, "warning", f"{SPECS[path].title} is {every}, but the run is about "
                          f"{total} step{'s' if total > 1 else ''}: no {what} is made before the end.",
                          f"Set it below {total} (e.g. {max(total // 4, 1)}), or to 0." if total > 1
                          else "Set it to 0: a one-step run has nothing before the end.", rule)
    epochs = _run_epochs(ctx)
    for path, rule, what in (("output.save_every_n_epochs", "save-epochs-beyond-run", "checkpoint"),
                             ("output.sample_every_n_epochs", "sample-epochs-beyond-run", "sample")):
        every = get_value(ctx.job, path)
        if every and epochs and every >= epochs:
            yield Finding(path, "warning", f"{SPECS[path].title} is {every}, but the run is about "
                          f"{epochs} epoch{'s' if epochs > 1 else ''}: no {what} is made before the "
                          "end.", f"Set it below {epochs}, or to 0." if epochs > 1 else
                          "Set it to 0: a one-epoch run has nothing before the end.", rule)


def _run_epochs(ctx: Context) -> int | None:
    """Epochs the run starts (a last one cut short by max steps counts)."""
    t, n = ctx.job.training, ctx.samples_per_epoch
    if not t.max_steps:
        return t.epochs
    if not n:
        return None
    per_epoch = math.ceil(math.ceil(n / (t.batch_size * t.processes)) / t.gradient_accumulation_steps)
    return math.ceil(t.max_steps / per_epoch)


@_check
def _batch_vs_dataset(ctx: Context) -> Iterable[Finding]:
    n, t = ctx.samples_per_epoch, ctx.job.training
    if not n:
        return
    per_step = t.batch_size * t.processes
    what = "records" if ctx.kind == "text" else "samples (images x repeats)"
    if per_step > n:
        gpus = f" ({t.batch_size} per GPU x {t.processes} GPUs)" if t.processes > 1 else ""
        yield Finding("training.batch_size", "error",
                      f"Batch size {per_step}{gpus} is larger than the dataset ({n} {what} per epoch).",
                      f"Lower {_title('training.batch_size')} to {max(n // t.processes, 1)} or less, "
                      "or add more data / repeats.", "batch-larger-than-dataset")
    elif per_step * t.gradient_accumulation_steps > n:
        yield Finding("training.gradient_accumulation_steps", "warning",
                      f"One optimizer step needs {per_step * t.gradient_accumulation_steps} samples but an "
                      f"epoch has only {n}: each epoch makes a single, smaller step.",
                      f"Lower {_title('training.gradient_accumulation_steps')} to "
                      f"{max(n // per_step, 1)} or less.", "accumulation-exceeds-dataset")


@_check
def _sampling(ctx: Context) -> Iterable[Finding]:
    out = ctx.job.output
    prompts = [p for p in out.sample_prompts if p.strip()]
    sampling = out.sample_every_n_steps or out.sample_every_n_epochs
    if sampling and not prompts:
        yield Finding("output.sample_prompts", "warning", "Sampling is on but there are no sample prompts.",
                      f"Add one prompt per line under {_title('output.sample_prompts')}, or set "
                      f"{_title('output.sample_every_n_steps')} and "
                      f"{_title('output.sample_every_n_epochs')} to 0.", "sample-prompts-missing")
    if prompts and not sampling:
        yield Finding("output.sample_every_n_steps", "info",
                      "Sample prompts are set but sampling is off, so no samples are made.",
                      f"Set {_title('output.sample_every_n_steps')} (e.g. 100) or "
                      f"{_title('output.sample_every_n_epochs')} to see progress samples.",
                      "prompts-without-sampling")
    if ctx.kind != "image":
        return   # a text prompt's " --" is part of its text
    for number, line in enumerate(out.sample_prompts, 1):
        problems = parse_sample_prompt(line).problems
        if problems:
            shown = line if len(line) <= 60 else line[:57] + "..."
            yield Finding("output.sample_prompts", "warning",
                          f"Sample prompt {number} ('{shown}'): {'; '.join(problems)}.",
                          "Fix the option, or remove it to use the job's setting. Options: "
                          f"{', '.join('--' + o for o in PROMPT_OPTIONS)} (negative prompt, width, "
                          "height, steps, CFG scale, seed, sampler).", "sample-prompt-options")


@_check
def _saving(ctx: Context) -> Iterable[Finding]:
    out = ctx.job.output
    if out.save_last_n and not (out.save_every_n_steps or out.save_every_n_epochs):
        yield Finding("output.save_last_n", "info",
                      f"{_title('output.save_last_n')} is {out.save_last_n}, but checkpoints are "
                      "only saved at the end (and when the run is stopped or finds a better eval "
                      "loss), so there is little to delete.",
                      f"Set {_title('output.save_every_n_steps')} or "
                      f"{_title('output.save_every_n_epochs')} to save during the run.",
                      "keep-last-without-saves")


def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path.parent != path:
        path = path.parent
    return path


@_check
def _output_dir(ctx: Context) -> Iterable[Finding]:
    value = ctx.job.output.output_dir
    hint = f"Pick a folder you can write to for {_title('output.output_dir')}, e.g. one in your " \
           "Documents."
    if not value.strip():
        yield Finding("output.output_dir", "error", "No runs folder is set.", hint,
                      "output-dir-not-writable")
        return
    target = resolve_local_path(value, ctx.base_dir) or path_candidates(value, ctx.base_dir)[-1]
    existing = _nearest_existing(target)
    if not existing.is_dir():
        yield Finding("output.output_dir", "error", f"'{existing}' is a file, so the runs folder "
                      f"'{target}' cannot be created.", hint, "output-dir-not-writable")
    elif not os.access(existing, os.W_OK | os.X_OK):
        yield Finding("output.output_dir", "error", f"The folder '{existing}' cannot be written to.",
                      hint, "output-dir-not-writable")


@_check
def _data_format(ctx: Context) -> Iterable[Finding]:
    fmt = ctx.job.dataset.format
    if ctx.kind == "text" and fmt == "images":
        yield Finding("dataset.format", "error", "The data format is 'images' but the model is a text model.",
                      f"Set {_title('dataset.format')} to 'auto' or to the shape of your records.",
                      "format-vs-kind")
    if ctx.kind == "image" and fmt in TEXT_FORMATS:
        yield Finding("dataset.format", "error", f"The data format '{fmt}' is for text models, but the "
                      "model is an image model.", f"Set {_title('dataset.format')} to 'auto' or 'images'.",
                      "format-vs-kind")


@_check
def _resolution(ctx: Context) -> Iterable[Finding]:
    if ctx.kind != "image":
        return
    ds = ctx.job.dataset
    res = ds.resolution
    down, up = res // 64 * 64 or 64, (res // 64 + 1) * 64
    if res % 8:
        yield Finding("dataset.resolution", "error", f"Resolution {res} is not a multiple of 8, which "
                      "the VAE needs.", f"Use {down} or {up}.", "resolution-multiple-of-8")
    elif res % 64:
        yield Finding("dataset.resolution", "warning", f"Resolution {res} is not a multiple of 64; "
                      "Stable Diffusion works best with multiples of 64.", f"Use {down} or {up}.",
                      "resolution-multiple-of-64")
    native = ctx.model.native_resolution if ctx.model and ctx.model.kind == "image" else None
    native = native or {"sd1": 512, "sdxl": 1024}.get(ctx.family)
    if native and not 0.75 * native <= res <= 1.5 * native:
        effect = "blurry, low-detail results" if res < native else "repeated subjects and much more memory"
        yield Finding("dataset.resolution", "warning", f"Resolution {res} is far from this model's "
                      f"native {native}: expect {effect}.", f"Use {native}.", "resolution-vs-model")


@_check
def _buckets(ctx: Context) -> Iterable[Finding]:
    ds = ctx.job.dataset
    if ctx.kind != "image" or not ds.enable_bucket:
        return
    if ds.min_bucket_reso > ds.max_bucket_reso:
        yield Finding("dataset.min_bucket_reso", "error",
                      f"Min bucket side {ds.min_bucket_reso} is larger than max bucket side "
                      f"{ds.max_bucket_reso}.", "Swap them, or lower the min bucket side.",
                      "bucket-min-above-max")
    elif not ds.min_bucket_reso <= ds.resolution <= ds.max_bucket_reso:
        yield Finding("dataset.resolution", "warning",
                      f"Resolution {ds.resolution} is outside the bucket range {ds.min_bucket_reso}"
                      f"..{ds.max_bucket_reso}, so few or no buckets fit.",
                      f"Set {_title('dataset.max_bucket_reso')} to at least {ds.resolution} and "
                      f"{_title('dataset.min_bucket_reso')} to at most {ds.resolution}.",
                      "resolution-outside-buckets")
    if ds.bucket_reso_steps % 8:
        yield Finding("dataset.bucket_reso_steps", "error",
                      f"Bucket step {ds.bucket_reso_steps} is not a multiple of 8.",
                      "Use 64 (or 32, 16, 8).", "bucket-step-multiple-of-8")


@_check
def _captions(ctx: Context) -> Iterable[Finding]:
    ds = ctx.job.dataset
    if ctx.kind != "image":
        return
    if ds.keep_tokens and not ds.shuffle_caption:
        yield Finding("dataset.keep_tokens", "warning",
                      "Keep first N tags only matters when caption tags are shuffled.",
                      f"Turn on {_title('dataset.shuffle_caption')}, or set keep tokens to 0.",
                      "keep-tokens-without-shuffle")
    if ds.caption_dropout_rate >= 0.5:
        level = "error" if ds.caption_dropout_rate >= 1.0 else "warning"
        yield Finding("dataset.caption_dropout_rate", level,
                      f"Caption dropout {ds.caption_dropout_rate:g} means "
                      f"{'every step trains' if level == 'error' else 'most steps train'} with an "
                      "empty caption, so the LoRA barely learns your captions or trigger word.",
                      "Use 0.05-0.1, or 0 to keep every caption.", "caption-dropout-high")


@_check
def _latent_cache(ctx: Context) -> Iterable[Finding]:
    ds = ctx.job.dataset
    if ctx.kind != "image":
        return
    augment = [SPECS[p].title for p in ("dataset.random_crop", "dataset.flip_aug") if get_value(ctx.job, p)]
    if ds.cache_latents and augment:
        yield Finding("dataset.cache_latents", "warning",
                      f"Cache latents is on, so {' and '.join(augment)} cannot be applied.",
                      f"Turn off {_title('dataset.cache_latents')} to use them (slower), or turn them off.",
                      "cache-latents-disables-augmentation")
    if ds.cache_latents_to_disk and not ds.cache_latents:
        yield Finding("dataset.cache_latents_to_disk", "info",
                      "Latents are not cached, so caching them to disk has no effect.",
                      f"Turn on {_title('dataset.cache_latents')} to use the disk cache.",
                      "cache-to-disk-without-cache")


@_check
def _prediction_type(ctx: Context) -> Iterable[Finding]:
    declared = ctx.job.model.prediction_type
    if ctx.kind != "image" or declared == "auto":
        return
    if declared == "v_prediction" and ctx.family == "sd1":
        yield Finding("model.prediction_type", "warning",
                      "SD 1.x models predict noise (epsilon); v-prediction trains them toward the wrong "
                      "target unless this is a v-prediction fine-tune.",
                      f"Set {_title('model.prediction_type')} to 'auto' unless the model's page says "
                      "it is a v-prediction model.", "v-prediction-on-sd1")
    detected = ctx.model.prediction_type if ctx.model else None
    if detected and detected != declared:
        yield Finding("model.prediction_type", "warning",
                      f"The model was made for {detected}, but {declared} is set.",
                      f"Set {_title('model.prediction_type')} to 'auto'.", "prediction-type-mismatch")


@_check
def _noise_offset(ctx: Context) -> Iterable[Finding]:
    offset = ctx.job.training.noise_offset
    if ctx.kind == "image" and offset > 0.2:
        yield Finding("training.noise_offset", "warning",
                      f"Noise offset {offset:g} is high: images drift too dark or too bright.",
                      "Use 0.05-0.1.", "noise-offset-high")


@_check
def _sequence_length(ctx: Context) -> Iterable[Finding]:
    info, ds = ctx.model, ctx.job.dataset
    if ctx.kind != "text" or not _model_known(ctx) or not info or not info.max_position_embeddings:
        return
    limit = info.max_position_embeddings
    if ds.max_seq_length > limit:
        crash = info.absolute_positions
        yield Finding("dataset.max_seq_length", "error" if crash else "warning",
                      f"Max sequence length {ds.max_seq_length} is past this model's {limit} positions"
                      + ("; longer inputs crash it." if crash else "; quality drops past it."),
                      f"Set {_title('dataset.max_seq_length')} to {limit} or less.",
                      "max-seq-past-positions")


@_check
def _evaluation(ctx: Context) -> Iterable[Finding]:
    ds, out, tr = ctx.job.dataset, ctx.job.output, ctx.job.training
    asked = [p for p in ("output.eval_every_n_steps", "training.early_stopping_patience")
             if get_value(ctx.job, p)]
    if ds.eval_path.strip() and ctx.kind in ("text", "image") and \
            resolve_local_path(ds.eval_path, ctx.base_dir) is None:
        what = "folder of eval images" if ctx.kind == "image" else "eval dataset"
        yield Finding("dataset.eval_path", "error", f"The {what} '{ds.eval_path.strip()}' "
                      "was not found.", "Check the path, or clear it to hold out a share "
                      "instead.", "eval-path-missing")
    elif ctx.kind == "image":
        yield from _eval_images(ctx)
    has_data = ctx.kind in ("text", "image") and (ds.eval_split > 0 or bool(ds.eval_path.strip()))
    if asked and not has_data:
        items = "images" if ctx.kind == "image" else "records"
        why = (f"there are no held-out {items}: set {_title('dataset.eval_split')} or "
               f"{_title('dataset.eval_path')}")
        yield Finding(asked[0], "warning", f"{_title(asked[0])} has no effect: {why}.",
                      "Set it back to 0, or give the job held-out records.", "eval-without-data")
    if tr.early_stopping_patience and not out.eval_every_n_steps and has_data:
        yield Finding("training.early_stopping_patience", "warning",
                      "Early stopping needs evaluations during the run, but the eval loss is "
                      "only measured after the last step.",
                      f"Set {_title('output.eval_every_n_steps')} (e.g. every epoch's steps).",
                      "patience-without-evaluations")
    yield from _generation_metrics(ctx, has_data)


def _eval_images(ctx: Context) -> Iterable[Finding]:
    """The held-out images of an image job: the folder's count, or the share's."""
    ds = ctx.job.dataset
    if ds.eval_path.strip():
        path = resolve_local_path(ds.eval_path, ctx.base_dir)
        hint = ("Put a few images with captions that training should not see in it, or clear "
                f"{_title('dataset.eval_path')} and set {_title('dataset.eval_split')} instead.")
        try:
            found = scan_images(path, ds.caption_extension, 1)
        except DatasetError as exc:
            yield Finding("dataset.eval_path", "error", f"The eval images: {exc.message}",
                          hint, "eval-images-empty")
            return
        if not found.images:
            yield Finding("dataset.eval_path", "error", f"The eval image folder '{path}' holds "
                          f"no images ({', '.join(sorted(IMAGE_EXTENSIONS))}).", hint,
                          "eval-images-empty")
            return
        yield Finding("dataset.eval_path", "info", f"The eval loss is measured on "
                      f"{found.images} image(s) of '{path.name}', at fixed timesteps and noise.",
                      "Nothing to do.", "eval-images")
        return
    if not ds.eval_split or ctx.images is None or not ctx.images.images:
        return
    total = ctx.images.images
    n = max(1, round(total * ds.eval_split))
    if n >= total:
        yield Finding("dataset.eval_split", "error", f"Holding out {ds.eval_split:.0%} of "
                      f"{total} image(s) leaves none to train on.",
                      f"Lower {_title('dataset.eval_split')}, add images, or name a folder of "
                      f"held-out images in {_title('dataset.eval_path')}.",
                      "eval-split-leaves-none")
        return
    yield Finding("dataset.eval_split", "info", f"{n} of {total} image(s) are held out for the "
                  "eval loss (the same ones every run) and not trained on.",
                  "Nothing to do.", "eval-images")


# The packages that score generated answers (the metrics extra).
METRIC_PACKAGES = ("sacrebleu", "rouge_score")


def _generation_metrics(ctx: Context, has_data: bool) -> Iterable[Finding]:
    ds, out, metric = ctx.job.dataset, ctx.job.output, ctx.job.training.early_stopping_metric
    if ctx.kind != "text":
        return
    on_metric = metric != "eval_loss"
    why = (f"{_title('output.eval_generate_records')} is 0" if not out.eval_generate_records
           else f"{_title('dataset.train_on_responses_only')} is off, so the records do not "
                "say where the answer starts" if not ds.train_on_responses_only else None)
    if on_metric and why:
        yield Finding("training.early_stopping_metric", "error",
                      f"Early stopping on {metric} needs answers generated for held-out "
                      f"records, but {why}.",
                      "Change that, or set the early stopping metric to eval_loss.",
                      "eval-metric-unmeasured")
    missing = [p for p in METRIC_PACKAGES if importlib.util.find_spec(p) is None]
    if has_data and out.eval_generate_records and missing:
        yield Finding("output.eval_generate_records", "error" if on_metric else "warning",
                      f"Scoring generated answers needs {' and '.join(missing)}, which "
                      "is not installed" + (f", and early stopping is on {metric}." if on_metric
                                            else "; only the eval loss will be measured."),
                      'pip install "lora-studio[metrics]", or set it to 0.',
                      "eval-metrics-not-installed")


@_check
def _text_sources(ctx: Context) -> Iterable[Finding]:
    ds = ctx.job.dataset
    if ctx.kind != "text":
        return
    try:
        parse_columns(ds.columns)
    except SourceError as exc:
        yield Finding("dataset.columns", "error", str(exc), "Write one role=column a line.",
                      "dataset-columns-invalid")
    if ds.streaming and ds.mix:
        yield Finding("dataset.mix", "error", "Datasets cannot be mixed in while the dataset is "
                      "streamed from disk.", f"Merge them into one dataset, or turn off "
                      f"{_title('dataset.streaming')}.", "streaming-with-mix")
    try:
        sources = parse_mix(ds.mix)
    except SourceError as exc:
        yield Finding("dataset.mix", "error", str(exc), "Write one PATH @ WEIGHT a line.",
                      "dataset-mix-invalid")
        return
    for source in sources:
        if resolve_local_path(source.where, ctx.base_dir) is None and not (
                looks_like_hub_id(source.where) and cached_hub_dataset(source.where)):
            yield Finding("dataset.mix", "error", f"'{source.where}' is not a file or folder "
                          "here, nor a dataset in your Hugging Face cache.",
                          hub_hint(source.where) if looks_like_hub_id(source.where) else
                          "Check the path, or remove the line.", "dataset-mix-invalid")


@_check
def _lora_methods(ctx: Context) -> Iterable[Finding]:
    net, m = ctx.job.network, ctx.job.model
    if ctx.kind != "text":
        return
    quantized = m.load_in_4bit or m.load_in_8bit
    mutating = net.init_lora_weights in ("pissa", "olora")
    if mutating and quantized:
        yield Finding("network.init_lora_weights", "error",
                      f"'{net.init_lora_weights}' moves the base's principal directions into the "
                      "adapter, which a 4-/8-bit base cannot give back exactly.",
                      "Use 'loftq' with a 4-bit base, or load the base in full precision.",
                      "init-mutates-quantized-base")
    if net.init_lora_weights == "loftq" and not m.load_in_4bit:
        yield Finding("network.init_lora_weights", "error",
                      "LoftQ initialisation starts from what 4-bit quantisation lost, but the base "
                      "is not loaded in 4-bit.",
                      f"Turn on {_title('model.load_in_4bit')}, or choose 'pissa' or 'default'.",
                      "loftq-needs-4bit")
    if mutating and net.use_dora:
        yield Finding("network.use_dora", "error",
                      f"DoRA with '{net.init_lora_weights}' initialisation cannot be exported as "
                      "an adapter for the original model.",
                      f"Turn off {_title('network.use_dora')}, or use the default initialisation.",
                      "dora-with-mutating-init")
    info = ctx.model
    for name in net.modules_to_save:
        if name in ("lm_head", "embed_tokens", "wte", "embed_out") and info is not None \
                and info.vocab_size and info.hidden_size:
            params = info.vocab_size * info.hidden_size
            yield Finding("network.modules_to_save", "info",
                          f"'{name}' is trained in full: {params:,} parameters, about "
                          f"{params * 4 / 2**20:,.0f} MiB more in every checkpoint and export "
                          "(fp32).", "Leave it out unless you added tokens or need a new output "
                          "vocabulary.", "modules-to-save-size")


@_check
def _responses_only(ctx: Context) -> Iterable[Finding]:
    ds = ctx.job.dataset
    if ctx.kind == "text" and ds.format == "text" and ds.train_on_responses_only:
        yield Finding("dataset.train_on_responses_only", "warning",
                      "Plain-text records have no responses, so 'loss on responses only' has nothing "
                      "to train on.", f"Turn off {_title('dataset.train_on_responses_only')}.",
                      "responses-only-plain-text")


@_check
def _no_upscale(ctx: Context) -> Iterable[Finding]:
    ds = ctx.job.dataset
    if ctx.kind == "image" and ds.bucket_no_upscale and not ds.enable_bucket:
        yield Finding("dataset.bucket_no_upscale", "info",
                      f"{_title('dataset.bucket_no_upscale')} only chooses buckets, and "
                      "aspect-ratio bucketing is off: every image is trained at the "
                      "resolution's square.", f"Turn on {_title('dataset.enable_bucket')}, or "
                      "this off.", "no-upscale-without-buckets")


@_check
def _prior_weight(ctx: Context) -> Iterable[Finding]:
    ds = ctx.job.dataset
    if ctx.kind == "image" and not ds.reg_path.strip() and ds.prior_loss_weight != 1.0:
        yield Finding("dataset.prior_loss_weight", "info",
                      f"{_title('dataset.prior_loss_weight')} is {ds.prior_loss_weight:g}, but "
                      "no regularisation images are set, so it does nothing.",
                      f"Set {_title('dataset.reg_path')}, or reset the weight to 1.",
                      "prior-weight-without-reg")


@_check
def _settings_not_used(ctx: Context) -> Iterable[Finding]:
    if ctx.kind == "unknown":
        return
    other = "image" if ctx.kind == "text" else "text"
    changed = [s for s in SPECS.values()
               if s.applies_to == other and get_value(ctx.job, s.path) != s.default
               and s.path not in ("optimizer.unet_lr", "optimizer.text_encoder_lr",
                                  "network.train_text_encoder", "model.load_in_4bit",
                                  "model.load_in_8bit")]  # these have their own rules
    if changed:
        yield Finding(changed[0].path, "info",
                      f"{', '.join(s.title for s in changed)} only appl{'ies' if len(changed) == 1 else 'y'} "
                      f"to {other} models and {'is' if len(changed) == 1 else 'are'} ignored.",
                      "Nothing to do; reset them to keep the preset tidy.", "setting-not-used")


# ---------------------------------------------------------------- entry points

_LEVEL_ORDER = {"error": 0, "warning": 1, "info": 2}


def validate(job: JobConfig, gpu: Any = None, base_dir: str | os.PathLike | None = None) -> list[Finding]:
    """Every cross-field and model-aware finding for `job`, errors first.

    base_dir: the preset file's folder; relative model / dataset / output paths are
    looked up there first, then in the current folder.
    """
    ctx = Context(job, gpu, Path(base_dir) if base_dir else None)
    findings = _model_facts(ctx)
    findings += _dataset_facts(ctx)
    for rule in _CHECKS:
        findings.extend(rule(ctx))
    return sorted(findings, key=lambda f: _LEVEL_ORDER[f.level])


def check(data: dict, gpu: Any = None,
          base_dir: str | os.PathLike | None = None) -> tuple[JobConfig, list[Finding]]:
    """parse_job + validate: what the CLI and the UI call with a preset's or panel's values."""
    job, findings = parse_job(data)
    findings += validate(job, gpu=gpu, base_dir=base_dir)
    return job, sorted(findings, key=lambda f: _LEVEL_ORDER[f.level])


# Where a trusted setting is still worth a line: how sure `check` is that it is harmless.
RISK_LEVELS = {"preset-allows-pickle": "warning", "preset-custom-template": "info",
               "preset-output-elsewhere": "info", "output-name-reserved": "error"}


@_check
def _risky_settings(ctx: Context) -> Iterable[Finding]:
    for risk in risks(job_to_dict(ctx.job)):
        if risk.rule == "preset-custom-template":
            yield from _custom_template(ctx.job.dataset.chat_template, risk.message, risk.hint)
        else:
            yield Finding(risk.path, RISK_LEVELS[risk.rule], risk.message, risk.hint, risk.rule)


def _custom_template(source: str, message: str, hint: str) -> Iterable[Finding]:
    try:
        report = preflight(source)
    except TemplateProblem as exc:
        yield Finding("dataset.chat_template", "error", exc.message, exc.hint, "chat-template-fails")
        return
    yield Finding("dataset.chat_template", "info",
                  f"{message} It renders a sample conversation in {report.seconds * 1000:.1f} ms "
                  f"({report.rendered:,} characters).", hint, "preset-custom-template")
