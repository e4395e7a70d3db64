"""Image validation loss (issue 17, point 8): held-out images scored at fixed timesteps
and noise every N steps, the same value for the same weights, never trained on, the
cached latents reused, and early stopping on it exporting the best checkpoint."""
import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from lora_studio.engine.core.checkpoint import BEST, read_best
from lora_studio.engine.image.data import TrainImage
from lora_studio.engine.image.validation import EVAL_TIMESTEPS, eval_batches, eval_timesteps
from test_sd_engine import DEMO_IMAGES, TINY_SD, make_job, run_dir, train_sd


def _of(events, kind):
    return [e for e in events if e["type"] == kind]


def _eval_loss(trainee) -> float:
    """What the trainer's evaluation measures, from the trainee's current weights."""
    batches = trainee.eval_batches()
    trainee.set_train(False)
    with torch.no_grad():
        total = sum(float(trainee.eval_loss_sum(trainee.model, b)) for b in batches)
    return total / sum(trainee.eval_items(b) for b in batches)


@pytest.fixture(scope="module")
def held_out(tmp_path_factory):
    """Six demo images, two held out, evaluated every 2 of 4 steps (latents cached)."""
    tmp = tmp_path_factory.mktemp("sd eval")
    job = make_job(TINY_SD, dataset={"eval_split": 0.34}, output={"eval_every_n_steps": 2})
    events = []
    result = train_sd(job, run_dir(tmp), events.append, lambda: False)
    return job, result, events


def test_held_out_images_are_evaluated_every_n_steps_and_never_trained_on(held_out):
    job, result, events = held_out
    trainee = result.trainee
    assert len(trainee.eval_images) == 2 and len(trainee.image_set.images) == 4
    held = {im.path for im in trainee.eval_images}
    assert not held & {im.path for im in trainee.image_set.images}
    trained = {trainee.image_set.images[i].path for epoch in range(3)
               for batch in trainee.epoch_batches(epoch) for i in batch.indices}
    assert trained and not trained & held
    assert [e["step"] for e in _of(events, "eval")] == [2, 4]
    assert any(e.get("eval_images") == 2 for e in _of(events, "log"))
    assert _of(events, "started")[0]["eval_images"] == 2
    finished = _of(events, "finished")[-1]
    assert finished["best_metric"] == "eval_loss" and "best_eval_loss" in finished


def test_the_same_weights_give_the_same_eval_loss(held_out):
    job, result, events = held_out
    trainee = result.trainee
    first, second = _eval_loss(trainee), _eval_loss(trainee)
    assert first == second
    # the trainee holds the best evaluated weights (what final/ exports): its evaluation
    best_step = _of(events, "finished")[-1]["best_step"]
    best = next(e for e in _of(events, "eval") if e["step"] == best_step)
    assert first == pytest.approx(best["loss"], abs=2e-6)
    # the training loss of the same weights is another draw each time; the eval is not
    assert len({e["loss"] for e in _of(events, "eval")}) == 2


def test_evaluation_reuses_the_cached_latents(held_out, monkeypatch):
    job, result, events = held_out
    trainee = result.trainee
    assert trainee.latent_cache is not None
    expected = _eval_loss(trainee)

    def no_vae(*args, **kwargs):
        raise AssertionError("the VAE encoded an image the cache holds")
    monkeypatch.setattr(trainee.base.pipe.vae, "encode", no_vae)
    assert _eval_loss(trainee) == expected


def test_eval_items_are_fixed_timesteps_and_seeds_per_bucket():
    assert eval_timesteps(1000) == [125, 375, 625, 875]
    images = tuple(TrainImage(DEMO_IMAGES / f"{i}.png", "x", 1, "", (64, 64), bucket)
                   for i, bucket in enumerate([(64, 64), (64, 128), (64, 64)]))
    batches = eval_batches(images, 1000, 3)
    items = [item for batch in batches for item in batch]
    assert len(items) == 3 * EVAL_TIMESTEPS
    assert len({(i.image, i.timestep) for i in items}) == len(items)
    assert len({i.noise_seed for i in items}) == len(items)
    for batch in batches:
        assert len({images[i.image].bucket for i in batch}) == 1
    assert eval_batches(images, 1000, 3) == batches  # nothing drawn at random


def test_a_folder_of_eval_images_and_early_stopping_on_its_loss(tmp_path, monkeypatch):
    from lora_studio.engine.core import loop

    held = tmp_path / "held out ü"
    held.mkdir()
    for name in ("purple_star", "red_circle"):
        for ext in (".png", ".txt"):
            shutil.copy(DEMO_IMAGES / "4_demo" / f"{name}{ext}", held / f"{name}{ext}")
    measured = []
    losses = iter([2.0, 1.0, 1.5, 1.7, 9.9])
    # The measured losses are replaced by a script: the best is step 2, patience runs out at 4.
    real_record = loop.Evaluations.record

    def scripted(self, step, loss, metrics=None):
        measured.append(loss)
        return real_record(self, step, next(losses), metrics)
    monkeypatch.setattr(loop.Evaluations, "record", scripted)
    job = make_job(TINY_SD, dataset={"eval_path": str(held), "cache_latents": False},
                   output={"eval_every_n_steps": 1},
                   training={"max_steps": 6, "early_stopping_patience": 2})
    run = run_dir(tmp_path)
    events = []
    result = train_sd(job, run, events.append, lambda: False)
    assert len(result.trainee.eval_images) == 2 and len(result.trainee.image_set.images) == 6
    assert len(measured) == 4 and all(0 < m < 10 for m in measured)
    finished = _of(events, "finished")[-1]
    assert (finished["step"], finished["best_step"], finished["early_stopped"]) == (4, 2, True)
    assert [e["step"] for e in _of(events, "eval")] == [1, 2, 3, 4]
    assert read_best(run.checkpoints) == (2, 1.0)
    assert json.loads((run.checkpoints / BEST).read_text())["step"] == 2
    best = load_file(run.checkpoints / "step-000002" / "trainable.safetensors")
    last = load_file(run.checkpoints / "step-000004" / "trainable.safetensors")
    final = load_file(run.final / "adapter.safetensors")
    key = next(iter(best))
    assert torch.equal(final[key], best[key]) and not torch.equal(final[key], last[key])
