"""Build the tiny Stable Diffusion pipeline shipped in resources/tiny-sd/.

Random weights, real architecture: a UNet2DConditionModel, an AutoencoderKL with
the usual 8x downsampling, a CLIP text encoder and a CLIP BPE tokenizer whose
vocabulary is written here (bytes plus a few merges), so nothing is downloaded.
It is for tests and the `lora-studio demo image` command: it draws noise, fast.

    python resources/make_tiny_sd.py     # writes resources/tiny-sd/ and resources/demo-images/

The functions also build, in tests, an SDXL-style pipeline (two text encoders,
the second with a projection) and an SD 2.x-style v-prediction variant.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
TEXT_DIM = 32
MAX_TOKENS = 77
# Words the demo captions use become whole tokens; anything else falls back to bytes.
WORDS = ("red green blue yellow purple orange white black circle square triangle star "
         "on a an the of background shape small large tiny demo sks photo picture").split()


def _bytes_to_unicode() -> dict[int, str]:
    """CLIP's (and GPT-2's) reversible byte -> printable character table."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) \
        + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


def write_tokenizer_files(folder: Path) -> tuple[Path, Path]:
    """vocab.json and merges.txt of a small CLIP BPE: every byte alone and as a
    word end, the merges that spell WORDS, and the two special tokens."""
    folder.mkdir(parents=True, exist_ok=True)
    chars = list(_bytes_to_unicode().values())
    vocab: list[str] = chars + [c + "</w>" for c in chars]
    merges: list[str] = []
    for word in WORDS:
        symbols = list(word[:-1]) + [word[-1] + "</w>"]
        while len(symbols) > 1:
            a, b = symbols[0], symbols[1]
            merged = a + b
            if f"{a} {b}" not in merges:
                merges.append(f"{a} {b}")
            if merged not in vocab:
                vocab.append(merged)
            symbols = [merged] + symbols[2:]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    vocab_file, merges_file = folder / "vocab.json", folder / "merges.txt"
    vocab_file.write_text(json.dumps({tok: i for i, tok in enumerate(vocab)}, ensure_ascii=False),
                          encoding="utf-8")
    merges_file.write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    return vocab_file, merges_file


def make_tokenizer(workdir: Path):
    from transformers import CLIPTokenizer

    vocab_file, merges_file = write_tokenizer_files(workdir / "tokenizer-src")
    return CLIPTokenizer(str(vocab_file), str(merges_file), model_max_length=MAX_TOKENS,
                         pad_token="<|endoftext|>")


def _text_config(vocab_size: int, hidden: int = TEXT_DIM, projection_dim: int | None = None):
    from transformers import CLIPTextConfig

    cfg = dict(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=2 * hidden,
               num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=MAX_TOKENS,
               bos_token_id=vocab_size - 2, eos_token_id=vocab_size - 1, pad_token_id=vocab_size - 1,
               hidden_act="quick_gelu")
    if projection_dim:
        cfg["projection_dim"] = projection_dim
    return CLIPTextConfig(**cfg)


def make_vae():
    from diffusers import AutoencoderKL

    # Four blocks give SD's 8x downsampling; two layers per block match the original
    # (LDM) layout, which the single-file conversion in tests relies on.
    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, sample_size=64,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 8, 16, 16), layers_per_block=2, norm_num_groups=8)


def make_unet(cross_attention_dim: int = TEXT_DIM, sdxl: bool = False):
    from diffusers import UNet2DConditionModel

    kwargs = dict(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=2,
        block_out_channels=(16, 32), norm_num_groups=8,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=cross_attention_dim, attention_head_dim=(2, 4))
    if sdxl:
        kwargs.update(
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            use_linear_projection=True, addition_embed_type="text_time",
            addition_time_embed_dim=8,
            # 6 size/crop numbers of 8 each, plus the pooled projection of text_encoder_2.
            projection_class_embeddings_input_dim=6 * 8 + TEXT_DIM)
    return UNet2DConditionModel(**kwargs)


def _scheduler(prediction_type: str = "epsilon"):
    from diffusers import DDIMScheduler

    return DDIMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                         beta_schedule="scaled_linear", clip_sample=False, set_alpha_to_one=False,
                         steps_offset=1, prediction_type=prediction_type)


