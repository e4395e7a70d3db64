"""GGUF exports of a text run for llama.cpp and Ollama, written with the ``gguf`` package
in the layouts llama.cpp's own converters write:

- the LoRA adapter (convert_lora_to_gguf.py): ``general.type = adapter``,
  ``adapter.type = lora``, ``adapter.lora.alpha``, the base model's hyperparameters, and
  ``<gguf tensor name>.lora_a`` / ``.lora_b`` (PEFT's A (r, in) and B (out, r));
- the merged model (convert_hf_to_gguf.py) in f16 or q8_0, with the tokenizer and its
  chat template in the metadata.

Llama-family attention is stored with the rows of Q and K regrouped per head
(``permute``), as llama.cpp's rotary embedding expects; for a LoRA that is B's rows.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...runs.export_check import GGUF_ARCHITECTURES

ADAPTER_PREFIX = "base_model.model."


@dataclass(frozen=True)
class GgufArch:
    name: str                    # gguf.MODEL_ARCH member
    permute_qk: bool             # convert_hf_to_gguf's LlamaModel.permute on q_proj / k_proj
    norm_plus_one: bool = False  # Gemma's RMSNorm scales by 1 + weight; llama.cpp by weight
    softcapping: bool = False    # Gemma 2's logit soft-capping and sliding window keys


ARCHS = {"llama": GgufArch("LLAMA", True), "qwen2": GgufArch("QWEN2", False),
         "qwen3": GgufArch("QWEN3", False), "gemma": GgufArch("GEMMA", False, True),
         "gemma2": GgufArch("GEMMA2", False, True, True)}

# Merged-model precisions: (gguf.LlamaFileType member, quantisation of 2-D weights).
PRECISIONS = {"f16": ("MOSTLY_F16", "F16"), "q8_0": ("MOSTLY_Q8_0", "Q8_0")}


class GgufExportError(Exception):
    """The model cannot be written as GGUF; the message says why and what to do."""


def arch_of(model_config: dict) -> GgufArch:
    architecture = (model_config.get("architectures") or [""])[0]
    if architecture not in GGUF_ARCHITECTURES:
        raise GgufExportError(
            f"The GGUF export does not know the architecture {architecture or '(none named)'}; "
            f"it knows {', '.join(sorted(GGUF_ARCHITECTURES))}. Export the PEFT adapter or "
            "the merged model instead.")
    return ARCHS[GGUF_ARCHITECTURES[architecture]]


def permute(weights: np.ndarray, n_head: int, n_head_kv: int | None) -> np.ndarray:
    """llama.cpp's row order for a Q or K projection (and a LoRA B feeding one): within
    each head, the two rotary halves interleaved."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return (weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
            .swapaxes(1, 2).reshape(weights.shape))


def _permuted(name: str, data: np.ndarray, arch: GgufArch, config: dict) -> np.ndarray:
    if not arch.permute_qk:
        return data
    heads = config["num_attention_heads"]
    if ".q_proj." in name:
        return permute(data, heads, heads)
    if ".k_proj." in name:
        return permute(data, heads, config.get("num_key_value_heads") or heads)
    return data


def _writer(path: Path, arch: GgufArch, config: dict):
    import gguf
    writer = gguf.GGUFWriter(str(path), gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH[arch.name]])
    heads = config["num_attention_heads"]
    head_dim = config.get("head_dim") or config["hidden_size"] // heads
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(config["hidden_size"])
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(heads)
    writer.add_head_count_kv(config.get("num_key_value_heads") or heads)
    writer.add_layer_norm_rms_eps(config.get("rms_norm_eps", 1e-6))
    writer.add_rope_freq_base(_rope_theta(config))
    writer.add_rope_dimension_count(head_dim)
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    writer.add_vocab_size(config["vocab_size"])
    if arch.softcapping:
        writer.add_attn_logit_softcapping(config["attn_logit_softcapping"])
        writer.add_final_logit_softcapping(config["final_logit_softcapping"])
        writer.add_sliding_window(config["sliding_window"])
    return writer


