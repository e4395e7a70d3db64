"""Round-trip checks of text exports: the export is loaded back by its own runtime and
compared with PEFT (the base model with the run's adapter) on fixed prompts, formatted as
training formatted them; the figures go to verify.json beside the export
(runs/roundtrip.py reads it back).

- merged model: transformers loads the written folder; its logits on every prompt
  position must match PEFT's within TOLERANCE of the largest logit, and must differ from
  the base model's by more than that (a merge that lost the adapter is an error).
- GGUF (adapter with the base, merged f16 / q8_0): where llama-cpp-python is installed,
  llama.cpp's greedy continuations are compared with PEFT's token for token; quantised
  or 16-bit weights may flip a near tie, so a difference is reported, not refused.
"""
from __future__ import annotations

import importlib.metadata
import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from ...fsutil import atomic_write_text
from ...runs.roundtrip import LLAMACPP_MISSING, VERIFY
from ..core.control import EngineError
from .tokens import prompt_ids

PROMPTS = ("Hello!", "What colour is a banana?", "Write one sentence about the sea, please.")
NEW_TOKENS = 8
# Largest |export logit - PEFT logit| as a share of the largest |logit|, by the dtype the
# merged weights are saved in: fp32 differs only by the order of sums; 16-bit by rounding
# each merged weight.
TOLERANCE = {torch.float32: 1e-4, torch.float16: 3e-2, torch.bfloat16: 5e-2}


@dataclass(frozen=True)
class Reference:
    """What PEFT (base + adapter) and the base alone compute on the fixed prompts."""
    prompts: tuple[str, ...]
    ids: tuple[tuple[int, ...], ...]             # each prompt's token ids
    logits: tuple[torch.Tensor, ...]             # PEFT's, every prompt position, fp32
    base_logits: tuple[torch.Tensor, ...]        # the base model's without the adapter
    greedy: tuple[tuple[int, ...], ...]          # PEFT's greedy continuation
    eos: int | None


def _greedy(model, ids: tuple[int, ...], eos: int | None) -> tuple[int, ...]:
    out = model.generate(torch.tensor([ids], device=model.device), max_new_tokens=NEW_TOKENS,
                         do_sample=False, pad_token_id=eos if eos is not None else 0)
    return tuple(out[0, len(ids):].tolist())


def _logits(model, ids: tuple[int, ...]) -> torch.Tensor:
    return model(torch.tensor([ids], device=model.device)).logits[0].float().cpu()


def peft_reference(model, tokenizer, use_template: bool) -> Reference:
    """``model``: a PeftModel, before it is merged."""
    ids = tuple(tuple(prompt_ids(tokenizer, p, use_template)) for p in PROMPTS)
    model.eval()
    with torch.no_grad():
        logits = tuple(_logits(model, i) for i in ids)
        greedy = tuple(_greedy(model, i, tokenizer.eos_token_id) for i in ids)
        with model.disable_adapter():
            base = tuple(_logits(model, i) for i in ids)
    return Reference(PROMPTS, ids, logits, base, greedy, tokenizer.eos_token_id)


def _same_prefix(a, b) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def _prompt_rows(reference: Reference, got: list[tuple[int, ...]], tokenizer) -> list[dict]:
    return [{"prompt": p, "peft": tokenizer.decode(want, skip_special_tokens=True),
             "export": tokenizer.decode(have, skip_special_tokens=True),
             "tokens": len(want), "same_tokens": _same_prefix(want, have)}
            for p, want, have in zip(reference.prompts, reference.greedy, got)]


def write_verify(folder: Path, check: dict) -> Path:
    path = folder / VERIFY
    atomic_write_text(path, json.dumps(check, indent=1, ensure_ascii=False) + "\n")
    return path


