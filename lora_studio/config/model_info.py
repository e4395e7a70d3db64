"""Facts about a base model, read without loading its weights (and without torch).

Sources, by what the user picked:
- a transformers folder: ``config.json`` (+ the headers of its ``*.safetensors`` shards);
- a diffusers folder: ``model_index.json``, ``unet/``, ``text_encoder*/``, ``scheduler/``, ``vae/``;
- a single-file checkpoint (``.safetensors``): only its JSON header is read;
- a Hub id (``owner/name``): looked up in the local Hugging Face cache, never downloaded.

Layer widths are keyed by *short names*, the suffix PEFT matches target modules
against (``q_proj``, ``to_out.0``, ``ff.net.0.proj``). Where several layers share
a short name, the narrowest one is kept: it is the one that limits the LoRA rank.
"""
from __future__ import annotations

import json
import os
import re
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from ..errors import HintedError
from .paths import clean_path_text, path_candidates, resolve_local_path

Family = Literal["text", "sd1", "sd2", "sdxl"]
Format = Literal["transformers", "diffusers", "single_file", "pickle"]
Layers = dict[str, tuple[int, int]]  # short name -> (in_features, out_features)

PICKLE_SUFFIXES = frozenset({".ckpt", ".pt", ".pth", ".bin", ".pkl"})
_FLOAT_DTYPES = frozenset({"F16", "BF16", "F32", "F64", "F8_E4M3", "F8_E5M2"})
_MAX_HEADER_BYTES = 100 * 1024 * 1024
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_DIFFUSERS_SUBFOLDERS = ("unet", "text_encoder", "text_encoder_2", "scheduler", "vae")

# GPT-2 family layers are transformers' Conv1D: their weight is stored (in, out).
_CONV1D_MODEL_TYPES = frozenset({"gpt2", "openai-gpt", "imagegpt"})
_CONV1D_NAMES = frozenset({"c_attn", "c_proj", "c_fc", "q_attn"})
# Model types whose layers follow Llama's names, so widths can come from config.json alone.
_LLAMA_STYLE = frozenset({"llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text",
                          "granite", "olmo", "olmo2", "smollm3", "cohere", "helium", "glm"})

TEXT_DEFAULT_CANDIDATES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                           "down_proj", "c_attn", "c_proj", "c_fc", "query_key_value", "qkv_proj",
                           "Wqkv", "dense")
ATTENTION_CANDIDATES = ("q_proj", "k_proj", "v_proj", "o_proj", "c_attn", "query_key_value",
                        "qkv_proj", "Wqkv")
ALL_LINEAR = "all-linear"  # PEFT's own name: every linear layer but the output head
IMAGE_DEFAULT_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")
TEXT_ENCODER_DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj")

# Original (CompVis / SGM) UNet names -> the diffusers names the trainer uses.
# Transformer-block names (to_q, proj_in, ff.net.2, ...) are identical in both.
_SINGLE_FILE_UNET_NAMES = {
    "in_layers.2": "conv1", "out_layers.3": "conv2", "skip_connection": "conv_shortcut",
    "emb_layers.1": "time_emb_proj", "time_embed.0": "linear_1", "time_embed.2": "linear_2",
    "input_blocks.0.0": "conv_in", "out.2": "conv_out", "op": "conv", "conv": "conv",
    "to_q": "to_q", "to_k": "to_k", "to_v": "to_v", "to_out.0": "to_out.0",
    "proj_in": "proj_in", "proj_out": "proj_out", "ff.net.0.proj": "ff.net.0.proj",
    "ff.net.2": "ff.net.2",
}
_OPENCLIP_NAMES = {"c_fc": "fc1", "c_proj": "fc2", "out_proj": "out_proj"}


class ModelInfoError(HintedError):
    """The model could not be read. `reason` is one of: empty, missing, pickle,
    malformed, unsupported."""


