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
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import __version__
from ..config.jobfile import JobFileError, read_job_toml
from ..config.model_info import looks_like_hub_id
from ..config.schema import SCHEMA_VERSION, JobConfig
from ..fsutil import (atomic_write_bytes, atomic_write_text, sha256_file, temp_beside,
                      temp_dir_beside)
from ..runs.exports import (IMAGE_ADAPTER, TEXT_ADAPTER, default_format, format_names,
                            run_family)
from ..runs.layout import RunDir
from .control import EngineError

ADAPTER_WEIGHTS = TEXT_ADAPTER
ADAPTER_CONFIG = "adapter_config.json"
META_PREFIX = "lora_studio."


@dataclass(frozen=True)
class Exported:
    format: str       # a name from runs.exports.FORMATS
    path: Path
    sha256: str


def atomic_save_safetensors(tensors: dict, path: str | Path,
                            metadata: dict[str, str] | None = None) -> Path:
    """save_file to a temp file beside ``path``, put its header in canonical order, fsync,
    rename over it. Streams to disk, so large merged models are not held twice in memory."""
    from safetensors.torch import save_file
    path = Path(path)
    fd, tmp = temp_beside(path)
    mode = stat.S_IMODE(os.fstat(fd).st_mode)
    os.close(fd)
    try:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, tmp,
                  metadata=metadata)
        # safetensors 0.8 writes its own 0600 temp file and renames it over ours.
        os.chmod(tmp, mode)
        canonicalise_header(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def canonical_header(header: dict) -> bytes:
    """The safetensors header as sorted, compact JSON padded with spaces to a multiple
    of 8 (the format aligns the data that way)."""
    text = json.dumps(header, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    return text + b" " * (-len(text) % 8)


def canonicalise_header(file: Path) -> None:
    """Rewrite the header of the safetensors file ``file`` canonically, and fsync it.

    safetensors writes ``__metadata__`` in a random order (a Rust HashMap), so the same
    export would get a new SHA-256 each time. Data offsets are relative to the end of
    the header, so the data bytes stay as they are: patched in place when the header
    keeps its length (what save_file writes always does), streamed after the new header
    into a second temp file otherwise."""
    with open(file, "r+b") as fh:
        old_len = int.from_bytes(fh.read(8), "little")
        header = canonical_header(json.loads(fh.read(old_len)))
        if len(header) == old_len:
            fh.seek(8)
            fh.write(header)
            fh.flush()
            os.fsync(fh.fileno())
            return
        out_fd, out = temp_beside(file)
        try:
            with os.fdopen(out_fd, "wb") as dest:
                dest.write(len(header).to_bytes(8, "little") + header)
                shutil.copyfileobj(fh, dest, 1 << 20)
                dest.flush()
                os.fsync(dest.fileno())
        except BaseException:
            out.unlink(missing_ok=True)
            raise
    os.replace(out, file)


def read_metadata(path: str | Path) -> dict[str, str]:
    from safetensors import safe_open
    with safe_open(str(path), framework="pt") as fh:
        return dict(fh.metadata() or {})


def shareable_model_name(source: str) -> str:
    """A Hub id as it is, a local model by its file or folder name only: the header of
    a LoRA people share must not carry the trainer's folders (and user name)."""
    if looks_like_hub_id(source) and not Path(source).exists():
        return source
    return Path(source).name


def training_metadata(job: JobConfig, *, family: str, steps: int, dataset_size: int,
                      base_model: str) -> dict[str, str]:
    """What the adapter was trained from, as safetensors header strings."""
    values: dict[str, Any] = {
        "base_model": shareable_model_name(base_model), "family": family,
        "rank": job.network.rank,
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
    tmp = temp_dir_beside(folder)
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


def export_run(run_root: str | Path, fmt: str | None = None) -> list[Exported]:
    """``lora-studio export RUN_DIR [--format FORMAT]``: the run's trained LoRA into
    ``exports/`` in one format (the family's default when None). Text: ``peft``
    (``<name>/``, the adapter folder) or ``merged`` (``<name>-merged/``, a full model);
    image: ``kohya`` (``<name>.safetensors``) or ``diffusers`` (``<name>-diffusers/``).
    Returns every file written, with its SHA-256."""
    run = RunDir(Path(run_root))
    if not run.job_toml.exists():
        raise EngineError("config", f"{run.root} is not a run folder (no job.toml).",
                          "Pass a folder under your runs folder, e.g. runs/my_lora-20250101-120000.")
    try:
        job, _ = read_job_toml(run.job_toml)
    except JobFileError as exc:
        raise EngineError("config", str(exc), "Restore the run's job.toml; the trained adapter "
                                              "in final/ is untouched.") from None
    family = run_family(run)
    trained = {"text": TEXT_ADAPTER, "image": IMAGE_ADAPTER}.get(family or "")
    if trained is None or not (run.final / trained).exists():
        raise EngineError("config", f"{run.root} has no trained adapter in final/ yet.",
                          "Let the run finish, or resume it: lora-studio train --resume "
                          f"\"{run.root}\".")
    fmt = fmt or default_format(family)
    if fmt not in format_names(family):
        raise EngineError("config", f"'{fmt}' is not an export format for {family} runs.",
                          f"Use --format {' or '.join(format_names(family))}.")
    if family == "image":
        from .sd_export import export_sd
        return export_sd(run, job, (fmt,))
    if fmt == "merged":
        folder = _export_merged_text(job, run)
        written = sorted(p for p in folder.rglob("*") if p.is_file())
    else:
        written = copy_adapter(run.final, run.exports / job.output.output_name)
    return [Exported(fmt, path, sha256_file(path)) for path in written]


def _export_merged_text(job: JobConfig, run: RunDir) -> Path:
    from peft import PeftModel

    from .text import load_base_model, load_tokenizer, resolve_model
    info = resolve_model(job)
    metadata = read_metadata(run.final / ADAPTER_WEIGHTS)
    base = load_base_model(job, info.path, quantize=False)
    model = PeftModel.from_pretrained(base, str(run.final))
    return write_merged_model(model.merge_and_unload(), load_tokenizer(info.path),
                              run.exports / f"{job.output.output_name}-merged", metadata)
