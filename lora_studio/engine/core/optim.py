"""The optimizer and learning-rate schedule a job asks for, the two weight points of a
schedule-free optimizer, and text-encoder groups that stop training after a step."""
from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stdout

import torch

from ...config.optimizers import (BITSANDBYTES_OPTIMIZERS, INSTALL_OPTIMIZERS,
                                  OPTIONAL_OPTIMIZERS, SCHEDULE_FREE, optimizer_options)
from ...config.schema import OptimizerConfig
from .control import EngineError

# A param group's last optimizer step: after it the group's weights are frozen (requires_grad
# off, so no gradient and no update). Kept in the optimizer's state, so a resume knows it.
TRAIN_UNTIL_STEP = "train_until_step"


def _bitsandbytes():
    try:
        import bitsandbytes
    except ImportError as exc:
        raise EngineError("config", f"The 8-bit optimizers need bitsandbytes ({exc}).",
                          "pip install bitsandbytes, or choose AdamW or Adafactor.") from exc
    return bitsandbytes


def _optional_class(name: str):
    package, cls = OPTIONAL_OPTIMIZERS[name]
    try:
        return getattr(importlib.import_module(package), cls)
    except ImportError as exc:
        raise EngineError("config", f"The {name} optimizer needs the '{package}' package, which "
                          f"is not installed ({exc}).",
                          f"{INSTALL_OPTIMIZERS}, or choose AdamW.") from exc


def uses_relative_step(cfg: OptimizerConfig) -> bool:
    return cfg.optimizer == "Adafactor" and cfg.adafactor_relative_step


def build_optimizer(param_groups: list[dict], cfg: OptimizerConfig,
                    on_cuda: bool) -> torch.optim.Optimizer:
    """``param_groups``: torch-style groups (``{"params": [...]}``, optionally with their
    own ``"lr"``); groups without one use ``cfg.learning_rate``."""
    name, lr, wd = cfg.optimizer, cfg.learning_rate, cfg.weight_decay
    options = optimizer_options(cfg)
    if name in BITSANDBYTES_OPTIMIZERS:
        if not on_cuda:
            raise EngineError("config", f"The {name} optimizer needs an NVIDIA GPU (bitsandbytes).",
                              "Choose optimizer.optimizer = AdamW (or Adafactor) to train on this "
                              "machine.")
        return getattr(_bitsandbytes().optim, name)(param_groups, lr=lr, weight_decay=wd,
                                                    **options)
    if name == "Adafactor":
        from transformers.optimization import Adafactor
        if cfg.adafactor_relative_step:
            # The paper's set-up: step size from the step count, scaled by each weight's RMS.
            return Adafactor(param_groups, lr=None, weight_decay=wd, scale_parameter=True,
                             relative_step=True, warmup_init=cfg.adafactor_warmup_init)
        return Adafactor(param_groups, lr=lr, weight_decay=wd, scale_parameter=False,
                         relative_step=False, warmup_init=False)
    if name in OPTIONAL_OPTIMIZERS:
        kwargs = {"lr": lr, "weight_decay": wd, **options}
        if name in SCHEDULE_FREE:
            kwargs["warmup_steps"] = cfg.lr_warmup_steps
        cls = _optional_class(name)
        # Prodigy and DAdaptAdam print a line about weight decay; stdout carries the events.
        with redirect_stdout(sys.stderr):
            return cls(param_groups, **kwargs)
    # torch runs AdamW as a loop over the tensors unless they are all on CUDA; foreach is
    # the same arithmetic (bit for bit) in one call per operation: about 1 ms less per
    # step on CPU for the tiny SD's 96 LoRA tensors, and what CUDA already gets.
    return torch.optim.AdamW(param_groups, lr=lr, weight_decay=wd, foreach=True, **options)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: OptimizerConfig, total_steps: int):
    """A LambdaLR stepped once per optimizer step. Adafactor's relative step has its own
    rate (the schedule only reports it); a schedule-free optimizer keeps the rate
    constant (its warmup is its own), as kohya does for both."""
    if uses_relative_step(cfg):
        from transformers.optimization import AdafactorSchedule

        class RelativeStepRate(AdafactorSchedule):
            """Adafactor's rate as numbers: the weights' RMS in it is a tensor, and the
            rate goes into JSON events."""
            def get_lr(self):
                return [float(lr) for lr in super().get_lr()]

        return RelativeStepRate(optimizer)
    from transformers import get_scheduler
    name = "constant" if cfg.optimizer in SCHEDULE_FREE else cfg.lr_scheduler
    extra = {"cosine_with_restarts": {"num_cycles": cfg.lr_scheduler_num_cycles},
             "polynomial": {"power": cfg.lr_scheduler_power}}.get(name)
    return get_scheduler(name, optimizer,
                         num_warmup_steps=min(cfg.lr_warmup_steps, total_steps),
                         num_training_steps=total_steps, scheduler_specific_kwargs=extra)


def _inner(optimizer) -> torch.optim.Optimizer:
    """The torch optimizer inside accelerate's wrapper (or the optimizer itself)."""
    return getattr(optimizer, "optimizer", optimizer)


def _schedule_free(optimizer) -> bool:
    return "train_mode" in _inner(optimizer).defaults


def at_training_point(optimizer) -> bool:
    """Whether the weights are a schedule-free optimizer's training point y, which
    differs from x, the point evaluated and exported."""
    return _schedule_free(optimizer) and bool(_inner(optimizer).param_groups[0]["train_mode"])


def train_mode(optimizer) -> None:
    """A schedule-free optimizer steps from a point y between its average x and its
    iterate z: put the weights at y before training (nothing for other optimizers)."""
    if _schedule_free(optimizer):
        _inner(optimizer).train()


def eval_mode(optimizer) -> None:
    """Put a schedule-free optimizer's weights at x, the point to use and export."""
    if _schedule_free(optimizer):
        _inner(optimizer).eval()


@contextmanager
def evaluation_weights(optimizer) -> Iterator[None]:
    """The weights at x inside the block (samples), back at the training point y after
    it. y is restored from a copy: eval() then train() rounds it, and a run that samples
    would drift from one that does not, so a resume would no longer be bit for bit."""
    inner = _inner(optimizer)
    if not at_training_point(optimizer):
        yield
        return
    params = [p for group in inner.param_groups for p in group["params"]]
    kept = [p.detach().clone() for p in params]
    inner.eval()
    try:
        yield
    finally:
        with torch.no_grad():
            for p, value in zip(params, kept):
                p.copy_(value)
        for group in inner.param_groups:
            group["train_mode"] = True


def freeze_finished_groups(optimizer, step: int) -> None:
    """Stop training the groups whose TRAIN_UNTIL_STEP is ``step`` or earlier."""
    for group in _inner(optimizer).param_groups:
        until = group.get(TRAIN_UNTIL_STEP)
        if until and step >= until:
            for p in group["params"]:
                p.requires_grad_(False)
                p.grad = None
