"""What each serving target cannot take from a text adapter, said before anything is
written: llama.cpp and Ollama (the GGUF exports), vLLM (the PEFT folder) and the merged
model. Plain data and functions (no torch): the window and ``lora-studio export
--target`` show the same findings."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import PurePosixPath, PureWindowsPath

from ..config.jobfile import JobFileError, read_job_toml
from ..config.model_info import ModelInfoError, inspect_model
from .exports import TEXT_ADAPTER, TEXT_ADAPTER_CONFIG
from .layout import RunDir

TARGETS = ("llama.cpp", "ollama", "vllm", "merged")
TARGET_FORMAT = {"llama.cpp": "gguf-adapter", "ollama": "gguf-adapter", "vllm": "peft",
                 "merged": "merged"}
FORMAT_TARGETS = {"gguf-adapter": ("llama.cpp", "ollama"), "gguf-f16": ("llama.cpp", "ollama"),
                  "gguf-q8_0": ("llama.cpp", "ollama"), "peft": ("vllm",), "merged": ("merged",)}

# transformers architectures -> the llama.cpp architecture our GGUF writer maps them to;
# engine/text/gguf_export.py holds what each needs (permutation, norms).
GGUF_ARCHITECTURES = {"LlamaForCausalLM": "llama", "MistralForCausalLM": "llama",
                      "Qwen2ForCausalLM": "qwen2", "Qwen3ForCausalLM": "qwen3",
                      "GemmaForCausalLM": "gemma", "Gemma2ForCausalLM": "gemma2"}
# Architectures vLLM serves LoRA adapters for (its SupportsLoRA models, the common ones).
VLLM_LORA_ARCHITECTURES = frozenset({
    "LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM",
    "GemmaForCausalLM", "Gemma2ForCausalLM", "Gemma3ForCausalLM", "Phi3ForCausalLM",
    "MixtralForCausalLM", "GPT2LMHeadModel", "GPTBigCodeForCausalLM", "Starcoder2ForCausalLM",
    "GraniteForCausalLM", "OlmoForCausalLM", "Olmo2ForCausalLM"})
VLLM_MAX_LORA_RANK = 16   # vLLM's --max-lora-rank default
EMBEDDING_MODULES = ("lm_head", "embed_tokens", "wte", "embed_out", "word_embeddings")
TARGET_NAMES = {"llama.cpp": "llama.cpp", "ollama": "Ollama", "vllm": "vLLM",
                "merged": "the merged model"}


@dataclass(frozen=True)
class Finding:
    target: str
    message: str     # what the target cannot take, in plain words
    fix: str
    blocking: bool   # the export would not load (else: it loads once the fix is applied)


def _as_list(value) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value]


def is_absolute_path(text: str) -> bool:
    """An absolute path on the exporting or any other system (C:\\..., /home/...)."""
    return PurePosixPath(text).is_absolute() or PureWindowsPath(text).is_absolute()


def check_adapter(target: str, adapter: dict, architectures: tuple[str, ...]) -> list[Finding]:
    """What ``target`` cannot take from the PEFT adapter whose adapter_config.json is
    ``adapter``, on a base model of ``architectures`` (config.json's; empty: unknown)."""
    name = TARGET_NAMES[target]
    found: list[Finding] = []

    def add(message: str, fix: str, blocking: bool = True) -> None:
        found.append(Finding(target, message, fix, blocking))

    if target == "merged":
        return found   # PEFT's merge_and_unload takes DoRA, modules_to_save and any rank
    gguf = target in ("llama.cpp", "ollama")
    if adapter.get("use_dora"):
        add(f"{name} cannot load DoRA adapters: their magnitude vectors have no place in "
            f"{'a GGUF LoRA' if gguf else 'its LoRA layers'}.",
            "Export the merged model instead (it bakes DoRA in), or retrain with "
            "network.use_dora = false.")
    saved = _as_list(adapter.get("modules_to_save"))
    if saved:
        add(f"{name} cannot load layers trained in full (modules_to_save: {', '.join(saved)}); "
            "it would drop them and the model would lose that part of the fine-tune.",
            "Export the merged model instead, or retrain with network.modules_to_save empty.")
    targets = _as_list(adapter.get("target_modules"))
    embedding = [t for t in targets if t.rsplit(".", 1)[-1] in EMBEDDING_MODULES]
    if embedding:
        add(f"{name} cannot load a LoRA on the embedding or output layer "
            f"({', '.join(embedding)}).",
            "Export the merged model instead, or retrain without "
            f"{' and '.join(embedding)} in network.target_modules.")
    arch = architectures[0] if architectures else ""
    if gguf and arch not in GGUF_ARCHITECTURES:
        add(f"{name}: the GGUF export does not know the architecture "
            f"{arch or '(unknown: the base model could not be read)'}; it knows "
            f"{', '.join(sorted(GGUF_ARCHITECTURES))}.",
            "Export the PEFT adapter or the merged model (transformers format) instead.")
    if target == "vllm":
        rank = int(adapter.get("r") or 0)
        if rank > VLLM_MAX_LORA_RANK:
            add(f"vLLM refuses LoRA ranks above {VLLM_MAX_LORA_RANK} unless told; this adapter "
                f"has rank {rank}.",
                f"Start vLLM with --max-lora-rank {_vllm_rank(rank)}, or retrain with "
                f"network.rank <= {VLLM_MAX_LORA_RANK}.", blocking=False)
        if arch and arch not in VLLM_LORA_ARCHITECTURES:
            add(f"vLLM may not serve LoRA adapters for {arch}.",
                "Check vLLM's list of models with LoRA support, or export the merged model.",
                blocking=False)
        base = str(adapter.get("base_model_name_or_path") or "")
        if base and is_absolute_path(base):
            add(f"adapter_config.json names the base model by a folder on this computer "
                f"({base}); vLLM and other computers cannot find it there.",
                "Start vLLM with --model set to the base model's Hub id or its folder on the "
                "serving machine, or set model.path to a Hub id before training.",
                blocking=False)
    return found


def _vllm_rank(rank: int) -> int:
    """The smallest of vLLM's accepted --max-lora-rank values that fits ``rank``."""
    return next((r for r in (8, 16, 32, 64, 128, 256, 320, 512) if r >= rank),
                2 ** math.ceil(math.log2(rank)))


def check_run(run: RunDir, target: str) -> list[Finding]:
    """check_adapter for the finished text run ``run``: its final/adapter_config.json on
    its job's base model; nothing for a run with no adapter yet (the export says so)."""
    try:
        adapter = json.loads((run.final / TEXT_ADAPTER_CONFIG).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    if not isinstance(adapter, dict) or not (run.final / TEXT_ADAPTER).exists():
        return []
    try:
        job, _ = read_job_toml(run.job_toml)
        architectures = inspect_model(job.model.path,
                                      allow_pickle=job.model.allow_pickle).architectures
    except (JobFileError, ModelInfoError):
        architectures = ()
    return check_adapter(target, adapter, architectures)


def describe(findings: list[Finding]) -> str:
    """The findings as lines a person reads: the problem, then the fix."""
    return "\n".join(f"{'Cannot' if f.blocking else 'Note'} ({TARGET_NAMES[f.target]}): "
                     f"{f.message}\n  fix: {f.fix}" for f in findings)
