"""The training view's logic without a window: phase lines, the sample grid's
arrangement, the debiased EMA and the hover readout."""
import math
from pathlib import Path

import numpy as np
import pytest

from lora_studio.runs.events import event
from lora_studio.runs.run_progress import ENGINE_START, Phase, PhaseTracker, phase_text
from lora_studio.runs.sample_grid import SampleGrid, sample_kind
from lora_studio.ui.series import TrainingSeries, debiased_ema


def test_debiased_ema_equals_a_hand_computation():
    # w = 0.5: ema 0.5 / weight 0.5 -> 1; ema 1.75 / weight 0.75; a NaN keeps the last
    # value and is skipped; ema 1.875 / weight 0.875.
    smoothed = debiased_ema(np.array([1.0, 3.0, np.nan, 2.0]), 0.5)
    assert smoothed == pytest.approx([1.0, 1.75 / 0.75, 1.75 / 0.75, 1.875 / 0.875])
    assert math.isnan(debiased_ema(np.array([np.nan, 1.0]), 0.5)[0])
    assert list(debiased_ema(np.array([4.0, 2.0]), 0.0)) == [4.0, 2.0]  # 0: the raw loss


def test_a_new_smoothing_weight_redraws_the_curve_and_appends_continue_it():
    losses = [2.0 / step + 0.3 * (step % 3) for step in range(1, 41)]
    series = TrainingSeries(capacity=4)
    for step, loss in enumerate(losses[:30], start=1):
        series.append(step, loss, 1e-4)
    assert series.smoothing == 0.6  # TensorBoard's default
    assert series.view("smooth") == pytest.approx(debiased_ema(np.array(losses[:30]), 0.6))
    series.set_smoothing(0.9)
    for step, loss in enumerate(losses[30:], start=31):
        series.append(step, loss, 1e-4)
    assert series.view("smooth") == pytest.approx(debiased_ema(np.array(losses), 0.9))
    series.set_smoothing(5)  # clamped to the slider's end
    assert series.smoothing == 0.999


def test_readout_names_the_closest_step():
    series = TrainingSeries()
    for step in (10, 20, 30):
        series.append(step, step / 10, 1e-4)
    series.append(40, float("nan"), None)
    assert series.readout(22) == "step 20  ·  loss 2.0000  ·  smoothed 1.6250  ·  lr 0.0001"
    assert series.readout(26).startswith("step 30") and series.readout(-5).startswith("step 10")
    assert series.readout(1e9) == "step 40  ·  smoothed 2.3265"  # 1.824 / 0.784; no loss, no lr
    assert TrainingSeries().readout(3) == "" and series.nearest(math.nan) is None


def test_phases_give_their_count_and_time_left_until_the_first_step():
    tracker = PhaseTracker()
    tracker.begin(ENGINE_START, now=100.0)
    assert phase_text(tracker.current, now=107.2) == "Starting engine…  ·  0:07"
    assert tracker.feed({**event("phase", phase="loading the model"), "time": 110.0}, 110.0)
    assert phase_text(tracker.current, now=175.0) == "Loading the model…  ·  1:05"
    assert tracker.feed({**event("phase", phase="caching latents", done=0, total=40),
                         "time": 200.0}, 200.0)
    assert not tracker.feed({**event("phase", phase="caching latents", done=10, total=40),
                             "time": 205.0}, 205.0)  # the same phase: no new log line
    # 10 images in 5 s: 30 left take 15 s.
    assert phase_text(tracker.current, now=205.0) == "Caching latents 10 / 40  ·  ETA 0:15"
    assert not tracker.feed(event("log", message="hello"), 206.0) and tracker.current is not None
    tracker.feed(event("progress", step=1, total=10), 210.0)
    assert tracker.current is None  # the step progress takes over
    assert phase_text(Phase("tokenising", 0.0, done=0, total=7), 1.0) == "Tokenising 0 / 7  ·  ETA –"


def test_sample_grid_rows_are_prompts_and_columns_ascending_steps():
    grid = SampleGrid()
    for step in (20, 10):
        for prompt in ("a cat", "a dog"):
            grid.add(prompt, step, Path(f"{prompt}-{step}.png"))
    grid.add("a cat", 20, Path("again.png"))  # sampled again after a resume
    assert grid.prompts == ["a cat", "a dog"] and grid.steps == [10, 20] and len(grid) == 4
    assert grid.cell("a cat", 20) == Path("again.png") and grid.cell("a bird", 10) is None


@pytest.mark.parametrize("ev, kind", [
    ({"kind": "image", "path": "x.txt"}, "image"),
    ({"samples": [{"prompt": "hi", "text": "yo"}]}, "text"),
    ({"path": "samples/step-000010-00.PNG"}, "image"),
    ({"path": "samples/step-000010.txt"}, "text"),
    ({}, None),
])
def test_sample_kind(ev, kind):
    assert sample_kind({"type": "sample", **ev}) == kind
