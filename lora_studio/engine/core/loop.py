"""The optimizer-step loop every family shares.

It takes this process's micro-batches per epoch, the family's summed loss and item
count, and hooks to save and sample. It does gradient accumulation (the loss of a
step is divided by the items of the whole step, over every micro-batch and
process), clipping, the finite-loss check, progress events, periodic checkpoints
and samples, and stops within one step when asked.

Learning rate: optimizer step k (1-based) trains with the schedule's value at k-1,
the convention of transformers' Trainer and diffusers' examples (so a warmup's
first step has rate 0); the ``progress`` event of step k reports that rate.
"""
from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ...hardware.monitor import HARDWARE_INTERVAL_S, GpuMonitor, HardwareReporter
from ...runs.events import Emit, event
from .control import EngineError, ProgressMeter, check_finite
from .optim import eval_mode, evaluation_weights, freeze_finished_groups, train_mode
from .order import chunks

# A folder: every process appends a digest of its trainable weights after each step.
WEIGHT_HASHES_ENV = "LORA_STUDIO_WEIGHT_HASHES"


def make_accelerator(mixed_precision: str, **kwargs):
    """An Accelerator for one run. accelerate keeps mixed precision in a process-wide
    singleton, and several runs in one process (tests, the CLI, a benchmark) may ask
    for different settings, so that state is cleared first; the launched processes'
    PartialState (the distributed set-up) stays."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState
    AcceleratorState._reset_state(reset_partial_state=False)
    return Accelerator(mixed_precision=mixed_precision, **kwargs)


@dataclass
class LoopSpec:
    total_steps: int
    steps_per_epoch: int
    gradient_accumulation_steps: int = 1
    max_grad_norm: float = 0.0
    save_every_n_steps: int = 0
    sample_every_n_steps: int = 0
    save_every_n_epochs: int = 0
    sample_every_n_epochs: int = 0
    mixed_precision: str = "no"
    eval_every_n_steps: int = 0        # 0: only after the last step (when there is eval data)
    early_stopping_patience: int = 0   # evaluations without a better metric; 0: never stop
    early_stopping_metric: str = "eval_loss"   # or a generation metric (LOWER_IS_BETTER)


@dataclass
class LoopHooks:
    epoch_batches: Callable[[int], Sequence[Any]]          # epoch -> this process's micro-batches
    batch_items: Callable[[Any], int]                      # micro-batch -> loss items in it
    loss_sum: Callable[[Any], torch.Tensor]                # micro-batch -> summed loss
    save_checkpoint: Callable[[int], Path | None]          # step -> folder (None off main)
    sample: Callable[[int], None] | None = None            # step -> writes samples, emits
    save_epoch: Callable[[int, int], None] | None = None   # (epoch, step) -> that epoch's files
    evaluate: Callable[[int], dict] | None = None          # step -> {"loss": mean held-out
                                                           # loss, generation metrics...}
    mark_best: Callable[[int, float, dict], None] | None = None  # a new best (step, metric
                                                                 # value, every score)


@dataclass
class LoopOutcome:
    status: str                        # "completed" or "cancelled"
    step: int
    checkpoint: Path | None = None     # the checkpoint a cancelled run left
    losses: list[float] = field(default_factory=list)
    best: tuple[int, float] | None = None   # (step, metric value) of the best evaluation
    early_stopped: bool = False
    best_scores: dict = field(default_factory=dict)  # every score of the best evaluation


def _any_process(accelerator, flag: bool) -> bool:
    """Every process must take the same branch, or the collective calls hang."""
    if accelerator.num_processes == 1:
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=accelerator.device)
    return bool(accelerator.reduce(value, reduction="sum").item() > 0)


def plain_torch_step(accelerator) -> bool:
    """Whether the loop may clip and step the torch optimizer itself. accelerate's
    optimizer wrapper looks up an optional package on every step (about half a
    millisecond); it only matters with a gradient scaler (fp16) or a sharded set-up
    (DeepSpeed, FSDP, XLA), so single-device and DDP runs without fp16 skip it."""
    from accelerate.utils import DistributedType
    plain = (DistributedType.NO, DistributedType.MULTI_GPU, DistributedType.MULTI_CPU)
    return accelerator.scaler is None and accelerator.distributed_type in plain


def _sum_over_processes(accelerator, value: torch.Tensor) -> torch.Tensor:
    if accelerator.num_processes == 1:
        return value
    return accelerator.reduce(value.to(accelerator.device), reduction="sum")


@dataclass
class StepResult:
    loss: float                    # mean over the step's loss items
    grad_norm: float | None        # before clipping; None when clipping is off


def optimizer_step(accelerator, model, optimizer, scheduler, params, group: Sequence[Any],
                   hooks: LoopHooks, max_grad_norm: float, plain: bool = False) -> StepResult:
    """Accumulate the micro-batches of one step, then clip and step. Each micro-batch's
    summed loss is divided by the items of the whole step, so the gradient is that of
    the mean over the step's items however they are split into micro-batches and
    processes (DDP averages over processes, hence the factor). A non-finite loss is
    caught before it reaches the weights. ``plain``: see plain_torch_step."""
    items = torch.tensor(float(sum(hooks.batch_items(batch) for batch in group)))
    items = max(_sum_over_processes(accelerator, items).item(), 1.0)
    scale = accelerator.num_processes / items
    sums = []
    for i, batch in enumerate(group):
        sync = i == len(group) - 1
        with nullcontext() if sync else accelerator.no_sync(model):
            loss_sum = hooks.loss_sum(batch)
            accelerator.backward(loss_sum * scale)
        sums.append(loss_sum.detach().float())
    value = _sum_over_processes(accelerator, torch.stack(sums).sum()).item() / items
    inner = optimizer.optimizer if plain else optimizer
    grad_norm = None
    if math.isfinite(value):
        if max_grad_norm > 0:
            norm = torch.nn.utils.clip_grad_norm_(params, max_grad_norm) if plain else \
                accelerator.clip_grad_norm_(params, max_grad_norm)
            grad_norm = float(norm)
        inner.step()
        scheduler.step()
    inner.zero_grad(set_to_none=True)
    return StepResult(value, grad_norm)


def record_weight_hash(folder: str | Path, process_index: int, step: int, params) -> None:
    """Append this process's digest of the trainable weights after ``step``: the tests
    compare the files of data-parallel processes to show they hold the same weights."""
    digest = hashlib.sha256()
    for p in params:
        digest.update(p.detach().float().cpu().numpy().tobytes())
    with open(Path(folder) / f"weights-rank{process_index}.txt", "a", encoding="utf-8") as fh:
        fh.write(f"{step} {digest.hexdigest()}\n")


def hardware_reporter(accelerator, emit: Emit, monitor: GpuMonitor | None = None,
                      interval_s: float = HARDWARE_INTERVAL_S) -> HardwareReporter:
    """The reporter of the main process; on CUDA its events carry the allocator's peak
    on this process's device, the figure the VRAM estimate is checked against."""
    extra = None
    if accelerator.device.type == "cuda":
        def extra() -> dict:
            return {"peak_allocated": int(torch.cuda.max_memory_allocated(accelerator.device))}
    return HardwareReporter(emit, interval_s, monitor, extra)


