"""VRAM calibration: the estimate against torch.cuda.max_memory_allocated.

Builds real-size architectures from their public configs with random weights (SD 1.5
UNet, SDXL UNet, Llama 3.2 1B, Llama 2 7B; the Llamas with a 4-bit base and the 1B
also in bf16), runs a few LoRA training steps per cell of a grid (batch size,
resolution / sequence length, gradient checkpointing, optimizer) the way the engine
trains, and prints per cell the estimate's allocated part (everything but the CUDA
context and allocator slack), the measured peak and the error; then the ratio
estimate / measured peak as the median over cells with its min-max spread (the
measured peak of each cell is that cell's baseline), and the worst and the median
error. Targets: every cell within +-15 %, the median within +-7 %.

    python benchmarks/vram_calibration.py                  # needs an NVIDIA GPU
    python benchmarks/vram_calibration.py --dry-run        # the estimate grid only, any machine
    python benchmarks/vram_calibration.py --models sd15,llama1b --steps 3 --json out.json

Nothing is downloaded: the text models are written with random weights to a temp
folder and loaded back through the engine's own loader (which quantises to 4-bit).
Cells run on one card in bf16; a cell that runs out of memory is reported as OOM.
"""
from __future__ import annotations

import argparse
import gc
import itertools
import json
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._stats import summarize  # noqa: E402
from lora_studio.config.schema import JobConfig  # noqa: E402
from lora_studio.hardware import archs  # noqa: E402
from lora_studio.hardware.estimate import GIB, estimate, spec_from_config  # noqa: E402

TARGET_CELL = 0.15
TARGET_MEDIAN = 0.07


@dataclass(frozen=True)
class Model:
    key: str
    family: str              # text, sd1, sdxl
    config: dict             # text: transformers config; SD: the UNet config
    batches: tuple[int, ...]
    sizes: tuple[int, ...]   # resolutions or sequence lengths
    four_bit: bool = False
    components: dict | None = None  # SD: text encoder(s) and VAE configs; None: the family's

    def sd_components(self) -> dict:
        return {**archs.SD_COMPONENTS[self.family], **(self.components or {}), "unet": self.config}


MODELS = {
    "sd15": Model("sd15", "sd1", archs.SD15_UNET, (1, 2, 4), (512, 768)),
    "sdxl": Model("sdxl", "sdxl", archs.SDXL_UNET, (1, 2), (768, 1024)),
    "llama1b": Model("llama1b", "text", archs.LLAMA_1B, (1, 4), (512, 2048), four_bit=True),
    "llama1b-bf16": Model("llama1b-bf16", "text", archs.LLAMA_1B, (1, 4), (512, 2048)),
    "llama7b": Model("llama7b", "text", archs.LLAMA_7B, (1, 2), (512, 2048), four_bit=True),
}
OPTIMIZERS = ("AdamW", "AdamW8bit")


@dataclass(frozen=True)
class Cell:
    model: Model
    batch: int
    size: int
    checkpointing: bool
    optimizer: str

    def job(self) -> JobConfig:
        data: dict = {
            "model": {"family": self.model.family, "load_in_4bit": self.model.four_bit},
            "training": {"mixed_precision": "bf16", "batch_size": self.batch,
                         "gradient_checkpointing": self.checkpointing},
            "optimizer": {"optimizer": self.optimizer},
            "dataset": ({"max_seq_length": self.size} if self.model.family == "text"
                        else {"resolution": self.size, "max_bucket_reso": max(1024, self.size)}),
        }
        return JobConfig.model_validate(data)

    def label(self) -> str:
        size = f"seq {self.size}" if self.model.family == "text" else f"{self.size}px"
        return (f"{self.model.key:<13} b{self.batch:<2} {size:<9} "
                f"{'ckpt' if self.checkpointing else '    '} {self.optimizer:<9}")


def cells(model: Model) -> list[Cell]:
    return [Cell(model, b, s, c, o) for b, s, c, o in
            itertools.product(model.batches, model.sizes, (False, True), OPTIMIZERS)]


