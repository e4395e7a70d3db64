"""LoRA Studio against what its users would run instead, on the same tiny models,
data, LoRA rank and targets, batch, steps and one CPU thread:

- text: `lora-studio train` (python -m lora_studio) against transformers' Trainer + PEFT
  (benchmarks/references/text_trainer.py) and TRL's SFTTrainer;
- image: `lora-studio train` with latents not cached against a loop written the way
  diffusers' train_text_to_image_lora.py trains (benchmarks/references/sd_lora.py).

    python benchmarks/vs_peers.py [--rounds 5] [--quick] [--only text|image] [--steps 80]

Every run is a fresh Python process started by this script, so start-up counts from
the process start (the figures a user waits for: imports, model load, data,
caching). The sides run interleaved, round by round, their order rotating. Per pair,
for each figure, the median of the per-round ratios (side / peer) and their min-max:

- steady step: (time of step N - time of step 10) / (N - 10), in the process's CPU
  time (the headline: on a machine shared with other programs a step's wall time is
  mostly waiting for a core) and in wall-clock time;
- first step: from starting the process to the end of the first optimizer step, wall
  clock, and the CPU time the process had used by then;
- total: from starting the process to its exit (the final adapter written);
- peak RSS: the child's ru_maxrss (os.wait4).

The work per step is checked equal before any figure is printed: trainable
parameters, and tokens (text: every record cut to the same length) or images per
step. The models are the tiny ones shipped in resources/ (random weights), copied
to a temporary folder that every side loads from. LoRA Studio's token cache lives in
that folder too, so from the second round on it is warm, as for a user's second run
(tokenising these 64 records takes milliseconds either way). On a tiny model
start-up is most of the run; on a real model the step dominates.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._stats import summarize, verdict  # noqa: E402

MAX_LEN = 64          # tokens a text record is cut to: every row is this long on every side
TEXT_BATCH = 4
TEXT_RECORDS = 64
IMAGE_BATCH = 2
IMAGE_RES = 64
RANK, ALPHA = 16, 16.0
IMAGE_RANK, IMAGE_ALPHA = 4, 4.0
LR = 1e-4
STEADY_FROM = 10      # steps 11..N are the steady steps

# One thread for every process: OMP for torch's own pool, the rest for libraries that
# would start their own.
THREAD_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
              "TOKENIZERS_PARALLELISM": "false", "PYTHONWARNINGS": "ignore",
              "HF_HUB_OFFLINE": "1", "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1"}

SIDES = {"text": ("lora-studio", "trainer", "sft"), "image": ("lora-studio", "diffusers-loop")}
PEER_NAMES = {"trainer": "Trainer + PEFT", "sft": "TRL SFTTrainer",
              "diffusers-loop": "diffusers LoRA loop"}


# ---- the material every side reads --------------------------------------------

def make_material(tmp: Path) -> dict:
    """The tiny models, a text dataset of long records (each cut to MAX_LEN tokens) and
    the demo images, copied under `tmp`."""
    shutil.copytree(ROOT / "resources" / "tiny-text-model", tmp / "text-model")
    shutil.copytree(ROOT / "resources" / "tiny-sd", tmp / "sd-model")
    shutil.copytree(ROOT / "resources" / "demo-images", tmp / "images")
    words = ("wind sail rope deck mast wave gull salt tide keel hull plank anchor compass star "
             "lantern barrel rum map coast reef storm calm dawn dusk").split()
    with open(tmp / "text.jsonl", "w", encoding="utf-8") as fh:
        for i in range(TEXT_RECORDS):
            text = " ".join(words[(i * 7 + j * 3) % len(words)] for j in range(120))
            fh.write(json.dumps({"text": f"Record {i}: {text}."}) + "\n")
    return {"text_model": str(tmp / "text-model"), "sd_model": str(tmp / "sd-model"),
            "images": str(tmp / "images"), "text_data": str(tmp / "text.jsonl")}


def image_items(images: Path) -> list[tuple[str, str]]:
    """(image, caption) per sample of an epoch: a kohya 'N_name' folder gives each
    image N times, as LoRA Studio counts them."""
    items = []
    for folder in sorted(p for p in images.iterdir() if p.is_dir()):
        repeats = int(folder.name.split("_", 1)[0])
        for png in sorted(folder.glob("*.png")):
            caption = png.with_suffix(".txt").read_text(encoding="utf-8").strip()
            items += [(str(png), caption)] * repeats
    return items


# ---- the children -------------------------------------------------------------

def write_preset(kind: str, m: dict, steps: int, folder: Path) -> Path:
    if kind == "text":
        body = f"""
