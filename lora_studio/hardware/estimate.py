"""Will it fit? The VRAM a job needs, part by part, before anything is loaded.

Weights and LoRA sizes are exact (from safetensors headers, or from the config for
the architectures in ``inventory``). Activations follow a per-layer model of the
tensors autograd keeps, written for how the engine trains:

- frozen base in the weights dtype, LoRA matrices in fp32 (PEFT's default), and
  autocast in the mixed-precision dtype, so PEFT's fp32 cast of a LoRA input plus
  autocast's cast back keeps one compute-dtype copy of that input per LoRA layer;
- frozen layers keep nothing for their own weights, norms keep an fp32 copy;
- attention through SDPA (flash / memory-efficient: no score matrix kept);
- gradient checkpointing per decoder layer / per UNet resnet and transformer block;
- 4-bit bases are prepared the PEFT way (non-quantised weights upcast to fp32).

The coefficients were checked against the tensors autograd saves for tiny models on
CPU; ``benchmarks/vram_calibration.py`` compares the totals with
``torch.cuda.max_memory_allocated`` on a GPU.
"""
from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lora_studio.config.gpu import GpuFacts
from lora_studio.config.optimizers import BITSANDBYTES_OPTIMIZERS
from lora_studio.config.model_info import (
    ALL_LINEAR,
    ATTENTION_CANDIDATES,
    IMAGE_DEFAULT_TARGETS,
    TEXT_DEFAULT_CANDIDATES,
    TEXT_ENCODER_DEFAULT_TARGETS,
    ModelInfo,
    ModelInfoError,
    inspect_model,
    read_safetensors_header,
)
from lora_studio.config.network import CONV_1X1_TARGETS, CONV_3X3_TARGETS, conv_rank, trains_convs
from lora_studio.config.schema import JobConfig
from lora_studio.data.subsets import largest_resolution

from . import archs
from .inventory import (
    GPT2_STYLE,
    Inventory,
    adapted_weights,
    clip_text_inventory,
    count,
    header_inventory,
    lora_shapes,
    lycoris_shapes,
    numel,
    text_dims,
    text_inventory,
    unet_blocks,
    unet_inventory,
    unet_layers,
    vae_inventory,
)
from .monitor import GpuInfo

MIB = 1024**2
GIB = 1024**3
CUDA_CONTEXT = 450 * MIB    # CUDA context + cuBLAS / cuDNN workspaces: not seen by the allocator
ALLOCATOR_SLACK = 0.03      # blocks the caching allocator holds but does not use
DEFAULT_MARGIN = 0.10
CLIP_TOKENS = 77
BNB_BLOCK = 256             # bitsandbytes' 8-bit optimizer block size
BNB_MIN_8BIT_SIZE = 4096    # smaller tensors keep 32-bit optimizer state
NF4_BYTES_PER_PARAM = 0.5 + 1 / 64 + 4 / (64 * 256)  # 4-bit + 8-bit absmax per 64 + fp32 per 256 blocks
DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}
DROPOUT_MASK_BYTES = 1      # CUDA's fused dropout keeps a bool mask


@dataclass(frozen=True)
class Part:
    name: str
    bytes: int
    group: str  # weights, lora, optimizer, activations, inputs, overhead


@dataclass(frozen=True)
class Estimate:
    parts: tuple[Part, ...]
    margin: float = DEFAULT_MARGIN
    free_bytes: int | None = None   # on the card it was made for; None: unknown
    gpu_name: str = ""
    notes: tuple[str, ...] = ()

    @property
    def subtotal(self) -> int:
        return sum(p.bytes for p in self.parts)

    @property
    def total(self) -> int:
        """What the run needs with the safety margin."""
        return int(self.subtotal * (1 + self.margin))

    @property
    def allocated(self) -> int:
        """The part torch.cuda.max_memory_allocated sees (no context, no allocator slack)."""
        return sum(p.bytes for p in self.parts if p.group != "overhead")

    @property
    def fits(self) -> bool | None:
        return None if self.free_bytes is None else self.total <= self.free_bytes

    def group_bytes(self, group: str) -> int:
        return sum(p.bytes for p in self.parts if p.group == group)

    def part(self, name_start: str) -> int:
        return sum(p.bytes for p in self.parts if p.name.startswith(name_start))

    def describe(self) -> str:
        lines = [f"{p.name:<52} {gib(p.bytes):>9}" for p in self.parts if p.bytes]
        lines.append(f"{'total (+' + format(self.margin, '.0%') + ' margin)':<52} {gib(self.total):>9}")
        if self.free_bytes is not None:
            lines.append(f"{'free on ' + (self.gpu_name or 'the GPU'):<52} {gib(self.free_bytes):>9}")
        return "\n".join(lines + list(self.notes))