def spec_for(model: Model):
    return spec_from_config(model.family, model.config if model.family == "text" else model.sd_components())


def estimated_bytes(cell: Cell, spec) -> int:
    return estimate(cell.job(), None, spec).allocated


# ---------------------------------------------------------------- building models

def build_sd(model: Model, device: str, dtype):
    """UNet with the engine's LoRA setup, plus the frozen text encoder(s) and VAE the
    run keeps on the card. Random weights, built directly on `device`."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from peft import LoraConfig
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from lora_studio.config.model_info import IMAGE_DEFAULT_TARGETS

    components = model.sd_components()
    with torch.device(device):
        unet = UNet2DConditionModel(**model.config).to(dtype)
        encoders = [CLIPTextModel(CLIPTextConfig(**components["text_encoder"])).to(dtype)]
        if "text_encoder_2" in components:
            config = {k: v for k, v in components["text_encoder_2"].items() if k != "with_projection"}
            encoders.append(CLIPTextModelWithProjection(CLIPTextConfig(**config)).to(dtype))
        vae = AutoencoderKL(**components["vae"]).to(torch.float32 if dtype == torch.float16 else dtype)
    for module in (unet, vae, *encoders):
        module.requires_grad_(False)
    job = JobConfig()
    unet.add_adapter(LoraConfig(r=job.network.rank, lora_alpha=job.network.alpha,
                                lora_dropout=job.network.dropout, init_lora_weights="gaussian",
                                target_modules=list(IMAGE_DEFAULT_TARGETS)))
    for p in unet.parameters():
        if p.requires_grad:
            p.data = p.data.float()  # as the engine does: LoRA trains in fp32
    return unet, encoders, vae


def sd_step(unet, scheduler, cell: Cell, device: str):
    """One step's loss through the engine's diffusion_loss, with cached-style inputs."""
    import torch

    from lora_studio.engine.image.loss import Cond, diffusion_loss

    side = cell.size // 8
    latents = torch.randn(cell.batch, 4, side, side, device=device)
    components = cell.model.sd_components()
    context = sum(c["hidden_size"] for n, c in components.items() if n.startswith("text_encoder"))
    cond = Cond(torch.randn(cell.batch, 77, context, device=device, dtype=unet.dtype))
    time_ids = None
    if cell.model.family == "sdxl":
        pooled = components["text_encoder_2"]["projection_dim"]
        cond.pooled = torch.randn(cell.batch, pooled, device=device, dtype=unet.dtype)
        time_ids = torch.tensor([[cell.size, cell.size, 0, 0, cell.size, cell.size]] * cell.batch,
                                device=device, dtype=unet.dtype)
    generators = [torch.Generator().manual_seed(i) for i in range(cell.batch)]
    return diffusion_loss(unet, scheduler, latents, cond, time_ids, "epsilon", 0.0, 0.0,
                          generators).mean()


def write_text_model(model: Model, folder: Path, device: str) -> Path:
    """A random-weight model folder (config.json + safetensors) the engine can load."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(**{k: v for k, v in model.config.items() if k != "model_type"},
                         architectures=["LlamaForCausalLM"])
    with torch.device(device):
        lm = LlamaForCausalLM._from_config(config, dtype=torch.bfloat16)
    lm.save_pretrained(folder, safe_serialization=True)
    del lm
    return folder


def load_text(cell: Cell, folder: Path, device: str):
    """The model as the engine builds it for this cell's job (4-bit, checkpointing, LoRA)."""
    from lora_studio.config.model_info import inspect_model
    from lora_studio.engine.text.model import build_peft_model, load_base_model

    job = cell.job()
    base = load_base_model(job, folder)
    model = build_peft_model(job, inspect_model(str(folder)), base)
    if not job.model.load_in_4bit:
        model.to(device)  # a 4-bit base is loaded onto the GPU already
    return model


def text_step(model, cell: Cell, device: str):
    import torch
    ids = torch.randint(0, int(cell.model.config["vocab_size"]), (cell.batch, cell.size), device=device)
    return model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=ids).loss


