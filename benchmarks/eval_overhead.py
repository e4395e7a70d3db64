"""Share of a text training run's wall time spent in held-out evaluation (the eval
loss and the generation metrics: greedy answers to up to output.eval_generate_records
held-out prompts scored with BLEU, ROUGE-L and exact match), at the default evaluation
settings on the tiny model. Target: <= 15 % more wall time than the same run without it.

    python benchmarks/eval_overhead.py [--rounds 5] [--steps 120] [--every 0]

The run is the demo-text-tiny preset's (120 steps, batch 4, max_seq_length 128) without
its samples and checkpoints. "With": a quarter of the records held out
(dataset.eval_split = 0.25, so the default 8 records are generated for), everything else
default: one evaluation after the last step (--every N evaluates every N steps as
well). "Without": the same job with nothing held out. The two alternate in one process
for several rounds (which goes first alternates too); each gives the run's time from
the engine's start to its end, in this process's CPU time (one torch thread by
default): the machine is shared, and its load moves wall time by several times from
one run to the next. The headline is the median of the
per-round ratios with / without, with their min-max as the spread (benchmarks/_stats.py);
the time inside the evaluations themselves (from the step before each 'eval' event to
the event) is printed as a share of the run beside it.
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

TARGET = 1.15
CLOCK = time.process_time


def make_job(steps: int, eval_split: float, every: int):
    from lora_studio.config.parse import parse_job
    job, findings = parse_job({
        "model": {"path": str(ROOT / "resources" / "tiny-text-model"), "family": "text"},
        "dataset": {"path": str(ROOT / "resources" / "demo-text" / "chat.jsonl"),
                    "format": "messages", "max_seq_length": 128, "eval_split": eval_split},
        "network": {"alpha": 32.0},
        "optimizer": {"learning_rate": 1e-3},
        "training": {"max_steps": steps, "batch_size": 4},
        "output": {"output_name": "bench", "eval_every_n_steps": every}})
    assert not [f for f in findings if f.level == "error"], findings
    return job


def timed_run(job, folder: Path) -> tuple[float, float, int]:
    """(CPU seconds of the run, of them inside evaluations, whether answers were scored)."""
    from lora_studio.engine.run import run
    from lora_studio.runs.layout import new_run_dir
    marks = {"eval": 0.0, "last": 0.0, "generated": 0}

    def emit(ev: dict) -> None:
        now = CLOCK()
        if ev["type"] == "progress":
            marks["last"] = now
        elif ev["type"] == "eval":
            marks["eval"] += now - marks["last"]
            marks["generated"] = int("rougeL" in ev)
        elif ev["type"] == "error":
            raise SystemExit(f"engine failed: {ev['message']}")
    start = CLOCK()
    run(job, new_run_dir(folder, "bench").root, emit)
    return CLOCK() - start, marks["eval"], marks["generated"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=120)
    parser.add_argument("--every", type=int, default=0, help="output.eval_every_n_steps")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    args = parser.parse_args()
    import torch
    torch.set_num_threads(args.threads)
    with_eval = make_job(args.steps, 0.25, args.every)
    without = make_job(args.steps, 0.0, args.every)
    walls, bases, inside = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        timed_run(without, Path(tmp))   # warm-up: imports, the token cache
        timed_run(with_eval, Path(tmp))
        for r in range(args.rounds):
            order = [(with_eval, walls), (without, bases)]
            for job, into in order if r % 2 == 0 else order[::-1]:
                wall, evaluating, generated = timed_run(job, Path(tmp))
                into.append(wall)
                if job is with_eval:
                    if not generated:
                        raise SystemExit("no generation metrics: pip install -e \".[metrics]\"")
                    inside.append(evaluating / wall)
    s = summarize("run time (CPU) with held-out evaluation", walls, bases,
                  baseline="without", unit="s")
    print(f"time inside the evaluations: {statistics.median(inside):.1%} of the run with them "
          f"(CPU time; median; min-max {min(inside):.1%}-{max(inside):.1%})")
    return 0 if verdict("with / without", s.ratio, TARGET) else 1


if __name__ == "__main__":
    raise SystemExit(main())
