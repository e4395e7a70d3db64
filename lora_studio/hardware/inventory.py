"""Every weight of a model as (name, shape), from a config dict or safetensors headers.

Names follow transformers / diffusers, so LoRA target modules match them the way
PEFT does. The config-derived inventories are exact for the architectures listed
(tests compare them with instantiated models); they let the estimate work on a
config alone (calibration, tests, quantised checkpoints) without torch.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

Inventory = dict[str, tuple[int, ...]]  # parameter name -> shape

GPT2_STYLE = frozenset({"gpt2"})
# Model types with Llama's layer names. Extra norms per layer are added below.
LLAMA_STYLE = frozenset({"llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text",
                         "granite", "olmo2", "smollm3", "helium"})
_QKV_BIAS = frozenset({"qwen2"})
_QK_NORM = frozenset({"qwen3", "gemma3_text", "olmo2"})
_FOUR_NORMS = frozenset({"gemma2", "gemma3_text"})
_TIED_BY_DEFAULT = frozenset({"gemma", "gemma2", "gemma3_text", "gpt2"})


def numel(shape: Iterable[int]) -> int:
    return math.prod(shape)


def count(inventory: Mapping[str, tuple[int, ...]]) -> int:
    return sum(numel(s) for s in inventory.values())


def _linear(inv: Inventory, name: str, n_in: int, n_out: int, bias: bool = True) -> None:
    inv[f"{name}.weight"] = (n_out, n_in)
    if bias:
        inv[f"{name}.bias"] = (n_out,)


def _norm(inv: Inventory, name: str, width: int, bias: bool = True) -> None:
    inv[f"{name}.weight"] = (width,)
    if bias:
        inv[f"{name}.bias"] = (width,)


def _conv(inv: Inventory, name: str, n_in: int, n_out: int, kernel: int) -> None:
    inv[f"{name}.weight"] = (n_out, n_in, kernel, kernel)
    inv[f"{name}.bias"] = (n_out,)


# ---------------------------------------------------------------- text models

def text_dims(config: Mapping) -> dict[str, int | str | bool]:
    """The widths the activation model needs, under one set of names for every family."""
    model_type = str(config.get("model_type", "llama"))
    if model_type in GPT2_STYLE:
        hidden = int(config["n_embd"])
        heads = int(config["n_head"])
        return {"model_type": model_type, "hidden": hidden, "intermediate": int(config.get("n_inner") or 4 * hidden),
                "layers": int(config["n_layer"]), "heads": heads, "kv_heads": heads, "head_dim": hidden // heads,
                "vocab": int(config["vocab_size"]), "positions": int(config.get("n_positions", 1024)),
                "tied": True}
    hidden = int(config["hidden_size"])
    heads = int(config["num_attention_heads"])
    return {"model_type": model_type, "hidden": hidden, "intermediate": int(config["intermediate_size"]),
            "layers": int(config["num_hidden_layers"]), "heads": heads,
            "kv_heads": int(config.get("num_key_value_heads") or heads),
            "head_dim": int(config.get("head_dim") or hidden // heads), "vocab": int(config["vocab_size"]),
            "positions": int(config.get("max_position_embeddings", 2048)),
            "tied": bool(config.get("tie_word_embeddings", model_type in _TIED_BY_DEFAULT))}


def text_inventory(config: Mapping) -> Inventory:
    """Parameters of a Llama-style or GPT-2 causal LM, named as transformers names them."""
    d = text_dims(config)
    if d["model_type"] in GPT2_STYLE:
        return _gpt2_inventory(d)
    model_type = str(d["model_type"])
    if model_type not in LLAMA_STYLE:
        raise ValueError(f"no built-in layout for model_type '{model_type}'")
    h, i, v = int(d["hidden"]), int(d["intermediate"]), int(d["vocab"])
    q, kv = int(d["heads"]) * int(d["head_dim"]), int(d["kv_heads"]) * int(d["head_dim"])
    qkv_bias = model_type in _QKV_BIAS or bool(config.get("attention_bias", False))
    o_bias = bool(config.get("attention_bias", False))
    mlp_bias = bool(config.get("mlp_bias", False))
    inv: Inventory = {"model.embed_tokens.weight": (v, h)}
    for n in range(int(d["layers"])):
        p = f"model.layers.{n}"
        _linear(inv, f"{p}.self_attn.q_proj", h, q, qkv_bias)
        _linear(inv, f"{p}.self_attn.k_proj", h, kv, qkv_bias)
        _linear(inv, f"{p}.self_attn.v_proj", h, kv, qkv_bias)
        _linear(inv, f"{p}.self_attn.o_proj", q, h, o_bias)
        if model_type in _QK_NORM:
            _norm(inv, f"{p}.self_attn.q_norm", int(d["head_dim"]), bias=False)
            _norm(inv, f"{p}.self_attn.k_norm", int(d["head_dim"]), bias=False)
        _linear(inv, f"{p}.mlp.gate_proj", h, i, mlp_bias)
        _linear(inv, f"{p}.mlp.up_proj", h, i, mlp_bias)
        _linear(inv, f"{p}.mlp.down_proj", i, h, mlp_bias)
        _norm(inv, f"{p}.input_layernorm", h, bias=False)
        _norm(inv, f"{p}.post_attention_layernorm", h, bias=False)
        if model_type in _FOUR_NORMS:
            _norm(inv, f"{p}.pre_feedforward_layernorm", h, bias=False)
            _norm(inv, f"{p}.post_feedforward_layernorm", h, bias=False)
    _norm(inv, "model.norm", h, bias=False)
    if not d["tied"]:
        inv["lm_head.weight"] = (v, h)
    return inv


def _gpt2_inventory(d: Mapping) -> Inventory:
    h, i = int(d["hidden"]), int(d["intermediate"])
    inv: Inventory = {"transformer.wte.weight": (int(d["vocab"]), h),
                      "transformer.wpe.weight": (int(d["positions"]), h)}
    for n in range(int(d["layers"])):
        p = f"transformer.h.{n}"
        _norm(inv, f"{p}.ln_1", h)
        inv[f"{p}.attn.c_attn.weight"], inv[f"{p}.attn.c_attn.bias"] = (h, 3 * h), (3 * h,)  # Conv1D: (in, out)
        inv[f"{p}.attn.c_proj.weight"], inv[f"{p}.attn.c_proj.bias"] = (h, h), (h,)
        _norm(inv, f"{p}.ln_2", h)
        inv[f"{p}.mlp.c_fc.weight"], inv[f"{p}.mlp.c_fc.bias"] = (h, i), (i,)
        inv[f"{p}.mlp.c_proj.weight"], inv[f"{p}.mlp.c_proj.bias"] = (i, h), (h,)
    _norm(inv, "transformer.ln_f", h)
    return inv


# ---------------------------------------------------------------- Stable Diffusion

def _per_block(value, blocks: int) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value] * blocks


def _resnet(inv: Inventory, p: str, c_in: int, c_out: int, temb: int | None) -> None:
    _norm(inv, f"{p}.norm1", c_in)
    _conv(inv, f"{p}.conv1", c_in, c_out, 3)
    if temb:
        _linear(inv, f"{p}.time_emb_proj", temb, c_out)
    _norm(inv, f"{p}.norm2", c_out)
    _conv(inv, f"{p}.conv2", c_out, c_out, 3)
    if c_in != c_out:
        _conv(inv, f"{p}.conv_shortcut", c_in, c_out, 1)


def _transformer_2d(inv: Inventory, p: str, c: int, depth: int, context: int, linear_proj: bool) -> None:
    _norm(inv, f"{p}.norm", c)
    for proj in ("proj_in", "proj_out"):
        if linear_proj:
            _linear(inv, f"{p}.{proj}", c, c)
        else:
            _conv(inv, f"{p}.{proj}", c, c, 1)
    for n in range(depth):
        b = f"{p}.transformer_blocks.{n}"
        for attn, kv_in in (("attn1", c), ("attn2", context)):
            _linear(inv, f"{b}.{attn}.to_q", c, c, bias=False)
            _linear(inv, f"{b}.{attn}.to_k", kv_in, c, bias=False)
            _linear(inv, f"{b}.{attn}.to_v", kv_in, c, bias=False)
            _linear(inv, f"{b}.{attn}.to_out.0", c, c)
        for norm in ("norm1", "norm2", "norm3"):
            _norm(inv, f"{b}.{norm}", c)
        _linear(inv, f"{b}.ff.net.0.proj", c, 8 * c)  # GEGLU: value and gate
        _linear(inv, f"{b}.ff.net.2", 4 * c, c)


def unet_blocks(config: Mapping) -> dict:
    """The UNet's layout as plain lists, shared by the inventory and the activation walk."""
    channels = list(config["block_out_channels"])
    n = len(channels)
    context = _per_block(config.get("cross_attention_dim", 1280), n)
    return {
        "channels": channels,
        "down_types": list(config["down_block_types"]),
        "up_types": list(config["up_block_types"]),
        "layers": _per_block(config.get("layers_per_block", 2), n),
        "depth": _per_block(config.get("transformer_layers_per_block", 1), n),
        "context": context,
        "heads": _per_block(config.get("num_attention_heads") or config.get("attention_head_dim", 8), n),
        "linear_proj": bool(config.get("use_linear_projection", False)),
        "temb": int(config.get("time_embedding_dim") or 4 * channels[0]),
        "in_channels": int(config.get("in_channels", 4)),
        "out_channels": int(config.get("out_channels", 4)),
    }