def _rope(config: dict) -> dict:
    return config.get("rope_parameters") or config.get("rope_scaling") or {}


def _rope_theta(config: dict) -> float:
    return float(_rope(config).get("rope_theta") or config.get("rope_theta") or 10000.0)


def llama3_rope_factors(config: dict) -> np.ndarray | None:
    """llama.cpp's ``rope_freqs.weight`` for Llama 3.1+ rope scaling: per rotary frequency,
    what it is divided by (1 for short wavelengths, ``factor`` for long ones, a smooth
    blend between); None for unscaled rope. Other scalings are refused."""
    rope = _rope(config)
    kind = rope.get("rope_type") or rope.get("type") or "default"
    if kind == "default":
        return None
    if kind != "llama3":
        raise GgufExportError(f"The base model uses {kind} rope scaling, which the GGUF export "
                              "does not write. Export the merged model in transformers format "
                              "instead.")
    heads = config["num_attention_heads"]
    dim = config.get("head_dim") or config["hidden_size"] // heads
    freqs = 1.0 / (_rope_theta(config) ** (np.arange(0, dim, 2, dtype=np.float64) / dim))
    factor = rope.get("factor", 8.0)
    low, high = rope.get("low_freq_factor", 1.0), rope.get("high_freq_factor", 4.0)
    old_context = rope.get("original_max_position_embeddings", 8192)
    wavelen = 2 * math.pi / freqs
    smooth = (old_context / wavelen - low) / (high - low)
    factors = np.where(wavelen < old_context / high, 1.0,
                       np.where(wavelen > old_context / low, factor,
                                1 / ((1 - smooth) / factor + smooth)))
    return factors.astype(np.float32)


def _tensor_map(arch: GgufArch, config: dict):
    import gguf
    return gguf.get_tensor_name_map(gguf.MODEL_ARCH[arch.name], config["num_hidden_layers"])


def gguf_name(tensor_map, hf_name: str) -> str:
    """The GGUF name of a transformers weight (``model.layers.0.self_attn.q_proj.weight``
    -> ``blk.0.attn_q.weight``)."""
    name = tensor_map.get_name(hf_name, try_suffixes=(".weight", ".bias"))
    if name is None:
        raise GgufExportError(f"No GGUF name for the weight {hf_name}. Export the PEFT adapter "
                              "or the merged model in transformers format instead.")
    return name


def _finish(writer) -> None:
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def write_adapter_gguf(path: Path, tensors: dict, adapter_config: dict, model_config: dict,
                       name: str) -> None:
    """``tensors``: PEFT's adapter state dict (``...q_proj.lora_A.weight``, torch tensors)."""
    import gguf
    arch = arch_of(model_config)
    tensor_map = _tensor_map(arch, model_config)
    rank = int(adapter_config["r"])
    alpha = float(adapter_config["lora_alpha"])
    if adapter_config.get("use_rslora"):
        alpha *= math.sqrt(rank)   # llama.cpp scales by alpha / r; rsLoRA by alpha / sqrt(r)
    writer = _writer(path, arch, model_config)
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, alpha)
    writer.add_name(name)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    other = sorted(k for k in tensors if not k.endswith((".lora_A.weight", ".lora_B.weight")))
    if other:
        raise GgufExportError(f"The adapter holds tensors a GGUF LoRA has no place for "
                              f"({', '.join(other[:3])}{', ...' if len(other) > 3 else ''}). "
                              "Export the merged model instead.")
    for key in sorted(tensors):
        if ".lora_A." not in key:
            continue
        base = key.removeprefix(ADAPTER_PREFIX).replace(".lora_A.weight", ".weight")
        target = gguf_name(tensor_map, base)
        a = tensors[key].float().numpy()
        b = tensors[key.replace(".lora_A.", ".lora_B.")].float().numpy()
        writer.add_tensor(f"{target}.lora_a", np.ascontiguousarray(a))
        writer.add_tensor(f"{target}.lora_b",
                          np.ascontiguousarray(_permuted(base, b, arch, model_config)))
    _finish(writer)