def gib(n: int | float) -> str:
    return f"{n / GIB:.2f} GiB"


# ---------------------------------------------------------------- what is known about the model

@dataclass(frozen=True)
class ModelSpec:
    """Weights per component and the configs the activation model needs.

    family: text, sd1, sd2 or sdxl. components: transformer (text) or unet,
    text_encoder, text_encoder_2, vae."""
    family: str
    components: dict[str, Inventory]
    configs: dict[str, dict] = field(default_factory=dict)


def spec_from_config(family: str, config: Mapping) -> ModelSpec:
    """A model given only by its config: a transformers config dict for text, or a dict
    of component configs ({"unet": ..., "text_encoder": ..., "vae": ...}) for SD, whose
    missing components take the family's public configs."""
    if family == "text":
        return ModelSpec("text", {"transformer": text_inventory(config)}, {"transformer": dict(config)})
    configs = {**archs.SD_COMPONENTS[family], **{k: dict(v) for k, v in config.items()}}
    builders = {"unet": unet_inventory, "vae": vae_inventory, "text_encoder": clip_text_inventory,
                "text_encoder_2": clip_text_inventory}
    return ModelSpec(family, {name: builders[name](cfg) for name, cfg in configs.items()}, configs)


def _json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8-sig")) if path.is_file() else None
    except (OSError, ValueError):
        return None


def _folder_inventory(folder: Path, fallback: Inventory) -> Inventory:
    shards = sorted(folder.glob("*.safetensors"))
    if not shards:
        return fallback
    inv, by_dtype = header_inventory(read_safetensors_header(p) for p in shards)
    # Pre-quantised checkpoints store packed integers: the config knows the real shapes.
    return fallback if set(by_dtype) - {"F32", "F16", "BF16"} else inv