# The early-stopping metrics for which lower is better; the others (ROUGE-L, BLEU,
# exact match) are better higher.
LOWER_IS_BETTER = {"eval_loss"}


class Evaluations:
    """Evaluation on held-out data every ``eval_every_n_steps`` and after the last step:
    an ``eval`` event each time (the loss and any generation metrics), the best one by
    ``early_stopping_metric`` kept (``mark_best``), and early stopping after
    ``early_stopping_patience`` evaluations without a better one. Which evaluations came
    after the best is counted from the steps, so a resumed run knows it from the best's
    step alone."""

    def __init__(self, spec: LoopSpec, hooks: LoopHooks, emit: Emit,
                 best: tuple[int, float] | None, best_scores: dict | None = None):
        self.spec, self.hooks, self.emit, self.best = spec, hooks, emit, best
        self.best_scores: dict = dict(best_scores or {})

    def _better(self, value: float) -> bool:
        if self.best is None:
            return True
        if self.spec.early_stopping_metric in LOWER_IS_BETTER:
            return value < self.best[1]
        return value > self.best[1]

    def due(self, step: int) -> bool:
        every = self.spec.eval_every_n_steps
        return self.hooks.evaluate is not None and (
            step == self.spec.total_steps or bool(every and step % every == 0))

    def record(self, step: int, loss: float, metrics: dict | None = None) -> bool:
        """The eval loss (and generation metrics) measured at ``step``; True when training
        should stop early. Called with the training weights in place, since a new best is
        saved as a checkpoint."""
        if not math.isfinite(loss):
            raise EngineError("nan", f"The eval loss became {loss} at step {step}.",
                              "Lower optimizer.learning_rate and resume from the last checkpoint.")
        scores = {"loss": round(loss, 6), **{k: round(v, 6) for k, v in (metrics or {}).items()}}
        name = self.spec.early_stopping_metric
        value = loss if name == "eval_loss" else (metrics or {}).get(name)
        if value is None:
            raise EngineError("config", f"training.early_stopping_metric is '{name}', but the "
                                        "evaluation measured no such metric.",
                              "Set output.eval_generate_records above 0, or the metric to "
                              "eval_loss.")
        if self._better(value):
            self.best, self.best_scores = (step, value), scores
            if self.hooks.mark_best is not None:
                self.hooks.mark_best(step, value, scores)
        stale = self._since_best(step)
        patience = self.spec.early_stopping_patience
        stopping = bool(patience) and stale >= patience and step < self.spec.total_steps
        best = {f"best_{k}": v for k, v in self.best_scores.items()}
        self.emit(event("eval", step=step, **scores, metric=name, best_step=self.best[0],
                        best_value=round(self.best[1], 6), **best, since_best=stale,
                        early_stopping=stopping))
        return stopping

    def _since_best(self, step: int) -> int:
        every = self.spec.eval_every_n_steps
        if not every:
            return 0
        return step // every - self.best[0] // every