def verify_merged(folder: Path, reference: Reference, tokenizer) -> dict:
    """transformers loads the merged folder back; verify.json is written into it. Raises
    EngineError when its logits are not PEFT's, or are the base model's."""
    from transformers import AutoModelForCausalLM
    merged = AutoModelForCausalLM.from_pretrained(str(folder), dtype="auto").eval()
    dtype = next(merged.parameters()).dtype
    worst = scale = base_diff = adapter_diff = 0.0
    with torch.no_grad():
        got = [_greedy(merged, ids, reference.eos) for ids in reference.ids]
        for ids, want, base in zip(reference.ids, reference.logits, reference.base_logits):
            have = _logits(merged, ids)
            worst = max(worst, float((have - want).abs().max()))
            scale = max(scale, float(want.abs().max()))
            base_diff = max(base_diff, float((have - base).abs().max()))
            adapter_diff = max(adapter_diff, float((want - base).abs().max()))
    del merged
    tolerance = TOLERANCE.get(dtype, TOLERANCE[torch.float16])
    relative = worst / max(scale, 1e-12)
    differs = base_diff / max(scale, 1e-12) > tolerance
    check = {"checked": True, "export": "merged model",
             "runtime": f"transformers {importlib.metadata.version('transformers')}",
             "dtype": str(dtype).removeprefix("torch."), "max_abs_diff": worst,
             "largest_logit": scale, "relative_diff": relative, "tolerance": tolerance,
             "base_diff": base_diff, "adapter_diff": adapter_diff, "differs_from_base": differs,
             "passed": relative <= tolerance and differs,
             "prompts": _prompt_rows(reference, got, tokenizer)}
    write_verify(folder, check)
    if not differs:
        why = ("the adapter itself does not change the model's logits (is it trained?)"
               if adapter_diff / max(scale, 1e-12) <= tolerance else
               "merging lost the adapter")
        raise EngineError("internal", f"The merged model computes what the base model computes: "
                                      f"{why}; nothing was written.",
                          "Check the run trained (its loss fell), then export again; the PEFT "
                          "adapter export keeps the adapter separate.")
    if relative > tolerance:
        raise EngineError("internal", f"The merged model loaded back differs from PEFT's base + "
                                      f"adapter by {relative:.3g} of the largest logit "
                                      f"(tolerance {tolerance:g}); nothing was written.",
                          "Export the PEFT adapter instead, and report this with the run's "
                          "job.toml.")
    return check


# --- GGUF, through llama.cpp's Python binding ----------------------------------------------

def llama_cpp_or_none():
    try:
        import llama_cpp
    except ImportError:
        return None
    return llama_cpp


def _llama_greedy(llm, ids: tuple[int, ...], eos: int | None) -> tuple[list[int], torch.Tensor]:
    """llama.cpp's greedy continuation and its logits for the first new token."""
    llm.reset()
    llm.eval(list(ids))
    first = torch.from_numpy(llm.scores[llm.n_tokens - 1].copy()).float()
    llm.reset()
    got: list[int] = []
    for token in llm.generate(list(ids), temp=0.0, top_k=1, reset=True):
        got.append(token)
        if len(got) == NEW_TOKENS or token == eos:
            break
    return got, first


def verify_gguf(llama_cpp, model_path: Path, reference: Reference, tokenizer, export: str,
                lora_path: Path | None = None) -> dict:
    """llama.cpp's greedy answers against PEFT's on the fixed prompts."""
    kwargs = {"lora_path": str(lora_path)} if lora_path is not None else {}
    context = max(len(i) for i in reference.ids) + NEW_TOKENS + 8
    # logits_all: llama-cpp-python keeps no logits otherwise (its sampler runs in llama.cpp).
    llm = llama_cpp.Llama(model_path=str(model_path), n_ctx=context, logits_all=True,
                          verbose=False, **kwargs)
    got, worst, scale, from_base = [], 0.0, 0.0, 0.0
    try:
        for ids, want, base in zip(reference.ids, reference.logits, reference.base_logits):
            tokens, first = _llama_greedy(llm, ids, reference.eos)
            got.append(tuple(tokens))
            worst = max(worst, float((first - want[-1]).abs().max()))
            scale = max(scale, float(want[-1].abs().max()))
            from_base = max(from_base, float((first - base[-1]).abs().max()))
    finally:
        llm.close()
    rows = _prompt_rows(reference, got, tokenizer)
    # The next token's logits nearer PEFT's than the base model's: the adapter is in.
    adapted = worst < from_base
    return {"checked": True, "export": export,
            "runtime": f"llama.cpp (llama-cpp-python {llama_cpp.__version__})",
            "first_token_max_abs_diff": worst, "first_token_base_diff": from_base,
            "largest_logit": scale, "adapter_applied": adapted,
            "passed": adapted and all(r["same_tokens"] == r["tokens"] for r in rows),
            "prompts": rows}


def gguf_not_checked() -> dict:
    return {"checked": False, "reason": LLAMACPP_MISSING}


def temp_base_gguf(write, state_dict: dict) -> tuple[Path, Path]:
    """A scratch f16 GGUF of the base model for llama.cpp to apply the adapter GGUF to:
    (its folder, to remove, and the file); ``write(path, state_dict)`` writes it."""
    folder = Path(tempfile.mkdtemp(prefix="lora-studio-base-gguf-"))
    try:
        path = folder / "base-f16.gguf"
        write(path, state_dict)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return folder, path
