"""The VRAM estimate: sizes checked exactly against instantiated tiny models, the
activation model against the tensors autograd keeps, and the breakdown's behaviour."""
import contextlib
import importlib
import warnings
from pathlib import Path

import pytest
import torch

from lora_studio.config.model_info import ModelInfoError
from lora_studio.config.optimizers import OPTIONAL_OPTIMIZERS
from lora_studio.config.schema import JobConfig
from lora_studio.hardware import archs, inventory
from lora_studio.hardware.estimate import (
    GIB,
    NF4_BYTES_PER_PARAM,
    estimate,
    estimate_from_config,
    lora_inventory,
    model_spec,
    optimizer_state_bytes,
    spec_from_config,
    text_layer_bytes,
    unet_walk,
)
from lora_studio.hardware.monitor import GpuInfo

warnings.filterwarnings("ignore", message=".*gemm_4bit.*")
RESOURCES = Path(__file__).resolve().parents[1] / "resources"

LLAMA = {"model_type": "llama", "hidden_size": 256, "intermediate_size": 512, "num_hidden_layers": 2,
         "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 300,
         "max_position_embeddings": 512, "tie_word_embeddings": False}
UNET = {"sample_size": 16, "layers_per_block": 1, "block_out_channels": [32, 64],
        "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
        "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"], "cross_attention_dim": 48,
        "attention_head_dim": 8, "norm_num_groups": 8}
UNET_XL_STYLE = {"sample_size": 16, "layers_per_block": 2, "block_out_channels": [32, 64, 64],
                 "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
                 "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
                 "cross_attention_dim": 48, "attention_head_dim": [2, 4, 4],
                 "transformer_layers_per_block": [1, 2, 2], "use_linear_projection": True,
                 "norm_num_groups": 8, "addition_embed_type": "text_time", "addition_time_embed_dim": 8,
                 "projection_class_embeddings_input_dim": 80}
CLIP = {"hidden_size": 48, "intermediate_size": 96, "num_hidden_layers": 2, "num_attention_heads": 4,
        "vocab_size": 100, "max_position_embeddings": 77, "projection_dim": 16}
VAE = {"block_out_channels": [16, 32], "layers_per_block": 1, "latent_channels": 4, "norm_num_groups": 8,
       "down_block_types": ["DownEncoderBlock2D"] * 2, "up_block_types": ["UpDecoderBlock2D"] * 2}


def make_job(family="text", **values) -> JobConfig:
    data: dict = {"model": {"family": family}}
    for key, value in values.items():
        section, name = key.split("__")
        data.setdefault(section, {})[name] = value
    return JobConfig.model_validate(data)


def shapes_of(model) -> dict:
    return {n: tuple(p.shape) for n, p in model.named_parameters()}


# ---------------------------------------------------------------- parameter inventories

@pytest.mark.parametrize("config", [UNET, UNET_XL_STYLE], ids=["sd1-style", "sdxl-style"])
def test_unet_inventory_is_exact(config):
    from diffusers import UNet2DConditionModel
    assert inventory.unet_inventory(config) == shapes_of(UNet2DConditionModel(**config))


def test_text_and_vae_inventories_are_exact():
    from diffusers import AutoencoderKL
    from transformers import (CLIPTextConfig, CLIPTextModelWithProjection, GPT2Config, GPT2LMHeadModel,
                              LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM)
    assert inventory.text_inventory(LLAMA) == shapes_of(LlamaForCausalLM(LlamaConfig(**LLAMA)))
    qwen = Qwen2Config(hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                       num_key_value_heads=2, vocab_size=100, tie_word_embeddings=True)
    assert inventory.text_inventory(qwen.to_dict()) == shapes_of(Qwen2ForCausalLM(qwen))
    gpt2 = GPT2Config(n_embd=32, n_layer=2, n_head=4, vocab_size=100, n_positions=64)
    assert inventory.text_inventory(gpt2.to_dict()) == shapes_of(GPT2LMHeadModel(gpt2))
    clip = CLIPTextModelWithProjection(CLIPTextConfig(**CLIP))
    assert inventory.count(inventory.clip_text_inventory({**CLIP, "with_projection": True})) == \
        sum(p.numel() for p in clip.parameters())
    assert inventory.vae_inventory(VAE) == shapes_of(AutoencoderKL(**VAE))


