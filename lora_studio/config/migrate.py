"""Bring a preset written for an older schema version up to the current one.

Schema 1 (LoRA Studio 0.0.x) kept every setting flat in one ``[train]`` table under
kohya-like names (``network_dim``, ``train_batch_size``, ``resolution = "512,512"``)
and described the VRAM need as ``[meta] vram_gb = 8``. Schema 2 splits the settings
into the JobConfig sections.

``migrate`` works on the whole preset document (``[meta]`` included) and returns
the new document plus notes, as Findings: info for every change made, warning for
a setting that has no equivalent and was dropped.
"""
from __future__ import annotations

import copy
from typing import Callable

from .fields import set_in
from .findings import Finding
from .kohya import parse_resolution
from .schema import SCHEMA_VERSION

V1_FAMILIES = {"sd15": "sd1", "sd1": "sd1", "sd2": "sd2", "sd21": "sd2", "sdxl": "sdxl",
               "llm": "text", "text": "text", "auto": "auto"}

# Schema 1 [train] key -> schema 2 path; values carry over unchanged.
V1_KEYS = {
    "pretrained_model": "model.path",
    "load_in_4bit": "model.load_in_4bit",
    "train_data_dir": "dataset.path",
    "caption_extension": "dataset.caption_extension",
    "enable_bucket": "dataset.enable_bucket",
    "shuffle_caption": "dataset.shuffle_caption",
    "keep_tokens": "dataset.keep_tokens",
    "flip_aug": "dataset.flip_aug",
    "cache_latents": "dataset.cache_latents",
    "max_seq_len": "dataset.max_seq_length",
    "network_dim": "network.rank",
    "network_alpha": "network.alpha",
    "network_dropout": "network.dropout",
    "train_text_encoder": "network.train_text_encoder",
    "optimizer_type": "optimizer.optimizer",
    "learning_rate": "optimizer.learning_rate",
    "unet_lr": "optimizer.unet_lr",
    "text_encoder_lr": "optimizer.text_encoder_lr",
    "lr_scheduler": "optimizer.lr_scheduler",
    "lr_warmup_steps": "optimizer.lr_warmup_steps",
    "max_grad_norm": "optimizer.max_grad_norm",
    "max_train_epochs": "training.epochs",
    "max_train_steps": "training.max_steps",
    "train_batch_size": "training.batch_size",
    "gradient_accumulation_steps": "training.gradient_accumulation_steps",
    "mixed_precision": "training.mixed_precision",
    "gradient_checkpointing": "training.gradient_checkpointing",
    "seed": "training.seed",
    "noise_offset": "training.noise_offset",
    "min_snr_gamma": "training.min_snr_gamma",
    "output_name": "output.output_name",
    "output_dir": "output.output_dir",
    "save_every_n_steps": "output.save_every_n_steps",
    "sample_every_n_steps": "output.sample_every_n_steps",
}
# Keys converted by _v1_train_value rather than copied.
V1_CONVERTED = {"model_type": "model.family", "resolution": "dataset.resolution",
                "target_modules": "network.target_modules", "sample_prompts": "output.sample_prompts"}


def _info(path: str, message: str) -> Finding:
    return Finding(path, "info", message, "Save the preset to store it in the current format.", "migrated")


def _v1_train_value(key: str, value, notes: list[Finding]):
    """The schema 2 value of a converted v1 key; raises ValueError when it does not fit."""
    if key == "model_type":
        family = V1_FAMILIES.get(str(value).lower())
        if family is None:
            raise ValueError(f"unknown model type (known: {', '.join(V1_FAMILIES)})")
        return family
    if key == "resolution":
        side, note = parse_resolution(value)
        if note:
            notes.append(_info("dataset.resolution", f"train.resolution {note}"))
        return side
    if key == "target_modules":
        if isinstance(value, str):
            return [m.strip() for m in value.split(",") if m.strip()]
        return value
    if isinstance(value, str):  # sample_prompts: one prompt a line
        return [line.strip() for line in value.splitlines() if line.strip()]
    return value


def _v1_to_v2(doc: dict) -> tuple[dict, list[Finding]]:
    notes: list[Finding] = []
    meta = doc.setdefault("meta", {}) if isinstance(doc.get("meta", {}), dict) else {}
    if "vram_gb" in meta:
        value = meta.pop("vram_gb")
        meta["vram_class"] = f"{value:g}GB" if isinstance(value, (int, float)) else str(value)
        notes.append(_info("meta.vram_class", f"meta.vram_gb = {value} became vram_class = "
                                              f"\"{meta['vram_class']}\"."))
    if "family" in meta:
        family = meta.pop("family")
        meta["model_family"] = V1_FAMILIES.get(str(family).lower(), family)
    train = doc.pop("train", {})
    if not isinstance(train, dict):
        notes.append(Finding("train", "warning", "[train] is not a table of settings and was ignored.",
                             "Write it as [train] with key = value lines.", "migrate-dropped"))
        return doc, notes
    moved = []
    for key, value in train.items():
        if key in V1_KEYS:
            set_in(doc, V1_KEYS[key], value)
            moved.append(f"{key} → {V1_KEYS[key]}")
        elif key in V1_CONVERTED:
            path = V1_CONVERTED[key]
            try:
                set_in(doc, path, _v1_train_value(key, value, notes))
                moved.append(f"{key} → {path}")
            except (TypeError, ValueError) as exc:
                notes.append(Finding(path, "warning", f"train.{key} = {value!r} could not be converted "
                                     f"({exc}); the default is used.", f"Set {path} yourself.",
                                     "migrate-value"))
        else:
            notes.append(Finding(f"train.{key}", "warning", f"Setting 'train.{key}' from schema 1 has no "
                                 "equivalent now and was ignored.",
                                 "Remove it; 'lora-studio check --list-keys' lists the current keys.",
                                 "migrate-dropped"))
    if moved:
        notes.insert(0, _info("", "This preset was written for schema version 1 and was updated: "
                                  + ", ".join(moved) + "."))
    return doc, notes


STEPS: dict[int, Callable[[dict], tuple[dict, list[Finding]]]] = {1: _v1_to_v2}


def migrate(data: dict, from_version: int) -> tuple[dict, list[Finding]]:
    """`data` (a whole preset document) brought from `from_version` to SCHEMA_VERSION.

    The input is not changed. ValueError for a version this code never wrote.
    """
    if from_version not in STEPS and from_version != SCHEMA_VERSION:
        raise ValueError(f"schema version {from_version} is not one LoRA Studio has used "
                         f"(1 to {SCHEMA_VERSION})")
    doc = copy.deepcopy(data)
    notes: list[Finding] = []
    for version in range(from_version, SCHEMA_VERSION):
        doc, step_notes = STEPS[version](doc)
        notes.extend(step_notes)
    if isinstance(doc.get("meta"), dict):
        doc["meta"]["schema_version"] = SCHEMA_VERSION
    return doc, notes
