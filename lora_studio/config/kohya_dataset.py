"""Import the dataset config TOML of kohya's sd-scripts (``--dataset_config``, which
kohya_ss configs name in ``dataset_config``)::

    [general]
    shuffle_caption = true
    caption_extension = ".txt"
    [[datasets]]
    resolution = 768
    batch_size = 2
    [[datasets.subsets]]
    image_dir = "/data/img/sks dog"
    num_repeats = 10
    class_tokens = "sks dog"
    [[datasets.subsets]]
    image_dir = "/data/reg/dog"
    is_reg = true

Each subset becomes a concept folder line (data/subsets.py) with the settings it
carries; a subset option may sit in the subset, its dataset or [general], the nearest
winning, as in kohya. Settings LoRA Studio keeps once per job (buckets, batch size,
flip, crop, caption dropout) come from [general] or the first dataset, and a dataset
that differs is named. Like kohya, only the listed folders train.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..data.subsets import Subset, subset_line
from .findings import Finding

# Options kohya lets a subset, its dataset or [general] carry: ours per concept folder.
SUBSET_OPTIONS = ("num_repeats", "caption_extension", "shuffle_caption", "keep_tokens",
                  "class_tokens", "is_reg")
# kohya option -> (job path, kind): one value per job, from [general] / the first dataset.
JOB_OPTIONS: dict[str, tuple[str, str]] = {
    "batch_size": ("training.batch_size", "int"),
    "enable_bucket": ("dataset.enable_bucket", "bool"),
    "min_bucket_reso": ("dataset.min_bucket_reso", "int"),
    "max_bucket_reso": ("dataset.max_bucket_reso", "int"),
    "bucket_reso_steps": ("dataset.bucket_reso_steps", "int"),
    "bucket_no_upscale": ("dataset.bucket_no_upscale", "bool"),
    "flip_aug": ("dataset.flip_aug", "bool"),
    "random_crop": ("dataset.random_crop", "bool"),
    "caption_dropout_rate": ("dataset.caption_dropout_rate", "float"),
}
# Subset options whose job-wide default comes from [general].
GENERAL_DEFAULTS = {"caption_extension": ("dataset.caption_extension", "str"),
                    "shuffle_caption": ("dataset.shuffle_caption", "bool"),
                    "keep_tokens": ("dataset.keep_tokens", "int")}
KNOWN = set(SUBSET_OPTIONS) | set(JOB_OPTIONS) | {"image_dir", "resolution"}


@dataclass
class DatasetImport:
    values: dict[str, Any] = field(default_factory=dict)       # job path -> value
    findings: list[Finding] = field(default_factory=list)
    unsupported: dict[str, Any] = field(default_factory=dict)  # "datasets[0].x" -> value


def _common_root(dirs: list[str]) -> str:
    parents = [os.path.dirname(os.path.normpath(d)) or "." for d in dirs]
    try:
        return os.path.commonpath(parents)
    except ValueError:  # absolute and relative, or two drives
        return ""


def convert_dataset_config(config: dict, side_of: Callable[[Any], int],
                           where: str = "dataset_config") -> DatasetImport:
    """A parsed dataset config TOML as JobConfig values; never raises for bad values.
    side_of: kohya's resolution (512, [512, 768], "512,768") as our square side, or
    ValueError (kohya.parse_resolution)."""
    out = DatasetImport()
    general = config.get("general", {}) if isinstance(config.get("general"), dict) else {}
    datasets = [d for d in config.get("datasets", []) if isinstance(d, dict)] \
        if isinstance(config.get("datasets"), list) else []
    for key, value in general.items():
        if key not in KNOWN:
            out.unsupported[f"general.{key}"] = value
    for key, (path, _) in GENERAL_DEFAULTS.items():
        if key in general:
            out.values[path] = general[key]
    job_values: dict[str, Any] = {k: general[k] for k in JOB_OPTIONS if k in general}
    resolution = None
    subsets: list[tuple[Subset, int | None]] = []
    for n, dataset in enumerate(datasets):
        for key, value in dataset.items():
            if key not in KNOWN and key != "subsets":
                out.unsupported[f"datasets[{n}].{key}"] = value
        for key in JOB_OPTIONS:
            if key in dataset:
                if key not in job_values:
                    job_values[key] = dataset[key]
                elif dataset[key] != job_values[key]:
                    out.findings.append(Finding(
                        JOB_OPTIONS[key][0], "warning", f"{where}: datasets[{n}] sets {key} = "
                        f"{dataset[key]!r}, but a job has one {key}; {job_values[key]!r} is used.",
                        "Train that dataset as a job of its own if it needs its own value.",
                        "kohya-unsupported"))
        side = dataset.get("resolution", general.get("resolution"))
        try:
            side = side_of(side) if side is not None else None
        except (TypeError, ValueError):
            out.findings.append(Finding("dataset.resolution", "warning", f"{where}: datasets[{n}] "
                                        f"resolution = {side!r} is not a resolution; the job's "
                                        "is used.", "Set it in the concept folder lines.",
                                        "kohya-value"))
            side = None
        if resolution is None:
            resolution = side
        for m, sub in enumerate(dataset.get("subsets", []) if isinstance(dataset.get("subsets"),
                                                                         list) else []):
            subset = _subset(sub, dataset, general, f"{where}: datasets[{n}].subsets[{m}]", out,
                             job_values)
            if subset is not None:
                subsets.append((subset, side))
    for key, value in job_values.items():
        out.values[JOB_OPTIONS[key][0]] = value
    if resolution is not None:
        out.values["dataset.resolution"] = resolution
    if subsets:
        root = _common_root([s.folder for s, _ in subsets])
        lines = []
        for subset, side in subsets:
            folder = os.path.relpath(subset.folder, root) if root else subset.folder
            lines.append(subset_line(Subset(
                folder, subset.repeats, subset.caption_extension, subset.shuffle_caption,
                subset.keep_tokens, side if side is not None and side != resolution else None,
                subset.class_tokens, subset.is_reg)))
        out.values["dataset.subsets"] = lines
        if root:
            out.values["dataset.path"] = root
    return out


def _subset(sub: Any, dataset: dict, general: dict, where: str, out: DatasetImport,
            job_values: dict) -> Subset | None:
    if not isinstance(sub, dict):
        return None
    if "image_dir" not in sub:
        out.findings.append(Finding(
            "dataset.subsets", "warning", f"{where} has no image_dir (a fine-tuning subset with "
            "metadata_file?) and was not imported.", "LoRA Studio trains folders of images with "
            "caption files beside them: add the folder as a concept folder line.",
            "kohya-unsupported"))
        out.unsupported.update({f"{where}.{k}": v for k, v in sub.items()})
        return None
    for key, value in sub.items():
        if key not in KNOWN:
            out.unsupported[f"{where.split(': ', 1)[-1]}.{key}"] = value
        elif key in JOB_OPTIONS and job_values.setdefault(key, value) != value:
            out.findings.append(Finding(JOB_OPTIONS[key][0], "warning", f"{where} sets {key} = "
                                        f"{value!r} for its folder; LoRA Studio has one {key} "
                                        "per job.", "Check whether that folder needed it.",
                                        "kohya-unsupported"))

    def option(key: str) -> Any:
        for table in (sub, dataset, general):
            if key in table:
                return table[key]
        return None

    ext = option("caption_extension")
    try:
        return Subset(str(sub["image_dir"]), int(option("num_repeats") or 1),
                      str(ext) if ext and ext != general.get("caption_extension") else None,
                      _differs(option("shuffle_caption"), general.get("shuffle_caption")),
                      _differs(option("keep_tokens"), general.get("keep_tokens")),
                      None, str(option("class_tokens")) if option("class_tokens") else None,
                      bool(option("is_reg")))
    except (TypeError, ValueError):
        out.findings.append(Finding("dataset.subsets", "warning", f"{where}: num_repeats = "
                                    f"{option('num_repeats')!r} is not a number; the folder was "
                                    "not imported.", "Add it as a concept folder line yourself.",
                                    "kohya-value"))
        return None


def _differs(value: Any, default: Any) -> Any:
    return None if value is None or value == default else value