def _vocab(tokenizer_dir: Path):
    from gguf.vocab import BpeVocab, LlamaHfVocab
    for kind in (BpeVocab, LlamaHfVocab):
        try:
            return kind(tokenizer_dir)
        except (FileNotFoundError, TypeError, ValueError, KeyError):
            continue
    raise GgufExportError(f"The tokenizer in {tokenizer_dir} is neither a byte-level BPE nor a "
                          "SentencePiece-style tokenizer.json; the GGUF export cannot write it.")


# tokenizer.json pre-tokenizer -> llama.cpp's tokenizer.ggml.pre
PRE_TOKENIZERS = {"ByteLevel": "gpt-2"}
PRE_BY_MODEL_TYPE = {"llama": "llama-bpe", "qwen2": "qwen2", "qwen3": "qwen2"}


def _pre_tokenizer(tokenizer_dir: Path, model_type: str) -> str | None:
    """llama.cpp's name for how the text is split before BPE, or None (llama.cpp then
    uses its default split)."""
    try:
        pre = json.loads((tokenizer_dir / "tokenizer.json").read_text(encoding="utf-8"))
        pre = pre.get("pre_tokenizer") or {}
    except (OSError, ValueError):
        return None
    if pre.get("type") in PRE_TOKENIZERS and pre.get("use_regex", True):
        return PRE_TOKENIZERS[pre["type"]]
    if pre.get("type") == "Sequence":
        return PRE_BY_MODEL_TYPE.get(model_type)
    return None


