"""Stand-in model folders and checkpoints for tests of the model-aware checks.

Only what LoRA Studio reads without loading a model is written: config JSON files
and valid safetensors files whose tensors are zeros. The tensor bytes are a sparse
hole (the file is truncated to length), so even real SD widths cost no disk or time.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

DTYPE_BYTES = {"F16": 2, "BF16": 2, "F32": 4, "U8": 1}


def write_safetensors(path: Path, shapes: dict[str, list[int]], metadata: dict | None = None,
                      dtype: str = "F16") -> Path:
    header: dict = {"__metadata__": metadata} if metadata else {}
    offset = 0
    for name, shape in shapes.items():
        size = math.prod(shape) * DTYPE_BYTES[dtype]
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        fh.write(len(raw).to_bytes(8, "little") + raw)
        fh.truncate(8 + len(raw) + offset)
    return path


def write_json(path: Path, data: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def llama_folder(root: Path, hidden: int = 64, heads: int = 4, kv_heads: int = 2, inter: int = 128,
                 vocab: int = 100, positions: int = 256, weights: bool = True) -> Path:
    """A two-layer Llama-style model, its weights split over two shards."""
    head_dim = hidden // heads
    write_json(root / "config.json", {
        "model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": hidden,
        "intermediate_size": inter, "num_attention_heads": heads, "num_key_value_heads": kv_heads,
        "max_position_embeddings": positions, "vocab_size": vocab, "num_hidden_layers": 2})
    if weights:
        for shard in (0, 1):
            p = f"model.layers.{shard}."
            shapes = {p + "self_attn.q_proj.weight": [heads * head_dim, hidden],
                      p + "self_attn.k_proj.weight": [kv_heads * head_dim, hidden],
                      p + "self_attn.v_proj.weight": [kv_heads * head_dim, hidden],
                      p + "self_attn.o_proj.weight": [hidden, heads * head_dim],
                      p + "mlp.gate_proj.weight": [inter, hidden],
                      p + "mlp.up_proj.weight": [inter, hidden],
                      p + "mlp.down_proj.weight": [hidden, inter],
                      p + "input_layernorm.weight": [hidden]}
            if shard == 0:
                shapes["model.embed_tokens.weight"] = [vocab, hidden]
            else:
                shapes["lm_head.weight"] = [vocab, hidden]
            write_safetensors(root / f"model-0000{shard + 1}-of-00002.safetensors", shapes)
    return root


def gpt2_folder(root: Path, n_embd: int = 64, weights: bool = True) -> Path:
    write_json(root / "config.json", {
        "model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "n_embd": n_embd, "n_head": 4,
        "n_layer": 1, "n_positions": 128, "vocab_size": 50})
    if weights:  # transformers' Conv1D stores (in, out)
        write_safetensors(root / "model.safetensors", {
            "h.0.attn.c_attn.weight": [n_embd, 3 * n_embd], "h.0.attn.c_proj.weight": [n_embd, n_embd],
            "h.0.mlp.c_fc.weight": [n_embd, 4 * n_embd], "h.0.mlp.c_proj.weight": [4 * n_embd, n_embd],
            "wte.weight": [50, n_embd], "wpe.weight": [128, n_embd]})
    return root


def sd_diffusers_folder(root: Path, xl: bool = False, weights: bool = True,
                        prediction_type: str = "epsilon", vae_force_upcast: bool = True) -> Path:
    """A diffusers SD 1.x (or SDXL) layout with narrow widths (32 / 64 channels)."""
    context = 2048 if xl else 768
    index = {"_class_name": "StableDiffusionXLPipeline" if xl else "StableDiffusionPipeline",
             "unet": ["diffusers", "UNet2DConditionModel"], "text_encoder": ["transformers", "CLIPTextModel"]}
    if xl:
        index["text_encoder_2"] = ["transformers", "CLIPTextModelWithProjection"]
    write_json(root / "model_index.json", index)
    write_json(root / "unet" / "config.json", {
        "_class_name": "UNet2DConditionModel", "block_out_channels": [32, 64],
        "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"], "cross_attention_dim": context,
        "sample_size": 128 if xl else 64, **({"addition_embed_type": "text_time"} if xl else {})})
    write_json(root / "scheduler" / "scheduler_config.json", {"prediction_type": prediction_type})
    write_json(root / "vae" / "config.json", {"block_out_channels": [32, 64, 64, 64],
                                              "force_upcast": vae_force_upcast})
    write_json(root / "text_encoder" / "config.json", {"hidden_size": 32, "intermediate_size": 64})
    if weights:
        blk = "down_blocks.0.attentions.0."
        tb = blk + "transformer_blocks.0."
        write_safetensors(root / "unet" / "diffusion_pytorch_model.safetensors", {
            blk + "proj_in.weight": [32, 32, 1, 1], blk + "proj_out.weight": [32, 32, 1, 1],
            tb + "attn1.to_q.weight": [32, 32], tb + "attn1.to_k.weight": [32, 32],
            tb + "attn1.to_v.weight": [32, 32], tb + "attn1.to_out.0.weight": [32, 32],
            tb + "attn2.to_k.weight": [32, context], tb + "attn2.to_v.weight": [32, context],
            tb + "ff.net.0.proj.weight": [256, 32], tb + "ff.net.2.weight": [32, 128],
            "down_blocks.0.resnets.0.conv1.weight": [32, 32, 3, 3],
            "down_blocks.0.resnets.0.norm1.weight": [32]})
        write_safetensors(root / "text_encoder" / "model.safetensors", {
            "text_model.encoder.layers.0.self_attn.q_proj.weight": [32, 32],
            "text_model.encoder.layers.0.self_attn.k_proj.weight": [32, 32],
            "text_model.encoder.layers.0.self_attn.v_proj.weight": [32, 32],
            "text_model.encoder.layers.0.self_attn.out_proj.weight": [32, 32],
            "text_model.encoder.layers.0.mlp.fc1.weight": [64, 32],
            "text_model.encoder.layers.0.mlp.fc2.weight": [32, 64]})
    return root


_UNET = "model.diffusion_model."
_TB = _UNET + "input_blocks.1.1.transformer_blocks.0."


def sd1_single_file(path: Path) -> Path:
    """An SD 1.x checkpoint as A1111 / ComfyUI use it (CompVis key names), real widths."""
    return write_safetensors(path, {
        _TB + "attn1.to_q.weight": [320, 320], _TB + "attn2.to_k.weight": [320, 768],
        _TB + "attn2.to_out.0.weight": [320, 320], _TB + "ff.net.2.weight": [320, 1280],
        _UNET + "input_blocks.1.0.in_layers.2.weight": [320, 320, 3, 3],
        _UNET + "input_blocks.1.1.proj_in.weight": [320, 320, 1, 1],
        "cond_stage_model.transformer.text_model.encoder.layers.0.self_attn.q_proj.weight": [768, 768],
        "first_stage_model.decoder.conv_in.weight": [512, 4, 3, 3]})


def sd2_single_file(path: Path, v_prediction: bool = True) -> Path:
    return write_safetensors(path, {
        _TB + "attn1.to_q.weight": [320, 320], _TB + "attn2.to_k.weight": [320, 1024],
        "cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight": [3072, 1024],
        "cond_stage_model.model.transformer.resblocks.0.mlp.c_fc.weight": [4096, 1024]},
        metadata={"modelspec.prediction_type": "v" if v_prediction else "epsilon"})


def sdxl_single_file(path: Path) -> Path:
    """An SDXL checkpoint (SGM key names): two text encoders, 2048-wide context."""
    tb = _UNET + "input_blocks.4.1.transformer_blocks.0."
    return write_safetensors(path, {
        tb + "attn1.to_q.weight": [640, 640], tb + "attn2.to_k.weight": [640, 2048],
        tb + "attn1.to_out.0.weight": [640, 640],
        _UNET + "label_emb.0.0.weight": [1280, 2816],
        "conditioner.embedders.0.transformer.text_model.encoder.layers.0.self_attn.q_proj.weight":
            [768, 768],
        "conditioner.embedders.1.model.transformer.resblocks.0.attn.in_proj_weight": [3840, 1280],
        "conditioner.embedders.1.model.transformer.resblocks.0.attn.out_proj.weight": [1280, 1280],
        "conditioner.embedders.1.model.transformer.resblocks.0.mlp.c_fc.weight": [5120, 1280]})


def tiny_png_bytes() -> bytes:
    """A real 8x8 PNG (the scan never decodes it, but other readers might)."""
    import io

    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()