def test_public_architectures_have_their_published_sizes():
    assert inventory.count(inventory.unet_inventory(archs.SD15_UNET)) == 859_520_964
    assert inventory.count(inventory.unet_inventory(archs.SDXL_UNET)) == 2_567_463_684
    assert inventory.count(inventory.clip_text_inventory(archs.CLIP_L)) == 123_060_480
    assert inventory.count(inventory.vae_inventory(archs.SD_VAE)) == 83_653_863
    assert inventory.count(inventory.text_inventory(archs.LLAMA_7B)) == 6_738_415_616
    assert inventory.count(inventory.text_inventory(archs.LLAMA_1B)) == 1_235_814_400


@pytest.mark.parametrize("folder", ["tiny-sd", "tiny-text-model"])
def test_headers_and_configs_agree_on_shipped_models(folder):
    spec = model_spec(make_job("auto", model__path=str(RESOURCES / folder)))
    from_config = spec_from_config(spec.family, spec.configs["transformer"] if spec.family == "text"
                                   else spec.configs)
    for name, inv in spec.components.items():
        assert inventory.count(inv) == inventory.count(from_config.components[name]), name


def test_missing_model_raises_model_info_error(tmp_path):
    with pytest.raises(ModelInfoError):
        estimate(make_job("text", model__path=str(tmp_path / "nothing here")))


# ---------------------------------------------------------------- LoRA, gradients, optimizer: exact

@pytest.fixture(scope="module")
def tiny_llama_step():
    """A tiny Llama with PEFT LoRA on the default targets, after one AdamW step on CPU."""
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM
    torch.manual_seed(0)
    job = make_job("text", network__rank=8)
    spec = spec_from_config("text", LLAMA)
    targets = sorted({k.split(".")[-3] for k in lora_inventory(job, spec)})
    model = get_peft_model(LlamaForCausalLM(LlamaConfig(**LLAMA)),
                           LoraConfig(r=8, lora_alpha=8, target_modules=targets))
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-3)
    ids = torch.randint(0, 300, (1, 16))
    model(input_ids=ids, labels=ids).loss.backward()
    optimizer.step()
    return job, spec, trainable, optimizer


def _state_bytes(optimizer) -> int:
    """Device-resident optimizer state: unique storages, without the 0-dim step counters."""
    storages = {}
    for state in optimizer.state.values():
        for value in state.values():
            if torch.is_tensor(value) and value.dim() > 0:
                storages[value.untyped_storage().data_ptr()] = value.untyped_storage().nbytes()
    return sum(storages.values())


def test_lora_weights_gradients_and_adamw_state_match_peft_exactly(tiny_llama_step):
    job, spec, trainable, optimizer = tiny_llama_step
    est = estimate_from_config(job, LLAMA)
    assert est.part("LoRA weights") == sum(p.nbytes for p in trainable)
    assert est.part("LoRA gradients") == sum(p.grad.nbytes for p in trainable)
    assert est.part("optimizer state") == _state_bytes(optimizer)
    assert sorted(lora_inventory(job, spec).values()) == sorted(tuple(p.shape) for p in trainable)


@pytest.mark.parametrize("name", ["AdamW8bit", "Lion8bit", "Adafactor", "Prodigy", "DAdaptAdam",
                                  "AdamWScheduleFree"])
def test_other_optimizers_state_bytes_are_exact(name, tiny_llama_step):
    job, spec, trainable, _ = tiny_llama_step
    params = [torch.nn.Parameter(p.detach().clone()) for p in trainable]
    # Both sides of bitsandbytes' 4096-element threshold are among these shapes.
    assert min(p.numel() for p in params) < 4096 <= max(p.numel() for p in params)
    if name == "Adafactor":
        from transformers.optimization import Adafactor
        optimizer = Adafactor(params, lr=1e-3, scale_parameter=False, relative_step=False)
    elif name in OPTIONAL_OPTIMIZERS:
        package, cls = OPTIONAL_OPTIMIZERS[name]
        optimizer = getattr(importlib.import_module(package), cls)(params, lr=1.0)
        if name == "AdamWScheduleFree":
            optimizer.train()
    else:
        import bitsandbytes as bnb
        optimizer = getattr(bnb.optim, name)(params, lr=1e-3)
    for p in params:
        p.grad = torch.randn_like(p)
    optimizer.step()
    assert optimizer_state_bytes(name, [tuple(p.shape) for p in params]) == _state_bytes(optimizer)


