"""Prodigy, D-Adaptation Adam, schedule-free AdamW and Adafactor's relative step through
the shared core: each trains the tiny text model; schedule-free samples and exports at
its evaluation point and resumes bit for bit; Adafactor's relative step reports its
own rate; a group told to stop training stops, resume included; a missing package is a
clear error."""
import math
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from lora_studio.config.parse import parse_job
from lora_studio.engine import text
from lora_studio.engine.core import trainer
from lora_studio.engine.core.control import EngineError, StopRequest
from lora_studio.engine.core.optim import (TRAIN_UNTIL_STEP, build_optimizer, build_scheduler,
                                           evaluation_weights, train_mode)
from lora_studio.runs.layout import RunDir
from exact import assert_same_checkpoint
from toy_family import ToyTrainee, progress, run_toy, toy_job

ROOT = Path(__file__).resolve().parents[1]

OPTIMIZERS = [
    {"optimizer": "Prodigy", "learning_rate": 1.0},
    {"optimizer": "DAdaptAdam", "learning_rate": 1.0},
    {"optimizer": "AdamWScheduleFree", "learning_rate": 3e-3, "lr_warmup_steps": 2},
    {"optimizer": "Adafactor", "adafactor_relative_step": True},
    {"optimizer": "Adafactor", "adafactor_relative_step": True, "adafactor_warmup_init": True},
]


def text_job(optimizer: dict):
    job, findings = parse_job({
        "model": {"path": str(ROOT / "resources" / "tiny-text-model"), "family": "text"},
        "dataset": {"path": str(ROOT / "resources" / "demo-text" / "chat.jsonl"),
                    "max_seq_length": 64},
        "network": {"rank": 4, "alpha": 8.0},
        "optimizer": {"weight_decay": 0.01, **optimizer},
        "training": {"max_steps": 4, "batch_size": 2},
        "output": {"output_name": "t"}})
    assert not [f for f in findings if f.level == "error"], findings
    return job


@pytest.mark.parametrize("optimizer", OPTIMIZERS, ids=lambda o: "-".join(map(str, o.values())))
def test_each_optimizer_trains_the_tiny_text_model(tmp_path, optimizer):
    events: list[dict] = []
    result = trainer.train(text_job(optimizer), RunDir(tmp_path / "run").ensure(), events.append,
                           StopRequest(), text.prepare)
    steps = progress(events)
    assert len(steps) == 4 and all(math.isfinite(e["loss"]) for e in steps)
    assert all(isinstance(e["lr"], float) and math.isfinite(e["lr"]) for e in steps)
    assert events[-1]["status"] == "completed"
    lora_b = {k: v for k, v in result.trainee.trainable_state().items() if "lora_B" in k}
    assert lora_b and any(v.abs().max() > 0 for v in lora_b.values())  # B starts at zero


# --- schedule-free: evaluation point, resume -------------------------------------------

class SamplingToy(ToyTrainee):
    """Records the weights each sample sees."""
    seen: list = []

    def sample(self, step):
        self.seen.append((step, {k: v.detach().clone() for k, v in
                                 self.model.state_dict().items()}))


def schedule_free_job(**output):
    return toy_job(optimizer={"optimizer": "AdamWScheduleFree", "learning_rate": 0.05,
                              "lr_warmup_steps": 2, "weight_decay": 0.01},
                   training={"max_steps": 7, "batch_size": 3},
                   output={"save_every_n_steps": 3, **output})


def test_schedule_free_samples_and_exports_its_average_and_trains_on_unchanged(tmp_path):
    run_toy(tmp_path, schedule_free_job(), "plain")
    SamplingToy.seen = []
    job = schedule_free_job(sample_every_n_steps=2, sample_prompts=["x"])
    events: list[dict] = []
    sampled = trainer.train(job, RunDir(tmp_path / "sampled").ensure(), events.append,
                            lambda: False, SamplingToy)
    # sampling switches to x and back without moving the training point y by a bit
    assert_same_checkpoint(RunDir(tmp_path / "plain").latest_checkpoint(),
                           RunDir(tmp_path / "sampled").latest_checkpoint())
    steps = [step for step, _ in SamplingToy.seen]
    assert steps == [2, 4, 6, 7]
    final = sampled.trainee.trainable_state()
    # the last sample and the final weights are both the average x, not the training point y
    assert all(torch.equal(SamplingToy.seen[-1][1][k], final[k]) for k in final)
    # the checkpoint of step 6 holds the training point y, the sample of step 6 saw x
    step6 = tmp_path / "sampled" / "checkpoints" / "step-000006"
    assert all(g["train_mode"] for g in
               torch.load(step6 / "optimizer.pt", weights_only=True)["param_groups"])
    assert not torch.equal(load_file(step6 / "trainable.safetensors")["weight"],
                           SamplingToy.seen[2][1]["weight"])
    final_state = torch.load(RunDir(tmp_path / "sampled").latest_checkpoint() / "optimizer.pt",
                             weights_only=True)
    assert not any(g["train_mode"] for g in final_state["param_groups"])