@dataclass(frozen=True)
class ModelInfo:
    source: str                      # what the user typed
    path: Path                       # the file or folder it resolved to
    format: Format
    family: Family | None            # None: cannot tell without loading (pickle)
    model_type: str = ""
    architectures: tuple[str, ...] = ()
    causal_lm: bool | None = None    # text models: an LM head the trainer can use
    hidden_size: int | None = None
    intermediate_size: int | None = None
    num_attention_heads: int | None = None
    num_key_value_heads: int | None = None
    head_dim: int | None = None
    max_position_embeddings: int | None = None
    vocab_size: int | None = None
    num_hidden_layers: int | None = None
    absolute_positions: bool = False  # learned position table: longer inputs crash
    prediction_type: str | None = None      # "epsilon" / "v_prediction"; None: unknown
    cross_attention_dim: int | None = None
    native_resolution: int | None = None
    vae_force_upcast: bool | None = None    # False: an fp16-safe VAE
    linear_layers: Layers = field(default_factory=dict)       # LM or UNet
    text_encoder_layers: Layers = field(default_factory=dict)  # image models' CLIP(s)
    layers_complete: bool = True     # False: names translated or derived; some may be missing
    weight_files: tuple[Path, ...] = ()
    pickle_weights: bool = False     # the weights exist only as pickle files
    notes: tuple[str, ...] = ()

    @property
    def kind(self) -> Literal["text", "image"] | None:
        if self.family is None:
            return None
        return "text" if self.family == "text" else "image"


# ---------------------------------------------------------------- low-level readers

