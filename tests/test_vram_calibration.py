"""The calibration benchmark's parts that need no GPU: the grid, the dry run, the
clean exit without CUDA, and the model builders and training step on tiny configs."""
import importlib.util
import math
import sys
from pathlib import Path

import pytest
import torch

from lora_studio.hardware.estimate import estimate_from_config

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("vram_calibration", ROOT / "benchmarks" / "vram_calibration.py")
calibration = importlib.util.module_from_spec(spec)
sys.modules["vram_calibration"] = calibration  # dataclasses look their module up there
spec.loader.exec_module(calibration)

TINY_UNET = {"sample_size": 8, "layers_per_block": 1, "block_out_channels": [32, 64],
             "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
             "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"], "cross_attention_dim": 96,
             "attention_head_dim": 8, "norm_num_groups": 8, "transformer_layers_per_block": 1,
             "use_linear_projection": True, "addition_embed_type": "text_time",
             "addition_time_embed_dim": 8, "projection_class_embeddings_input_dim": 16 + 6 * 8}
TINY_COMPONENTS = {
    "text_encoder": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                     "num_attention_heads": 4, "vocab_size": 100, "max_position_embeddings": 77},
    "text_encoder_2": {"hidden_size": 64, "intermediate_size": 64, "num_hidden_layers": 1,
                       "num_attention_heads": 4, "vocab_size": 100, "max_position_embeddings": 77,
                       "projection_dim": 16, "with_projection": True},
    "vae": {"block_out_channels": [8, 16], "layers_per_block": 1, "norm_num_groups": 8,
            "down_block_types": ["DownEncoderBlock2D"] * 2, "up_block_types": ["UpDecoderBlock2D"] * 2},
}
TINY_LLAMA = {"model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
              "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 128,
              "max_position_embeddings": 128, "tie_word_embeddings": False}


def test_grid_covers_every_axis():
    cells = calibration.cells(calibration.MODELS["sd15"])
    assert len(cells) == 3 * 2 * 2 * 2
    assert {c.checkpointing for c in cells} == {False, True}
    assert {c.optimizer for c in cells} == {"AdamW", "AdamW8bit"}
    job = calibration.Cell(calibration.MODELS["llama7b"], 2, 2048, True, "AdamW8bit").job()
    assert job.model.load_in_4bit and job.dataset.max_seq_length == 2048
    assert job.training.gradient_checkpointing and job.optimizer.optimizer == "AdamW8bit"


def test_dry_run_prints_the_estimate_grid(capsys):
    assert calibration.main(["--dry-run", "--models", "sd15,llama1b"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 24 + 16 and all("GiB" in line for line in lines)


def test_without_cuda_it_exits_cleanly(capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert calibration.main(["--models", "sdxl"]) == 0
    assert "No CUDA GPU" in capsys.readouterr().out


def test_unknown_model_is_a_usage_error():
    with pytest.raises(SystemExit):
        calibration.main(["--models", "gpt5"])


def test_summary_judges_the_targets():
    cell = calibration.cells(calibration.MODELS["sd15"])[0]
    assert calibration.summary([(cell, 105, 100), (cell, 95, 100), (cell, 100, 100)]) == 0
    assert calibration.summary([(cell, 120, 100), (cell, 100, 100), (cell, 100, 100)]) == 1


def test_sd_builders_and_step_run_on_cpu():
    model = calibration.Model("tiny-xl", "sdxl", TINY_UNET, (1,), (64,), components=TINY_COMPONENTS)
    unet, encoders, vae = calibration.build_sd(model, "cpu", torch.bfloat16)
    trainable = [p for p in unet.parameters() if p.requires_grad]
    assert trainable and all(p.dtype == torch.float32 for p in trainable)
    spec = calibration.spec_for(model)
    est = estimate_from_config(calibration.Cell(model, 1, 64, False, "AdamW").job(), model.sd_components())
    assert est.part("LoRA weights") == sum(p.nbytes for p in trainable)
    assert est.part("base weights, vae") == sum(p.nbytes for p in vae.parameters())
    assert est.part("base weights, text encoder 2") == sum(p.nbytes for p in encoders[1].parameters())
    assert spec.family == "sdxl"
    from diffusers import DDPMScheduler
    cell = calibration.Cell(model, 1, 64, True, "AdamW")
    unet.enable_gradient_checkpointing()
    before = [p.detach().clone() for p in trainable]
    calibration.train_steps(lambda: calibration.sd_step(unet, DDPMScheduler(), cell, "cpu"), trainable,
                            cell, 1, "cpu")
    assert any(not torch.equal(a, b) for a, b in zip(before, trainable))


def test_text_model_round_trips_through_the_engine_loader(tmp_path):
    model = calibration.Model("tiny-llama", "text", TINY_LLAMA, (1,), (16,))
    folder = calibration.write_text_model(model, tmp_path / "tiny llama", "cpu")
    cell = calibration.Cell(model, 1, 16, False, "AdamW")
    lm = calibration.load_text(cell, folder, "cpu")
    trainable = [p for p in lm.parameters() if p.requires_grad]
    assert sum(p.nbytes for p in trainable) == estimate_from_config(cell.job(), TINY_LLAMA).part("LoRA weights")
    losses = []
    calibration.train_steps(lambda: losses.append(calibration.text_step(lm, cell, "cpu")) or losses[-1],
                            trainable, cell, 2, "cpu")
    assert len(losses) == 2 and all(math.isfinite(loss.item()) for loss in losses)
