"""The CUDA paths on a real NVIDIA GPU: a 4-bit and an 8-bit base (bitsandbytes), the
8-bit optimizers through the engine's own builder, fp16 with the gradient scaler, bf16,
an out-of-memory error that ends the run with its hint, and NVML readings in the
``hardware`` events. Marked ``gpu`` and skipped without CUDA; benchmarks/gpu_check.py
runs them on a GPU machine and records each result in its report."""
import json
import math
from pathlib import Path

import pytest
import torch

from lora_studio.config.optimizers import BITSANDBYTES_OPTIMIZERS
from lora_studio.config.parse import parse_job
from lora_studio.config.schema import OptimizerConfig
from lora_studio.engine import image, text
from lora_studio.engine.core import trainer
from lora_studio.engine.core.control import StopRequest
from lora_studio.engine.core.loop import make_accelerator, plain_torch_step
from lora_studio.engine.core.optim import build_optimizer
from lora_studio.engine.run import run
from lora_studio.engine.text.export import ADAPTER_WEIGHTS
from lora_studio.runs.layout import RunDir, new_run_dir

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU with CUDA")]

ROOT = Path(__file__).resolve().parents[1]
TEXT_MODEL = ROOT / "resources" / "tiny-text-model"
CHAT = ROOT / "resources" / "demo-text" / "chat.jsonl"
TINY_SD = ROOT / "resources" / "tiny-sd"
DEMO_IMAGES = ROOT / "resources" / "demo-images"


def text_job(data: Path = CHAT, **sections):
    values = {"model": {"path": str(TEXT_MODEL), "family": "text"},
              "dataset": {"path": str(data), "max_seq_length": 64},
              "network": {"rank": 4, "alpha": 8.0},
              "optimizer": {"learning_rate": 3e-3},
              "training": {"max_steps": 4, "batch_size": 4},
              "output": {"output_name": "gpu"}}
    for section, extra in sections.items():
        values.setdefault(section, {}).update(extra)
    job, findings = parse_job(values)
    assert not [f for f in findings if f.level == "error"], findings
    return job


def image_job(**sections):
    values = {"model": {"path": str(TINY_SD)},
              "dataset": {"path": str(DEMO_IMAGES), "resolution": 64, "min_bucket_reso": 64,
                          "max_bucket_reso": 128},
              "network": {"rank": 4, "alpha": 8.0},
              "optimizer": {"learning_rate": 1e-2},
              "training": {"max_steps": 4, "batch_size": 2},
              "output": {"output_name": "gpu"}}
    for section, extra in sections.items():
        values.setdefault(section, {}).update(extra)
    job, findings = parse_job(values)
    assert not [f for f in findings if f.level == "error"], findings
    return job


def train(job, tmp_path, prepare=text.prepare):
    events: list[dict] = []
    result = trainer.train(job, new_run_dir(tmp_path, "run"), events.append, StopRequest(), prepare)
    return result, events


def completed_with_finite_losses(result, events) -> None:
    assert result.outcome.status == "completed", events[-3:]
    assert events[-1]["type"] == "finished" and events[-1]["status"] == "completed"
    losses = [e["loss"] for e in events if e["type"] == "progress"]
    assert losses and all(math.isfinite(x) for x in losses), losses


@pytest.mark.parametrize("bits", [4, 8])
def test_a_quantised_base_loads_and_trains(tmp_path, bits):
    import bitsandbytes as bnb

    job = text_job(model={"load_in_4bit": bits == 4, "load_in_8bit": bits == 8},
                   training={"mixed_precision": "bf16"})
    result, events = train(job, tmp_path)
    completed_with_finite_losses(result, events)
    layer = bnb.nn.Linear4bit if bits == 4 else bnb.nn.Linear8bitLt
    quantised = [m for m in result.trainee.model.modules() if isinstance(m, layer)]
    assert quantised, f"no {layer.__name__} in the model"
    assert all(p.device.type == "cuda" for p in result.trainee.model.parameters())
    assert (Path(events[-1]["final"]) / ADAPTER_WEIGHTS).is_file()


@pytest.mark.parametrize("name", list(BITSANDBYTES_OPTIMIZERS))
def test_an_8bit_optimizer_steps_with_8bit_state(name):
    torch.manual_seed(0)
    # bitsandbytes keeps 32-bit state for tensors under 4096 elements: this one is over.
    layer = torch.nn.Linear(256, 256, device="cuda")
    optimizer = build_optimizer([{"params": list(layer.parameters())}],
                                OptimizerConfig(optimizer=name, learning_rate=1e-2), on_cuda=True)
    before = layer.weight.detach().clone()
    for _ in range(3):
        layer(torch.randn(8, 256, device="cuda")).pow(2).mean().backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    assert not torch.equal(before, layer.weight.detach())
    assert torch.isfinite(layer.weight).all()
    state = optimizer.state[layer.weight]
    assert any(torch.is_tensor(t) and t.dtype == torch.uint8 for t in state.values()), \
        {k: getattr(t, "dtype", t) for k, t in state.items()}