def test_unet_and_text_encoder_lora_match_peft_exactly():
    from diffusers import UNet2DConditionModel
    from peft import LoraConfig, inject_adapter_in_model
    from transformers import CLIPTextConfig, CLIPTextModel
    from lora_studio.config.model_info import IMAGE_DEFAULT_TARGETS, TEXT_ENCODER_DEFAULT_TARGETS
    unet = UNet2DConditionModel(**UNET)
    unet.requires_grad_(False)
    unet.add_adapter(LoraConfig(r=4, target_modules=list(IMAGE_DEFAULT_TARGETS)))
    encoder = CLIPTextModel(CLIPTextConfig(**CLIP))
    encoder.requires_grad_(False)
    inject_adapter_in_model(LoraConfig(r=4, target_modules=list(TEXT_ENCODER_DEFAULT_TARGETS)), encoder)
    expected = sum(p.numel() for m in (unet, encoder) for p in m.parameters() if p.requires_grad)
    spec = spec_from_config("sd1", {"unet": UNET, "text_encoder": CLIP, "vae": VAE})
    job = make_job("sd1", network__rank=4, network__train_text_encoder=True)
    assert inventory.count(lora_inventory(job, spec)) == expected
    frozen_te = make_job("sd1", network__rank=4)
    assert inventory.count(lora_inventory(frozen_te, spec)) == \
        sum(p.numel() for p in unet.parameters() if p.requires_grad)


@pytest.mark.parametrize("network", [
    {"algo": "locon", "rank": 4, "conv_rank": 2},
    {"algo": "loha", "rank": 4, "conv_rank": 2},
    {"algo": "lokr", "rank": 4, "conv_rank": 1},       # full and decomposed second factors
    {"algo": "lokr", "rank": 2, "lokr_factor": 4},
], ids=["locon", "loha", "lokr", "lokr-factor"])
@pytest.mark.parametrize("config", [UNET, UNET_XL_STYLE], ids=["sd1-style", "sdxl-style"])
def test_lycoris_networks_match_peft_exactly(network, config):
    from diffusers import UNet2DConditionModel
    from peft import inject_adapter_in_model
    from transformers import CLIPTextConfig, CLIPTextModel
    from lora_studio.config.model_info import IMAGE_DEFAULT_TARGETS, TEXT_ENCODER_DEFAULT_TARGETS
    from lora_studio.config.network import unet_conv_targets
    from lora_studio.engine.image.lora import peft_config
    job = make_job("sd1", network__train_text_encoder=True,
                   **{f"network__{k}": v for k, v in network.items()})
    unet = UNet2DConditionModel(**config)
    unet.requires_grad_(False)
    unet.add_adapter(peft_config(job.network, IMAGE_DEFAULT_TARGETS, unet_conv_targets(job.network)))
    encoder = CLIPTextModel(CLIPTextConfig(**CLIP))
    encoder.requires_grad_(False)
    inject_adapter_in_model(peft_config(job.network, TEXT_ENCODER_DEFAULT_TARGETS), encoder)
    trainable = [p for m in (unet, encoder) for p in m.parameters() if p.requires_grad]
    spec = spec_from_config("sd1", {"unet": config, "text_encoder": CLIP, "vae": VAE})
    assert sorted(lora_inventory(job, spec).values()) == sorted(tuple(p.shape) for p in trainable)


def _saved_bytes(unet, sample, text) -> int:
    saved = {}

    def pack(t):
        saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        unet(sample, torch.tensor([10]), encoder_hidden_states=text)
    return sum(saved.values())


