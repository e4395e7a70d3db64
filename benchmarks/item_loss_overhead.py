"""What recording each item's loss (engine/core/item_losses.py) costs a training step:
the text engine on the tiny model from resources/ with the recording on against the same
run with it off, interleaved round by round (which goes first alternates). Target: ratio
<= 1.02.

    python benchmarks/item_loss_overhead.py [--steps 60] [--rounds 5] [--threads 1]
    python benchmarks/item_loss_overhead.py --packing      # packed rows: several records a row

With the recording on, a micro-batch's loss is taken per token (reduction "none") and
added up per record on the device (two index_add_), and the item indices go to the
device without waiting; nothing comes back to the host until a checkpoint. Off, the
loss is one summed cross-entropy as before. Each round gives the median step time
(CPU time on a CPU, wall time on a GPU) of either; the headline is the median of the
per-round ratios with their min-max.
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
CLOCK = time.perf_counter


def make_job(steps: int, packing: bool):
    from lora_studio.config.parse import parse_job
    job, _ = parse_job({
        "model": {"path": str(ROOT / "resources" / "tiny-text-model"), "family": "text"},
        "dataset": {"path": str(ROOT / "resources" / "demo-text" / "chat.jsonl"),
                    "max_seq_length": 64, "packing": packing},
        "network": {"rank": 16, "alpha": 16.0},
        "optimizer": {"learning_rate": 1e-3, "lr_scheduler": "linear"},
        "training": {"max_steps": steps, "batch_size": 4},
        "output": {"output_name": "bench"}})
    return job


def step_times(job, folder: Path, record: bool) -> list[float]:
    from lora_studio.engine import text
    from lora_studio.engine.core import trainer
    from lora_studio.engine.core.control import StopRequest
    from lora_studio.runs.layout import new_run_dir

    def prepare(job, ctx):
        trainee = text.prepare(job, ctx)
        if not record:
            trainee.item_losses = None
        return trainee
    marks: list[float] = []

    def emit(ev: dict) -> None:
        if ev["type"] == "progress":
            marks.append(CLOCK())
        elif ev["type"] == "error":
            raise SystemExit(f"engine failed: {ev['message']}")
    result = trainer.train(job, new_run_dir(folder, "on" if record else "off"), emit,
                           StopRequest(), prepare)
    assert (result.trainee.item_losses is not None) == record
    return [b - a for a, b in zip(marks[WARMUP - 1:], marks[WARMUP:])]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--packing", action="store_true")
    args = parser.parse_args()
    import torch
    global CLOCK
    if args.threads:
        torch.set_num_threads(args.threads)
    if not torch.cuda.is_available():
        CLOCK = time.process_time
    print(f"device: {'cuda' if torch.cuda.is_available() else 'cpu'}, clock: {CLOCK.__name__}, "
          f"torch threads: {torch.get_num_threads()}, packing: {args.packing}")
    job = make_job(args.steps, args.packing)
    on, off = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.rounds):
            for record in (True, False) if i % 2 == 0 else (False, True):
                times = step_times(job, Path(tmp), record)
                (on if record else off).append(statistics.median(times))
            print(f"round {i + 1}: off {off[-1] * 1000:.2f} ms/step, on {on[-1] * 1000:.2f} "
                  "ms/step", flush=True)
    s = summarize(f"step with item losses ({args.steps} steps a round)",
                  [t * 1000 for t in on], [t * 1000 for t in off],
                  baseline="without", unit="ms/step")
    verdict("ratio with / without item losses (median of rounds)", s.ratio, 1.02)


if __name__ == "__main__":
    main()