@dataclass(frozen=True)
class UnetLayer:
    kind: str          # "resnet", "attention" (a Transformer2DModel), "downsample", "upsample"
    name: str          # its module path, e.g. "up_blocks.1.resnets.2"
    c_in: int
    c_out: int
    depth: int = 0     # attention only: transformer blocks, cross-attention width, heads
    context: int = 0
    heads: int = 0


def unet_layers(u: Mapping) -> Iterator[UnetLayer]:
    """The resnets, attentions and resamplers of a UNet (``unet_blocks``) in forward
    order, down blocks, middle, up blocks; an up block's resnets take the channels of
    the skip connection on top of their own. The inventory and the activation walk
    both follow it."""
    ch = u["channels"]
    last = len(ch) - 1
    c_out = ch[0]
    for b, kind in enumerate(u["down_types"]):
        c_in, c_out = c_out, ch[b]
        for j in range(u["layers"][b]):
            yield UnetLayer("resnet", f"down_blocks.{b}.resnets.{j}", c_in if j == 0 else c_out, c_out)
            if "CrossAttn" in kind:
                yield UnetLayer("attention", f"down_blocks.{b}.attentions.{j}", c_out, c_out,
                                u["depth"][b], u["context"][b], u["heads"][b])
        if b < last:
            yield UnetLayer("downsample", f"down_blocks.{b}.downsamplers.0", c_out, c_out)
    c = ch[-1]
    yield UnetLayer("resnet", "mid_block.resnets.0", c, c)
    yield UnetLayer("attention", "mid_block.attentions.0", c, c,
                    u["depth"][-1], u["context"][-1], u["heads"][-1])
    yield UnetLayer("resnet", "mid_block.resnets.1", c, c)
    rev = list(reversed(ch))
    rev_layers, rev_depth, rev_context, rev_heads = (list(reversed(u[k])) for k in
                                                     ("layers", "depth", "context", "heads"))
    c_out = rev[0]
    for b, kind in enumerate(u["up_types"]):
        prev, c_out = c_out, rev[b]
        c_skip_last = rev[min(b + 1, last)]
        layers = rev_layers[b] + 1
        for j in range(layers):
            skip = c_skip_last if j == layers - 1 else c_out
            yield UnetLayer("resnet", f"up_blocks.{b}.resnets.{j}",
                            (prev if j == 0 else c_out) + skip, c_out)
            if "CrossAttn" in kind:
                yield UnetLayer("attention", f"up_blocks.{b}.attentions.{j}", c_out, c_out,
                                rev_depth[b], rev_context[b], rev_heads[b])
        if b < last:
            yield UnetLayer("upsample", f"up_blocks.{b}.upsamplers.0", c_out, c_out)


