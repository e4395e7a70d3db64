"""Latent caching, measured: the time of the second epoch on the tiny Stable
Diffusion pipeline of resources/, with dataset.cache_latents on and off, in one run.

    python benchmarks/sd_epoch.py [--resolution 64] [--rounds 5]

With caching the second epoch skips image decoding and the VAE; the ratio printed
is (epoch 2 without caching) / (epoch 2 with caching), the median over rounds that
run both settings one after the other (the first of the pair alternating). The tiny
VAE is cheap, so the gain on a real SD VAE at 512 px is far larger than here.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lora_studio.config.parse import parse_job  # noqa: E402
from lora_studio.engine import image  # noqa: E402
from lora_studio.engine.core.trainer import train  # noqa: E402
from lora_studio.runs.layout import RunDir  # noqa: E402

from benchmarks._stats import summarize  # noqa: E402


def second_epoch_seconds(cache_latents: bool, resolution: int, workdir: Path) -> float:
    job, findings = parse_job({
        "model": {"path": str(ROOT / "resources" / "tiny-sd")},
        "dataset": {"path": str(ROOT / "resources" / "demo-images"), "resolution": resolution,
                    "enable_bucket": False, "cache_latents": cache_latents},
        "network": {"rank": 4, "alpha": 4.0},
        "training": {"epochs": 2, "batch_size": 2},
        "output": {"output_name": f"bench-{'cached' if cache_latents else 'uncached'}"},
    })
    assert not [f for f in findings if f.level == "error"], findings
    # The events' own "time" is wall-clock time rounded to the millisecond; the arrival
    # of each progress event on a monotonic clock is finer and cannot jump.
    end_of: dict[int, float] = {}  # arrival of each epoch's last step

    def emit(ev: dict) -> None:
        if ev["type"] == "progress":
            end_of[ev["epoch"]] = time.perf_counter()

    train(job, RunDir(workdir).ensure(), emit, lambda: False, image.prepare)
    return end_of[2] - end_of[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    seconds: dict[bool, list[float]] = {False: [], True: []}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.rounds):
            # Alternating which setting goes first keeps a slow start of a round from
            # always landing on the same one.
            for cached in (False, True) if i % 2 == 0 else (True, False):
                seconds[cached].append(second_epoch_seconds(
                    cached, args.resolution, Path(tmp) / f"round-{i}-{cached}"))
    summarize("second epoch, latents not cached", seconds[False], seconds[True],
              baseline="latents cached", unit="s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
