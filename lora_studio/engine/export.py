"""Atomic safetensors writes with training metadata, and the text adapter exports.

A text run writes its adapter as a PEFT folder (``adapter_model.safetensors`` +
``adapter_config.json``) to ``final/`` and ``exports/<output_name>/``; on request a
merged full model to ``exports/<output_name>-merged/``. Every file is written to a
temp file and renamed into place, and a merged model is built in a temp folder and
swapped in whole, so an interrupted export never leaves a half file.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from .. import __version__
from ..config.jobfile import read_job_toml
from ..config.schema import SCHEMA_VERSION, JobConfig
from ..fsutil import atomic_write_bytes, atomic_write_text
from ..runs.layout import RunDir
from .control import EngineError

ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
META_PREFIX = "lora_studio."


def atomic_save_safetensors(tensors: dict, path: str | Path,
                            metadata: dict[str, str] | None = None) -> Path:
    """save_file to a temp file beside ``path``, fsync, rename over it. Streams to disk,
    so large merged models are not held twice in memory."""
    from safetensors.torch import save_file
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, tmp,
                  metadata=metadata)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path


def read_metadata(path: str | Path) -> dict[str, str]:
    from safetensors import safe_open
    with safe_open(str(path), framework="pt") as fh:
        return dict(fh.metadata() or {})


def training_metadata(job: JobConfig, *, family: str, steps: int, dataset_size: int,
                      base_model: str) -> dict[str, str]:
    """What the adapter was trained from, as safetensors header strings."""
    values: dict[str, Any] = {
        "base_model": base_model, "family": family, "rank": job.network.rank,
        "alpha": f"{job.network.alpha:g}", "steps": steps, "dataset_size": dataset_size,
        "learning_rate": f"{job.optimizer.learning_rate:g}", "seed": job.training.seed,
        "output_name": job.output.output_name, "schema_version": SCHEMA_VERSION,
        "version": __version__,
    }
    return {"format": "pt", **{META_PREFIX + k: str(v) for k, v in values.items()}}


def write_peft_adapter(model, folder: str | Path, metadata: dict[str, str],
                       base_model: str) -> list[Path]:
    """The PEFT adapter of ``model`` (a PeftModel) as a folder PeftModel.from_pretrained loads."""
    from peft import get_peft_model_state_dict
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    weights = atomic_save_safetensors(get_peft_model_state_dict(model), folder / ADAPTER_WEIGHTS,
                                      metadata)
    config = model.peft_config["default"].to_dict()
    config.update(base_model_name_or_path=base_model, inference_mode=True)
    config = {k: sorted(v) if isinstance(v, set) else v for k, v in config.items()}
    atomic_write_text(folder / ADAPTER_CONFIG, json.dumps(config, indent=2, sort_keys=True) + "\n")
    return [weights, folder / ADAPTER_CONFIG]


def copy_adapter(source: Path, folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name in (ADAPTER_WEIGHTS, ADAPTER_CONFIG):
        atomic_write_bytes(folder / name, (source / name).read_bytes())
        written.append(folder / name)
    return written


def _swap_in(tmp: Path, folder: Path) -> None:
    """Replace ``folder`` by ``tmp`` so that a reader sees the old or the new one."""
    old = folder.with_name(f".{folder.name}.old")
    if old.exists():
        shutil.rmtree(old)
    if folder.exists():
        os.replace(folder, old)
    os.replace(tmp, folder)
    if old.exists():
        shutil.rmtree(old)


def write_merged_model(merged, tokenizer, folder: str | Path, metadata: dict[str, str]) -> Path:
    """A transformers model folder (sharded safetensors, config, tokenizer) with the
    training metadata in every shard's header."""
    from safetensors.torch import load_file
    folder = Path(folder)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=folder.parent))
    try:
        merged.save_pretrained(tmp, max_shard_size="2GB")
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        for shard in sorted(tmp.glob("*.safetensors")):
            atomic_save_safetensors(load_file(shard), shard, {**read_metadata(shard), **metadata})
        _swap_in(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def export_run(run_root: str | Path, merged: bool = False) -> list[Path]:
    """``lora-studio export RUN_DIR [--merged]``: the run's trained adapter into
    ``exports/``, and the merged full model when asked."""
    run = RunDir(Path(run_root))
    if not run.job_toml.exists():
        raise EngineError("config", f"{run.root} is not a run folder (no job.toml).",
                          "Pass a folder under your runs folder, e.g. runs/my_lora-20250101-120000.")
    job, _ = read_job_toml(run.job_toml)
    if not (run.final / ADAPTER_WEIGHTS).exists():
        raise EngineError("config", f"{run.root} has no trained adapter in final/ yet.",
                          "Let the run finish, or resume it: lora-studio train --resume "
                          f"\"{run.root}\".")
    out = run.exports / job.output.output_name
    written = copy_adapter(run.final, out)
    if merged:
        written.append(_export_merged_text(job, run))
    return written


def _export_merged_text(job: JobConfig, run: RunDir) -> Path:
    from peft import PeftModel

    from .text import load_base_model, load_tokenizer, resolve_model
    info = resolve_model(job)
    if info.family != "text":
        raise EngineError("config", "A merged export is made for text models only.",
                          "Use the adapter in exports/ with your image tool.")
    metadata = read_metadata(run.final / ADAPTER_WEIGHTS)
    base = load_base_model(job, info.path, quantize=False)
    model = PeftModel.from_pretrained(base, str(run.final))
    return write_merged_model(model.merge_and_unload(), load_tokenizer(info.path),
                              run.exports / f"{job.output.output_name}-merged", metadata)
