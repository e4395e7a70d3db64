"""Latent caching, measured: the time of the second epoch on the tiny Stable
Diffusion pipeline of resources/, with dataset.cache_latents on and off, in one run.

    python benchmarks/sd_epoch.py [--resolution 64]

With caching the second epoch skips image decoding and the VAE; the ratio printed
is (epoch 2 without caching) / (epoch 2 with caching). The tiny VAE is cheap, so
the gain on a real SD VAE at 512 px is far larger than here.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lora_studio.config.parse import parse_job  # noqa: E402
from lora_studio.engine import image  # noqa: E402
from lora_studio.engine.core.trainer import train  # noqa: E402
from lora_studio.runs.layout import RunDir  # noqa: E402


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
    events: list[dict] = []
    train(job, RunDir(workdir / job.output.output_name).ensure(), events.append, lambda: False,
          image.prepare)
    progress = [e for e in events if e["type"] == "progress"]
    end_of = {e["epoch"]: e["time"] for e in progress}  # time of each epoch's last step
    return end_of[2] - end_of[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolution", type=int, default=64)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        uncached = second_epoch_seconds(False, args.resolution, Path(tmp))
        cached = second_epoch_seconds(True, args.resolution, Path(tmp))
    print(f"second epoch, latents cached:     {cached:.2f} s")
    print(f"second epoch, latents not cached: {uncached:.2f} s")
    print(f"ratio uncached / cached: {uncached / cached:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
