"""Tiny captioning models built offline, for tests and benchmarks/caption_batch.py.

tiny_tagger writes a WD14-layout tagger: ``model.onnx`` (input NHWC float32 BGR 0..255,
448 square, output one sigmoid per tag) and ``selected_tags.csv``. Its scores follow the
image's mean colour, so a test knows which tags a red or a blue image gets:

    red image  -> red_background, ^_^, simple_background, watermark (+ rating general)
    blue image -> hatsune_miku (character), blue_sky, ^_^, simple_background, watermark

``conv_channels`` adds a strided 3x3 conv layer whose output is pooled and weighted by
zero: the tags stay the same, the model costs a conv net's time.

tiny_blip writes a random BLIP captioner (BlipForConditionalGeneration) from config
with a WordPiece tokenizer and an image processor, loadable with AutoProcessor;
tiny_florence2 a random Florence-2 the same way.
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image

SIDE = 448
# name, category, weights on the mean (B, G, R) in 0..1, bias
TAGS = [
    ("general", 9, (0, 0, 0), 2.0),
    ("explicit", 9, (0, 0, 0), -2.0),
    ("hatsune_miku", 4, (10, 0, -10), -2.0),
    ("red_background", 0, (-10, 0, 10), 0.0),
    ("blue_sky", 0, (10, 0, -10), 0.0),
    ("^_^", 0, (0, 0, 0), 5.0),
    ("simple_background", 0, (0, 0, 0), 0.0),
    ("watermark", 0, (0, 0, 0), 4.0),
]
RED_TAGS = "red background, ^_^, watermark, simple background"
BLUE_TAGS = "hatsune miku, blue sky, ^_^, watermark, simple background"


def tiny_tagger(folder: Path, conv_channels: int = 0) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "selected_tags.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["tag_id", "name", "category", "count"])
        for i, (name, category, _w, _b) in enumerate(TAGS):
            writer.writerow([1000 + i, name, category, 100 - i])
    weights = np.array([w for _n, _c, w, _b in TAGS], dtype=np.float32).T / 255.0  # (3, T)
    bias = np.array([b for *_rest, b in TAGS], dtype=np.float32)
    inits = [numpy_helper.from_array(weights, "W"), numpy_helper.from_array(bias, "B")]
    nodes = [helper.make_node("Transpose", ["input"], ["nchw"], perm=[0, 3, 1, 2]),
             helper.make_node("GlobalAveragePool", ["nchw"], ["pooled"]),
             helper.make_node("Flatten", ["pooled"], ["mean_bgr"]),
             helper.make_node("Gemm", ["mean_bgr", "W", "B"], ["colour_logits"])]
    logits = "colour_logits"
    if conv_channels:
        rng = np.random.default_rng(0)
        kernel = rng.standard_normal((conv_channels, 3, 3, 3)).astype(np.float32) / 255.0
        inits += [numpy_helper.from_array(kernel, "K"),
                  numpy_helper.from_array(np.zeros((conv_channels, len(TAGS)), np.float32), "Z")]
        nodes += [helper.make_node("Conv", ["nchw", "K"], ["conv"], strides=[2, 2], pads=[1, 1, 1, 1]),
                  helper.make_node("Relu", ["conv"], ["relu"]),
                  helper.make_node("GlobalAveragePool", ["relu"], ["conv_pooled"]),
                  helper.make_node("Flatten", ["conv_pooled"], ["conv_flat"]),
                  helper.make_node("MatMul", ["conv_flat", "Z"], ["conv_logits"]),
                  helper.make_node("Add", ["colour_logits", "conv_logits"], ["all_logits"])]
        logits = "all_logits"
    nodes.append(helper.make_node("Sigmoid", [logits], ["output"]))
    graph = helper.make_graph(
        nodes, "tiny_wd_tagger",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", SIDE, SIDE, 3])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", len(TAGS)])],
        inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, folder / "model.onnx")
    return folder


def write_image(path: Path, colour: tuple[int, int, int], size=(64, 48)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)
    return path


WORDS = ["a", "cat", "dog", "sitting", "on", "the", "red", "blue", "bench", "photo", "of",
         "picture", "with", "sky", "girl", "hair", "long", "smiling", "tree", "river"]


def tiny_blip(folder: Path, seed: int = 0) -> Path:
    import torch
    from transformers import (BertTokenizer, BlipConfig, BlipForConditionalGeneration,
                              BlipImageProcessor, BlipProcessor)

    folder.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]", *WORDS]
    tokenizer = BertTokenizer(vocab={w: i for i, w in enumerate(vocab)}, bos_token="[DEC]",
                              model_max_length=64)
    image_processor = BlipImageProcessor(size={"height": 32, "width": 32})
    BlipProcessor(image_processor, tokenizer).save_pretrained(folder)
    config = BlipConfig(
        text_config=dict(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=1,
                         num_attention_heads=2, intermediate_size=37, max_position_embeddings=64,
                         bos_token_id=5, pad_token_id=0, sep_token_id=3, eos_token_id=3),
        vision_config=dict(hidden_size=32, image_size=32, patch_size=8, num_hidden_layers=1,
                           num_attention_heads=2, intermediate_size=37),
        projection_dim=32)
    torch.manual_seed(seed)
    model = BlipForConditionalGeneration(config)
    with torch.no_grad():  # random weights would end most captions at once; words only
        model.text_decoder.cls.predictions.bias[:len(vocab) - len(WORDS)] = -1e4
    model.save_pretrained(folder)
    return folder


def tiny_florence2(folder: Path, seed: int = 0) -> Path:
    """A random Florence-2 (transformers' own Florence2ForConditionalGeneration) with a
    byte-level tokenizer without merges and a 64 px image processor. Its generation
    config holds back the end of a caption for a few tokens, so that it says something."""
    import torch
    from transformers import (BartTokenizer, CLIPImageProcessor, Florence2Config,
                              Florence2ForConditionalGeneration, Florence2Processor)

    folder.mkdir(parents=True, exist_ok=True)
    vocab = {t: i for i, t in enumerate(["<s>", "<pad>", "</s>", "<unk>"])}
    for word in WORDS:
        vocab.setdefault("Ġ" + word, len(vocab))
    for ch in "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.?,Ġ":
        vocab.setdefault(ch, len(vocab))
    tokenizer = BartTokenizer(vocab=vocab, merges=[],
                              extra_special_tokens={"image_token": "<image>"})
    # DaViT's four stages take 64 px to 2 x 2 features, plus one pooled: 5 image tokens.
    images = CLIPImageProcessor(size={"height": 64, "width": 64}, do_center_crop=False)
    images.image_seq_length = 5
    Florence2Processor(image_processor=images, tokenizer=tokenizer).save_pretrained(folder)
    config = Florence2Config(
        text_config=dict(model_type="bart", vocab_size=len(tokenizer), d_model=32,
                         encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                         decoder_attention_heads=2, encoder_ffn_dim=37, decoder_ffn_dim=37,
                         max_position_embeddings=128, bos_token_id=0, pad_token_id=1,
                         eos_token_id=2, decoder_start_token_id=2, forced_eos_token_id=2),
        vision_config=dict(depths=[1, 1, 1, 1], embed_dim=[8, 16, 16, 32], num_heads=[1, 2, 2, 2],
                           num_groups=[1, 2, 2, 2], window_size=2, projection_dim=32,
                           max_position_embeddings=8, max_temporal_embeddings=4),
        image_token_id=tokenizer.image_token_id)
    torch.manual_seed(seed)
    model = Florence2ForConditionalGeneration(config)
    model.generation_config.min_new_tokens = 4
    model.generation_config.suppress_tokens = [0, 1, 3, tokenizer.image_token_id]
    model.save_pretrained(folder)
    return folder
