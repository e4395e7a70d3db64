"""GPU check: on one NVIDIA GPU, prove the CUDA paths, calibrate the VRAM estimate and
measure speed against the references, then write one JSON and one Markdown report.

    python benchmarks/gpu_check.py                    # needs an NVIDIA GPU; about 6-8 minutes
    python benchmarks/gpu_check.py --dry-run          # any machine: plans every section
    python benchmarks/gpu_check.py --sections tests,speed --rounds 5 --out somewhere/

Sections:
  tests        the suite's GPU-only tests (tests/test_gpu.py, marked gpu), in a pytest
               subprocess; pass, fail or skip per test.
  calibration  benchmarks/vram_calibration.py on a grid that fits the time (SD 1.5 at
               512/768 px, SDXL at 1024 px with and without gradient checkpointing,
               Llama 3.2 1B and Llama 2 7B in 4-bit): estimate vs max_memory_allocated.
  speed        LoRA Studio's engine against the references, interleaved round by round:
               SD 1.5 LoRA at 512 px, batch 4, bf16 (it/s) vs a loop written the way
               diffusers' train_text_to_image_lora.py trains (benchmarks/references/sd_lora.py);
               QLoRA on the Llama 3.2 1B architecture at 1024 tokens (tokens/s) vs
               transformers' Trainer + PEFT (benchmarks/references/text_trainer.py); the
               peak VRAM (max_memory_allocated) of each run.

Real-size models are built from hardware/archs.py's configs with random weights and
written to a temp folder: nothing is downloaded. The dry run writes the report with
every CUDA section "skipped: no CUDA", after running what a CPU can: the GPU tests
(they skip), the calibration grid's estimates, and the speed section's plumbing on the
tiny models of resources/ (1 round, a few steps; its figures mean nothing).
The report files are named after the GPU and the date, in benchmarks/results/ unless
--out says otherwise. A missing package stops the check at once, naming it and the
wheels line of benchmarks/GPU.md.
"""
from __future__ import annotations

import argparse
import datetime
import gc
import importlib.metadata
import importlib.util
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SECTIONS = ("tests", "calibration", "speed")
NO_CUDA = "skipped: no CUDA"
# import name -> distribution name, for the versions in the report and the missing-package message
PACKAGES = {"torch": "torch", "transformers": "transformers", "diffusers": "diffusers",
            "peft": "peft", "accelerate": "accelerate", "bitsandbytes": "bitsandbytes",
            "safetensors": "safetensors", "tokenizers": "tokenizers", "huggingface_hub": "huggingface-hub",
            "pynvml": "nvidia-ml-py", "pydantic": "pydantic", "pydantic_core": "pydantic-core",
            "tomli_w": "tomli-w", "platformdirs": "platformdirs", "numpy": "numpy", "PIL": "pillow",
            "pytest": "pytest"}
WHEELS_LINE = ("python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 "
               "--implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 "
               "--platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl "
               "-r benchmarks/gpu_wheels.txt")
INSTALL_LINE = ("python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade "
                "--target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site")

SD_RESOLUTION, SD_BATCH = 512, 4
TEXT_SEQ, TEXT_BATCH = 1024, 4


def missing_packages(names=PACKAGES) -> list[str]:
    return [name for name in names if importlib.util.find_spec(name) is None]


def missing_message(missing: list[str]) -> str:
    dists = ", ".join(PACKAGES.get(m, m) for m in missing)
    return (f"gpu_check cannot run: the Python package(s) {dists} are not installed "
            f"(import {', '.join(missing)} failed).\n"
            "Bring them as wheels (benchmarks/GPU.md): on a machine with pip and a network, in the "
            f"repository's root,\n  {WHEELS_LINE}\nthen here\n  {INSTALL_LINE}\n"
            "and run gpu_check again.")


# ---------------------------------------------------------------- environment