def unet_inventory(config: Mapping) -> Inventory:
    """Parameters of diffusers' UNet2DConditionModel (SD 1.x / 2.x / SDXL layouts)."""
    u = unet_blocks(config)
    ch, temb = u["channels"], u["temb"]
    inv: Inventory = {}
    _conv(inv, "conv_in", u["in_channels"], ch[0], 3)
    _linear(inv, "time_embedding.linear_1", ch[0], temb)
    _linear(inv, "time_embedding.linear_2", temb, temb)
    if config.get("addition_embed_type") == "text_time":
        _linear(inv, "add_embedding.linear_1", int(config["projection_class_embeddings_input_dim"]), temb)
        _linear(inv, "add_embedding.linear_2", temb, temb)
    for layer in unet_layers(u):
        if layer.kind == "resnet":
            _resnet(inv, layer.name, layer.c_in, layer.c_out, temb)
        elif layer.kind == "attention":
            _transformer_2d(inv, layer.name, layer.c_out, layer.depth, layer.context, u["linear_proj"])
        else:
            _conv(inv, f"{layer.name}.conv", layer.c_in, layer.c_out, 3)
    _norm(inv, "conv_norm_out", ch[0])
    _conv(inv, "conv_out", ch[0], u["out_channels"], 3)
    return inv