def spec_from_info(info: ModelInfo) -> ModelSpec:
    """Read the configs and weight headers of a model that model_info resolved."""
    if info.family is None:
        raise ModelInfoError("unsupported", f"'{info.path.name}' cannot be inspected without loading it.",
                             "Use a .safetensors version of the model to get a VRAM estimate.")
    if info.family == "text":
        folder = info.path if info.path.is_dir() else info.path.parent
        config = _json(folder / "config.json") or {}
        if isinstance(config.get("text_config"), dict):
            config = {**config["text_config"], "model_type": config["text_config"].get("model_type", "")}
        try:
            fallback = text_inventory(config)
        except (KeyError, ValueError):
            fallback = {}
        inv = _folder_inventory(folder, fallback)
        try:
            text_dims(config)
        except (KeyError, TypeError, ValueError):
            inv = {}
        if not inv:
            raise ModelInfoError("unsupported", f"The VRAM estimate cannot read the layout of '{folder.name}' "
                                 "(its config.json lacks the layer sizes, or there are no weights).",
                                 "Pick a model folder with a complete config.json and .safetensors files.")
        return ModelSpec("text", {"transformer": inv}, {"transformer": config})
    if info.format == "single_file":
        # Its layout is the family's public one; only the names differ.
        return spec_from_config(info.family, {})
    configs = {name: cfg for name in ("unet", "text_encoder", "text_encoder_2", "vae")
               if (cfg := _json(info.path / name / "config.json")) is not None}
    try:
        spec = spec_from_config(info.family, configs)
        unet_blocks(spec.configs["unet"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelInfoError("malformed", f"A config.json in '{info.path.name}' lacks the layer sizes "
                             f"the VRAM estimate needs ({exc}).",
                             "The model folder is incomplete or damaged: download it again.") from None
    components = {name: _folder_inventory(info.path / name, inv) for name, inv in spec.components.items()}
    return ModelSpec(spec.family, components, spec.configs)


def model_spec(job: JobConfig, base_dir: str | None = None) -> ModelSpec:
    """The spec of the job's model; raises ModelInfoError with a message and a hint."""
    info = inspect_model(job.model.path, base_dir, allow_pickle=job.model.allow_pickle)
    # The user may know better which SD generation a checkpoint is; text vs image is
    # what the files say.
    if job.model.family in ("sd1", "sd2", "sdxl") and info.family in ("sd1", "sd2", "sdxl"):
        info = dataclasses.replace(info, family=job.model.family)
    return spec_from_info(info)


# ---------------------------------------------------------------- dtypes and targets

def compute_bytes(job: JobConfig) -> int:
    return 4 if job.training.mixed_precision == "no" else 2


def weight_bytes(job: JobConfig) -> int:
    if job.model.dtype != "auto":
        return DTYPE_BYTES[job.model.dtype]
    return compute_bytes(job)


def vae_bytes(job: JobConfig) -> int:
    """The SD VAE overflows in fp16, so the engine keeps it in fp32 there."""
    wb = weight_bytes(job)
    return 4 if wb == 2 and (job.model.dtype == "float16" or job.training.mixed_precision == "fp16"
                             and job.model.dtype == "auto") else wb


def _dtype_label(nbytes: int, job: JobConfig) -> str:
    if nbytes == 4:
        return "fp32"
    if job.model.dtype != "auto":
        return {"float16": "fp16", "bfloat16": "bf16"}.get(job.model.dtype, job.model.dtype)
    return job.training.mixed_precision


def _present_targets(inv: Inventory, candidates: Iterable[str]) -> list[str]:
    modules = {name[: -len(".weight")] for name in inv if name.endswith(".weight")}
    return [t for t in candidates if any(m == t or m.endswith("." + t) for m in modules)]


# Layers PEFT's "all-linear" leaves out: the output head and the embeddings.
_NOT_ALL_LINEAR = ("lm_head", "embed_tokens", "embed_out", "wte", "wpe", "embed_positions")


def _all_linear(inv: Inventory) -> list[str]:
    """Short names of the 2-D weights of a text model but its head and embeddings."""
    names = {name[: -len(".weight")].rsplit(".", 1)[-1] for name, shape in inv.items()
             if name.endswith(".weight") and len(shape) == 2}
    return sorted(n for n in names if n not in _NOT_ALL_LINEAR)


def lora_targets(job: JobConfig, spec: ModelSpec, component: str) -> list[str]:
    inv = spec.components[component]
    net = job.network
    if component.startswith("text_encoder"):
        return _present_targets(inv, TEXT_ENCODER_DEFAULT_TARGETS)
    if component != "transformer":
        return list(net.target_modules) or _present_targets(inv, IMAGE_DEFAULT_TARGETS)
    if ALL_LINEAR in net.target_modules or (not net.target_modules
                                            and net.target_preset == "all_linear"):
        return _all_linear(inv)
    if net.target_modules:
        return list(net.target_modules)
    preset = ATTENTION_CANDIDATES if net.target_preset == "attention" else TEXT_DEFAULT_CANDIDATES
    return _present_targets(inv, preset)


def trained_components(job: JobConfig, spec: ModelSpec) -> list[str]:
    if spec.family == "text":
        return ["transformer"]
    encoders = [c for c in ("text_encoder", "text_encoder_2") if c in spec.components]
    return ["unet"] + (encoders if job.network.train_text_encoder else [])


def adapter_groups(job: JobConfig, spec: ModelSpec, component: str) -> list[tuple[list[str], int]]:
    """(targets, rank) of a component's adapted layers: LoCon / LoHa / LoKr add the UNet's
    3x3 convs at the conv rank and its 1x1 shortcuts at the rank (config/network.py)."""
    net = job.network
    groups = [(lora_targets(job, spec, component), net.rank)]
    if component == "unet" and trains_convs(net):
        groups += [(list(CONV_3X3_TARGETS), conv_rank(net)), (list(CONV_1X1_TARGETS), net.rank)]
    return groups


def lora_inventory(job: JobConfig, spec: ModelSpec) -> Inventory:
    """The trainable tensors by name, exactly as PEFT builds them: LoRA's A and B, LoHa's
    four Hadamard factors or LoKr's Kronecker factors (network.algo)."""
    out: Inventory = {}
    net = job.network
    algo = "lora" if spec.family == "text" else net.algo
    for component in trained_components(job, spec):
        conv1d = spec.family == "text" and spec.configs.get("transformer", {}).get("model_type") in GPT2_STYLE
        for targets, rank in adapter_groups(job, spec, component):
            if algo in ("loha", "lokr"):
                shapes = lycoris_shapes(spec.components[component], targets, rank, algo,
                                        net.lokr_factor)
            else:
                shapes = lora_shapes(spec.components[component], targets, rank, conv1d=conv1d)
            out.update({f"{component}.{k}": v for k, v in shapes.items()})
    return out


# The unit gradient checkpointing recomputes: a ResNet, a transformer block, a CLIP layer.
_CHECKPOINTED_BLOCK = re.compile(r"^(.*?(?:resnets|attentions|layers)\.\d+)\.")


def weight_update_bytes(job: JobConfig, spec: ModelSpec) -> int:
    """LoHa and LoKr build each adapted layer's whole weight update (fp32) in the forward,
    and autograd keeps it for the backward: about one weight-sized fp32 tensor per layer
    (measured with PEFT 0.21). With gradient checkpointing only one block's at a time.
    Approximate: the block boundaries are diffusers' and CLIP's, counted by name."""
    if spec.family == "text" or job.network.algo not in ("loha", "lokr"):
        return 0
    blocks: dict[str, int] = {}
    for component in trained_components(job, spec):
        for targets, _ in adapter_groups(job, spec, component):
            for module, shape in adapted_weights(spec.components[component], targets).items():
                block = _CHECKPOINTED_BLOCK.match(module)
                key = f"{component}.{block.group(1) if block else module}"
                blocks[key] = blocks.get(key, 0) + 4 * numel(shape)
    if job.training.gradient_checkpointing:
        return max(blocks.values(), default=0)
    return sum(blocks.values())


# ---------------------------------------------------------------- optimizer state

# fp32 tensors of each weight's size in the state: AdamW's two moments; DAdaptAdam's and
# schedule-free AdamW's (z, second moment) own; Prodigy's also keeps the starting weights
# (p0; not for an all-zero tensor such as LoRA's B at the start, so this is an upper bound).
FULL_SIZE_STATES = {"AdamW": 2, "AdamWScheduleFree": 2, "DAdaptAdam": 3, "Prodigy": 4}


def optimizer_state_bytes(optimizer: str, shapes: Iterable[tuple[int, ...]]) -> int:
    """Bytes of optimizer state for fp32 trainable tensors of these shapes (the
    per-tensor scalar ``step`` counters, kept on the CPU, are left out)."""
    total = 0
    eight_bit = optimizer in BITSANDBYTES_OPTIMIZERS
    states = 1 if optimizer == "Lion8bit" else 2
    for shape in shapes:
        n = numel(shape)
        if optimizer in FULL_SIZE_STATES:
            total += 4 * FULL_SIZE_STATES[optimizer] * n
        elif eight_bit:
            if n < BNB_MIN_8BIT_SIZE:
                total += 4 * states * n
            else:
                total += states * (n + 4 * -(-n // BNB_BLOCK))
        elif optimizer == "Adafactor":
            if len(shape) >= 2:  # factored second moment: one row and one column vector
                total += 4 * (numel(shape[:-1]) + numel(shape[:-2]) * shape[-1])
            else:
                total += 4 * n
        else:
            raise ValueError(f"unknown optimizer {optimizer!r}")
    if eight_bit:
        total += states * 256 * 4  # the quantisation maps, shared by every tensor
    return total


# ---------------------------------------------------------------- activations: text

def _text_groups(model_type: str) -> dict[str, tuple[str, ...]]:
    if model_type in GPT2_STYLE:
        return {"qkv": ("attn.c_attn",), "o": ("attn.c_proj",), "gate_up": ("mlp.c_fc",),
                "down": ("mlp.c_proj",)}
    return {"qkv": ("q_proj", "k_proj", "v_proj"), "o": ("o_proj",), "gate_up": ("gate_proj", "up_proj"),
            "down": ("down_proj",)}


_LAYER = re.compile(r"(?:^|\.)(?:layers|h)\.(\d+)\.")


def _targeted_in_layer(inv: Inventory, targets: list[str], model_type: str) -> dict[str, int]:
    """How many modules of each input group of one decoder layer get a LoRA."""
    modules = [n[: -len(".weight")] for n in inv
               if n.endswith(".weight") and (m := _LAYER.search(n)) and m.group(1) == "0"]
    chosen = [m for m in modules if any(m == t or m.endswith("." + t) for t in targets)]
    return {group: sum(1 for m in chosen for name in names if m.endswith("." + name))
            for group, names in _text_groups(model_type).items()}


def text_layer_bytes(d: Mapping, targeted: Mapping[str, int], cb: int, lora_dropout: float,
                     attention: str, seq: int, mask_bytes: int = DROPOUT_MASK_BYTES) -> tuple[float, float]:
    """(bytes kept per token by one decoder layer, bytes of its backward working set per token).

    mask_bytes: per element of a LoRA dropout mask (CPU dropout keeps a float mask: 4)."""
    h, i = int(d["hidden"]), int(d["intermediate"])
    q, kv = int(d["heads"]) * int(d["head_dim"]), int(d["kv_heads"]) * int(d["head_dim"])
    widths = {"qkv": h, "o": q, "gate_up": h, "down": i}
    kept = 2 * 4 * h                   # two norms keep an fp32 copy of their input
    kept += (2 * q + 2 * kv) * cb      # attention keeps q, k, v and its output
    kept += 3 * i * cb                 # MLP: gate, act(gate), up
    if cb < 4:
        # One compute-dtype copy of the input per LoRA layer (fp32 cast, then autocast),
        # and with dropout its mask.
        per_element = cb + (mask_bytes if lora_dropout > 0 else 0)
        kept += sum(n * widths[g] * per_element for g, n in targeted.items())
    elif lora_dropout > 0:
        # fp32 with dropout: each LoRA layer keeps its own dropped-out input and mask.
        kept += sum(n * widths[g] * (4 + mask_bytes) for g, n in targeted.items())
    else:
        # fp32: LoRA layers share their input; o_proj's is the kept attention output.
        kept += sum(widths[g] * 4 for g, n in targeted.items() if n and g != "o")
    if attention == "eager":
        kept += int(d["heads"]) * seq * (4 + cb)  # fp32 softmax and its compute-dtype copy
    working = 2 * (h + i) * cb
    return kept, working


def text_activation_parts(job: JobConfig, spec: ModelSpec, attention: str = "sdpa") -> list[Part]:
    d = text_dims(spec.configs["transformer"])
    cb = compute_bytes(job)
    batch, seq = job.training.batch_size, job.dataset.max_seq_length
    tokens = batch * seq
    targeted = _targeted_in_layer(spec.components["transformer"], lora_targets(job, spec, "transformer"),
                                  str(d["model_type"]))
    kept, working = text_layer_bytes(d, targeted, cb, job.network.dropout, attention, seq)
    layers = int(d["layers"])
    if job.training.gradient_checkpointing:
        saved = layers * int(d["hidden"]) * cb + kept + working  # layer inputs + one layer recomputed
        label = "activations (checkpointed layer inputs + one layer)"
    else:
        saved = layers * kept + working
        label = "activations (kept for backward)"
    saved += 4 * int(d["hidden"])  # final norm's fp32 copy
    vocab = int(d["vocab"])
    # Logits in the compute dtype, the fp32 log-softmax kept by the loss, and in the
    # backward its fp32 gradient in and out.
    loss = (12 + cb) * vocab
    parts = [Part(label, int(tokens * saved), "activations"),
             Part("logits and loss", int(tokens * loss), "activations")]
    if job.model.load_in_4bit or job.model.load_in_8bit:
        biggest = max((numel(s) for n, s in spec.components["transformer"].items()
                       if len(s) == 2 and "embed" not in n and "lm_head" not in n and "wte" not in n), default=0)
        parts.append(Part("dequantised weight in flight", biggest * cb, "activations"))
    return parts


# ---------------------------------------------------------------- activations: UNet

def _resnet_bytes(cb: int) -> int:
    # Per element of its input and of its output: group norm's fp32 copy (autocast runs
    # group norm in fp32), SiLU's fp32 input and the conv's compute-dtype input (a frozen
    # conv still keeps its input; a frozen linear layer does not).
    return 8 + cb


def _tblock_bytes(c: int, ctx_dim: int, heads: int, n: int, cb: int, targeted: set[str],
                  lora_dropout: float, attention: str) -> float:
    """Bytes one BasicTransformerBlock keeps per spatial position."""
    per_c = 12 + 18 * cb  # three layer norms' fp32 copies; attention q,k,v,out + q,out; GEGLU
    self_in = [t for t in ("attn1.to_q", "attn1.to_k", "attn1.to_v") if t in targeted]
    own_in = [t for t in ("attn1.to_out.0", "attn2.to_q", "attn2.to_out.0") if t in targeted]
    mask = DROPOUT_MASK_BYTES if lora_dropout > 0 else 0
    if cb < 4:
        per_c += (cb + mask) * (len(self_in) + len(own_in))
    elif mask:
        per_c += (4 + mask) * (len(self_in) + len(own_in))
    else:
        # fp32: q/k/v share the norm's output; to_out's input is a view of the kept
        # attention output; attn2.to_q has the second norm's output to itself.
        per_c += 4 * (bool(self_in) + ("attn2.to_q" in targeted))
    kept = per_c * c
    if attention == "eager":
        kept += heads * n * (4 + cb)
    return kept


def _unet_targets(job: JobConfig, spec: ModelSpec) -> set[str]:
    """Which of a transformer block's attention projections carry a LoRA."""
    targets = lora_targets(job, spec, "unet")
    names = [f"{a}.{p}" for a in ("attn1", "attn2") for p in ("to_q", "to_k", "to_v", "to_out.0")]
    return {n for n in names if any(n == t or n.endswith("." + t) or t.endswith(n) for t in targets)}


def unet_walk(config: Mapping, batch: int, height: int, width: int, cb: int, targeted: set[str],
              lora_dropout: float = 0.0, attention: str = "sdpa",
              checkpointing: bool = False) -> tuple[int, int]:
    """(bytes the UNet keeps for backward, the biggest working set on top of them)
    for a batch of latents height x width, walking the blocks in forward order."""
    u = unet_blocks(config)
    ch = u["channels"]
    rb = _resnet_bytes(cb)
    kept = 0.0
    biggest_unit = 0.0
    grad_started = False  # before the first LoRA layer nothing needs a gradient

    def resnet(c_in: int, c_out: int, n: int) -> None:
        nonlocal kept, biggest_unit
        if not grad_started:
            return
        full = rb * (c_in + c_out) * n
        kept += c_in * n * cb if checkpointing else full
        biggest_unit = max(biggest_unit, full)

    def transformer(c: int, n: int, depth: int, ctx_dim: int, heads: int) -> None:
        nonlocal kept, biggest_unit, grad_started
        # Group norm's fp32 copy; SD 1.x's 1x1-conv proj_in / proj_out keep their inputs.
        convs = 0 if u["linear_proj"] else cb
        kept += ((4 + 2 * convs) if grad_started else convs) * c * n
        grad_started = True
        block = _tblock_bytes(c, ctx_dim, heads, n, cb, targeted, lora_dropout, attention) * n
        cross = 2 * CLIP_TOKENS * c * cb + sum(CLIP_TOKENS * ctx_dim * cb for t in ("attn2.to_k", "attn2.to_v")
                                                if t in targeted)
        full = block + cross
        kept += depth * (c * n * cb if checkpointing else full)  # cross-attention inputs are shared
        biggest_unit = max(biggest_unit, full)

    def sampler(c: int, n: int) -> None:
        nonlocal kept
        if grad_started:
            kept += c * n * cb

    n = height * width
    for layer in unet_layers(u):
        if layer.kind == "resnet":
            resnet(layer.c_in, layer.c_out, n)
        elif layer.kind == "attention":
            transformer(layer.c_out, n, layer.depth, layer.context, layer.heads)
        elif layer.kind == "downsample":
            sampler(layer.c_in, n)  # the downsampling conv keeps its full-size input
            n //= 4
        else:
            n *= 4
            sampler(layer.c_in, n)  # the upsampling conv keeps its upsampled input
    kept += rb * ch[0] * n + 12 * u["out_channels"] * n  # norm, SiLU, conv_out; the fp32 loss
    working = 3 * ch[0] * n * 4  # the first gradients of the backward, in fp32
    if checkpointing:
        working += biggest_unit
    return int(batch * kept), int(batch * working)


def latent_size(job: JobConfig) -> tuple[int, int]:
    """The largest latent a step sees: the bucket area is at most resolution squared (the
    largest of the concept folders'), sides are multiples of 64 pixels (8 latent pixels)."""
    resolution = largest_resolution(job.dataset.subsets, job.dataset.resolution)
    side = min(resolution, job.dataset.max_bucket_reso) if job.dataset.enable_bucket \
        else resolution
    side = -(-side // 64) * 64
    return side // 8, side // 8


def image_activation_parts(job: JobConfig, spec: ModelSpec, attention: str = "sdpa") -> list[Part]:
    cb = compute_bytes(job)
    batch = job.training.batch_size
    h, w = latent_size(job)
    kept, working = unet_walk(spec.configs["unet"], batch, h, w, cb, _unet_targets(job, spec),
                              job.network.dropout, attention, job.training.gradient_checkpointing)
    parts = [Part("activations, UNet (kept for backward)", kept, "activations"),
             Part("backward working set", working, "activations")]
    if job.network.train_text_encoder:
        te = 0
        for name in ("text_encoder", "text_encoder_2"):
            if name not in spec.configs:
                continue
            cfg = spec.configs[name]
            d = {"hidden": cfg["hidden_size"], "intermediate": cfg["intermediate_size"],
                 "heads": cfg["num_attention_heads"], "kv_heads": cfg["num_attention_heads"],
                 "head_dim": cfg["hidden_size"] // cfg["num_attention_heads"]}
            targeted = {"qkv": 3, "o": 1, "gate_up": 0, "down": 0}
            layer, _ = text_layer_bytes(d, targeted, cb, job.network.dropout, attention, CLIP_TOKENS)
            layers = int(cfg["num_hidden_layers"])
            per_token = (layers * cfg["hidden_size"] * cb + layer) if job.training.gradient_checkpointing \
                else layers * layer
            te += int(batch * CLIP_TOKENS * per_token)
        parts.append(Part("activations, text encoders", te, "activations"))
    if not job.dataset.cache_latents:
        # The VAE encodes each image of the batch first, one at a time; its biggest moment
        # is its first block at full size.
        vae_first = spec.configs.get("vae", archs.SD_VAE)["block_out_channels"][0]
        encode = 4 * vae_first * (h * 8) * (w * 8) * vae_bytes(job)
        if encode > kept + working:
            parts = [Part("activations, VAE encoding each batch (peak)", encode, "activations")]
    return parts


def input_parts(job: JobConfig, spec: ModelSpec, captions: int | None = None) -> list[Part]:
    """One batch of inputs; for SD also the text-embedding cache the engine keeps on the
    GPU (one entry per distinct caption) when the text encoders are frozen. Latents
    are cached in system RAM or on disk."""
    if spec.family == "text":
        tokens = job.training.batch_size * job.dataset.max_seq_length
        return [Part("token ids, labels, mask (one batch)", tokens * 8 * 3, "inputs")]
    h, w = latent_size(job)
    wb = weight_bytes(job)
    context = sum(spec.configs[c]["hidden_size"] for c in ("text_encoder", "text_encoder_2")
                  if c in spec.configs)
    embedding = CLIP_TOKENS * context * wb
    per_sample = (4 * h * w * 3) * 4 + embedding  # latents, noise, noisy latents; embeddings
    parts = [Part("latents and text embeddings (one batch)", job.training.batch_size * per_sample, "inputs")]
    if captions and not job.network.train_text_encoder:
        parts.append(Part(f"cached text embeddings ({captions} captions)", captions * embedding, "inputs"))
    return parts


# ---------------------------------------------------------------- weights

def weight_parts(job: JobConfig, spec: ModelSpec) -> list[Part]:
    wb = weight_bytes(job)
    label = _dtype_label(wb, job)
    if spec.family != "text":
        parts = []
        for name, inv in spec.components.items():
            nbytes, dlabel = wb, label
            if name == "vae" and vae_bytes(job) != wb:
                nbytes, dlabel = 4, "fp32"
            parts.append(Part(f"base weights, {name.replace('_', ' ')} ({dlabel})", count(inv) * nbytes,
                              "weights"))
        return parts
    inv = spec.components["transformer"]
    if not (job.model.load_in_4bit or job.model.load_in_8bit):
        return [Part(f"base weights ({label})", count(inv) * wb, "weights")]
    # bitsandbytes quantises the Linear layers of the decoder; embeddings, norms and
    # the LM head stay, and PEFT's k-bit preparation upcasts them to fp32.
    quantised = {n: s for n, s in inv.items() if n.endswith(".weight") and len(s) == 2 and _LAYER.search(n)}
    rest = count(inv) - count(quantised)
    if job.model.load_in_4bit:
        q_bytes, q_label = int(count(quantised) * NF4_BYTES_PER_PARAM), "4-bit NF4, double-quantised"
    else:
        q_bytes = count(quantised) + sum(4 * s[0] for s in quantised.values())  # int8 + fp32 row scales
        q_label = "8-bit"
    return [Part(f"base weights, linear layers ({q_label})", q_bytes, "weights"),
            Part("base weights, embeddings / norms / head (fp32)", rest * 4, "weights")]


# ---------------------------------------------------------------- the estimate

def _gpu_facts(gpu: GpuInfo | GpuFacts | None) -> tuple[bool | None, int | None, str]:
    """(CUDA available, free bytes, name) from either description of a card."""
    if gpu is None:
        return None, None, ""
    if isinstance(gpu, GpuInfo):
        return True, gpu.vram_free, gpu.name
    return gpu.cuda_available, gpu.total_vram_bytes if gpu.cuda_available else None, gpu.name


def estimate(job: JobConfig, gpu: GpuInfo | GpuFacts | None = None, spec: ModelSpec | None = None,
             margin: float = DEFAULT_MARGIN, attention: str = "sdpa",
             captions: int | None = None) -> Estimate:
    """The VRAM `job` needs on one GPU. Reads the model's headers unless `spec` is given;
    raises ModelInfoError (with a hint) when the model cannot be read.

    attention: "sdpa" (the engine's) or "eager"; captions: distinct captions of an image
    dataset, for the text-embedding cache."""
    spec = model_spec(job) if spec is None else spec
    cuda, free, name = _gpu_facts(gpu)
    lora = lora_inventory(job, spec)
    n_lora = count(lora)
    parts = weight_parts(job, spec)
    parts += [Part(f"LoRA weights (fp32, {n_lora:,} parameters)", 4 * n_lora, "lora"),
              Part("LoRA gradients (fp32)", 4 * n_lora, "lora"),
              Part(f"optimizer state ({job.optimizer.optimizer})",
                   optimizer_state_bytes(job.optimizer.optimizer, lora.values()), "optimizer")]
    if spec.family == "text":
        parts += text_activation_parts(job, spec, attention)
    else:
        parts += image_activation_parts(job, spec, attention)
        if weight_update_bytes(job, spec):
            parts.append(Part(f"{job.network.algo} weight updates kept for backward (approximate)",
                              weight_update_bytes(job, spec), "activations"))
    parts += input_parts(job, spec, captions)
    notes: list[str] = []
    if cuda is not False:
        allocated = sum(p.bytes for p in parts)
        parts.append(Part("CUDA context and framework overhead",
                          CUDA_CONTEXT + int(ALLOCATOR_SLACK * allocated), "overhead"))
    if job.optimizer.optimizer == "PagedAdamW8bit":
        notes.append("PagedAdamW8bit can move its state to system RAM when VRAM runs short.")
    return Estimate(tuple(parts), margin, free, name, tuple(notes))


def estimate_from_config(job: JobConfig, config: Mapping[str, Any], family: str | None = None,
                         gpu: GpuInfo | GpuFacts | None = None, margin: float = DEFAULT_MARGIN,
                         attention: str = "sdpa") -> Estimate:
    """The estimate for an architecture given only by its config (see spec_from_config);
    family defaults to the job's."""
    family = family or job.model.family
    if family == "auto":
        raise ValueError("estimate_from_config needs a family: text, sd1, sd2 or sdxl")
    return estimate(job, gpu, spec_from_config(family, config), margin, attention)