def version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def environment() -> dict:
    import torch
    env: dict = {"python": platform.python_version(), "platform": platform.platform(),
                 "libraries": {dist: version(dist) for dist in PACKAGES.values()},
                 "cuda_available": torch.cuda.is_available(), "gpu": None, "gpu_memory_bytes": None,
                 "compute_capability": None, "cuda": torch.version.cuda, "driver": None,
                 "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None}
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        env.update(gpu=props.name, gpu_memory_bytes=props.total_memory,
                   compute_capability=f"{props.major}.{props.minor}")
        try:
            import pynvml
            pynvml.nvmlInit()
            env["driver"] = str(pynvml.nvmlSystemGetDriverVersion())
            pynvml.nvmlShutdown()
        except Exception as exc:  # a report without the driver beats no report
            env["driver"] = f"unknown ({exc})"
    return env


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()


# ---------------------------------------------------------------- section: tests

def junit_results(path: Path) -> list[dict]:
    """pass / fail / skip of each test case in a pytest JUnit XML file."""
    results = []
    for case in ET.parse(path).getroot().iter("testcase"):
        outcome, message = "passed", ""
        for tag in ("failure", "error", "skipped"):
            node = case.find(tag)
            if node is not None:
                outcome = {"failure": "failed", "error": "error", "skipped": "skipped"}[tag]
                message = (node.get("message") or node.text or "").strip()[:500]
                break
        results.append({"test": f"{case.get('classname')}::{case.get('name')}", "outcome": outcome,
                        "seconds": float(case.get("time") or 0), "message": message})
    return results


def run_gpu_tests(workdir: Path, timeout_s: int, cuda: bool) -> dict:
    """``cuda`` False hides the GPU from pytest, so a dry run on a GPU machine skips them too."""
    xml = workdir / "junit.xml"
    command = [sys.executable, "-m", "pytest", "-m", "gpu", "tests/test_gpu.py", "-q",
               "-p", "no:cacheprovider", f"--junitxml={xml}"]
    try:
        env = None if cuda else {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
        proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout_s, env=env)
    except subprocess.TimeoutExpired as exc:
        tail = (exc.stdout or "")[-2000:] if isinstance(exc.stdout, str) else ""
        return {"problem": f"pytest ran past {timeout_s} s", "output_tail": tail, "results": []}
    if not xml.is_file():
        return {"problem": f"pytest exited {proc.returncode} without a report",
                "output_tail": (proc.stdout + proc.stderr)[-4000:], "results": []}
    results = junit_results(xml)
    counts = {f"{o}s" if o == "error" else o: sum(r["outcome"] == o for r in results)
              for o in ("passed", "failed", "error", "skipped")}
    return {"returncode": proc.returncode, **counts, "results": results,
            "output_tail": (proc.stdout + proc.stderr)[-4000:] if proc.returncode else ""}


def section_tests(cuda: bool, workdir: Path) -> dict:
    ran = run_gpu_tests(workdir, timeout_s=300, cuda=cuda)
    return {"status": "ran" if cuda else NO_CUDA, **ran}


# ---------------------------------------------------------------- section: calibration

def calibration_grid() -> list:
    """The cells that fit the time: every axis the estimate models, the models loaded
    once per checkpointing setting (vram_calibration.measure_text)."""
    from benchmarks.vram_calibration import MODELS, Cell
    sd15, sdxl, l1b, l7b = (MODELS[k] for k in ("sd15", "sdxl", "llama1b", "llama7b"))
    return [Cell(sd15, 1, 512, False, "AdamW"), Cell(sd15, 4, 512, False, "AdamW"),
            Cell(sd15, 4, 768, False, "AdamW8bit"), Cell(sd15, 4, 768, True, "AdamW"),
            Cell(sdxl, 1, 1024, False, "AdamW"), Cell(sdxl, 1, 1024, True, "AdamW"),
            Cell(sdxl, 2, 1024, True, "AdamW8bit"),
            Cell(l1b, 4, 1024, False, "AdamW"), Cell(l1b, 1, 512, True, "AdamW"),
            Cell(l1b, 4, 2048, True, "AdamW8bit"),
            Cell(l7b, 1, 2048, True, "AdamW"), Cell(l7b, 2, 512, True, "AdamW8bit")]


def section_calibration(cuda: bool, workdir: Path, steps: int) -> dict:
    from benchmarks.vram_calibration import calibrate, error, errors_of, estimated_bytes, spec_for
    grid = calibration_grid()
    plan = [{"cell": " ".join(c.label().split()), "estimated": estimated_bytes(c, spec_for(c.model))}
            for c in grid]
    if not cuda:
        return {"status": NO_CUDA, "plan": plan}
    rows = calibrate(grid, steps, workdir)
    cells = [{"cell": " ".join(c.label().split()), "estimated": est, "measured": peak,
              "error": None if peak is None else error(est, peak)} for c, est, peak in rows]
    measured = [(c, est, peak) for c, est, peak in rows if peak is not None]
    out = {"status": "ran", "steps_per_cell": steps, "plan": plan, "cells": cells}
    if measured:
        errs = errors_of(measured)
        out.update(worst_error=errs.worst, worst_cell=" ".join(errs.worst_cell.label().split()),
                   median_error=errs.median, targets_met=errs.met)
    return out


# ---------------------------------------------------------------- section: speed

@dataclass
class SpeedSetup:
    """The models and data one speed comparison runs on, real-size or tiny."""
    sd_model: Path
    images: Path                 # a kohya-style folder (N_name/*.png + .txt)
    text_model: Path
    text_data: Path              # JSONL of {"text": ...} records longer than seq
    resolution: int
    sd_batch: int
    seq: int
    text_batch: int
    load_in_4bit: bool
    mixed_precision: str
    steps: int                   # timed steps per run
    warmup: int                  # steps before the timed ones (first epoch: latents cached)
    rounds: int


def write_images(folder: Path, count: int, size: int) -> Path:
    """`count` noise PNGs with captions, in a '1_data' folder (one repeat)."""
    import numpy as np
    from PIL import Image
    sub = folder / "1_data"
    sub.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(sub / f"{i:03}.png")
        (sub / f"{i:03}.txt").write_text(f"sks, photo of a red circle number {i}\n", encoding="utf-8")
    return folder


def write_text_records(path: Path, count: int, words: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(count):
            fh.write(json.dumps({"text": " ".join(f"plum{(i * 7 + j) % 97} colour" for j in range(words))})
                     + "\n")
    return path


def write_sd15(folder: Path, device: str) -> Path:
    """An SD 1.5-architecture pipeline with random weights (bf16 on disk), the small
    CLIP tokenizer of resources/make_tiny_sd.py."""
    import torch
    from diffusers import AutoencoderKL, DDPMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from lora_studio.hardware import archs
    sys.path.insert(0, str(ROOT / "resources"))
    import make_tiny_sd

    parts = archs.SD_COMPONENTS["sd1"]
    with torch.device(device):
        unet = UNet2DConditionModel(**parts["unet"]).to(torch.bfloat16)
        vae = AutoencoderKL(**parts["vae"]).to(torch.bfloat16)
        encoder = CLIPTextModel(CLIPTextConfig(**parts["text_encoder"])).to(torch.bfloat16)
    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                              beta_schedule="scaled_linear", clip_sample=False)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=encoder,
                                   tokenizer=make_tiny_sd.make_tokenizer(folder.parent / "tokenizer-src"),
                                   unet=unet, scheduler=scheduler, safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(folder, safe_serialization=True)
    return folder


def write_llama1b(folder: Path, device: str) -> Path:
    """The Llama 3.2 1B architecture with random weights, the tokenizer of resources/'s
    tiny text model (its ids are all below the real vocabulary's size)."""
    from benchmarks.vram_calibration import MODELS, write_text_model
    write_text_model(MODELS["llama1b"], folder, device)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(ROOT / "resources" / "tiny-text-model" / name, folder / name)
    return folder


def real_setup(workdir: Path, steps: int, rounds: int) -> SpeedSetup:
    return SpeedSetup(
        sd_model=write_sd15(workdir / "sd15", "cuda"), images=write_images(workdir / "images", 8, 512),
        text_model=write_llama1b(workdir / "llama1b", "cuda"),
        text_data=write_text_records(workdir / "text" / "long.jsonl", 32, 1500),
        resolution=SD_RESOLUTION, sd_batch=SD_BATCH, seq=TEXT_SEQ, text_batch=TEXT_BATCH,
        load_in_4bit=True, mixed_precision="bf16", steps=steps, warmup=3, rounds=rounds)


def tiny_setup(workdir: Path) -> SpeedSetup:
    return SpeedSetup(
        sd_model=ROOT / "resources" / "tiny-sd", images=write_images(workdir / "images", 4, 64),
        text_model=ROOT / "resources" / "tiny-text-model",
        text_data=write_text_records(workdir / "text" / "long.jsonl", 4, 60),
        resolution=64, sd_batch=2, seq=64, text_batch=2, load_in_4bit=False, mixed_precision="no",
        steps=1, warmup=1, rounds=1)


def engine_job(setup: SpeedSetup, kind: str):
    from lora_studio.config.parse import parse_job
    total = setup.warmup + setup.steps
    if kind == "image":
        data = {"model": {"path": str(setup.sd_model)},
                "dataset": {"path": str(setup.images), "resolution": setup.resolution,
                            "enable_bucket": False},
                "training": {"batch_size": setup.sd_batch, "max_steps": total,
                             "mixed_precision": setup.mixed_precision},
                "output": {"output_name": "speed-image"}}
    else:
        data = {"model": {"path": str(setup.text_model), "family": "text",
                          "load_in_4bit": setup.load_in_4bit},
                "dataset": {"path": str(setup.text_data), "max_seq_length": setup.seq},
                "training": {"batch_size": setup.text_batch, "max_steps": total,
                             "mixed_precision": setup.mixed_precision, "gradient_checkpointing": True},
                "output": {"output_name": "speed-text"}}
    job, findings = parse_job(data)
    errors = [f for f in findings if f.level == "error"]
    if errors:
        raise ValueError(f"the {kind} speed job does not validate: {errors}")
    return job


def steps_per_second(stamps: list[float], warmup: int) -> float:
    """Steps per second over the steps after `warmup`: stamps[i] is the end of step i+1."""
    timed = stamps[warmup - 1:] if warmup else stamps
    if len(timed) < 2:
        raise ValueError(f"need two step times after {warmup} warm-up steps, got {len(stamps)} in all")
    return (len(timed) - 1) / (timed[-1] - timed[0])


def peak_of(run: Callable[[], list[float]]) -> tuple[list[float], int | None]:
    """run()'s step times and the allocator's peak while it ran (None on a CPU)."""
    import torch
    cuda = torch.cuda.is_available()
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    stamps = run()
    peak = torch.cuda.max_memory_allocated() if cuda else None
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
    return stamps, peak


def synced_clock() -> float:
    import torch
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter()


def run_engine(setup: SpeedSetup, kind: str, workdir: Path) -> list[float]:
    from lora_studio.engine import image, text
    from lora_studio.engine.core.control import StopRequest
    from lora_studio.engine.core.trainer import train
    from lora_studio.runs.layout import new_run_dir
    stamps: list[float] = []
    events: list[dict] = []

    def emit(ev: dict) -> None:
        events.append(ev)
        if ev["type"] == "progress":  # the loop's .item() on the loss has waited for the step
            stamps.append(synced_clock())

    result = train(engine_job(setup, kind), new_run_dir(workdir, f"engine-{kind}"), emit,
                   StopRequest(), image.prepare if kind == "image" else text.prepare)
    if result.outcome.status != "completed":
        raise RuntimeError(f"the engine's {kind} run ended {result.outcome.status}: {events[-3:]}")
    return stamps


def reference_items(images: Path) -> list[tuple[Path, str]]:
    return [(p, p.with_suffix(".txt").read_text(encoding="utf-8").strip())
            for p in sorted(images.rglob("*.png"))]


def reference_rows(setup: SpeedSetup) -> list[list[int]]:
    """The engine's own token ids of the text records (plain text, cut at seq)."""
    from lora_studio.engine.text.model import load_tokenizer
    tokenizer = load_tokenizer(setup.text_model)
    rows = []
    for line in setup.text_data.read_text(encoding="utf-8").splitlines():
        ids = tokenizer(json.loads(line)["text"])["input_ids"]
        if len(ids) < setup.seq:
            raise ValueError(f"a speed record has {len(ids)} tokens, fewer than {setup.seq}")
        rows.append(ids[:setup.seq])
    return rows


def run_reference(setup: SpeedSetup, kind: str, workdir: Path) -> list[float]:
    from benchmarks.references import sd_lora, text_trainer
    stamps: list[float] = []
    job = engine_job(setup, kind)
    net, total = job.network, setup.warmup + setup.steps
    if kind == "image":
        from lora_studio.config.model_info import IMAGE_DEFAULT_TARGETS
        sd_lora.train(setup.sd_model, reference_items(setup.images), resolution=setup.resolution,
                                batch_size=setup.sd_batch, steps=total, rank=net.rank, alpha=net.alpha,
                                targets=net.target_modules or IMAGE_DEFAULT_TARGETS,
                                mixed_precision=setup.mixed_precision,
                                learning_rate=job.optimizer.learning_rate,
                                on_step=lambda step, loss: stamps.append(synced_clock()))
    else:
        from lora_studio.config.model_info import inspect_model
        from lora_studio.engine.text.model import target_modules
        text_trainer.train(
            setup.text_model, reference_rows(setup), workdir / "trainer", batch_size=setup.text_batch,
            steps=total, rank=net.rank, alpha=net.alpha, dropout=net.dropout,
            targets=target_modules(job, inspect_model(str(setup.text_model))),
            load_in_4bit=setup.load_in_4bit, mixed_precision=setup.mixed_precision,
            gradient_checkpointing=job.training.gradient_checkpointing,
            learning_rate=job.optimizer.learning_rate, on_step=lambda step: stamps.append(synced_clock()))
    return stamps


def compare_speed(setup: SpeedSetup, kind: str, workdir: Path) -> dict:
    """Engine and reference in interleaved rounds (which goes first alternates)."""
    from benchmarks._stats import summarize
    per_step = setup.sd_batch if kind == "image" else setup.text_batch * setup.seq
    unit = "it/s" if kind == "image" else "tokens/s"
    rates: dict[str, list[float]] = {"engine": [], "reference": []}
    peaks: dict[str, list[int | None]] = {"engine": [], "reference": []}
    for i in range(setup.rounds):
        for who in ("engine", "reference") if i % 2 == 0 else ("reference", "engine"):
            runner = run_engine if who == "engine" else run_reference
            folder = workdir / f"{kind}-{who}-{i}"
            folder.mkdir(parents=True)
            stamps, peak = peak_of(lambda: runner(setup, kind, folder))
            rate = steps_per_second(stamps, setup.warmup)
            rates[who].append(rate if kind == "image" else rate * per_step)
            peaks[who].append(peak)
            shutil.rmtree(folder, ignore_errors=True)
    name = "SD LoRA" if kind == "image" else "text QLoRA" if setup.load_in_4bit else "text LoRA"
    s = summarize(f"{name}, engine", rates["engine"], rates["reference"], baseline="reference", unit=unit)
    return {"unit": unit, "engine": rates["engine"], "reference": rates["reference"],
            "ratio": s.ratio, "ratio_low": s.low, "ratio_high": s.high,
            "engine_peak_bytes": peaks["engine"], "reference_peak_bytes": peaks["reference"],
            "rounds": setup.rounds, "timed_steps": setup.steps, "warmup_steps": setup.warmup}


def speed_plan(setup: SpeedSetup) -> dict:
    return {"image": {"model": "SD 1.5 architecture, random weights", "resolution": setup.resolution,
                      "batch_size": setup.sd_batch, "mixed_precision": setup.mixed_precision,
                      "reference": "benchmarks/references/sd_lora.py (diffusers train_text_to_image_lora.py)",
                      "unit": "it/s"},
            "text": {"model": "Llama 3.2 1B architecture, random weights", "load_in_4bit": setup.load_in_4bit,
                     "seq": setup.seq, "batch_size": setup.text_batch,
                     "mixed_precision": setup.mixed_precision,
                     "reference": "benchmarks/references/text_trainer.py (transformers Trainer + PEFT)",
                     "unit": "tokens/s"},
            "rounds": setup.rounds, "timed_steps": setup.steps, "warmup_steps": setup.warmup}


def section_speed(cuda: bool, workdir: Path, steps: int, rounds: int) -> dict:
    if not cuda:
        setup = tiny_setup(workdir)
        real = SpeedSetup(**{**setup.__dict__, "resolution": SD_RESOLUTION, "sd_batch": SD_BATCH,
                             "seq": TEXT_SEQ, "text_batch": TEXT_BATCH, "load_in_4bit": True,
                             "mixed_precision": "bf16", "steps": steps, "warmup": 3, "rounds": rounds})
        for kind in ("image", "text"):
            engine_job(real, kind)  # the real-size jobs validate
        plumbing = {kind: compare_speed(setup, kind, workdir) for kind in ("image", "text")}
        return {"status": NO_CUDA, "plan": speed_plan(real),
                "dry_run": {"note": "tiny models of resources/ on the CPU, 1 round: the figures "
                                    "only show the plumbing works", **plumbing}}
    setup = real_setup(workdir, steps, rounds)
    return {"status": "ran", "plan": speed_plan(setup),
            **{kind: compare_speed(setup, kind, workdir) for kind in ("image", "text")}}


# ---------------------------------------------------------------- the report

def gib(n: int | None) -> str:
    return "-" if n is None else f"{n / 2**30:.2f} GiB"


def markdown(report: dict) -> str:
    from statistics import median

    from benchmarks._stats import figure
    env = report["environment"]
    lines = [f"# GPU check: {env['gpu'] or 'no GPU'}, {report['date']}", "",
             f"{'Dry run (no CUDA): the CUDA sections were planned, not run.' if report['dry_run'] else ''}",
             f"Command: `{report['command']}` ({report['seconds']:.0f} s in all)", "",
             "## Machine", "",
             f"- GPU: {env['gpu'] or 'none'} ({gib(env['gpu_memory_bytes'])}, compute capability "
             f"{env['compute_capability'] or '-'})",
             f"- driver {env['driver'] or '-'}, CUDA {env['cuda'] or '-'}, cuDNN {env['cudnn'] or '-'}",
             f"- Python {env['python']} on {env['platform']}",
             "- " + ", ".join(f"{k} {v}" for k, v in env["libraries"].items() if v), ""]
    sections = report["sections"]
    if "tests" in sections:
        t = sections["tests"]
        lines += ["## GPU-only tests (tests/test_gpu.py)", "", f"Status: {t['status']}"
                  + (f"; {t.get('passed', 0)} passed, {t.get('failed', 0)} failed, "
                     f"{t.get('errors', 0)} errors, {t.get('skipped', 0)} skipped" if "results" in t else ""),
                  ""]
        if t.get("problem"):
            lines += [f"Problem: {t['problem']}", "", "```", t.get("output_tail", ""), "```", ""]
        if t.get("results"):
            lines += ["| test | outcome | s | message |", "| --- | --- | --- | --- |"]
            lines += [f"| {r['test']} | {r['outcome']} | {r['seconds']:.1f} | "
                      f"{r['message'][:120].replace('|', '/').replace(chr(10), ' ')} |" for r in t["results"]]
            lines.append("")
    if "calibration" in sections:
        c = sections["calibration"]
        lines += ["## VRAM estimate vs torch.cuda.max_memory_allocated", "", f"Status: {c['status']}", ""]
        if "cells" in c:
            lines += ["| cell | estimate | measured | error |", "| --- | --- | --- | --- |"]
            lines += [f"| {x['cell']} | {gib(x['estimated'])} | "
                      f"{'OOM' if x['measured'] is None else gib(x['measured'])} | "
                      f"{'-' if x['error'] is None else format(x['error'], '+.1%')} |" for x in c["cells"]]
            if "worst_error" in c:
                lines += ["", f"Worst error {c['worst_error']:+.1%} ({c['worst_cell']}); median "
                              f"{c['median_error']:+.1%}. Targets (every cell within +-15 %, the median "
                              f"within +-7 %): {'met' if c['targets_met'] else 'NOT met'}."]
        else:
            lines += ["Planned cells (estimate):", ""]
            lines += [f"- {x['cell']}: {gib(x['estimated'])}" for x in c["plan"]]
        lines.append("")
    if "speed" in sections:
        s = sections["speed"]
        lines += ["## Speed against the references", "", f"Status: {s['status']}", ""]
        plan = s["plan"]
        lines += [f"- image: {plan['image']['model']}, {plan['image']['resolution']} px, batch "
                  f"{plan['image']['batch_size']}, {plan['image']['mixed_precision']}; reference "
                  f"{plan['image']['reference']}",
                  f"- text: {plan['text']['model']}, 4-bit {plan['text']['load_in_4bit']}, seq "
                  f"{plan['text']['seq']}, batch {plan['text']['batch_size']}; reference "
                  f"{plan['text']['reference']}",
                  f"- {plan['rounds']} interleaved rounds, {plan['timed_steps']} timed steps after "
                  f"{plan['warmup_steps']} warm-up steps per run", ""]
        figures = s.get("dry_run", s)
        if "dry_run" in s:
            lines += [f"Dry run: {s['dry_run']['note']}.", ""]
        if "image" in figures and "ratio" in figures.get("image", {}):
            lines += ["| comparison | engine | reference | engine / reference (spread) | engine peak | "
                      "reference peak |", "| --- | --- | --- | --- | --- | --- |"]
            for kind in ("image", "text"):
                f = figures[kind]
                peak = [max((x for x in f[k] if x is not None), default=None)
                        for k in ("engine_peak_bytes", "reference_peak_bytes")]
                lines.append(f"| {kind} | {figure(median(f['engine']))} {f['unit']} | "
                             f"{figure(median(f['reference']))} "
                             f"{f['unit']} | {f['ratio']:.3f} ({f['ratio_low']:.3f}-{f['ratio_high']:.3f}) "
                             f"| {gib(peak[0])} | {gib(peak[1])} |")
            lines.append("")
    for name, sec in sections.items():
        if sec.get("failure"):
            lines += [f"## {name}: failed", "", "```", sec["failure"], "```", ""]
    return "\n".join(lines) + "\n"


def run_section(name: str, body: Callable[[], dict]) -> dict:
    """A section that fails is recorded with its traceback; the others still run."""
    import traceback
    started = time.perf_counter()
    print(f"== {name}", flush=True)
    try:
        out = body()
    except Exception as exc:
        out = {"status": f"failed: {type(exc).__name__}: {str(exc)[:300]}",
               "failure": "".join(traceback.format_exception(exc))[-6000:]}
    out["seconds"] = round(time.perf_counter() - started, 1)
    print(f"   {out['status']} ({out['seconds']} s)", flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--dry-run", action="store_true",
                        help="plan every section on any machine; CUDA sections marked skipped")
    parser.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated: {', '.join(SECTIONS)}")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results",
                        help="folder for the JSON and Markdown reports")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved speed rounds")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per speed run")
    parser.add_argument("--calibration-steps", type=int, default=3, help="training steps per calibration cell")
    args = parser.parse_args(argv)
    sections = args.sections.split(",")
    unknown = [s for s in sections if s not in SECTIONS]
    if unknown:
        parser.error(f"unknown section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")
    needed = [m for m in PACKAGES if m != "bitsandbytes"] if args.dry_run else list(PACKAGES)
    missing = missing_packages(needed)
    if missing:
        print(missing_message(missing), file=sys.stderr)
        return 2

    import torch
    cuda = torch.cuda.is_available() and not args.dry_run
    if not cuda and not args.dry_run:
        print("No CUDA GPU is available. Run this on a machine with an NVIDIA GPU, or add --dry-run "
              "to plan every section here.", file=sys.stderr)
        return 2
    started = time.perf_counter()
    now = datetime.datetime.now()
    report: dict = {"tool": "benchmarks/gpu_check.py", "date": now.strftime("%Y-%m-%d %H:%M"),
                    "command": " ".join(["python benchmarks/gpu_check.py", *(argv if argv is not None else sys.argv[1:])]),
                    "dry_run": args.dry_run, "environment": environment(), "sections": {}}
    env = report["environment"]
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        work = Path(tmp)
        bodies = {"tests": lambda: section_tests(cuda, work / "tests"),
                  "calibration": lambda: section_calibration(cuda, work / "calibration", args.calibration_steps),
                  "speed": lambda: section_speed(cuda, work / "speed", args.steps, args.rounds)}
        for name in sections:
            (work / name).mkdir()
            report["sections"][name] = run_section(name, bodies[name])
    report["seconds"] = round(time.perf_counter() - started, 1)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"gpu-check-{slug(env['gpu'] or 'no-gpu')}-{'dry-run-' if args.dry_run else ''}{now:%Y-%m-%d}"
    (args.out / f"{stem}.json").write_text(json.dumps(report, indent=1), encoding="utf-8")
    (args.out / f"{stem}.md").write_text(markdown(report), encoding="utf-8")
    print(f"Wrote {args.out / stem}.json and .md ({report['seconds']:.0f} s)")
    failed = [n for n, s in report["sections"].items() if s["status"].startswith("failed")
              or s.get("failed") or s.get("errors") or s.get("problem")]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
