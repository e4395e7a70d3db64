"""How long the "Will it fit?" box takes on the GUI thread.

After each (debounced) edit the box runs one estimate with the model's spec cached;
that must stay well under a frame budget of 30 ms to run on the GUI thread. Auto-fit
(many estimates) runs in a worker and is printed for information. Models: the demo
presets (spec read from disk, as the app does) and SD 1.5 / SDXL / a 7B Llama from
their public configs.

    python benchmarks/fit_estimate.py [--repeats 20]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lora_studio.config.gpu import GIB, GpuFacts  # noqa: E402
from lora_studio.config.presets import read_preset  # noqa: E402
from lora_studio.config.schema import JobConfig  # noqa: E402
from lora_studio.config.validate import check  # noqa: E402
from lora_studio.hardware import archs  # noqa: E402
from lora_studio.hardware.autofit import DoesNotFit, autofit  # noqa: E402
from lora_studio.hardware.estimate import estimate, spec_from_config  # noqa: E402
from lora_studio.ui.fit_state import Budget, FitState  # noqa: E402

BUDGET_MS = 30.0
CARD = Budget(8 * GIB, "", False)


def median_ms(call, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def autofit_ms(job, spec) -> float:
    start = time.perf_counter()
    try:
        autofit(job, CARD.bytes, spec=spec)
    except DoesNotFit:
        pass
    return (time.perf_counter() - start) * 1000


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    print(f"{'model':<28}{'edit (ms)':>10}{'/ budget':>10}{'auto-fit (ms)':>15}")
    worst = 0.0
    for name in ("demo-text-tiny", "demo-image-tiny"):
        preset = read_preset(ROOT / "presets" / f"{name}.toml")
        job, _ = check(preset.data, base_dir=preset.base_dir)
        state = FitState()
        edit = median_ms(lambda: state.report(job, preset.base_dir, CARD), args.repeats)
        worst = max(worst, edit)
        print(f"{name:<28}{edit:>10.2f}{edit / BUDGET_MS:>10.3f}"
              f"{autofit_ms(job, state.spec(job, preset.base_dir)):>15.0f}")
    card = GpuFacts(total_vram_bytes=CARD.bytes, cuda_available=True)
    for name, family, config, data in (
            ("SD 1.5, 512 px, batch 2", "sd1", {}, {"dataset": {"resolution": 512}}),
            ("SDXL, 1024 px, batch 2", "sdxl", {}, {"dataset": {"resolution": 1024}}),
            ("Llama 7B, 2048 tokens", "text", archs.LLAMA_7B, {"dataset": {"max_seq_length": 2048}})):
        job = JobConfig.model_validate({"model": {"family": family},
                                        "training": {"batch_size": 2}, **data})
        spec = spec_from_config(family, config)
        edit = median_ms(lambda: estimate(job, card, spec), args.repeats)
        worst = max(worst, edit)
        print(f"{name:<28}{edit:>10.2f}{edit / BUDGET_MS:>10.3f}{autofit_ms(job, spec):>15.0f}")
    print(f"worst edit / budget: {worst / BUDGET_MS:.3f} (target < 1: the estimate runs on the GUI thread)")
    return 0 if worst < BUDGET_MS else 1


if __name__ == "__main__":
    sys.exit(main())