def train_steps(loss_fn, trainable, cell: Cell, steps: int, device: str) -> None:
    """The engine's step: autocast forward, backward, clip, optimizer step, grads to None."""
    import torch

    from lora_studio.engine.core.optim import build_optimizer

    optimizer = build_optimizer([{"params": trainable}], cell.job().optimizer, on_cuda=device == "cuda")
    for _ in range(steps):
        with torch.autocast(device, dtype=torch.bfloat16):
            loss = loss_fn()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    del optimizer


# ---------------------------------------------------------------- measuring

def measure(run, device: str = "cuda") -> int | None:
    """Peak bytes allocated while `run()` runs; None when it ran out of memory."""
    import torch
    gc.collect()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    try:
        run()
    except torch.cuda.OutOfMemoryError:
        return None
    finally:
        gc.collect()
        torch.cuda.empty_cache()
    return torch.cuda.max_memory_allocated()


def measure_sd(model: Model, steps: int, grid: list[Cell] | None = None) -> list[tuple[Cell, int | None]]:
    """Each cell of `grid` (by default the model's whole grid) on one UNet built once."""
    import torch
    from diffusers import DDPMScheduler
    unet, encoders, vae = build_sd(model, "cuda", torch.bfloat16)
    scheduler = DDPMScheduler()
    trainable = [p for p in unet.parameters() if p.requires_grad]
    results = []
    for cell in grid or cells(model):
        if cell.checkpointing:
            unet.enable_gradient_checkpointing()
        else:
            unet.disable_gradient_checkpointing()
        peak = measure(lambda: train_steps(lambda: sd_step(unet, scheduler, cell, "cuda"), trainable,
                                           cell, steps, "cuda"))
        results.append((cell, peak))
        report(cell, spec_for(model), peak)
    del unet, encoders, vae
    return results


def measure_text(model: Model, steps: int, workdir: Path,
                 grid: list[Cell] | None = None) -> list[tuple[Cell, int | None]]:
    """Each cell of `grid` (by default the model's whole grid); the model is loaded once per
    checkpointing setting."""
    folder = workdir / model.config.get("model_type", "llama") / str(model.config["hidden_size"])
    if not (folder / "config.json").exists():
        write_text_model(model, folder, "cuda")
    results = []
    by_checkpointing: dict[bool, list[Cell]] = {}
    for cell in grid or cells(model):
        by_checkpointing.setdefault(cell.checkpointing, []).append(cell)
    for group in by_checkpointing.values():
        lm = load_text(group[0], folder, "cuda")
        lm.train()
        trainable = [p for p in lm.parameters() if p.requires_grad]
        for cell in group:
            peak = measure(lambda: train_steps(lambda: text_step(lm, cell, "cuda"), trainable, cell,
                                               steps, "cuda"))
            results.append((cell, peak))
            report(cell, spec_for(model), peak)
        del lm, trainable
        gc.collect()
    return results


def calibrate(grid: list[Cell], steps: int, workdir: Path) -> list[tuple[Cell, int, int | None]]:
    """Measure every cell of `grid`, model by model in the order they first appear:
    (cell, estimated allocated bytes, measured peak or None when it ran out of memory)."""
    import torch
    by_model: dict[str, list[Cell]] = {}
    for cell in grid:
        by_model.setdefault(cell.model.key, []).append(cell)
    rows: list[tuple[Cell, int, int | None]] = []
    for group in by_model.values():
        model = group[0].model
        measured = (measure_text(model, steps, workdir, group) if model.family == "text"
                    else measure_sd(model, steps, group))
        spec = spec_for(model)
        rows += [(cell, estimated_bytes(cell, spec), peak) for cell, peak in measured]
        gc.collect()
        torch.cuda.empty_cache()
    return rows


@dataclass(frozen=True)
class Errors:
    worst: float
    worst_cell: Cell
    median: float

    @property
    def met(self) -> bool:
        return abs(self.worst) <= TARGET_CELL and abs(self.median) <= TARGET_MEDIAN