def _epoch_due(spec: LoopSpec, step: int, every_n_epochs: int) -> bool:
    """Whether ``step`` ends an epoch whose number is a multiple of ``every_n_epochs``."""
    return bool(every_n_epochs) and step % spec.steps_per_epoch == 0 and \
        (step // spec.steps_per_epoch) % every_n_epochs == 0


def saves_after(spec: LoopSpec, step: int) -> bool:
    """A checkpoint after ``step`` (the last step's is the trainer's final one)."""
    every = spec.save_every_n_steps
    return step < spec.total_steps and (bool(every) and step % every == 0 or
                                        _epoch_due(spec, step, spec.save_every_n_epochs))


def epoch_files_after(spec: LoopSpec, step: int) -> bool:
    """An epoch's own files after ``step``; the last epoch's are the final export."""
    return step < spec.total_steps and _epoch_due(spec, step, spec.save_every_n_epochs)


def samples_after(spec: LoopSpec, step: int) -> bool:
    """Samples after ``step``: every N steps and/or N epochs, and after the last step."""
    every = spec.sample_every_n_steps
    if not (every or spec.sample_every_n_epochs):
        return False
    return step == spec.total_steps or bool(every) and step % every == 0 or \
        _epoch_due(spec, step, spec.sample_every_n_epochs)


def train_loop(accelerator, model, optimizer, scheduler, params, spec: LoopSpec,
               hooks: LoopHooks, emit: Emit, stop: Callable[[], bool],
               start_step: int = 0, monitor: GpuMonitor | None = None,
               hardware_interval_s: float = HARDWARE_INTERVAL_S,
               best: tuple[int, float] | None = None,
               best_scores: dict | None = None) -> LoopOutcome:
    """Train from ``start_step`` to ``spec.total_steps`` or until ``stop``. The main
    process emits a ``hardware`` event at the start, every ``hardware_interval_s``
    seconds and at the end (``monitor``: the GPU reader, tests pass a fake one).
    ``best``, ``best_scores``: a resumed run's best evaluation so far."""
    hardware = hardware_reporter(accelerator, emit, monitor, hardware_interval_s) \
        if accelerator.is_main_process else None
    try:
        return _run_steps(accelerator, model, optimizer, scheduler, params, spec, hooks, emit,
                          stop, start_step, hardware.poll if hardware else lambda: False,
                          Evaluations(spec, hooks, emit, best, best_scores))
    finally:
        if hardware is not None:
            hardware.poll(force=True)  # the peak, also when the run failed (out of memory)
            hardware.close()


def _run_steps(accelerator, model, optimizer, scheduler, params, spec: LoopSpec,
               hooks: LoopHooks, emit: Emit, stop: Callable[[], bool], start_step: int,
               poll_hardware: Callable[[], bool], evaluations: Evaluations) -> LoopOutcome:
    hash_dir = os.environ.get(WEIGHT_HASHES_ENV)
    step = start_step
    meter = ProgressMeter(spec.total_steps, start_step)
    losses: list[float] = []
    plain = plain_torch_step(accelerator)
    if step < spec.total_steps:  # a finished run resumed keeps its final weights as they are
        train_mode(optimizer)
    freeze_finished_groups(optimizer, step)
    poll_hardware()
    while step < spec.total_steps:
        epoch = step // spec.steps_per_epoch
        groups = chunks(hooks.epoch_batches(epoch), spec.gradient_accumulation_steps)
        for group in groups[step % spec.steps_per_epoch:]:
            if _any_process(accelerator, stop()):
                # no step ran: the resumed-from checkpoint (if any) already holds this state,
                # and rewriting it would risk the only good copy
                saved = hooks.save_checkpoint(step) if step > start_step else None
                return LoopOutcome("cancelled", step, saved, losses, evaluations.best,
                                   best_scores=evaluations.best_scores)
            lr = optimizer.param_groups[0]["lr"]
            result = optimizer_step(accelerator, model, optimizer, scheduler, params, group,
                                    hooks, spec.max_grad_norm, plain)
            step += 1
            freeze_finished_groups(optimizer, step)
            if hash_dir:
                record_weight_hash(hash_dir, accelerator.process_index, step, params)
            check_finite(result.loss, step, lr, spec.mixed_precision)
            losses.append(result.loss)
            it_s, eta_s = meter.tick(step)
            extra = {} if result.grad_norm is None else {"grad_norm": round(result.grad_norm, 6)}
            emit(event("progress", step=step, total=spec.total_steps, epoch=epoch + 1,
                       loss=round(result.loss, 6), lr=lr, it_s=round(it_s, 3),
                       eta_s=round(eta_s, 1), **extra))
            poll_hardware()
            if saves_after(spec, step):
                hooks.save_checkpoint(step)
            if hooks.save_epoch and epoch_files_after(spec, step):
                with evaluation_weights(optimizer):
                    hooks.save_epoch(step // spec.steps_per_epoch, step)
            if hooks.sample and samples_after(spec, step):
                with evaluation_weights(optimizer):
                    hooks.sample(step)
            if evaluations.due(step):
                with evaluation_weights(optimizer):
                    scores = dict(hooks.evaluate(step))
                if evaluations.record(step, scores.pop("loss"), scores):
                    eval_mode(optimizer)
                    return LoopOutcome("completed", step, None, losses, evaluations.best, True,
                                       evaluations.best_scores)
            if step >= spec.total_steps:
                break
    # The final checkpoint and the export hold the weights to use (schedule-free: x); a
    # cancelled run's checkpoint keeps the training point, so its resume is bit for bit.
    eval_mode(optimizer)
    return LoopOutcome("completed", step, None, losses, evaluations.best,
                       best_scores=evaluations.best_scores)
