"""Auto-captioning, measured: images per second through the captioning process
(``python -m lora_studio.captioning``: process start, model load, reading each image and
its caption, the tagger, merging and writing each caption atomically, an event per
image) against the same tagger on the same images in a plain loop in this process
(model load, decode, pad and resize, run, pick tags; nothing written). Target: the
process keeps >= 0.9 of the loop's images per second.

    python benchmarks/caption_batch.py [--images 300] [--rounds 5] [--conv 16]

The tagger is the tests' tiny WD14-layout ONNX model (tests/tiny_captioners.py: 448
square NHWC BGR input, a strided conv layer of ``--conv`` channels, sigmoid per tag)
and the images are 640 x 480 JPEGs of noise, so that decoding costs what a photo's does.
Each round runs both, the first of the pair alternating; the process's rate from its
``started`` event (model loaded) to ``finished`` is printed as well.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lora_studio.captioning.tagger import Tagger  # noqa: E402
from lora_studio.data.images import load_rgb  # noqa: E402
from lora_studio.runs.caption_protocol import (caption_command, caption_env, decode_event,  # noqa: E402
                                               request_for)
from tests.tiny_captioners import tiny_tagger  # noqa: E402

from benchmarks._stats import figure, summarize, verdict  # noqa: E402

TARGET = 0.9


def make_images(folder: Path, n: int) -> list[Path]:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    paths = []
    for i in range(n):
        pixels = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)
        path = folder / f"img {i:04d}.jpg"
        Image.fromarray(pixels).save(path, quality=90)
        paths.append(path)
    return paths


def through_process(model: Path, images: list[Path]) -> tuple[float, float]:
    """(images/s from launch to the end, images/s from the model loaded to the end)."""
    captions = [p.with_suffix(".txt") for p in images]
    for c in captions:
        c.unlink(missing_ok=True)
    request = request_for("tagger", str(model), images, captions, mode="overwrite",
                          trigger="ohwx", device="cpu")
    start = time.perf_counter()
    proc = subprocess.Popen(caption_command(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            encoding="utf-8", env=caption_env(str(ROOT)))
    proc.stdin.write(request.to_json() + "\n")
    proc.stdin.flush()
    loaded = None
    last = None
    for line in proc.stdout:
        ev = decode_event(line)
        if ev is None:
            continue
        if ev["type"] == "started":
            loaded = time.perf_counter()
        if ev["type"] in ("finished", "error"):
            last = ev
            break
    end = time.perf_counter()
    proc.stdin.close()
    proc.wait()
    if last is None or last["type"] == "error" or last["written"] != len(images):
        raise SystemExit(f"the captioning process did not caption every image: {last}")
    return len(images) / (end - start), len(images) / (end - loaded)


def plain_loop(model: Path, images: list[Path]) -> float:
    start = time.perf_counter()
    tagger = Tagger(model, providers=["CPUExecutionProvider"])
    captions = [tagger.predict(tagger.prepare(load_rgb(p))) for p in images]
    end = time.perf_counter()
    assert len(captions) == len(images)
    return len(images) / (end - start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--conv", type=int, default=16, help="channels of the tagger's conv layer")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="caption-bench-") as tmp:
        tmp = Path(tmp)
        model = tiny_tagger(tmp / "tagger", conv_channels=args.conv)
        images = make_images(tmp / "images ü", args.images)
        plain_loop(model, images[:10])  # warm the page cache and onnxruntime's first load
        values, steady, baselines = [], [], []
        for r in range(args.rounds):
            if r % 2 == 0:
                whole, after_load = through_process(model, images)
                baselines.append(plain_loop(model, images))
            else:
                baselines.append(plain_loop(model, images))
                whole, after_load = through_process(model, images)
            values.append(whole)
            steady.append(after_load)
            print(f"round {r + 1}: process {figure(whole)} images/s ({figure(after_load)} after "
                  f"the model loaded), loop {figure(baselines[-1])} images/s", flush=True)
    summary = summarize(f"captioning process, {args.images} images", values, baselines,
                        baseline="plain loop", unit="images/s")
    summarize("  the same from the model loaded to the end", steady, baselines,
              baseline="plain loop", unit="images/s", per_round=False)
    ok = verdict("process / plain loop images per second", summary.ratio, TARGET, at_least=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