def _added_tokens(tokenizer_dir: Path) -> dict[int, bool]:
    """tokenizer.json's added tokens (also those inside the vocabulary): id -> special."""
    try:
        data = json.loads((tokenizer_dir / "tokenizer.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {int(t["id"]): bool(t.get("special")) for t in data.get("added_tokens") or []}


def _parts(step: dict | None) -> list[dict]:
    if not step:
        return []
    return [p for inner in step.get("normalizers") or step.get("pretokenizers") or [step]
            for p in _parts(inner)] if step.get("type") == "Sequence" else [step]


def adds_space_prefix(tokenizer_dir: Path) -> bool:
    """Whether a SentencePiece-style tokenizer.json puts '▁' before the text (Llama 2,
    Mistral; Gemma does not): llama.cpp's add_space_prefix, true unless told."""
    try:
        data = json.loads((tokenizer_dir / "tokenizer.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return True
    for step in _parts(data.get("normalizer")) + _parts(data.get("pre_tokenizer")):
        if step.get("type") == "Prepend" and step.get("prepend") == "\u2581":
            return True
        if step.get("type") == "Metaspace":
            return step.get("prepend_scheme", "always") != "never" and \
                step.get("add_prefix_space", True)
    return False


def merge_scores(tokenizer_dir: Path, tokens: list, scores: list[float]) -> list[float]:
    """Scores for llama.cpp's SentencePiece-style tokenizer, which joins the adjacent pair
    whose result scores highest: from tokenizer.json's merge order (gguf's LlamaHfVocab
    scores every token the same, which would join pairs in the wrong order)."""
    try:
        model = json.loads((tokenizer_dir / "tokenizer.json").read_text(encoding="utf-8"))["model"]
    except (OSError, ValueError, KeyError):
        return scores
    ids = {(t.decode("utf-8") if isinstance(t, bytes) else t): i for i, t in enumerate(tokens)}
    scores = list(scores)
    seen = set()
    for rank, merge in enumerate(model.get("merges") or []):
        left, right = merge.split(" ", 1) if isinstance(merge, str) else merge
        token_id = ids.get(left + right)
        if token_id is not None and token_id not in seen:
            seen.add(token_id)
            scores[token_id] = -float(rank)
    return scores


def add_tokenizer(writer, tokenizer_dir: Path, model_type: str, bos_first: bool = False,
                  chat_template: str | None = None, n_vocab: int | None = None) -> None:
    """tokenizer.ggml.*: the model (gpt2 / llama), tokens, scores, token types, merges,
    special ids and tokenizer.chat_template, from a saved tokenizer folder. ``bos_first``:
    the chat template begins with the BOS token, so llama.cpp must add it (its chat code
    drops the template's own, and Ollama's template leaves it out). ``chat_template``: the
    one training used, in place of the folder's. ``n_vocab``: the embedding's rows, which
    llama.cpp needs one token each for."""
    import gguf
    vocab = _vocab(tokenizer_dir)
    tokens, scores, types = [], [], []
    for text, score, kind in vocab.all_tokens():
        tokens.append(text)
        scores.append(score)
        types.append(kind)
    if vocab.tokenizer_model == "llama":
        scores = merge_scores(tokenizer_dir, tokens, scores)
        writer.add_add_space_prefix(adds_space_prefix(tokenizer_dir))
    if n_vocab is not None and len(tokens) > n_vocab:
        raise GgufExportError(f"The tokenizer in {tokenizer_dir} has {len(tokens)} tokens but "
                              f"the model's embedding only {n_vocab}; the GGUF would not load. "
                              "Export the merged model in transformers format instead.")
    for i in range(len(tokens), n_vocab or 0):   # rows of the embedding no token uses (Qwen)
        tokens.append(f"[PAD{i}]")
        scores.append(0.0)
        types.append(gguf.TokenType.UNUSED)
    for token_id, special in _added_tokens(tokenizer_dir).items():
        if token_id < len(types):   # special ones are parsed as one token and may end a turn
            types[token_id] = gguf.TokenType.CONTROL if special else gguf.TokenType.USER_DEFINED
    writer.add_tokenizer_model(vocab.tokenizer_model)
    if vocab.tokenizer_model == "gpt2":
        pre = _pre_tokenizer(tokenizer_dir, model_type)
        if pre:
            writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    special = gguf.SpecialVocab(tokenizer_dir, load_merges=vocab.tokenizer_model == "gpt2",
                                n_vocab=len(tokens))
    if chat_template:
        special.chat_template = chat_template
    special.add_to_gguf(writer, quiet=True)
    if bos_first and "bos" not in special.add_special_token:
        writer.add_add_bos_token(True)


def write_merged_gguf(path: Path, state_dict: dict, model_config: dict, tokenizer_dir: Path,
                      precision: str, name: str, bos_first: bool = False,
                      chat_template: str | None = None) -> None:
    """The merged model's weights (``state_dict``, transformers names) as a GGUF model
    llama.cpp and Ollama load, in ``precision`` ('f16' or 'q8_0'); norms stay f32, and a
    weight whose rows do not split into q8_0 blocks of 32 stays f16."""
    import gguf
    from gguf.quants import quantize
    arch = arch_of(model_config)
    tensor_map = _tensor_map(arch, model_config)
    file_type, weight_type = PRECISIONS[precision]
    rope_factors = llama3_rope_factors(model_config)
    writer = _writer(path, arch, model_config)
    writer.add_name(name)
    writer.add_file_type(gguf.LlamaFileType[file_type])
    add_tokenizer(writer, tokenizer_dir, model_config.get("model_type", ""), bos_first,
                  chat_template, model_config["vocab_size"])
    if rope_factors is not None:
        writer.add_tensor(gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.ROPE_FREQS] + ".weight",
                          rope_factors)
    tied = model_config.get("tie_word_embeddings", False)
    for key in sorted(state_dict):
        if tied and key == "lm_head.weight":
            continue   # llama.cpp reuses token_embd for the output when there is none
        data = _permuted(key, state_dict[key].float().numpy(), arch, model_config)
        if arch.norm_plus_one and key.endswith("norm.weight"):
            data = data + 1
        target = gguf_name(tensor_map, key)
        if data.ndim == 1:
            writer.add_tensor(target, np.ascontiguousarray(data, dtype=np.float32))
        elif weight_type == "Q8_0" and data.shape[-1] % 32 == 0:
            qtype = gguf.GGMLQuantizationType.Q8_0
            writer.add_tensor(target, quantize(np.ascontiguousarray(data), qtype), raw_dtype=qtype)
        else:
            writer.add_tensor(target, np.ascontiguousarray(data, dtype=np.float16))
    _finish(writer)