@pytest.mark.parametrize("algo", ["loha", "lokr"])
def test_lycoris_weight_updates_kept_for_backward_are_about_what_autograd_keeps(algo):
    from diffusers import UNet2DConditionModel
    from lora_studio.config.model_info import IMAGE_DEFAULT_TARGETS
    from lora_studio.config.network import unet_conv_targets
    from lora_studio.engine.image.lora import peft_config
    from lora_studio.hardware.estimate import weight_update_bytes
    kept = {}
    for name in ("locon", algo):
        job = make_job("sd1", network__algo=name, network__rank=4)
        unet = UNet2DConditionModel(**UNET)
        unet.requires_grad_(False)
        unet.add_adapter(peft_config(job.network, IMAGE_DEFAULT_TARGETS, unet_conv_targets(job.network)))
        sample, text = torch.randn(1, 4, 8, 8), torch.randn(1, 7, UNET["cross_attention_dim"])
        kept[name] = _saved_bytes(unet, sample, text)
    spec = spec_from_config("sd1", {"unet": UNET, "text_encoder": CLIP, "vae": VAE})
    job = make_job("sd1", network__algo=algo, network__rank=4)
    extra = kept[algo] - kept["locon"]
    assert 0.8 * extra < weight_update_bytes(job, spec) < 1.25 * extra
    est = estimate_from_config(job, {"unet": UNET, "text_encoder": CLIP, "vae": VAE})
    assert est.part(f"{algo} weight updates kept for backward (approximate)") == \
        weight_update_bytes(job, spec)
    checkpointed = make_job("sd1", network__algo=algo, network__rank=4,
                            training__gradient_checkpointing=True)
    assert 0 < weight_update_bytes(checkpointed, spec) < weight_update_bytes(job, spec) / 4
    assert weight_update_bytes(make_job("sd1", network__algo="locon"), spec) == 0


# ---------------------------------------------------------------- activations vs autograd

def saved_tensor_bytes(model, run) -> int:
    """Bytes of the distinct storages autograd keeps for backward (weights excluded)."""
    weights = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(t):
        ptr = t.untyped_storage().data_ptr()
        if ptr not in weights:
            seen[ptr] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        run()
    return sum(seen.values())


@pytest.mark.parametrize("precision,dropout", [("no", 0.0), ("bf16", 0.0), ("bf16", 0.1), ("no", 0.1)])
def test_text_layer_model_matches_what_autograd_keeps(precision, dropout):
    """Per decoder layer, measured as the difference between a 3- and a 1-layer model.
    bf16 runs under CPU autocast like the engine's; Llama's RMSNorm upcasts by hand,
    so CPU and CUDA keep the same tensors here, except that CPU dropout keeps a float
    mask where CUDA's keeps a bool one."""
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM
    torch.manual_seed(0)
    batch, seq = 2, 32
    cfg = {**LLAMA, "hidden_size": 128, "intermediate_size": 256}

    def measure(layers: int) -> int:
        model = LlamaForCausalLM(LlamaConfig(**{**cfg, "num_hidden_layers": layers}))
        if precision == "bf16":
            model = model.to(torch.bfloat16)
        model = get_peft_model(model, LoraConfig(r=4, lora_dropout=dropout,
                                                 target_modules=["q_proj", "k_proj", "v_proj", "o_proj",
                                                                 "gate_proj", "up_proj", "down_proj"]))
        ids = torch.randint(0, 300, (batch, seq))
        autocast = torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16" \
            else contextlib.nullcontext()
        with autocast:
            return saved_tensor_bytes(model, lambda: model(input_ids=ids, labels=ids).loss)

    measured = (measure(3) - measure(1)) / 2 / (batch * seq)
    dims = inventory.text_dims(cfg)
    kept, _ = text_layer_bytes(dims, {"qkv": 3, "o": 1, "gate_up": 2, "down": 1},
                               4 if precision == "no" else 2, dropout, "sdpa", seq, mask_bytes=4)
    assert kept == pytest.approx(measured, rel=0.08)


@pytest.mark.parametrize("config", [UNET, {k: v for k, v in UNET_XL_STYLE.items()
                                           if not k.startswith(("addition", "projection"))}],
                         ids=["sd1-style", "sdxl-style"])
