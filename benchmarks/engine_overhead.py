"""The text engine's cost per optimizer step against a minimal hand-written PEFT
loop on the same batches (tiny model from resources/, CPU or GPU). Target: ratio <= 1.05.

    python benchmarks/engine_overhead.py [--steps 80] [--rounds 5] [--threads 1]

Both do the same work per step: collate the batch, forward, backward, gradient
clipping, AdamW step, LR schedule step. The engine adds accelerate's wrappers, the loss read-back and
finite check, a progress event written to events.jsonl, and the stop checks
(callback and STOP file). The two alternate for several rounds in one process (the
machine's load changes; which goes first alternates too), each round giving the median
step time (CPU time on a CPU) of either; the headline ratio is the median of the
per-round ratios engine / hand-written, with their min-max as the spread. The first
steps of every run are warm-up and not counted.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._stats import summarize, verdict  # noqa: E402

WARMUP = 5
# On a CPU, this process's CPU time: other programs on a shared machine then barely
# move the figures. On a GPU the work is asynchronous, so wall time.
CLOCK = time.perf_counter


def make_job(steps: int):
    from lora_studio.config.parse import parse_job
    job, _ = parse_job({
        "model": {"path": str(ROOT / "resources" / "tiny-text-model"), "family": "text"},
        "dataset": {"path": str(ROOT / "resources" / "demo-text" / "chat.jsonl"),
                    "max_seq_length": 64},
        "network": {"rank": 16, "alpha": 16.0},
        "optimizer": {"learning_rate": 1e-3, "lr_scheduler": "linear"},
        "training": {"max_steps": steps, "batch_size": 4},
        "output": {"output_name": "bench"}})
    return job


def engine_step_times(job, folder: Path) -> list[float]:
    from lora_studio.engine.run import run
    from lora_studio.runs.events import EventWriter
    from lora_studio.runs.layout import new_run_dir
    marks: list[float] = []
    run_dir = new_run_dir(folder, "engine")
    with EventWriter(run_dir.events) as writer:
        def emit(ev: dict) -> None:
            writer(ev)
            if ev["type"] == "progress":
                marks.append(CLOCK())
            elif ev["type"] == "error":
                raise SystemExit(f"engine failed: {ev['message']}")
        run(job, run_dir.root, emit, lambda: False)
    return step_times(marks)


def step_times(marks: list[float]) -> list[float]:
    """Seconds of each step after the warm-up."""
    return [b - a for a, b in zip(marks[WARMUP - 1:], marks[WARMUP:])]


def manual_step_times(job) -> list[float]:
    import torch
    from accelerate.utils import set_seed
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, get_scheduler

    from lora_studio.engine.core import order
    from lora_studio.engine.text import data, model as text_model, tokens
    set_seed(job.training.seed)
    info = text_model.resolve_model(job)
    tokenizer = text_model.load_tokenizer(info.path)
    data = data.load_dataset(job, tokenizer, lambda ev: None)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(str(info.path)),
                           LoraConfig(r=16, lora_alpha=16, target_modules=text_model.target_modules(job, info),
                                      task_type="CAUSAL_LM"))
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-3, weight_decay=job.optimizer.weight_decay)
    scheduler = get_scheduler("linear", optimizer, num_warmup_steps=0,
                              num_training_steps=job.training.max_steps)
    steps, epoch = [], 0
    while len(steps) < job.training.max_steps:
        steps += order.chunks(order.epoch_order(len(data), epoch, job.training.seed),
                             job.training.batch_size)
        epoch += 1
    model.train()
    marks = []
    for indices in steps[: job.training.max_steps]:
        batch = tokens.collate([data[i] for i in indices], tokenizer.pad_token_id)
        loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, job.optimizer.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        marks.append(CLOCK())
    return step_times(marks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=80)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0,
                        help="torch CPU threads (0: torch's default); 1 is steadier on a busy machine")
    args = parser.parse_args()
    import torch
    global CLOCK
    if args.threads:
        torch.set_num_threads(args.threads)
    if not torch.cuda.is_available():
        CLOCK = time.process_time
    print(f"device: {'cuda' if torch.cuda.is_available() else 'cpu'}, clock: {CLOCK.__name__}, "
          f"torch threads: {torch.get_num_threads()}")
    job = make_job(args.steps)
    engine, manual = [], []  # every step of every round, for the mean
    engine_rounds, manual_rounds = [], []  # each round's median step
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.rounds):
            # Alternating which loop goes first keeps a slow start of a round from
            # always landing on the same one.
            for which in ("manual", "engine") if i % 2 == 0 else ("engine", "manual"):
                if which == "manual":
                    times = manual_step_times(job)
                    manual += times
                    manual_rounds.append(statistics.median(times))
                else:
                    times = engine_step_times(job, Path(tmp))
                    engine += times
                    engine_rounds.append(statistics.median(times))
            print(f"round {i + 1}: hand-written {manual_rounds[-1] * 1000:.2f} ms/step, "
                  f"engine {engine_rounds[-1] * 1000:.2f} ms/step", flush=True)
    # The median step of each round is the headline (other programs' bursts land on a few
    # steps only); the mean, printed for information, also counts work done once in a
    # while (a new epoch, a checkpoint).
    s = summarize(f"engine step ({args.steps} steps a round)", [t * 1000 for t in engine_rounds],
                  [t * 1000 for t in manual_rounds], baseline="hand-written loop", unit="ms/step")
    e, m = statistics.fmean(engine), statistics.fmean(manual)
    print(f"mean over all rounds, for information: hand-written {m * 1000:.2f} ms/step, "
          f"engine {e * 1000:.2f} ms/step, ratio {e / m:.3f}")
    verdict("ratio engine / hand-written (median of rounds)", s.ratio, 1.05)


if __name__ == "__main__":
    main()