[model]
path = {json.dumps(m['text_model'])}
family = "text"
[dataset]
path = {json.dumps(m['text_data'])}
format = "text"
max_seq_length = {MAX_LEN}
[network]
rank = {RANK}
alpha = {ALPHA}
[optimizer]
learning_rate = {LR}
[training]
max_steps = {steps}
batch_size = {TEXT_BATCH}
[output]
output_name = "bench_text"
output_dir = {json.dumps(str(folder))}
"""
    else:
        body = f"""
[model]
path = {json.dumps(m['sd_model'])}
family = "sd1"
[dataset]
path = {json.dumps(m['images'])}
resolution = {IMAGE_RES}
enable_bucket = false
cache_latents = false
[network]
rank = {IMAGE_RANK}
alpha = {IMAGE_ALPHA}
[optimizer]
learning_rate = {LR}
[training]
max_steps = {steps}
batch_size = {IMAGE_BATCH}
[output]
output_name = "bench_image"
output_dir = {json.dumps(str(folder))}
"""
    path = folder / f"{kind}.toml"
    path.write_text(f'[meta]\nname = "bench {kind}"\nmodel_family = '
                    f'"{"text" if kind == "text" else "sd1"}"\nschema_version = 2\n' + body,
                    encoding="utf-8")
    return path


def child_trainer(spec: dict) -> dict:
    """transformers' Trainer + PEFT, the rows tokenised here (a user's script does too)."""
    import torch
    torch.set_num_threads(1)
    from transformers import AutoTokenizer

    from benchmarks.references.text_trainer import train
    tokenizer = AutoTokenizer.from_pretrained(spec["model"])
    with open(spec["data"], encoding="utf-8") as fh:
        texts = [json.loads(line)["text"] for line in fh]
    rows = tokenizer(texts, truncation=True, max_length=MAX_LEN)["input_ids"]
    return run_peer(lambda on_step, on_model: train(
        Path(spec["model"]), rows, Path(spec["out"]), batch_size=TEXT_BATCH, steps=spec["steps"],
        rank=RANK, alpha=ALPHA, dropout=0.0, targets=spec["targets"], load_in_4bit=False,
        mixed_precision="no", gradient_checkpointing=False, learning_rate=LR,
        on_step=on_step, on_model=on_model, save_dir=Path(spec["out"]) / "adapter"),
        {"tokens_per_step": TEXT_BATCH * max(map(len, rows)), "row_lengths": sorted({len(r) for r in rows})})


def child_sft(spec: dict) -> dict:
    """TRL's SFTTrainer on the same text field, cut to the same length."""
    import torch
    torch.set_num_threads(1)
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    with open(spec["data"], encoding="utf-8") as fh:
        dataset = Dataset.from_list([{"text": json.loads(line)["text"]} for line in fh])
    marks: list[float] = []
    cpu: list[float] = []

    class StepTimer(TrainerCallback):
        def on_step_end(self, args, state, control, **_):
            marks.append(time.time())
            cpu.append(time.process_time())

    config = SFTConfig(
        output_dir=spec["out"], per_device_train_batch_size=TEXT_BATCH, max_steps=spec["steps"],
        learning_rate=LR, lr_scheduler_type="constant", optim="adamw_torch", weight_decay=0.01,
        max_grad_norm=1.0, max_length=MAX_LEN, packing=False, dataset_text_field="text",
        logging_strategy="no", save_strategy="no", report_to=[], disable_tqdm=True,
        dataloader_num_workers=0, seed=0, use_cpu=True, bf16=False, fp16=False)
    model = AutoModelForCausalLM.from_pretrained(spec["model"], dtype=torch.float32)
    trainer = SFTTrainer(model=model, args=config, train_dataset=dataset,
                         peft_config=LoraConfig(r=RANK, lora_alpha=ALPHA, lora_dropout=0.0,
                                                target_modules=spec["targets"], task_type="CAUSAL_LM"),
                         callbacks=[StepTimer()])
    lengths = sorted({len(ids) for ids in trainer.train_dataset["input_ids"]})
    trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    trainer.train()
    trainer.save_model(str(Path(spec["out"]) / "adapter"))
    return {"steps": marks, "cpu": cpu, "trainable": trainable,
            "tokens_per_step": TEXT_BATCH * lengths[-1],
            "row_lengths": lengths}


