"""The text adapter exports.

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
from collections.abc import Callable
from pathlib import Path

from ...config.schema import JobConfig
from ...fsutil import atomic_write_bytes, atomic_write_text, settle, sha256_file, temp_dir_beside
from ...runs.exports import TEXT_ADAPTER, default_name
from ...runs.layout import RunDir
from ..core.family import Exported
from ..core.safetensors_io import atomic_save_safetensors, read_metadata

ADAPTER_WEIGHTS = TEXT_ADAPTER
ADAPTER_CONFIG = "adapter_config.json"


def as_plain_lora(trained: dict, initial: dict, config: dict) -> tuple[dict, dict]:
    """A PiSSA / OLoRA adapter as a plain LoRA of the original base. Those inits move
    the base's principal directions into the adapter (W = W_res + s·B0·A0), so the trained
    adapter fits only the residual base; for W itself the update is
    s·(B·A − B0·A0) = s·[B | −B0]·[A ; A0]: twice the rank, the same scale (PEFT's
    subtract_mutated_init and save_pretrained's conversion)."""
    import torch
    tensors = {}
    for name, t in trained.items():
        if "lora_A" in name:
            tensors[name] = torch.cat([t, initial[name]], dim=0)
        elif "lora_B" in name:
            tensors[name] = torch.cat([t, -initial[name]], dim=1)
        else:
            tensors[name] = t
    scale = 2 ** 0.5 if config.get("use_rslora") else 2
    return tensors, {**config, "r": config["r"] * 2, "lora_alpha": config["lora_alpha"] * scale,
                     "init_lora_weights": True}


def write_peft_adapter(model, folder: str | Path, metadata: dict[str, str],
                       base_model: str, initial: dict | None = None) -> list[Path]:
    """The PEFT adapter of ``model`` (a PeftModel) as a folder PeftModel.from_pretrained
    loads. ``initial``: the adapter as a PiSSA / OLoRA init left it (see as_plain_lora)."""
    from peft import get_peft_model_state_dict
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = get_peft_model_state_dict(model)
    config = model.peft_config["default"].to_dict()
    if initial is not None:
        tensors, config = as_plain_lora(tensors, initial, config)
    weights = atomic_save_safetensors(tensors, folder / ADAPTER_WEIGHTS, metadata)
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


MANIFEST = ".lora-studio-export.json"   # the files an export wrote into its folder


def _ours(folder: Path) -> bool:
    """Whether ``folder`` is absent, or holds nothing but what an earlier export wrote."""
    if not folder.exists():
        return True
    try:
        listed = set(json.loads((folder / MANIFEST).read_text(encoding="utf-8"))["files"])
    except (OSError, ValueError, KeyError, TypeError):
        return False
    present = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
    return present - {MANIFEST} <= listed


def export_folder(wanted: Path) -> Path:
    """``wanted``, or ``wanted-2``, ``-3``... when the folder holds files an export did not
    write: a user's own files there are never replaced."""
    folder, n = wanted, 1
    while not _ours(folder):
        n += 1
        folder = wanted.with_name(f"{wanted.name}-{n}")
    return folder


def write_merged_model(merged, tokenizer, wanted: str | Path, metadata: dict[str, str],
                       check: Callable[[Path], object] | None = None) -> Path:
    """A transformers model folder (sharded safetensors, config, tokenizer) with the
    training metadata in every shard's header, at ``wanted`` or beside it (export_folder);
    returns the folder written. ``check(folder)`` runs on the complete folder before it
    takes its place (it may add files); when it raises, nothing is written."""
    from safetensors.torch import load_file
    folder = export_folder(Path(wanted))
    tmp = temp_dir_beside(folder)
    try:
        merged.save_pretrained(tmp, max_shard_size="2GB")
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        for shard in sorted(tmp.glob("*.safetensors")):
            atomic_save_safetensors(load_file(shard), shard, {**read_metadata(shard), **metadata})
        if check is not None:
            check(tmp)
        files = sorted(p.relative_to(tmp).as_posix() for p in tmp.rglob("*") if p.is_file())
        atomic_write_text(tmp / MANIFEST, json.dumps({"files": files}, indent=1) + "\n")
        _swap_in(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def export(run: RunDir, job: JobConfig, fmt: str, out_dir: Path | None = None,
           name: str | None = None, precision: str | None = None) -> list[Exported]:
    """In ``out_dir`` (the run's exports/): ``peft``, the adapter folder ``<name>/``
    (beside it with -2 when that folder holds something else); ``merged``,
    ``<name>-merged/``, the base model with the adapter merged in, checked against PEFT
(verify.json); ``gguf-*``, a GGUF
    folder with an Ollama Modelfile (gguf_folder.py); ``onnx*``, an ONNX model
    folder checked with onnxruntime (onnx_export.py). ``precision`` is
    for image LoRAs; engine/exports.py refuses it here."""
    out_dir = out_dir or run.exports
    out_dir.mkdir(parents=True, exist_ok=True)
    wanted = out_dir / (name or default_name(fmt, job.output.output_name))
    if fmt.startswith("gguf-"):
        from .gguf_folder import export_gguf
        written = export_gguf(job, run, fmt, wanted, name or job.output.output_name)
    elif fmt.startswith("onnx"):
        from .onnx_export import export_onnx
        written = sorted(p for p in export_onnx(job, run, fmt, wanted).rglob("*") if p.is_file())
    elif fmt == "merged":
        folder = _export_merged_text(job, run, wanted)
        written = sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST)
    else:
        tmp = temp_dir_beside(wanted)
        try:
            copy_adapter(run.final, tmp)
            folder = settle(tmp, wanted)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        written = [folder / ADAPTER_WEIGHTS, folder / ADAPTER_CONFIG]
    return [Exported(fmt, path, sha256_file(path)) for path in written]


def _export_merged_text(job: JobConfig, run: RunDir, wanted: Path) -> Path:
    """The merged model, loaded back by transformers and compared with PEFT's base +
    adapter before it is kept (verify.py; verify.json beside it)."""
    from peft import PeftModel

    from .model import load_base_model, load_tokenizer, resolve_model
    from .tokens import template_in_use
    from .verify import peft_reference, verify_merged
    info = resolve_model(job)
    metadata = read_metadata(run.final / ADAPTER_WEIGHTS)
    tokenizer = load_tokenizer(info.path)
    base = load_base_model(job, info.path, quantize=False)
    model = PeftModel.from_pretrained(base, str(run.final))
    # Prompts formatted as training formatted them; template_in_use may set a custom
    # template on its tokenizer, which the saved tokenizer does not take.
    prompting = load_tokenizer(info.path)
    reference = peft_reference(model, prompting,
                               template_in_use(prompting, job.dataset.chat_template))
    return write_merged_model(model.merge_and_unload(), tokenizer, wanted, metadata,
                              lambda folder: verify_merged(folder, reference, prompting))
