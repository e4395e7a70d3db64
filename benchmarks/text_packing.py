"""Packing, measured: trained tokens per second on the tiny text model with
dataset.packing on and off, same records, same run, and the padding share of each.

    python benchmarks/text_packing.py [--rounds 5] [--records 200] [--threads 1]

The records' lengths spread like chat data (log-normal: most short, a few long), with
max_seq_length 512 and batch 8. Each round trains two epochs with each setting (the
first of the pair alternating) and times the second epoch: the same tokens are trained
either way, so the ratio of the epoch times is the ratio of tokens per second.
Target: packed >= 1.5x padded.
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lora_studio.config.parse import parse_job  # noqa: E402
from lora_studio.engine import text  # noqa: E402
from lora_studio.engine.core.trainer import train  # noqa: E402
from lora_studio.runs.layout import RunDir  # noqa: E402

from benchmarks._stats import summarize, verdict  # noqa: E402

WORDS = "the a ship sails over blue water while the crew sings of gold and wind".split()


def write_records(path: Path, n: int, seed: int = 0) -> None:
    rng = random.Random(seed)

    def words(mean: float) -> str:
        return " ".join(rng.choice(WORDS) for _ in range(max(1, int(rng.lognormvariate(mean, 0.9)))))
    with path.open("w", encoding="utf-8") as fh:
        for _ in range(n):
            fh.write(json.dumps({"prompt": words(2.0), "response": words(3.0)}) + "\n")


def second_epoch(data: Path, packing: bool, workdir: Path) -> tuple[float, dict]:
    job, findings = parse_job({
        "model": {"path": str(ROOT / "resources" / "tiny-text-model"), "family": "text"},
        "dataset": {"path": str(data), "max_seq_length": 512, "packing": packing},
        "network": {"rank": 8, "alpha": 8.0},
        "training": {"epochs": 2, "batch_size": 8},
        "output": {"output_name": "bench"},
    })
    assert not [f for f in findings if f.level == "error"], findings
    end_of: dict[int, float] = {}
    padding: dict = {}

    def emit(ev: dict) -> None:
        if ev["type"] == "progress":
            end_of[ev["epoch"]] = time.perf_counter()
        elif ev["type"] == "log" and "padding_share" in ev:
            padding.update(ev)

    train(job, RunDir(workdir).ensure(), emit, lambda: False, text.prepare)
    return end_of[2] - end_of[1], padding


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--records", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    import torch
    torch.set_num_threads(args.threads)
    seconds: dict[bool, list[float]] = {False: [], True: []}
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "chat.jsonl"
        write_records(data, args.records)
        padding: dict = {}
        for i in range(args.rounds):
            for packing in (False, True) if i % 2 == 0 else (True, False):
                took, padding = second_epoch(data, packing, Path(tmp) / f"r{i}-{packing}")
                seconds[packing].append(took)
    print(f"padding share: {padding['padding_share']:.1%} padded, "
          f"{padding['packed_padding_share']:.1%} packed")
    # Same tokens each epoch: padded time / packed time is packed tokens/s / padded tokens/s.
    s = summarize("second epoch, padded", seconds[False], seconds[True],
                  baseline="packed", unit="s")
    verdict("packed tokens/s over padded", s.ratio, 1.5, at_least=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