def test_evaluation_weights_are_x_inside_and_exactly_y_after():
    """eval() then train() would round y in some elements (lerp there and back); a
    large tensor makes that certain, so the restore must be a copy."""
    job = toy_job(optimizer={"optimizer": "AdamWScheduleFree", "learning_rate": 0.01})
    weight = torch.nn.Parameter(torch.randn(100_000, generator=torch.Generator().manual_seed(0)))
    optimizer = build_optimizer([{"params": [weight]}], job.optimizer, on_cuda=False)
    train_mode(optimizer)
    for k in range(3):
        weight.grad = torch.randn(100_000, generator=torch.Generator().manual_seed(k + 1))
        optimizer.step()
    y = weight.detach().clone()
    optimizer.eval()
    x = weight.detach().clone()
    optimizer.train()
    assert not torch.equal(weight, y)  # the round trip is not exact
    with torch.no_grad():
        weight.copy_(y)
    with evaluation_weights(optimizer):
        assert torch.equal(weight, x)
    assert torch.equal(weight, y) and optimizer.param_groups[0]["train_mode"]


def test_schedule_free_resume_is_bit_for_bit(tmp_path):
    job = schedule_free_job(sample_every_n_steps=2, sample_prompts=["x"])
    run_toy(tmp_path, job, "straight")
    events: list[dict] = []
    run = RunDir(tmp_path / "stopped").ensure()
    trainer.train(job, run, events.append, lambda: len(progress(events)) >= 4, ToyTrainee)
    assert events[-1]["status"] == "cancelled" and events[-1]["step"] == 4
    run_toy(tmp_path, job, "stopped", resume=run.latest_checkpoint())
    straight = RunDir(tmp_path / "straight").latest_checkpoint()
    assert straight.name == run.latest_checkpoint().name == "step-000007"
    assert_same_checkpoint(straight, run.latest_checkpoint())


def test_schedule_free_keeps_the_rate_and_warms_up_itself():
    job = toy_job(optimizer={"optimizer": "AdamWScheduleFree", "learning_rate": 0.01,
                             "lr_scheduler": "cosine", "lr_warmup_steps": 3})
    optimizer = build_optimizer([{"params": [torch.nn.Parameter(torch.ones(2))]}],
                                job.optimizer, on_cuda=False)
    scheduler = build_scheduler(optimizer, job.optimizer, 10)
    optimizer.train()
    scheduled = []
    for _ in range(5):
        optimizer.param_groups[0]["params"][0].grad = torch.ones(2)
        optimizer.step()
        scheduler.step()
        assert optimizer.param_groups[0]["lr"] == 0.01  # no cosine: the optimizer schedules
        scheduled.append(optimizer.param_groups[0]["scheduled_lr"])
    assert scheduled == pytest.approx([0.01 / 3, 0.02 / 3, 0.01, 0.01, 0.01])


# --- Adafactor's relative step ----------------------------------------------------------

@pytest.mark.parametrize("warmup_init", [False, True])
def test_relative_step_reports_its_rate_and_ignores_the_learning_rate(warmup_init):
    finals, rates = [], []
    for lr in (1e-4, 0.5):
        job = toy_job(optimizer={"optimizer": "Adafactor", "adafactor_relative_step": True,
                                 "adafactor_warmup_init": warmup_init, "learning_rate": lr,
                                 "lr_scheduler": "linear"})
        weight = torch.nn.Parameter(torch.linspace(-1, 2, 6).reshape(2, 3))
        optimizer = build_optimizer([{"params": [weight]}], job.optimizer, on_cuda=False)
        scheduler = build_scheduler(optimizer, job.optimizer, 5)
        seen, expected = [], []
        for k in range(1, 6):
            rms = float(weight.detach().norm() / weight.numel() ** 0.5)
            weight.grad = torch.sin(torch.arange(6.0) + k).reshape(2, 3)
            optimizer.step()
            scheduler.step()
            seen.append(optimizer.param_groups[0]["lr"])
            step_size = min(1e-6 * k if warmup_init else 1e-2, 1 / math.sqrt(k))
            expected.append(max(1e-3, rms) * step_size)
        assert all(isinstance(r, float) for r in seen)
        assert seen == pytest.approx(expected, rel=1e-6)
        finals.append(weight.detach().clone())
        rates.append(seen)
    assert torch.equal(finals[0], finals[1]) and rates[0] == rates[1]


# --- a group that stops training ---------------------------------------------------------

class TwoGroupToy(ToyTrainee):
    """The bias stops training after step 3, as an image job's text encoder would."""

    def __init__(self, job, ctx):
        super().__init__(job, ctx)
        self.param_groups = [{"params": [self.model.weight]},
                             {"params": [self.model.bias], TRAIN_UNTIL_STEP: 3}]


def stop_job():
    return toy_job(training={"max_steps": 6, "batch_size": 3}, output={"save_every_n_steps": 1})


