"""The text encoder of image jobs on the tiny pipeline: clip skip as kohya counts it
(training and samples), SDXL ignoring it, and the text encoder's LoRA stopping after N
steps while the UNet's trains on, in a Prodigy run as an imported kohya preset has it."""
import math

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from lora_studio.engine.image.loss import encode_text
from lora_studio.engine.image.model import load_sd
from lora_studio.engine.image.samples import write_samples
from test_sd_engine import TINY_SD, make_job, make_tiny_sd, run_dir, train_sd

CAPTIONS = ["sks, red circle", "a blue square on white"]


@pytest.fixture(scope="module")
def sd1():
    job = make_job(TINY_SD)
    return load_sd(job)


def by_hand(model, captions, layer_from_end):
    """hidden_states[-n] through the final layer norm, as kohya's get_hidden_states."""
    pipe = model.pipe
    ids = pipe.tokenizer(captions, padding="max_length", max_length=pipe.tokenizer.model_max_length,
                         truncation=True, return_tensors="pt").input_ids
    out = pipe.text_encoder(ids, output_hidden_states=True)
    return pipe.text_encoder.final_layer_norm(out.hidden_states[-layer_from_end])


def test_clip_skip_takes_that_layer_through_the_final_norm(sd1):
    with torch.no_grad():
        last = encode_text(sd1, CAPTIONS, "cpu").hidden
        skip1 = encode_text(sd1, CAPTIONS, "cpu", clip_skip=1).hidden
        skip2 = encode_text(sd1, CAPTIONS, "cpu", clip_skip=2).hidden
        skip3 = encode_text(sd1, CAPTIONS, "cpu", clip_skip=3).hidden
        assert torch.equal(skip1, last)
        assert torch.allclose(last, by_hand(sd1, CAPTIONS, 1), atol=1e-6)
        assert torch.equal(skip2, by_hand(sd1, CAPTIONS, 2))
        assert torch.equal(skip3, by_hand(sd1, CAPTIONS, 3))
    assert not torch.allclose(skip2, last, atol=1e-3) and not torch.allclose(skip2, skip3, atol=1e-3)


def test_samples_use_the_same_clip_skip(sd1, tmp_path):
    job = make_job(TINY_SD, model={"clip_skip": 2},
                   output={"sample_prompts": ["sks, red circle"], "sample_steps": 2,
                           "sample_sampler": "DDIM"})  # the tiny model's own, as `pipe` below
    events = []
    (path,) = write_samples(sd1, job, tmp_path, 1, events.append)
    pipe = sd1.pipe
    with torch.no_grad():
        expected = pipe(prompt_embeds=by_hand(sd1, ["sks, red circle"], 2),
                        negative_prompt_embeds=by_hand(sd1, [""], 2), num_inference_steps=2,
                        height=64, width=64,
                        generator=torch.Generator().manual_seed(job.training.seed)).images[0]
        plain = pipe("sks, red circle", num_inference_steps=2, height=64, width=64,
                     generator=torch.Generator().manual_seed(job.training.seed)).images[0]
    from PIL import Image
    got = np.asarray(Image.open(path))
    assert np.array_equal(got, np.asarray(expected))
    assert not np.array_equal(got, np.asarray(plain))


def test_sdxl_ignores_clip_skip_like_kohya(tmp_path):
    folder = make_tiny_sd.save(make_tiny_sd.build_sdxl(tmp_path), tmp_path / "tiny-sdxl")
    model = load_sd(make_job(folder))
    with torch.no_grad():
        one, two = (encode_text(model, CAPTIONS, "cpu", clip_skip=n) for n in (1, 2))
    assert torch.equal(one.hidden, two.hidden) and torch.equal(one.pooled, two.pooled)


def test_text_encoder_stops_after_n_steps_while_the_unet_trains_on(tmp_path):
    """A kohya-style job: Prodigy at lr 1, clip skip 2, text encoder stopped after step 2."""
    job = make_job(TINY_SD, network={"train_text_encoder": True, "stop_text_encoder_training": 2},
                   model={"clip_skip": 2}, optimizer={"optimizer": "Prodigy", "learning_rate": 1.0},
                   output={"save_every_n_steps": 1})
    events = []
    run = run_dir(tmp_path)
    train_sd(job, run, events.append, lambda: False)
    assert all(math.isfinite(e["loss"]) for e in events if e["type"] == "progress")
    states = [load_file(run.checkpoints / f"step-{s:06d}" / "trainable.safetensors")
              for s in range(1, 5)]
    te = [k for k in states[0] if k.startswith("text_encoder.") and "lora_B" in k]
    unet = [k for k in states[0] if k.startswith("unet.") and "lora_B" in k]
    assert te and unet

    def changed(a, b, keys):
        return any(not torch.equal(a[k], b[k]) for k in keys)
    assert changed(states[0], states[1], te)                     # step 2 still trains it
    assert not changed(states[1], states[2], te) and not changed(states[2], states[3], te)
    assert changed(states[1], states[2], unet) and changed(states[2], states[3], unet)