def child_diffusers_loop(spec: dict) -> dict:
    import torch
    torch.set_num_threads(1)
    from benchmarks.references.sd_lora import train
    items = [(Path(p), c) for p, c in spec["items"]]
    return run_peer(lambda on_step, on_model: train(
        Path(spec["model"]), items, resolution=IMAGE_RES, batch_size=IMAGE_BATCH,
        steps=spec["steps"], rank=IMAGE_RANK, alpha=IMAGE_ALPHA, mixed_precision="no",
        learning_rate=LR, on_step=lambda step, loss: on_step(step), on_model=on_model,
        save_dir=Path(spec["out"]) / "adapter"),
        {"images_per_step": IMAGE_BATCH if len(items) % IMAGE_BATCH == 0 else None})


def run_peer(train, facts: dict) -> dict:
    marks: list[float] = []
    cpu: list[float] = []
    counted: dict = {}

    def on_model(model) -> None:
        counted["trainable"] = sum(p.numel() for p in model.parameters() if p.requires_grad)

    def on_step(step: int) -> None:
        marks.append(time.time())
        cpu.append(time.process_time())

    train(on_step, on_model)
    return {"steps": marks, "cpu": cpu, **counted, **facts}


def child_lora_studio(spec: dict) -> dict:
    """`lora-studio train PRESET` as the console script runs it (cli.main), its progress
    events also carrying the process's CPU time (events.jsonl is read afterwards)."""
    from lora_studio.runs import events
    plain = events.event

    def event(type_: str, **fields):
        if type_ == "progress":
            fields["cpu_s"] = time.process_time()
        return plain(type_, **fields)

    events.event = event  # before the engine's modules bind it
    from lora_studio.cli import main as cli_main
    sys.argv = ["lora-studio", "train", spec["preset"]]
    code = cli_main()  # no argv: as the console script calls it
    if code != 0:
        raise SystemExit(code)
    return {}


CHILDREN = {"trainer": child_trainer, "sft": child_sft, "diffusers-loop": child_diffusers_loop,
            "lora-studio": child_lora_studio}


def lora_studio_result(run_root: Path, kind: str) -> dict:
    """The figures of a `lora-studio train` run, from its events.jsonl."""
    [run] = [p for p in run_root.iterdir() if (p / "events.jsonl").is_file()]
    events = [json.loads(line) for line in (run / "events.jsonl").read_text(encoding="utf-8").splitlines()]
    ends = [e for e in events if e["type"] in ("finished", "error")]
    if not ends or ends[-1]["type"] != "finished":
        raise SystemExit(f"lora-studio {kind} run failed: {ends[-1] if ends else 'no end event'}")
    started = next(e for e in events if e["type"] == "started")
    out = {"steps": [e["time"] for e in events if e["type"] == "progress"],
           "cpu": [e["cpu_s"] for e in events if e["type"] == "progress"],
           "trainable": started["trainable_params"]}
    if kind == "text":
        records = next(e["records"] for e in events if "records" in e)
        cut = next((e["truncated"] for e in events if "truncated" in e), 0)
        # every record longer than MAX_LEN and cut to it: each batch holds MAX_LEN per record
        out["tokens_per_step"] = TEXT_BATCH * MAX_LEN if cut == records else None
        out["row_lengths"] = [MAX_LEN] if cut == records else []
    else:
        per_epoch = started["samples_per_epoch"]
        out["images_per_step"] = IMAGE_BATCH if per_epoch % IMAGE_BATCH == 0 else None
    return out