@pytest.mark.parametrize("name", list(BITSANDBYTES_OPTIMIZERS))
def test_the_engine_trains_with_an_8bit_optimizer(tmp_path, name):
    result, events = train(text_job(optimizer={"optimizer": name, "learning_rate": 3e-3}), tmp_path)
    completed_with_finite_losses(result, events)


def test_fp16_trains_text_with_the_gradient_scaler(tmp_path):
    accelerator = make_accelerator("fp16")
    assert accelerator.scaler is not None and not plain_torch_step(accelerator)
    result, events = train(text_job(training={"mixed_precision": "fp16", "max_steps": 6}), tmp_path)
    completed_with_finite_losses(result, events)
    trainable = [p for p in result.trainee.model.parameters() if p.requires_grad]
    frozen = [p for p in result.trainee.model.parameters() if not p.requires_grad]
    # The scaler refuses to unscale fp16 gradients: the LoRA must train in fp32 on an fp16 base.
    assert {p.dtype for p in trainable} == {torch.float32}
    assert torch.float16 in {p.dtype for p in frozen}


def test_fp16_trains_an_image_lora(tmp_path):
    result, events = train(image_job(training={"mixed_precision": "fp16"}), tmp_path, image.prepare)
    completed_with_finite_losses(result, events)
    assert result.trainee.base.pipe.unet.dtype == torch.float16
    assert result.trainee.base.pipe.vae.dtype == torch.float32  # the SD VAE overflows in fp16


@pytest.mark.parametrize("family", ["text", "image"])
def test_bf16_trains_through_the_engine(tmp_path, family):
    if not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")
    if family == "text":
        result, events = train(text_job(training={"mixed_precision": "bf16"}), tmp_path)
        base = result.trainee.model
    else:
        result, events = train(image_job(training={"mixed_precision": "bf16"}), tmp_path,
                               image.prepare)
        base = result.trainee.base.pipe.unet
    completed_with_finite_losses(result, events)
    assert torch.bfloat16 in {p.dtype for p in base.parameters() if not p.requires_grad}


def long_text_records(folder: Path, count: int = 8, words: int = 600) -> Path:
    path = folder / "long.jsonl"
    folder.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(count):
            fh.write(json.dumps({"text": " ".join(f"plum{i} colour" for _ in range(words))}) + "\n")
    return path


def test_running_out_of_memory_ends_in_an_oom_event_with_its_hint(tmp_path):
    """Once the model is on the card, the allocator may grow by nothing more: the first
    step's logits (4 x 512 x vocab, a fresh large block) cannot be placed."""
    job = text_job(long_text_records(tmp_path / "data"),
                   dataset={"max_seq_length": 512}, training={"mixed_precision": "bf16"})
    events: list[dict] = []
    total = torch.cuda.get_device_properties(0).total_memory

    def emit(ev: dict) -> None:
        events.append(ev)
        if ev["type"] == "started":
            torch.cuda.empty_cache()
            torch.cuda.set_per_process_memory_fraction(torch.cuda.memory_reserved() / total)

    try:
        run(job, tmp_path / "run", emit)
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
    assert events[-1]["type"] == "error", events[-3:]
    assert events[-1]["kind"] == "oom" and events[-1]["hint"] == text.OOM_HINT
    assert events[-1]["message"].startswith("Out of memory")
    assert not [e for e in events if e["type"] == "progress"]
    # the final hardware reading still comes, with the allocator's peak
    assert [e for e in events if e["type"] == "hardware"][-1]["peak_allocated"] > 0


def test_hardware_events_carry_nvml_readings(tmp_path):
    events: list[dict] = []
    run(text_job(), tmp_path / "run", events.append)
    assert events[-1]["type"] == "finished", events[-3:]
    hardware = [e for e in events if e["type"] == "hardware"]
    assert len(hardware) >= 2  # at the start and at the end
    for ev in hardware:
        assert ev["gpus"], ev.get("message")
        assert 0 < ev["vram_used"] <= ev["vram_total"]
        assert ev["peak_allocated"] > 0
    name = torch.cuda.get_device_name(0)
    assert any(g["name"] == name for g in hardware[0]["gpus"]), (name, hardware[0]["gpus"])
    assert RunDir(tmp_path / "run").final.is_dir()