def test_a_group_told_to_stop_keeps_its_weights_from_then_on(tmp_path):
    trainer.train(stop_job(), RunDir(tmp_path / "run").ensure(), lambda ev: None, lambda: False,
                  TwoGroupToy)
    states = [load_file(tmp_path / "run" / "checkpoints" / f"step-{s:06d}" /
                        "trainable.safetensors") for s in range(1, 7)]
    biases = [s["bias"] for s in states]
    weights = [s["weight"] for s in states]
    assert not torch.equal(biases[1], biases[2])          # step 3 still trains it
    assert all(torch.equal(biases[2], b) for b in biases[3:])
    assert all(not torch.equal(a, b) for a, b in zip(weights[2:], weights[3:]))


def test_a_stopped_group_stays_stopped_after_resume_bit_for_bit(tmp_path):
    trainer.train(stop_job(), RunDir(tmp_path / "straight").ensure(), lambda ev: None,
                  lambda: False, TwoGroupToy)
    events: list[dict] = []
    run = RunDir(tmp_path / "stopped").ensure()
    trainer.train(stop_job(), run, events.append, lambda: len(progress(events)) >= 4, TwoGroupToy)
    assert events[-1]["step"] == 4
    trainer.train(stop_job(), run, lambda ev: None, lambda: False, TwoGroupToy,
                  run.latest_checkpoint())
    assert_same_checkpoint(RunDir(tmp_path / "straight").latest_checkpoint(),
                           run.latest_checkpoint())


# --- missing packages --------------------------------------------------------------------

@pytest.mark.parametrize("name,package", [("Prodigy", "prodigyopt"), ("DAdaptAdam", "dadaptation"),
                                          ("AdamWScheduleFree", "schedulefree")])
def test_a_missing_package_names_the_extra_to_install(monkeypatch, name, package):
    monkeypatch.setitem(sys.modules, package, None)
    job = toy_job(optimizer={"optimizer": name, "learning_rate": 1.0})
    with pytest.raises(EngineError) as err:
        build_optimizer([{"params": [torch.nn.Parameter(torch.zeros(1))]}], job.optimizer, False)
    assert err.value.kind == "config" and f"'{package}'" in err.value.message
    assert 'pip install "lora-studio[optimizers]"' in err.value.hint


@pytest.mark.parametrize("settings,expected", [
    ({"optimizer": "Prodigy", "d_coef": 2.0, "decouple": False, "use_bias_correction": True,
      "safeguard_warmup": True, "beta2": 0.99},
     {"d_coef": 2.0, "decouple": False, "use_bias_correction": True, "safeguard_warmup": True,
      "betas": (0.9, 0.99)}),
    ({"optimizer": "Prodigy"}, {"d_coef": 1.0, "decouple": True, "use_bias_correction": False,
                                "safeguard_warmup": False, "betas": (0.9, 0.999)}),
    ({"optimizer": "DAdaptAdam", "use_bias_correction": True, "beta1": 0.8},
     {"decouple": True, "use_bias_correction": True, "betas": (0.8, 0.999)}),
    ({"optimizer": "AdamW", "beta1": 0.85, "beta2": 0.95}, {"betas": (0.85, 0.95)}),
    ({"optimizer": "AdamWScheduleFree", "beta2": 0.98}, {"betas": (0.9, 0.98)}),
])
def test_optimizer_options_reach_the_optimizer(settings, expected):
    job = toy_job(optimizer={"learning_rate": 1.0, **settings})
    optimizer = build_optimizer([{"params": [torch.nn.Parameter(torch.ones(2))]}],
                                job.optimizer, on_cuda=False)
    got = {key: optimizer.defaults[key] for key in expected}
    assert {k: tuple(v) if k == "betas" else v for k, v in got.items()} == expected


def test_adamw_steps_exactly_as_torch_default_adamw():
    """AdamW runs torch's foreach implementation (one call per operation, not a loop over
    the tensors): the weights it gives are torch's default AdamW's, bit for bit."""
    job = toy_job(optimizer={"optimizer": "AdamW", "learning_rate": 1e-2, "weight_decay": 0.1})
    noise = torch.Generator().manual_seed(0)
    start = [torch.randn(shape, generator=noise) for shape in [(4, 32), (32, 4), (7,)] * 8]
    grads = [[torch.randn(t.shape, generator=noise) for t in start] for _ in range(5)]
    ours = [torch.nn.Parameter(t.clone()) for t in start]
    theirs = [torch.nn.Parameter(t.clone()) for t in start]
    ours_opt = build_optimizer([{"params": ours}], job.optimizer, on_cuda=False)
    theirs_opt = torch.optim.AdamW(theirs, lr=1e-2, weight_decay=0.1)
    assert ours_opt.defaults["foreach"] and not theirs_opt.defaults["foreach"]
    for step_grads in grads:
        for params, opt in ((ours, ours_opt), (theirs, theirs_opt)):
            for p, g in zip(params, step_grads):
                p.grad = g.clone()
            opt.step()
    assert all(torch.equal(a, b) for a, b in zip(ours, theirs))
