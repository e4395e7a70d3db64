"""The shared core's arithmetic against hand computation: learning rate per step for
every scheduler, accumulation, clipping, epoch order, resume bit for bit. A toy
family (a linear model whose items weigh differently, like records of different
lengths) runs through the same trainer as the real families."""
import math

import pytest
import torch

from lora_studio.engine.core import trainer
from lora_studio.engine.core.optim import build_scheduler
from lora_studio.engine.core.order import epoch_order, shard
from lora_studio.runs.layout import RunDir
from exact import Grads, assert_same_checkpoint
from toy_family import DIM, N_ITEMS, ToyTrainee, progress, run_toy, toy_job

# --- learning rate ----------------------------------------------------------------------

def expected_factor(name: str, s: int, w: int, n: int, lr: float, cycles: int = 1,
                    power: float = 1.0) -> float:
    """transformers' schedules, written out: the multiplier of the rate after s scheduler
    steps, with w warmup steps out of n (cosine_with_restarts: ``cycles`` hard restarts;
    polynomial: ``power``, down to 1e-7)."""
    if name == "constant":
        return 1.0
    if s < w:
        return s / w
    if name == "constant_with_warmup":
        return 1.0
    progress_ = (s - w) / max(1, n - w)
    if name == "linear":
        return max(0.0, (n - s) / max(1, n - w))
    if name == "cosine":
        return max(0.0, 0.5 * (1 + math.cos(math.pi * progress_)))
    if name == "cosine_with_restarts":
        return 0.0 if progress_ >= 1 else \
            max(0.0, 0.5 * (1 + math.cos(math.pi * ((cycles * progress_) % 1))))
    if name == "polynomial":
        lr_end = 1e-7
        if s > n:
            return lr_end / lr
        return ((lr - lr_end) * (1 - progress_) ** power + lr_end) / lr
    raise AssertionError(name)


SCHEDULERS = ["constant", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts",
              "polynomial"]


@pytest.mark.parametrize("warmup", [0, 3])
@pytest.mark.parametrize("name", SCHEDULERS)
def test_every_scheduler_follows_its_formula_at_every_step(name, warmup):
    lr, total = 2e-3, 17
    job = toy_job(optimizer={"learning_rate": lr, "lr_scheduler": name, "lr_warmup_steps": warmup})
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    scheduler = build_scheduler(optimizer, job.optimizer, total)
    seen = []
    for _ in range(total + 1):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    expected = [lr * expected_factor(name, s, warmup, total, lr) for s in range(total + 1)]
    assert seen == pytest.approx(expected, rel=1e-9, abs=1e-15)


@pytest.mark.parametrize("warmup", [0, 3])
@pytest.mark.parametrize("name,cycles,power", [("cosine_with_restarts", 2, 1.0),
                                               ("cosine_with_restarts", 3, 1.0),
                                               ("polynomial", 1, 2.0), ("polynomial", 1, 0.5)])
def test_cycles_and_power_follow_their_formulas_at_every_step(name, cycles, power, warmup):
    lr, total = 2e-3, 17
    job = toy_job(optimizer={"learning_rate": lr, "lr_scheduler": name, "lr_warmup_steps": warmup,
                             "lr_scheduler_num_cycles": cycles, "lr_scheduler_power": power})
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    scheduler = build_scheduler(optimizer, job.optimizer, total)
    seen = []
    for _ in range(total + 1):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    expected = [lr * expected_factor(name, s, warmup, total, lr, cycles, power)
                for s in range(total + 1)]
    assert seen == pytest.approx(expected, rel=1e-9, abs=1e-15)
    if name == "cosine_with_restarts":  # the rate is back at the top once per cycle
        assert sum(1 for a, b in zip(seen[warmup:], seen[warmup + 1:]) if b > a) == cycles - 1


def test_constant_ignores_warmup_and_the_others_warm_up_linearly():
    """Pins the two facts the 'warmup-with-constant' finding and the panel's help rely on."""
    assert expected_factor("constant", 1, 3, 10, 1.0) == 1.0
    job = toy_job(optimizer={"lr_scheduler": "linear", "lr_warmup_steps": 4})
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = build_scheduler(optimizer, job.optimizer, 8)
    rates = []
    for _ in range(8):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert rates == pytest.approx([0, 0.25, 0.5, 0.75, 1.0, 0.75, 0.5, 0.25])


def test_warmup_longer_than_the_run_is_cut_to_the_run():
    job = toy_job(optimizer={"lr_scheduler": "linear", "lr_warmup_steps": 50})
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = build_scheduler(optimizer, job.optimizer, 4)
    rates = []
    for _ in range(4):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert rates == pytest.approx([0, 0.25, 0.5, 0.75])


@pytest.mark.parametrize("name", ["linear", "cosine", "constant_with_warmup"])
def test_the_loop_steps_the_schedule_once_per_optimizer_step(tmp_path, name):
    """Through the trainer, with accumulation: step k trains with (and reports) the
    schedule's rate after k-1 scheduler steps, and the total counts optimizer steps."""
    lr, warmup = 0.01, 2
    job = toy_job(optimizer={"learning_rate": lr, "lr_scheduler": name, "lr_warmup_steps": warmup},
                  training={"max_steps": 0, "epochs": 2, "batch_size": 2,
                            "gradient_accumulation_steps": 2})
    _, events, _ = run_toy(tmp_path, job)
    total = 2 * math.ceil(N_ITEMS / 2 / 2)  # 6 micro-batches of 2 per epoch, 2 per step
    steps = progress(events)
    assert [e["step"] for e in steps] == list(range(1, total + 1))
    assert [e["total"] for e in steps] == [total] * total
    assert [e["lr"] for e in steps] == pytest.approx(
        [lr * expected_factor(name, k - 1, warmup, total, lr) for k in range(1, total + 1)])