def run_side(kind: str, side: str, m: dict, steps: int, folder: Path, targets: list[str]) -> dict:
    """One run in a fresh process; its figures and the parent's clock and rusage."""
    folder.mkdir(parents=True)
    env = {**os.environ, **THREAD_ENV, "LORA_STUDIO_CACHE_DIR": str(folder.parent / "cache"),
           "HF_HOME": str(folder.parent / "hf"), "PYTHONPATH": str(ROOT)}
    spec = {"model": m["text_model" if kind == "text" else "sd_model"], "data": m["text_data"],
            "out": str(folder), "steps": steps, "targets": targets,
            "items": image_items(Path(m["images"])),
            "preset": str(write_preset(kind, m, steps, folder))}
    (folder / "spec.json").write_text(json.dumps(spec), encoding="utf-8")
    argv = [sys.executable, str(Path(__file__).resolve()), "--child", side, str(folder)]
    with open(folder / "out.log", "wb") as log:
        start = time.time()
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env,
                                stdin=subprocess.DEVNULL, cwd=str(folder))
        _, status, usage = os.wait4(proc.pid, 0)
        end = time.time()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        tail = (folder / "out.log").read_text(encoding="utf-8", errors="replace")[-3000:]
        raise SystemExit(f"{side} ({kind}) exited with {proc.returncode}:\n{tail}")
    result = lora_studio_result(folder, kind) if side == "lora-studio" else \
        json.loads((folder / "result.json").read_text(encoding="utf-8"))
    marks = result["steps"]
    if len(marks) != steps:
        raise SystemExit(f"{side} ({kind}) reported {len(marks)} steps, not {steps}")
    cpu = result["cpu"]
    return {**result, "first": marks[0] - start, "first_cpu": cpu[0], "total": end - start,
            "step": (marks[-1] - marks[STEADY_FROM - 1]) / (steps - STEADY_FROM),
            "step_cpu": (cpu[-1] - cpu[STEADY_FROM - 1]) / (steps - STEADY_FROM),
            "rss_mb": usage.ru_maxrss / 1024}


# ---- the parent -----------------------------------------------------------------

def text_targets(model: str) -> list[str]:
    """LoRA Studio's default targets for the tiny model, given to the peers."""
    from lora_studio.config.model_info import inspect_model, text_targets as targets
    return targets(inspect_model(model))


def check_work(kind: str, runs: dict[str, dict]) -> None:
    """Refuse to compare sides that did different work per step."""
    unit = "tokens_per_step" if kind == "text" else "images_per_step"
    facts = {side: (r["trainable"], r[unit]) for side, r in runs.items()}
    for side, (trainable, per_step) in facts.items():
        print(f"  {side}: {trainable} trainable parameters, {per_step} "
              f"{unit.replace('_per_step', '')} per step"
              + (f" (rows of {r} tokens)" if (r := runs[side].get("row_lengths")) else ""))
    if len(set(facts.values())) != 1 or None in {v for f in facts.values() for v in f}:
        raise SystemExit(f"The {kind} sides do not do the same work per step: {facts}")
    print(f"  {kind}: the work per step is equal on every side.", flush=True)