def errors_of(rows: list[tuple[Cell, int, int]]) -> Errors:
    """The worst (largest in size) and the median error of measured rows."""
    errors = [error(est, peak) for _, est, peak in rows]
    worst = max(errors, key=abs)
    return Errors(worst, rows[errors.index(worst)][0], statistics.median(errors))


def error(estimated: int, measured: int) -> float:
    return (estimated - measured) / measured


def report(cell: Cell, spec, measured: int | None) -> None:
    est = estimated_bytes(cell, spec)
    if measured is None:
        print(f"{cell.label()} estimate {est / GIB:7.2f} GiB  measured     OOM", flush=True)
    else:
        print(f"{cell.label()} estimate {est / GIB:7.2f} GiB  measured {measured / GIB:7.2f} GiB  "
              f"error {error(est, measured):+7.1%}", flush=True)


def summary(rows: list[tuple[Cell, int, int]]) -> int:
    """Prints the worst and median error; 0 when both targets are met."""
    if not rows:
        print("No cell was measured, so there is no ratio estimate / measured to summarize.")
        return 1
    print()
    summarize("estimate (allocated part)", [est / GIB for _, est, _ in rows],
              [peak / GIB for _, _, peak in rows], baseline="measured max_memory_allocated",
              unit="GiB", over="cells", per_round=False)
    errs = errors_of(rows)
    print(f"{len(rows)} cells. Worst error {errs.worst:+.1%} ({errs.worst_cell.label().strip()}); "
          f"median {errs.median:+.1%}.")
    ok = errs.met
    print(f"Targets: every cell within +-{TARGET_CELL:.0%}, median within +-{TARGET_MEDIAN:.0%}: "
          f"{'met' if ok else 'NOT met'}.")
    return 0 if ok else 1


def dry_run(models: list[Model]) -> None:
    for model in models:
        spec = spec_for(model)
        for cell in cells(model):
            est = estimate(cell.job(), None, spec)
            print(f"{cell.label()} allocated {est.allocated / GIB:7.2f} GiB  "
                  f"total with margin {est.total / GIB:7.2f} GiB")
    # On stderr: stdout is the grid alone, one cell a line.
    print("No ratio estimate / measured: a dry run measures nothing, so there is no baseline "
          "(torch.cuda.max_memory_allocated per cell) to compare the estimates with.",
          file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated: {', '.join(MODELS)}")
    parser.add_argument("--steps", type=int, default=3, help="training steps per cell")
    parser.add_argument("--dry-run", action="store_true", help="print the estimate grid; no GPU needed")
    parser.add_argument("--json", type=Path, help="also write the measured cells to this file")
    args = parser.parse_args(argv)
    unknown = [m for m in args.models.split(",") if m not in MODELS]
    if unknown:
        parser.error(f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(MODELS)}")
    models = [MODELS[m] for m in args.models.split(",")]
    if args.dry_run:
        dry_run(models)
        return 0
    import torch
    if not torch.cuda.is_available():
        print("No CUDA GPU is available, so nothing can be measured and there is no ratio "
              "estimate / measured to summarize. Run with --dry-run to print the estimate grid, or run this on a machine with an NVIDIA GPU.")
        return 0
    print(f"GPU: {torch.cuda.get_device_name(0)}; torch {torch.__version__}; {args.steps} steps per cell\n")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="vram-calibration-") as tmp:
        measured = calibrate([cell for model in models for cell in cells(model)], args.steps, Path(tmp))
    rows = [(cell, est, peak) for cell, est, peak in measured if peak is not None]
    print(f"\n({time.perf_counter() - started:.0f} s)")
    if args.json:
        args.json.write_text(json.dumps([
            {"cell": cell.label().split(), "estimated": est, "measured": peak, "error": error(est, peak)}
            for cell, est, peak in rows], indent=1), encoding="utf-8")
    return summary(rows)


if __name__ == "__main__":
    sys.exit(main())