def read_safetensors_header(path: str | os.PathLike) -> dict:
    """The JSON header of a .safetensors file: 8-byte little-endian length, then JSON.
    Reads a few kilobytes, whatever the file's size."""
    path = Path(path)
    broken = ModelInfoError(
        "malformed", f"'{path.name}' is not a readable safetensors file.",
        "It may be cut short by an interrupted download: download it again.")
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(8)
            if len(head) < 8:
                raise broken
            (length,) = struct.unpack("<Q", head)
            if length == 0 or length > min(_MAX_HEADER_BYTES, size - 8):
                raise broken
            header = json.loads(fh.read(length).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise broken from None
    except OSError as exc:
        raise ModelInfoError("malformed", f"Cannot read '{path}': {exc.strerror or exc}.",
                             "Check that the file exists and that you may read it.") from None
    if not isinstance(header, dict):
        raise broken
    return header


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelInfoError("malformed", f"Cannot read '{path}': {exc}.",
                             "The file is damaged: download the model again.") from None
    if not isinstance(data, dict):
        raise ModelInfoError("malformed", f"'{path}' does not hold a JSON object.",
                             "The file is damaged: download the model again.")
    return data


def _read_json_opt(path: Path) -> dict | None:
    return _read_json(path) if path.is_file() else None


def short_name(module_path: str) -> str:
    """'model.layers.0.self_attn.q_proj' -> 'q_proj'; '...attn1.to_out.0' -> 'to_out.0';
    '...ff.net.0.proj' -> 'ff.net.0.proj'. Index and generic parts keep their parent."""
    parts = module_path.split(".")
    i = len(parts) - 1
    name = [parts[i]]
    while i > 0 and (name[0].isdigit() or name[0] in ("proj", "net")):
        i -= 1
        name.insert(0, parts[i])
    return ".".join(name)


def _keep_narrowest(layers: Layers, name: str, in_out: tuple[int, int]) -> None:
    if name not in layers or min(in_out) < min(layers[name]):
        layers[name] = in_out


def _weight_shapes(header: Mapping) -> Iterable[tuple[str, list[int]]]:
    """(module path, shape) of float 2-D / 4-D weights (Linear, Embedding, Conv)."""
    for key, entry in header.items():
        if key == "__metadata__" or not key.endswith(".weight") or not isinstance(entry, dict):
            continue
        shape = entry.get("shape") or []
        if entry.get("dtype") in _FLOAT_DTYPES and len(shape) in (2, 4):
            yield key[: -len(".weight")], shape


def layers_from_header(header: Mapping, conv1d: bool = False) -> Layers:
    layers: Layers = {}
    for module, shape in _weight_shapes(header):
        name = short_name(module)
        if conv1d and name in _CONV1D_NAMES:
            in_out = (shape[0], shape[1])
        else:
            in_out = (shape[1], shape[0])
        _keep_narrowest(layers, name, in_out)
    return layers


def _headers_of(folder: Path) -> list[dict]:
    return [read_safetensors_header(p) for p in sorted(folder.glob("*.safetensors"))]


def _merge(all_layers: Iterable[Layers]) -> Layers:
    merged: Layers = {}
    for layers in all_layers:
        for name, in_out in layers.items():
            _keep_narrowest(merged, name, in_out)
    return merged


def _has_pickle_weights(folder: Path) -> bool:
    return any(p.suffix.lower() in PICKLE_SUFFIXES for p in folder.glob("*") if p.is_file())


# ---------------------------------------------------------------- text (transformers)

def _config_value(config: dict, *names: str) -> int | None:
    text_config = config.get("text_config") if isinstance(config.get("text_config"), dict) else {}
    for source in (config, text_config):
        for name in names:
            value = source.get(name)
            if isinstance(value, int) and not isinstance(value, bool):
                return value
    return None


def _text_layers_from_config(model_type: str, hidden: int | None, inter: int | None,
                             heads: int | None, kv_heads: int | None, head_dim: int | None,
                             vocab: int | None, positions: int | None) -> Layers:
    if not (hidden and heads and head_dim):
        return {}
    if model_type in _LLAMA_STYLE and inter and kv_heads:
        layers = {"q_proj": (hidden, heads * head_dim), "k_proj": (hidden, kv_heads * head_dim),
                  "v_proj": (hidden, kv_heads * head_dim), "o_proj": (heads * head_dim, hidden),
                  "gate_proj": (hidden, inter), "up_proj": (hidden, inter),
                  "down_proj": (inter, hidden)}
    elif model_type in _CONV1D_MODEL_TYPES:
        inter = inter or 4 * hidden
        layers = {"c_attn": (hidden, 3 * hidden), "c_proj": (hidden, hidden), "c_fc": (hidden, inter)}
        if positions:
            layers["wpe"] = (positions, hidden)
    else:
        return {}
    if vocab:
        layers["embed_tokens" if model_type in _LLAMA_STYLE else "wte"] = (vocab, hidden)
        layers["lm_head"] = (hidden, vocab)
    return layers


def _text_info(source: str, folder: Path, config: dict) -> ModelInfo:
    model_type = str(config.get("model_type") or "")
    architectures = tuple(str(a) for a in config.get("architectures") or ())
    hidden = _config_value(config, "hidden_size", "n_embd", "d_model")
    heads = _config_value(config, "num_attention_heads", "n_head")
    kv_heads = _config_value(config, "num_key_value_heads") or heads
    head_dim = _config_value(config, "head_dim") or (hidden // heads if hidden and heads else None)
    inter = _config_value(config, "intermediate_size", "n_inner", "ffn_dim")
    if inter is None and model_type in _CONV1D_MODEL_TYPES and hidden:
        inter = 4 * hidden
    positions = _config_value(config, "max_position_embeddings", "n_positions", "seq_length")
    vocab = _config_value(config, "vocab_size")
    shards = sorted(folder.glob("*.safetensors"))
    layers = _merge(layers_from_header(h, conv1d=model_type in _CONV1D_MODEL_TYPES)
                    for h in _headers_of(folder))
    notes: list[str] = []
    if not layers:
        layers = _text_layers_from_config(model_type, hidden, inter, heads, kv_heads, head_dim,
                                          vocab, positions)
        if shards:
            notes.append("Layer widths come from config.json (the weights are quantised).")
    causal = (any(a.endswith(("ForCausalLM", "LMHeadModel", "ForConditionalGeneration"))
                  for a in architectures) if architectures else None)
    return ModelInfo(
        source=source, path=folder, format="transformers", family="text",
        model_type=model_type, architectures=architectures, causal_lm=causal,
        hidden_size=hidden, intermediate_size=inter, num_attention_heads=heads,
        num_key_value_heads=kv_heads, head_dim=head_dim, max_position_embeddings=positions,
        vocab_size=vocab, num_hidden_layers=_config_value(config, "num_hidden_layers", "n_layer"),
        absolute_positions=model_type in _CONV1D_MODEL_TYPES | {"gpt_neo", "opt", "gpt_bigcode"},
        linear_layers=layers, weight_files=tuple(shards),
        pickle_weights=not shards and _has_pickle_weights(folder), notes=tuple(notes))


# ---------------------------------------------------------------- Stable Diffusion (diffusers)

def _family_from_context(width: int | None) -> Family | None:
    return {768: "sd1", 1024: "sd2", 2048: "sdxl"}.get(width or 0)  # type: ignore[return-value]


def _unet_layers_from_config(config: dict) -> Layers:
    """Attention-layer widths of the narrowest attention block, when the UNet's
    weights are not there to read."""
    channels = config.get("block_out_channels") or []
    types = config.get("down_block_types") or []
    attn = [c for c, t in zip(channels, types) if "CrossAttn" in str(t)] or list(channels)
    if not attn:
        return {}
    c = min(attn)
    return {"to_q": (c, c), "to_k": (c, c), "to_v": (c, c), "to_out.0": (c, c),
            "proj_in": (c, c), "proj_out": (c, c), "ff.net.0.proj": (c, 8 * c),
            "ff.net.2": (4 * c, c)}


def _clip_layers_from_config(config: dict | None) -> Layers:
    if not config or not config.get("hidden_size"):
        return {}
    h, i = int(config["hidden_size"]), int(config.get("intermediate_size") or 4 * config["hidden_size"])
    return {"q_proj": (h, h), "k_proj": (h, h), "v_proj": (h, h), "out_proj": (h, h),
            "fc1": (h, i), "fc2": (i, h)}


def _diffusers_info(source: str, folder: Path) -> ModelInfo:
    index = _read_json(folder / "model_index.json")
    class_name = str(index.get("_class_name") or "")
    unet = _read_json_opt(folder / "unet" / "config.json") or {}
    scheduler = _read_json_opt(folder / "scheduler" / "scheduler_config.json")
    vae = _read_json_opt(folder / "vae" / "config.json")
    encoders = [_read_json_opt(folder / name / "config.json")
                for name in ("text_encoder", "text_encoder_2")]
    if not unet:  # SD3, Flux, PixArt... have a transformer instead of a UNet
        raise ModelInfoError(
            "unsupported", f"'{folder.name}' is a {class_name or 'diffusers'} model without a UNet "
            "(unet/config.json), which LoRA Studio cannot train.",
            "Pick a Stable Diffusion 1.x, 2.x or SDXL model; if it is one, download it again.")
    context = unet.get("cross_attention_dim") if isinstance(unet.get("cross_attention_dim"), int) else None
    if ("XL" in class_name or unet.get("addition_embed_type") == "text_time"
            or isinstance(index.get("text_encoder_2"), list) and index["text_encoder_2"][0]):
        family: Family | None = "sdxl"
    else:
        family = _family_from_context(context or (encoders[0] or {}).get("hidden_size"))
        if family is None and class_name == "StableDiffusionPipeline":
            # A custom-width UNet (e.g. resources/tiny-sd): SD 2.x is the v-prediction one.
            family = "sd2" if (scheduler or {}).get("prediction_type") == "v_prediction" else "sd1"
    if family is None:
        raise ModelInfoError(
            "unsupported", f"'{folder.name}' is a {class_name or 'diffusers'} model, which LoRA Studio "
            "cannot train.", "Pick a Stable Diffusion 1.x, 2.x or SDXL model.")
    unet_dir = folder / "unet"
    unet_files = tuple(sorted(unet_dir.glob("*.safetensors")))
    unet_layers = _merge(layers_from_header(h) for h in _headers_of(unet_dir)) if unet_dir.is_dir() else {}
    te_dirs = [folder / n for n in ("text_encoder", "text_encoder_2") if (folder / n).is_dir()]
    te_layers = _merge(layers_from_header(h) for d in te_dirs for h in _headers_of(d))
    complete = bool(unet_layers)
    unet_layers = unet_layers or _unet_layers_from_config(unet)
    te_layers = te_layers or _merge(_clip_layers_from_config(c) for c in encoders)
    prediction = str(scheduler.get("prediction_type") or "epsilon") if scheduler else None
    sample_size = unet.get("sample_size") if isinstance(unet.get("sample_size"), int) else None
    vae_scale = 2 ** (len(vae.get("block_out_channels") or [0] * 4) - 1) if vae else 8
    return ModelInfo(
        source=source, path=folder, format="diffusers", family=family, model_type=class_name,
        architectures=(class_name,) if class_name else (), prediction_type=prediction,
        cross_attention_dim=context,
        native_resolution=sample_size * vae_scale if sample_size else None,
        vae_force_upcast=bool(vae.get("force_upcast", True)) if vae else None,
        linear_layers=unet_layers, text_encoder_layers=te_layers, layers_complete=complete,
        weight_files=unet_files,
        pickle_weights=not unet_files and unet_dir.is_dir() and _has_pickle_weights(unet_dir))


# ---------------------------------------------------------------- single-file checkpoints

def _is_adapter(keys: Iterable[str]) -> bool:
    return any("lora_down" in k or ".lora_A." in k or k.startswith(("lora_unet_", "lora_te"))
               for k in keys)


def _single_file_text_encoder_layers(header: Mapping) -> Layers:
    layers: Layers = {}
    for key, entry in header.items():
        if not key.startswith(("cond_stage_model.", "conditioner.embedders.")):
            continue
        shape = entry.get("shape") or [] if isinstance(entry, dict) else []
        if key.endswith("attn.in_proj_weight") and len(shape) == 2:  # OpenCLIP fused q/k/v
            for name in ("q_proj", "k_proj", "v_proj"):
                _keep_narrowest(layers, name, (shape[1], shape[1]))
    for module, shape in _weight_shapes(header):
        if not module.startswith(("cond_stage_model.", "conditioner.embedders.")):
            continue
        name = short_name(module)
        if ".resblocks." in module:
            if name not in _OPENCLIP_NAMES:
                continue
            name = _OPENCLIP_NAMES[name]
        _keep_narrowest(layers, name, (shape[1], shape[0]))
    return layers


def _single_file_info(source: str, path: Path) -> ModelInfo:
    header = read_safetensors_header(path)
    metadata = header.get("__metadata__") if isinstance(header.get("__metadata__"), dict) else {}
    keys = [k for k in header if k != "__metadata__"]
    if _is_adapter(keys):
        raise ModelInfoError(
            "unsupported", f"'{path.name}' is a LoRA, not a base model.",
            "Set the base model to the checkpoint the LoRA was made for (e.g. an SD 1.5 or SDXL "
            "model), not to a LoRA file.")
    unet_keys = [k for k in keys if k.startswith("model.diffusion_model.")]
    if not unet_keys:
        if any(".layers." in k or k.startswith(("lm_head", "transformer.h.")) for k in keys):
            raise ModelInfoError(
                "unsupported", f"'{path.name}' holds a text model's weights without its config.json.",
                "Pick the model's folder (the one containing config.json) instead of the weights file.")
        raise ModelInfoError(
            "unsupported", f"'{path.name}' is not a Stable Diffusion checkpoint LoRA Studio knows.",
            "Pick an SD 1.x, SD 2.x or SDXL .safetensors checkpoint, or a model folder.")
    context = next((header[k]["shape"][1] for k in unet_keys
                    if k.endswith("attn2.to_k.weight") and len(header[k].get("shape", [])) == 2), None)
    if any(k.startswith("conditioner.embedders.") or k.startswith("model.diffusion_model.label_emb.")
           for k in keys):
        family: Family | None = "sdxl"
    elif any(k.startswith("cond_stage_model.model.") for k in keys):
        family = "sd2"
    elif any(k.startswith("cond_stage_model.transformer.") for k in keys):
        family = "sd1"
    else:
        family = _family_from_context(context)
    if family is None:
        raise ModelInfoError(
            "unsupported", f"Cannot tell which Stable Diffusion version '{path.name}' is.",
            "Set the model family (sd1, sd2 or sdxl) by hand.")
    declared = str(metadata.get("modelspec.prediction_type", "")).lower()
    if declared in ("v", "v_prediction", "v-prediction") or "v_pred" in header:
        prediction: str | None = "v_prediction"
    elif declared == "epsilon":
        prediction = "epsilon"
    else:
        prediction = None
    unet: Layers = {}
    for module, shape in _weight_shapes({k: header[k] for k in unet_keys}):
        name = _SINGLE_FILE_UNET_NAMES.get(short_name(module))
        if name:
            _keep_narrowest(unet, name, (shape[1], shape[0]))
    native = {"sd1": 512, "sdxl": 1024}.get(family) or (768 if prediction == "v_prediction" else None)
    return ModelInfo(
        source=source, path=path, format="single_file", family=family, prediction_type=prediction,
        cross_attention_dim=context, native_resolution=native,
        linear_layers=unet, text_encoder_layers=_single_file_text_encoder_layers(header),
        layers_complete=False, weight_files=(path,))


# ---------------------------------------------------------------- entry point

def looks_like_hub_id(text: str) -> bool:
    return bool(_HUB_ID.match(text)) and ".." not in text


def find_in_hf_cache(repo_id: str, cache_dir: str | os.PathLike | None = None) -> Path | None:
    """The snapshot folder of a model in the local Hugging Face cache; no network."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    for filename in ("model_index.json", "config.json"):
        try:
            hit = try_to_load_from_cache(repo_id, filename, cache_dir=cache_dir)
        except ValueError:  # not a valid repo id after all
            return None
        if isinstance(hit, str):
            return Path(hit).parent
    return None


def _stamp(path: Path) -> tuple:
    """Changes whenever a file the inspection reads changes (mtime or size)."""
    if path.is_file():
        st = path.stat()
        return ((path.name, st.st_mtime_ns, st.st_size),)
    stamps = []
    for folder in (path, *(path / d for d in _DIFFUSERS_SUBFOLDERS)):
        if folder.is_dir():
            with os.scandir(folder) as entries:
                for entry in entries:
                    if entry.is_file():
                        st = entry.stat()
                        stamps.append((folder.name, entry.name, st.st_mtime_ns, st.st_size))
    return tuple(sorted(stamps))


_CACHE: dict[tuple, ModelInfo] = {}
_CACHE_SIZE = 32


def _inspect_local(source: str, path: Path, allow_pickle: bool) -> ModelInfo:
    if path.is_dir():
        if (path / "model_index.json").is_file():
            return _diffusers_info(source, path)
        if (path / "config.json").is_file():
            config = _read_json(path / "config.json")
            if "UNet" in str(config.get("_class_name", "")):
                raise ModelInfoError(
                    "unsupported", f"'{path.name}' holds only a UNet.",
                    "Pick the folder above it, the one containing model_index.json.")
            return _text_info(source, path, config)
        if (path / "adapter_config.json").is_file():
            raise ModelInfoError("unsupported", f"'{path.name}' is a LoRA adapter folder, not a base model.",
                                 "Set the base model to the model the adapter was trained on.")
        found = sorted(p.name for p in path.glob("*.safetensors"))[:3]
        raise ModelInfoError(
            "unsupported", f"The folder '{path}' has no config.json or model_index.json, so it is not a "
            "model folder.",
            f"Pick one of its checkpoint files ({', '.join(found)}) or the model's own folder."
            if found else "Pick the model's own folder or a .safetensors checkpoint file.")
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        if (path.parent / "config.json").is_file() and not (path.parent / "model_index.json").exists():
            return _inspect_local(source, path.parent, allow_pickle)
        return _single_file_info(source, path)
    if suffix == ".json":
        return _inspect_local(source, path.parent, allow_pickle)
    if suffix in PICKLE_SUFFIXES:
        if not allow_pickle:
            raise ModelInfoError(
                "pickle", f"'{path.name}' is a pickle checkpoint; opening one can run code hidden in it.",
                "Use a .safetensors version of the model if there is one. If you trust this file, "
                "turn on 'Allow pickle checkpoints' (model.allow_pickle = true).")
        return ModelInfo(source=source, path=path, format="pickle", family=None, weight_files=(path,),
                         pickle_weights=True, layers_complete=False,
                         notes=("A pickle checkpoint cannot be inspected without loading it, so the "
                                "model-aware checks were skipped.",))
    if suffix == ".gguf":
        raise ModelInfoError("unsupported", f"'{path.name}' is a GGUF file, which is for running models, "
                             "not training them.", "Pick the original model folder (safetensors).")
    raise ModelInfoError("unsupported", f"'{path.name}' is not a model file LoRA Studio can read.",
                         "Pick a model folder or a .safetensors checkpoint.")


def hub_download_command(repo: str, *include: str) -> str:
    """The command that puts a Hub repository (only the files matching ``include``, when
    given) into the Hugging Face cache: huggingface_hub's ``hf`` (huggingface-cli before)."""
    return " ".join([f"hf download {repo}", *(f'--include "{pattern}"' for pattern in include)])


def inspect_model(value: str, base_dir: str | os.PathLike | None = None,
                  allow_pickle: bool = False) -> ModelInfo:
    """Read what can be known about the model `value` names without loading it.

    Raises ModelInfoError with a message and a hint. Results are cached per path and
    the modification times of the files read, so calling this on every keystroke is cheap.
    """
    text = clean_path_text(value)
    if not text:
        raise ModelInfoError("empty", "No base model is set.",
                             "Choose a model folder, a .safetensors checkpoint or a Hugging Face id.")
    path = resolve_local_path(value, base_dir)
    if path is None and looks_like_hub_id(text):
        path = find_in_hf_cache(text)
    if path is None:
        tried = [str(p) for p in path_candidates(value, base_dir)]
        where = f" (looked at {', '.join(tried)})" if tried != [text] else ""
        hub = (" It is not in your Hugging Face cache either; download it once with "
               f"'{hub_download_command(text)}' or give a local path.") if looks_like_hub_id(text) else ""
        raise ModelInfoError("missing", f"Model '{text}' was not found{where}.",
                             f"Check the path for typos.{hub}")
    key = (str(path), allow_pickle, _stamp(path))
    info = _CACHE.get(key)
    if info is None:
        info = _inspect_local(text, path, allow_pickle)
        if len(_CACHE) >= _CACHE_SIZE:
            _CACHE.pop(next(iter(_CACHE)))
        _CACHE[key] = info
    return info


def target_candidates(info: ModelInfo) -> list[str]:
    """The layers a LoRA with an empty target list most likely touches."""
    names = TEXT_DEFAULT_CANDIDATES if info.kind == "text" else IMAGE_DEFAULT_TARGETS
    return [n for n in names if n in info.linear_layers]


def text_targets(info: ModelInfo, preset: str = "default") -> list[str]:
    """The short layer names a text LoRA with no explicit targets gets, by
    network.target_preset; ["all-linear"] leaves the choice to PEFT."""
    if preset == "all_linear":
        return [ALL_LINEAR]
    names = ATTENTION_CANDIDATES if preset == "attention" else TEXT_DEFAULT_CANDIDATES
    return [n for n in names if n in info.linear_layers] or [ALL_LINEAR]


def matching_layers(target: str, layers: Mapping[str, tuple[int, int]]) -> list[str]:
    """Short names PEFT would match for `target` (exact, or one a suffix of the other)."""
    return [n for n in layers
            if n == target or target.endswith("." + n) or n.endswith("." + target)]