def clip_text_inventory(config: Mapping) -> Inventory:
    """CLIPTextModel, or CLIPTextModelWithProjection when ``projection_dim`` is used
    (SDXL's second encoder: pass ``with_projection=True`` in the config)."""
    h, i = int(config["hidden_size"]), int(config["intermediate_size"])
    inv: Inventory = {"text_model.embeddings.token_embedding.weight": (int(config.get("vocab_size", 49408)), h),
                      "text_model.embeddings.position_embedding.weight":
                          (int(config.get("max_position_embeddings", 77)), h)}
    for n in range(int(config["num_hidden_layers"])):
        p = f"text_model.encoder.layers.{n}"
        for proj in ("k_proj", "v_proj", "q_proj", "out_proj"):
            _linear(inv, f"{p}.self_attn.{proj}", h, h)
        _norm(inv, f"{p}.layer_norm1", h)
        _linear(inv, f"{p}.mlp.fc1", h, i)
        _linear(inv, f"{p}.mlp.fc2", i, h)
        _norm(inv, f"{p}.layer_norm2", h)
    _norm(inv, "text_model.final_layer_norm", h)
    if config.get("with_projection") or "CLIPTextModelWithProjection" in (config.get("architectures") or ()):
        inv["text_projection.weight"] = (int(config["projection_dim"]), h)
    return inv


def vae_inventory(config: Mapping) -> Inventory:
    """diffusers' AutoencoderKL (the VAE every SD generation uses)."""
    ch = list(config.get("block_out_channels") or (128, 256, 512, 512))
    layers = int(config.get("layers_per_block") or 2)
    latent = int(config.get("latent_channels") or 4)
    inv: Inventory = {}

    def mid(p: str, c: int) -> None:
        _resnet(inv, f"{p}.resnets.0", c, c, None)
        _norm(inv, f"{p}.attentions.0.group_norm", c)
        for proj in ("to_q", "to_k", "to_v", "to_out.0"):
            _linear(inv, f"{p}.attentions.0.{proj}", c, c)
        _resnet(inv, f"{p}.resnets.1", c, c, None)

    _conv(inv, "encoder.conv_in", int(config.get("in_channels", 3)), ch[0], 3)
    c_out = ch[0]
    for b, c in enumerate(ch):
        c_in, c_out = c_out, c
        for j in range(layers):
            _resnet(inv, f"encoder.down_blocks.{b}.resnets.{j}", c_in if j == 0 else c_out, c_out, None)
        if b < len(ch) - 1:
            _conv(inv, f"encoder.down_blocks.{b}.downsamplers.0.conv", c_out, c_out, 3)
    mid("encoder.mid_block", ch[-1])
    _norm(inv, "encoder.conv_norm_out", ch[-1])
    _conv(inv, "encoder.conv_out", ch[-1], 2 * latent, 3)
    rev = list(reversed(ch))
    _conv(inv, "decoder.conv_in", latent, rev[0], 3)
    mid("decoder.mid_block", rev[0])
    c_out = rev[0]
    for b, c in enumerate(rev):
        c_in, c_out = c_out, c
        for j in range(layers + 1):
            _resnet(inv, f"decoder.up_blocks.{b}.resnets.{j}", c_in if j == 0 else c_out, c_out, None)
        if b < len(ch) - 1:
            _conv(inv, f"decoder.up_blocks.{b}.upsamplers.0.conv", c_out, c_out, 3)
    _norm(inv, "decoder.conv_norm_out", ch[0])
    _conv(inv, "decoder.conv_out", ch[0], int(config.get("out_channels", 3)), 3)
    if config.get("use_quant_conv") is not False:  # absent or null in older configs: present
        _conv(inv, "quant_conv", 2 * latent, 2 * latent, 1)
    if config.get("use_post_quant_conv") is not False:
        _conv(inv, "post_quant_conv", latent, latent, 1)
    return inv


# ---------------------------------------------------------------- LoRA

def _targeted(module: str, targets: Iterable[str]) -> bool:
    # PEFT's rule for a list of names: the full module name or a suffix after a dot.
    return any(module == t or module.endswith("." + t) for t in targets)