def build_sd(workdir: Path, prediction_type: str = "epsilon", seed: int = 0):
    """An SD 1.x-style pipeline (SD 2.x-style with prediction_type='v_prediction')."""
    import torch
    from diffusers import StableDiffusionPipeline
    from transformers import CLIPTextModel

    torch.manual_seed(seed)
    tokenizer = make_tokenizer(workdir)
    text_encoder = CLIPTextModel(_text_config(len(tokenizer)))
    return StableDiffusionPipeline(
        vae=make_vae(), text_encoder=text_encoder, tokenizer=tokenizer, unet=make_unet(),
        scheduler=_scheduler(prediction_type), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False)


def build_sdxl(workdir: Path, seed: int = 0):
    """An SDXL-style pipeline: two CLIP encoders (the second with a text projection)
    whose hidden states are concatenated for cross-attention."""
    import torch
    from diffusers import StableDiffusionXLPipeline
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(seed)
    tokenizer = make_tokenizer(workdir)
    te1 = CLIPTextModel(_text_config(len(tokenizer)))
    te2 = CLIPTextModelWithProjection(_text_config(len(tokenizer), projection_dim=TEXT_DIM))
    return StableDiffusionXLPipeline(
        vae=make_vae(), text_encoder=te1, text_encoder_2=te2, tokenizer=tokenizer,
        tokenizer_2=tokenizer, unet=make_unet(cross_attention_dim=2 * TEXT_DIM, sdxl=True),
        scheduler=_scheduler(), force_zeros_for_empty_prompt=True)


# (file stem, size, background, shape, colour, caption): some wide, some tall, some square.
DEMO_IMAGES = (
    ("red_circle", (96, 64), "white", "circle", "red", "sks, red circle, white background"),
    ("blue_square", (64, 64), "yellow", "square", "blue", "sks, blue square, yellow background"),
    ("green_triangle", (64, 112), "black", "triangle", "green", "sks, green triangle, black background"),
    ("purple_star", (128, 128), "white", "star", "purple", "sks, purple star, white background"),
    ("orange_circle", (128, 80), "blue", "circle", "orange", "sks, orange circle, blue background"),
    ("yellow_square", (80, 128), "purple", "square", "yellow", "sks, small yellow square, purple background"),
)


def _draw(size: tuple[int, int], background: str, shape: str, colour: str):
    from PIL import Image, ImageDraw

    w, h = size
    img = Image.new("RGB", size, background)
    draw = ImageDraw.Draw(img)
    r = min(w, h) // 3
    cx, cy = w // 2, h // 2
    if shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=colour)
    elif shape == "square":
        draw.rectangle((cx - r, cy - r, cx + r, cy + r), fill=colour)
    elif shape == "triangle":
        draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=colour)
    else:
        draw.regular_polygon((cx, cy, r), 5, fill=colour)
    return img


def write_demo_images(folder: Path) -> Path:
    """The demo dataset: a kohya '4_demo' folder (4 repeats) of PNGs with .txt captions."""
    sub = folder / "4_demo"
    sub.mkdir(parents=True, exist_ok=True)
    for stem, size, background, shape, colour, caption in DEMO_IMAGES:
        _draw(size, background, shape, colour).save(sub / f"{stem}.png")
        (sub / f"{stem}.txt").write_text(caption + "\n", encoding="utf-8")
    return folder


def _unet_to_original_names() -> tuple[list[tuple[str, str]], list[tuple[str, str]], list[tuple[str, str]]]:
    """(whole-key, resnet-part, block-prefix) renames diffusers -> original LDM UNet,
    for SD's layout (two layers per block): the reverse of what from_single_file does."""
    whole = [("time_embed.0.weight", "time_embedding.linear_1.weight"),
             ("time_embed.0.bias", "time_embedding.linear_1.bias"),
             ("time_embed.2.weight", "time_embedding.linear_2.weight"),
             ("time_embed.2.bias", "time_embedding.linear_2.bias"),
             ("input_blocks.0.0.weight", "conv_in.weight"), ("input_blocks.0.0.bias", "conv_in.bias"),
             ("out.0.weight", "conv_norm_out.weight"), ("out.0.bias", "conv_norm_out.bias"),
             ("out.2.weight", "conv_out.weight"), ("out.2.bias", "conv_out.bias")]
    resnet = [("in_layers.0", "norm1"), ("in_layers.2", "conv1"), ("out_layers.0", "norm2"),
              ("out_layers.3", "conv2"), ("emb_layers.1", "time_emb_proj"),
              ("skip_connection", "conv_shortcut")]
    layer = []
    for i in range(4):
        for j in range(2):
            layer.append((f"input_blocks.{3 * i + j + 1}.0.", f"down_blocks.{i}.resnets.{j}."))
            layer.append((f"input_blocks.{3 * i + j + 1}.1.", f"down_blocks.{i}.attentions.{j}."))
        for j in range(3):
            layer.append((f"output_blocks.{3 * i + j}.0.", f"up_blocks.{i}.resnets.{j}."))
            layer.append((f"output_blocks.{3 * i + j}.1.", f"up_blocks.{i}.attentions.{j}."))
        layer.append((f"input_blocks.{3 * (i + 1)}.0.op.", f"down_blocks.{i}.downsamplers.0.conv."))
        # An up block's upsampler follows its attention when it has one (all but the first).
        layer.append((f"output_blocks.{3 * i + 2}.{1 if i == 0 else 2}.", f"up_blocks.{i}.upsamplers.0."))
    layer.append(("middle_block.1.", "mid_block.attentions.0."))
    for j in range(2):
        layer.append((f"middle_block.{2 * j}.", f"mid_block.resnets.{j}."))
    return whole, resnet, layer