# --- accumulation and clipping ----------------------------------------------------------

def test_accumulation_splits_a_step_without_changing_it(tmp_path):
    """Batch 4 x 1 and batch 2 x 2 see the same items per step: same gradients, same
    update, same reported loss, although the items weigh differently (a mean of
    per-micro-batch means would differ)."""
    with Grads() as whole:
        one, one_events, _ = run_toy(tmp_path, toy_job(training={"batch_size": 4}), "whole")
    with Grads() as split:
        two, two_events, _ = run_toy(tmp_path, toy_job(
            training={"batch_size": 2, "gradient_accumulation_steps": 2}), "split")
    assert len(whole.steps) == 3
    whole.assert_same_as(split)
    for key, value in one.trainee.trainable_state().items():
        assert torch.allclose(value, two.trainee.trainable_state()[key], rtol=1e-5, atol=1e-7)
    assert [e["loss"] for e in progress(one_events)] == \
        pytest.approx([e["loss"] for e in progress(two_events)], rel=1e-5)


def test_the_gradient_is_that_of_the_item_mean(tmp_path):
    """By hand: the first step's gradient is d/dw of sum(weight * err^2) / sum(weight)
    over the step's items, and its reported loss is that mean."""
    job = toy_job(training={"batch_size": 2, "gradient_accumulation_steps": 3, "max_steps": 1})
    with Grads() as grads:
        _, events, toy = run_toy(tmp_path, job)
    first_six = epoch_order(N_ITEMS, 0, job.training.seed)[:6]
    reference = ToyTrainee(job, None)
    torch.manual_seed(job.training.seed)
    reference.model = torch.nn.Linear(DIM, 1)  # the same init: set_seed, then the model
    loss = reference.loss_sum(reference.model, first_six) / reference.batch_items(first_six)
    loss.backward()
    expected = [reference.model.weight.grad, reference.model.bias.grad]
    for got, want in zip(grads.steps[0], expected):
        assert torch.allclose(got, want, rtol=1e-5, atol=1e-7)
    assert progress(events)[0]["loss"] == pytest.approx(loss.item(), rel=1e-5)


def test_a_gradient_above_max_grad_norm_is_clipped_to_it(tmp_path):
    with Grads() as free:
        _, events, _ = run_toy(tmp_path, toy_job(training={"max_steps": 1}), "free")
    raw = free.norms()[0]
    assert "grad_norm" not in progress(events)[0]  # clipping off: nothing measured
    with Grads() as clipped:
        _, events, _ = run_toy(tmp_path, toy_job(optimizer={"max_grad_norm": raw / 4},
                                                 training={"max_steps": 1}), "clipped")
    assert clipped.norms()[0] == pytest.approx(raw / 4, rel=1e-5)
    assert progress(events)[0]["grad_norm"] == pytest.approx(raw, rel=1e-5)  # before clipping
    with Grads() as under:
        run_toy(tmp_path, toy_job(optimizer={"max_grad_norm": raw * 1.01},
                                  training={"max_steps": 1}), "under")
    for a, b in zip(under.steps[0], free.steps[0]):
        assert torch.equal(a, b)  # below the limit the gradient is left alone


# --- epoch order ------------------------------------------------------------------------

def test_each_epoch_has_its_own_order_reproducible_by_seed():
    orders = [epoch_order(50, epoch, seed=3) for epoch in range(4)]
    assert all(sorted(o) == list(range(50)) for o in orders)
    assert len({tuple(o) for o in orders}) == 4
    assert orders == [epoch_order(50, epoch, seed=3) for epoch in range(4)]
    assert epoch_order(50, 0, seed=4) != orders[0]


def test_the_loop_asks_each_epoch_for_its_own_batches(tmp_path):
    job = toy_job(training={"max_steps": 0, "epochs": 3, "batch_size": 4})
    _, events, toy = run_toy(tmp_path, job)
    assert toy.epochs_asked[0] == 0 and toy.epochs_asked[1:] == [0, 1, 2]  # [0]: step count
    assert [e["epoch"] for e in progress(events)] == [1] * 3 + [2] * 3 + [3] * 3


def test_shard_gives_every_process_as_many_batches_and_loses_none():
    batches = list(range(7))
    shares = [shard(batches, 3, rank) for rank in range(3)]
    assert [len(s) for s in shares] == [3, 3, 3]
    assert sorted(b for s in shares for b in s) == sorted(batches + [0, 1])  # wrapped padding
    assert shard(batches, 1, 0) == batches


# --- resume -----------------------------------------------------------------------------

def test_resume_gives_the_same_adapter_and_optimizer_bit_for_bit(tmp_path):
    job = toy_job(optimizer={"lr_scheduler": "cosine", "lr_warmup_steps": 2,
                             "max_grad_norm": 0.5, "weight_decay": 0.01},
                  training={"max_steps": 7, "batch_size": 3, "gradient_accumulation_steps": 2},
                  output={"save_every_n_steps": 3})
    run_toy(tmp_path, job, "straight")
    events: list[dict] = []
    run = RunDir(tmp_path / "stopped").ensure()
    trainer.train(job, run, events.append, lambda: len(progress(events)) >= 4, ToyTrainee)
    assert events[-1]["status"] == "cancelled" and events[-1]["step"] == 4
    run_toy(tmp_path, job, "stopped", resume=run.latest_checkpoint())
    straight = RunDir(tmp_path / "straight").latest_checkpoint()
    assert straight.name == run.latest_checkpoint().name == "step-000007"
    assert_same_checkpoint(straight, run.latest_checkpoint())