def lora_shapes(inventory: Mapping[str, tuple[int, ...]], targets: Iterable[str], rank: int,
                conv1d: bool = False) -> Inventory:
    """The LoRA A and B matrices PEFT adds for `targets` (Linear, Conv1D, Conv2d, Embedding)."""
    out: Inventory = {}
    for module, shape in adapted_weights(inventory, targets).items():
        if len(shape) == 4:  # Conv2d: A keeps the kernel, B is 1x1
            n_out, n_in, kh, kw = shape
            out[f"{module}.lora_A.weight"] = (rank, n_in, kh, kw)
            out[f"{module}.lora_B.weight"] = (n_out, rank, 1, 1)
        else:
            n_in, n_out = (shape[0], shape[1]) if conv1d else (shape[1], shape[0])
            out[f"{module}.lora_A.weight"] = (rank, n_in)
            out[f"{module}.lora_B.weight"] = (n_out, rank)
    return out


def factorization(dimension: int, factor: int = -1) -> tuple[int, int]:
    """LyCORIS's (and PEFT's) split of a LoKr dimension into m * n, m <= n: m = factor
    when it divides, else the most even split with m at most the factor (-1: no limit)."""
    if factor > 0 and dimension % factor == 0:
        return factor, dimension // factor
    if factor == -1:
        factor = dimension
    m, n = 1, dimension
    while m < n:
        new_m = m + 1
        while dimension % new_m:
            new_m += 1
        if new_m > factor:
            break
        m, n = new_m, dimension // new_m
    return min(m, n), max(m, n)


def adapted_weights(inventory: Mapping[str, tuple[int, ...]], targets: Iterable[str]) -> Inventory:
    """The weights of the Linear / Conv2d modules `targets` adapt, by module name."""
    targets = tuple(targets)
    return {name[: -len(".weight")]: shape for name, shape in inventory.items()
            if name.endswith(".weight") and len(shape) in (2, 4)
            and _targeted(name[: -len(".weight")], targets)}


def lycoris_shapes(inventory: Mapping[str, tuple[int, ...]], targets: Iterable[str], rank: int,
                   algo: str, factor: int = -1) -> Inventory:
    """The LoHa / LoKr tensors PEFT adds for `targets` (Linear and Conv2d, convs' kernels
    folded into the second factor as PEFT does without its effective-conv option)."""
    out: Inventory = {}
    for module, shape in adapted_weights(inventory, targets).items():
        n_out, n_in, kernel = shape[0], shape[1], tuple(shape[2:])
        if algo == "loha":
            for i in (1, 2):
                out[f"{module}.hada_w{i}_a"] = (n_out, rank)
                out[f"{module}.hada_w{i}_b"] = (rank, n_in * numel(kernel))
            continue
        out_l, out_k = factorization(n_out, factor)
        in_m, in_n = factorization(n_in, factor)
        out[f"{module}.lokr_w1"] = (out_l, in_m)
        if rank >= max(out_k, in_n) / 2:  # PEFT keeps the second factor whole then
            out[f"{module}.lokr_w2"] = (out_k, in_n, *kernel)
        else:
            out[f"{module}.lokr_w2_a"] = (out_k, rank)
            out[f"{module}.lokr_w2_b"] = (rank, in_n * numel(kernel))
    return out


# ---------------------------------------------------------------- safetensors headers

SAFETENSORS_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "F8_E4M3": 1, "F8_E5M2": 1,
                     "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}
FLOAT_DTYPES = frozenset({"F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2"})


def header_inventory(headers: Iterable[Mapping], prefix: str = "") -> tuple[Inventory, dict[str, int]]:
    """(float tensors by name without `prefix`, bytes per dtype of every tensor) of the
    headers' tensors whose name starts with `prefix`."""
    inv: Inventory = {}
    by_dtype: dict[str, int] = {}
    for header in headers:
        for key, entry in header.items():
            if key == "__metadata__" or not isinstance(entry, dict) or not key.startswith(prefix):
                continue
            dtype, shape = str(entry.get("dtype")), tuple(int(s) for s in entry.get("shape") or ())
            by_dtype[dtype] = by_dtype.get(dtype, 0) + numel(shape) * SAFETENSORS_BYTES.get(dtype, 1)
            if dtype in FLOAT_DTYPES:
                inv[key[len(prefix):]] = shape
    return inv, by_dtype