def test_unet_walk_matches_what_autograd_keeps_in_fp32(config):
    """fp32, where CPU and CUDA run the same ops (CPU autocast keeps group norm in bf16)."""
    from diffusers import UNet2DConditionModel
    from diffusers.models.attention_processor import AttnProcessor2_0
    from peft import LoraConfig
    torch.manual_seed(0)
    unet = UNet2DConditionModel(**config)
    unet.requires_grad_(False)
    unet.set_attn_processor(AttnProcessor2_0())
    unet.add_adapter(LoraConfig(r=4, target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    batch, side = 2, 16
    x, ctx = torch.randn(batch, 4, side, side), torch.randn(batch, 77, 48)
    t = torch.randint(0, 1000, (batch,))
    measured = saved_tensor_bytes(
        unet, lambda: torch.nn.functional.mse_loss(unet(x, t, ctx).sample, torch.randn_like(x)))
    targets = {f"{a}.{p}" for a in ("attn1", "attn2") for p in ("to_q", "to_k", "to_v", "to_out.0")}
    kept, _ = unet_walk(config, batch, side, side, 4, targets)
    assert kept == pytest.approx(measured, rel=0.10)


# ---------------------------------------------------------------- the breakdown

def test_breakdown_parts_add_up_and_margin_applies():
    job = make_job("text", training__mixed_precision="bf16")
    est = estimate_from_config(job, archs.LLAMA_1B, margin=0.2)
    assert est.subtotal == sum(p.bytes for p in est.parts)
    assert est.total == int(est.subtotal * 1.2)
    assert est.part("base weights (bf16)") == 2 * 1_235_814_400
    groups = {p.group for p in est.parts}
    assert groups == {"weights", "lora", "optimizer", "activations", "inputs", "overhead"}
    assert est.allocated == est.subtotal - est.group_bytes("overhead")
    assert "total" in est.describe()


def test_quantised_text_bases():
    spec = spec_from_config("text", archs.LLAMA_7B)
    linear = sum(inventory.numel(s) for n, s in spec.components["transformer"].items()
                 if ".layers." in n and len(s) == 2)
    rest = inventory.count(spec.components["transformer"]) - linear
    four = estimate_from_config(make_job("text", model__load_in_4bit=True, training__mixed_precision="bf16"),
                                archs.LLAMA_7B)
    assert four.part("base weights, linear layers (4-bit") == int(linear * NF4_BYTES_PER_PARAM)
    assert four.part("base weights, embeddings") == rest * 4
    eight = estimate_from_config(make_job("text", model__load_in_8bit=True, training__mixed_precision="bf16"),
                                 archs.LLAMA_7B)
    full = estimate_from_config(make_job("text", training__mixed_precision="bf16"), archs.LLAMA_7B)
    assert four.group_bytes("weights") < eight.group_bytes("weights") < full.group_bytes("weights")
    assert four.part("dequantised weight in flight") == 4096 * 11008 * 2


def test_sd_components_and_fp16_vae():
    est = estimate_from_config(make_job("sdxl", training__mixed_precision="fp16"), {})
    assert est.part("base weights, unet (fp16)") == 2 * 2_567_463_684
    assert est.part("base weights, vae (fp32)") == 4 * 83_653_863
    assert est.part("base weights, text encoder 2") > est.part("base weights, text encoder (")


def _act(job, config, family=None):
    return estimate_from_config(job, config, family).group_bytes("activations")


@pytest.mark.parametrize("family,config,knob,small,large", [
    ("text", archs.LLAMA_1B, "training__batch_size", 1, 4),
    ("text", archs.LLAMA_1B, "dataset__max_seq_length", 512, 2048),
    ("sd1", {}, "training__batch_size", 1, 4),
    ("sd1", {}, "dataset__resolution", 512, 768),
    ("sdxl", {}, "dataset__resolution", 768, 1024),
])
def test_activations_grow_with_batch_and_size(family, config, knob, small, large):
    base = {"training__mixed_precision": "bf16"}
    assert _act(make_job(family, **base, **{knob: small}), config) < \
        _act(make_job(family, **base, **{knob: large}), config)


@pytest.mark.parametrize("family,config", [("text", archs.LLAMA_1B), ("sd1", {}), ("sdxl", {})])
def test_checkpointing_and_sdpa_save_memory(family, config):
    plain = make_job(family, training__mixed_precision="bf16")
    checkpointed = make_job(family, training__mixed_precision="bf16", training__gradient_checkpointing=True)
    def kept(job):  # the logits and the loss do not depend on checkpointing
        return estimate_from_config(job, config).part("activations")
    assert kept(checkpointed) < kept(plain) / 2
    eager = estimate_from_config(plain, config, attention="eager").group_bytes("activations")
    assert eager > _act(plain, config)


def test_optimizers_and_rank_order():
    def opt(name, rank=16):
        job = make_job("text", optimizer__optimizer=name, network__rank=rank)
        return estimate_from_config(job, archs.LLAMA_1B).group_bytes("optimizer")
    assert opt("AdamW8bit") == opt("PagedAdamW8bit") < opt("AdamW")
    assert opt("Lion8bit") < opt("AdamW8bit")
    assert opt("Adafactor") < opt("AdamW8bit")
    assert opt("AdamW", rank=32) == 2 * opt("AdamW", rank=16)


def test_uncached_latents_and_text_encoder_training_cost_more():
    base = {"training__mixed_precision": "bf16", "dataset__resolution": 1024}
    cached = _act(make_job("sdxl", **base), {})
    assert _act(make_job("sdxl", **base, network__train_text_encoder=True), {}) > cached
    ckpt = {**base, "training__gradient_checkpointing": True}
    assert _act(make_job("sdxl", **ckpt, dataset__cache_latents=False), {}) > \
        _act(make_job("sdxl", **ckpt), {})


def test_gpu_free_memory_decides_fits():
    job = make_job("sd1", training__mixed_precision="fp16")
    card = GpuInfo(0, "RTX 3060", 1 * GIB, 12 * GIB, 11 * GIB, 0, 40, 20.0, (8, 6), True)
    est = estimate_from_config(job, {}, gpu=card)
    assert est.fits is True and est.free_bytes == 11 * GIB and "RTX 3060" in est.describe()
    small = GpuInfo(0, "GTX 1050", 1 * GIB, 2 * GIB, 1 * GIB, 0, 40, 20.0, (6, 1), False)
    assert estimate_from_config(job, {}, gpu=small).fits is False
    assert estimate_from_config(job, {}).fits is None


def test_estimate_from_config_needs_a_family():
    with pytest.raises(ValueError):
        estimate_from_config(make_job("auto"), archs.LLAMA_1B)


# ---------------------------------------------------------------- reading models from disk

def test_estimate_from_a_folder_equals_the_estimate_from_its_config():
    job = make_job("auto", model__path=str(RESOURCES / "tiny-text-model"), training__batch_size=2)
    spec = model_spec(job)
    from_disk = estimate(job, spec=spec)
    from_config = estimate_from_config(job, spec.configs["transformer"], family="text")
    assert from_disk.parts == from_config.parts


def test_single_file_checkpoints_use_their_family_layout(tmp_path):
    from tests.tiny_models import sdxl_single_file
    job = make_job("auto", model__path=str(sdxl_single_file(tmp_path / "my sdxl.safetensors")),
                   training__mixed_precision="bf16")
    est = estimate(job)
    assert est.part("base weights, unet (bf16)") == 2 * 2_567_463_684


def test_pre_quantised_weights_fall_back_to_the_config(tmp_path):
    from tests.tiny_models import llama_folder, write_safetensors
    folder = llama_folder(tmp_path / "quantised", weights=False)
    write_safetensors(folder / "model.safetensors", {"model.layers.0.mlp.down_proj.weight": [64, 32]},
                      dtype="U8")
    spec = model_spec(make_job("auto", model__path=str(folder)))
    assert inventory.count(spec.components["transformer"]) == \
        inventory.count(inventory.text_inventory(spec.configs["transformer"]))


def test_damaged_unet_config_is_a_model_info_error(tmp_path):
    import shutil
    folder = tmp_path / "tiny sd"
    shutil.copytree(RESOURCES / "tiny-sd", folder)
    (folder / "unet" / "config.json").write_text('{"_class_name": "UNet2DConditionModel", '
                                                 '"cross_attention_dim": 32}', encoding="utf-8")
    with pytest.raises(ModelInfoError) as info:
        estimate(make_job("auto", model__path=str(folder)))
    assert "tiny sd" in info.value.message and info.value.hint


@pytest.mark.parametrize("preset", ["default", "attention", "all_linear"])
def test_target_presets_count_the_lora_peft_builds(preset):
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    from lora_studio.config.model_info import ALL_LINEAR, ATTENTION_CANDIDATES
    job = make_job("text", network__rank=8, network__target_preset=preset)
    spec = spec_from_config("text", LLAMA)
    peft_targets = {"default": None, "attention": list(ATTENTION_CANDIDATES),
                    "all_linear": ALL_LINEAR}[preset]
    model = LlamaForCausalLM(LlamaConfig(**LLAMA))
    config = LoraConfig(r=8, target_modules=peft_targets) if peft_targets else \
        LoraConfig(r=8, target_modules=sorted({k.split(".")[-3]
                                               for k in lora_inventory(job, spec)}))
    trainable = [p for p in get_peft_model(model, config).parameters() if p.requires_grad]
    assert sorted(lora_inventory(job, spec).values()) == sorted(tuple(p.shape) for p in trainable)