def _vae_to_original(state: dict) -> dict:
    renames = [("nin_shortcut", "conv_shortcut"), ("norm_out", "conv_norm_out"),
               ("mid.attn_1.", "mid_block.attentions.0.")]
    for i in range(4):
        for j in range(2):
            renames.append((f"encoder.down.{i}.block.{j}.", f"encoder.down_blocks.{i}.resnets.{j}."))
        renames.append((f"down.{i}.downsample.", f"down_blocks.{i}.downsamplers.0."))
        renames.append((f"up.{3 - i}.upsample.", f"up_blocks.{i}.upsamplers.0."))
        for j in range(3):
            renames.append((f"decoder.up.{3 - i}.block.{j}.", f"decoder.up_blocks.{i}.resnets.{j}."))
    for i in range(2):
        renames.append((f"mid.block_{i + 1}.", f"mid_block.resnets.{i}."))
    attn = [("norm.", "group_norm."), ("q.", "to_q."), ("k.", "to_k."), ("v.", "to_v."),
            ("proj_out.", "to_out.0.")]
    out = {}
    for key, value in state.items():
        new = key
        for original, diffusers_name in renames:
            new = new.replace(diffusers_name, original)
        if "mid.attn_1." in new:
            for original, diffusers_name in attn:
                new = new.replace(diffusers_name, original)
            if new.endswith(("q.weight", "k.weight", "v.weight", "proj_out.weight")):
                value = value.reshape(*value.shape, 1, 1)  # 1x1 convolutions in the original
        out["first_stage_model." + new] = value
    return out


def to_single_file(folder: Path, path: Path) -> Path:
    """The SD 1.x pipeline in `folder` as one original-format (CompVis/A1111) checkpoint,
    the kind people download, for tests of single-file loading."""
    from safetensors.torch import load_file, save_file

    unet = load_file(folder / "unet" / "diffusion_pytorch_model.safetensors")
    whole, resnet, layer = _unet_to_original_names()
    names = {k: k for k in unet}
    for original, diffusers_name in whole:
        names[diffusers_name] = original
    for key, name in names.items():
        if "resnets" in key:
            for original, diffusers_name in resnet:
                name = name.replace(diffusers_name, original)
        for original, diffusers_name in layer:
            name = name.replace(diffusers_name, original)
        names[key] = name
    tensors = {"model.diffusion_model." + names[k]: v for k, v in unet.items()}
    tensors.update(_vae_to_original(load_file(folder / "vae" / "diffusion_pytorch_model.safetensors")))
    text = load_file(folder / "text_encoder" / "model.safetensors")
    tensors.update({"cond_stage_model.transformer." + (k if k.startswith("text_model.") else "text_model." + k): v
                    for k, v in text.items()})
    save_file({k: v.contiguous() for k, v in tensors.items()}, path)
    return path


def save(pipe, folder: Path) -> Path:
    pipe.save_pretrained(folder, safe_serialization=True)
    return folder


def main(argv: list[str]) -> int:
    import tempfile

    out = Path(argv[0]) if argv else HERE
    with tempfile.TemporaryDirectory() as tmp:
        save(build_sd(Path(tmp)), out / "tiny-sd")
    write_demo_images(out / "demo-images")
    size = sum(p.stat().st_size for p in (out / "tiny-sd").rglob("*") if p.is_file())
    print(f"wrote {out / 'tiny-sd'} ({size / 1e6:.1f} MB) and {out / 'demo-images'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