FIGURES = (("step_cpu", "steady step (CPU time)", "ms", 1000),
           ("step", "steady step (wall)", "ms", 1000),
           ("first", "start -> first step (wall)", "s", 1),
           ("first_cpu", "CPU time to the first step", "s", 1),
           ("total", "total wall", "s", 1), ("rss_mb", "peak RSS", "MB", 1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=80)
    parser.add_argument("--quick", action="store_true",
                        help="3 rounds of 30 steps: to try the script, not for figures")
    parser.add_argument("--only", choices=sorted(SIDES))
    parser.add_argument("--child", nargs=2, metavar=("SIDE", "FOLDER"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        side, folder = args.child[0], Path(args.child[1])
        spec = json.loads((folder / "spec.json").read_text(encoding="utf-8"))
        result = CHILDREN[side](spec)
        (folder / "result.json").write_text(json.dumps(result), encoding="utf-8")
        return 0
    rounds, steps = (3, 30) if args.quick else (args.rounds, args.steps)
    kinds = [args.only] if args.only else list(SIDES)
    if "text" in kinds and importlib.util.find_spec("trl") is None:
        raise SystemExit("TRL is not installed: pip install -e \".[bench]\" (or --only image).")
    import torch
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {platform.node()}, "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"python {platform.python_version()}, torch {torch.__version__}; one thread per process, "
          f"{rounds} rounds of {steps} steps", flush=True)
    results: dict[str, dict[str, list[dict]]] = {k: {s: [] for s in SIDES[k]} for k in kinds}
    with tempfile.TemporaryDirectory(prefix="vs peers ") as tmp:
        m = make_material(Path(tmp))
        targets = text_targets(m["text_model"])
        for i in range(rounds):
            for kind in kinds:
                sides = list(SIDES[kind])
                order = sides[i % len(sides):] + sides[:i % len(sides)]  # rotate who goes first
                for side in order:
                    r = run_side(kind, side, m, steps, Path(tmp) / f"r{i}-{kind}-{side}", targets)
                    results[kind][side].append(r)
                    print(f"round {i + 1} {kind} {side}: step {r['step_cpu'] * 1000:.1f} ms CPU "
                          f"({r['step'] * 1000:.1f} wall), first step {r['first']:.2f} s "
                          f"({r['first_cpu']:.2f} s CPU), total {r['total']:.2f} s, "
                          f"RSS {r['rss_mb']:.0f} MB", flush=True)
                if i == 0:
                    check_work(kind, {s: results[kind][s][0] for s in sides})
    ratios: dict[tuple[str, str, str], float] = {}
    for kind in kinds:
        for peer in SIDES[kind][1:]:
            print(f"\n{kind}: lora-studio / {PEER_NAMES[peer]}", flush=True)
            for key, label, unit, scale in FIGURES:
                s = summarize(f"  {label}", [r[key] * scale for r in results[kind]["lora-studio"]],
                              [r[key] * scale for r in results[kind][peer]],
                              baseline=PEER_NAMES[peer], unit=unit, per_round=False)
                ratios[(kind, peer, key)] = s.ratio
    print()
    if "text" in kinds:
        fastest = min(("trainer", "sft"), key=lambda p: sum(r["first"] for r in results["text"][p]))
        verdict(f"text start -> first step / fastest peer ({PEER_NAMES[fastest]})",
                ratios[("text", fastest, "first")], 1.0)
        verdict("text steady step (CPU) / Trainer", ratios[("text", "trainer", "step_cpu")], 0.9)
        for peer in ("trainer", "sft"):
            verdict(f"text peak RSS / {PEER_NAMES[peer]}", ratios[("text", peer, "rss_mb")], 1.0)
    if "image" in kinds:
        verdict("image start -> first step / diffusers loop",
                ratios[("image", "diffusers-loop", "first")], 1.0)
        verdict("image uncached step (CPU) / diffusers loop",
                ratios[("image", "diffusers-loop", "step_cpu")], 0.95)
        verdict("image peak RSS / diffusers loop", ratios[("image", "diffusers-loop", "rss_mb")], 1.0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
