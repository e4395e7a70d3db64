"""The optimizer-step loop every family shares.

A family supplies its micro-batches per epoch (already in this process's share and
order), a function that turns one into a loss, and hooks to save and sample. The
loop does gradient accumulation, clipping, the finite-loss check, progress events,
periodic checkpoints and samples, and stops within one step when asked.

Data order is a pure function of (seed, epoch), so a run resumed at step k sees
exactly the batches a run that was never stopped would have seen.
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

from ..hardware.monitor import HARDWARE_INTERVAL_S, GpuMonitor, HardwareReporter
from ..runs.events import Emit, event
from .control import ProgressMeter, check_finite

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


def epoch_order(n_items: int, epoch: int, seed: int, num_processes: int = 1,
                process_index: int = 0) -> list[int]:
    """This process's item indices for ``epoch``: a seeded shuffle, padded by wrapping
    so that every process gets the same count, then strided across processes."""
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    order = torch.randperm(n_items, generator=generator).tolist()
    padded = math.ceil(n_items / num_processes) * num_processes
    order += order[: padded - n_items]
    return order[process_index::num_processes]


def chunks(items: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [items[i:i + size] for i in range(0, len(items), size)]


def steps_per_epoch(micro_batches: int, gradient_accumulation_steps: int) -> int:
    return math.ceil(micro_batches / gradient_accumulation_steps)


def total_steps(max_steps: int, epochs: int, per_epoch: int) -> int:
    return max_steps if max_steps > 0 else epochs * per_epoch


@dataclass
class LoopSpec:
    total_steps: int
    steps_per_epoch: int
    gradient_accumulation_steps: int = 1
    max_grad_norm: float = 0.0
    save_every_n_steps: int = 0
    sample_every_n_steps: int = 0
    mixed_precision: str = "no"


@dataclass
class LoopHooks:
    epoch_batches: Callable[[int], Sequence[Any]]          # epoch -> micro-batches
    compute_loss: Callable[[Any], torch.Tensor]            # micro-batch -> scalar loss
    save_checkpoint: Callable[[int], Path | None]          # step -> folder (None off main)
    sample: Callable[[int], None] | None = None            # step -> writes samples, emits


@dataclass
class LoopOutcome:
    status: str                        # "completed" or "cancelled"
    step: int
    checkpoint: Path | None = None     # the checkpoint a cancelled run left
    losses: list[float] = field(default_factory=list)


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


def optimizer_step(accelerator, model, optimizer, scheduler, params, group: Sequence[Any],
                   compute_loss: Callable[[Any], torch.Tensor], max_grad_norm: float,
                   plain: bool = False) -> float:
    """Accumulate the micro-batches of one step, then clip and step. Returns the mean
    loss before stepping, so a non-finite loss is caught before it reaches the weights.
    ``plain``: see plain_torch_step."""
    losses = []
    for i, batch in enumerate(group):
        sync = i == len(group) - 1
        with nullcontext() if sync else accelerator.no_sync(model):
            loss = compute_loss(batch)
            accelerator.backward(loss / len(group) if len(group) > 1 else loss)
        losses.append(loss.detach())
    mean = losses[0].float() if len(losses) == 1 else torch.stack(losses).float().mean()
    if accelerator.num_processes > 1:
        mean = accelerator.reduce(mean, reduction="mean")
    value = mean.item()
    inner = optimizer.optimizer if plain else optimizer
    if math.isfinite(value):
        if max_grad_norm > 0:
            if plain:
                torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
            else:
                accelerator.clip_grad_norm_(params, max_grad_norm)
        inner.step()
        scheduler.step()
    inner.zero_grad(set_to_none=True)
    return value


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


def train_loop(accelerator, model, optimizer, scheduler, params, spec: LoopSpec,
               hooks: LoopHooks, emit: Emit, stop: Callable[[], bool],
               start_step: int = 0, monitor: GpuMonitor | None = None,
               hardware_interval_s: float = HARDWARE_INTERVAL_S) -> LoopOutcome:
    """Train from ``start_step`` to ``spec.total_steps`` or until ``stop``. The main
    process emits a ``hardware`` event at the start, every ``hardware_interval_s``
    seconds and at the end (``monitor``: the GPU reader, tests pass a fake one)."""
    hardware = hardware_reporter(accelerator, emit, monitor, hardware_interval_s) \
        if accelerator.is_main_process else None
    try:
        return _run_steps(accelerator, model, optimizer, scheduler, params, spec, hooks, emit,
                          stop, start_step, hardware.poll if hardware else lambda: False)
    finally:
        if hardware is not None:
            hardware.poll(force=True)  # the peak, also when the run failed (out of memory)
            hardware.close()


def _run_steps(accelerator, model, optimizer, scheduler, params, spec: LoopSpec,
               hooks: LoopHooks, emit: Emit, stop: Callable[[], bool], start_step: int,
               poll_hardware: Callable[[], bool]) -> LoopOutcome:
    hash_dir = os.environ.get(WEIGHT_HASHES_ENV)
    step = start_step
    meter = ProgressMeter(spec.total_steps, start_step)
    losses: list[float] = []
    plain = plain_torch_step(accelerator)
    model.train()
    poll_hardware()
    while step < spec.total_steps:
        epoch = step // spec.steps_per_epoch
        groups = chunks(hooks.epoch_batches(epoch), spec.gradient_accumulation_steps)
        for group in groups[step % spec.steps_per_epoch:]:
            if _any_process(accelerator, stop()):
                # no step ran: the resumed-from checkpoint (if any) already holds this state,
                # and rewriting it would risk the only good copy
                saved = hooks.save_checkpoint(step) if step > start_step else None
                return LoopOutcome("cancelled", step, saved, losses)
            lr = optimizer.param_groups[0]["lr"]
            loss = optimizer_step(accelerator, model, optimizer, scheduler, params, group,
                                  hooks.compute_loss, spec.max_grad_norm, plain)
            step += 1
            if hash_dir:
                record_weight_hash(hash_dir, accelerator.process_index, step, params)
            check_finite(loss, step, lr, spec.mixed_precision)
            losses.append(loss)
            it_s, eta_s = meter.tick(step)
            emit(event("progress", step=step, total=spec.total_steps, epoch=epoch + 1,
                       loss=round(loss, 6), lr=lr, it_s=round(it_s, 3), eta_s=round(eta_s, 1)))
            poll_hardware()
            if spec.save_every_n_steps and step % spec.save_every_n_steps == 0 \
                    and step < spec.total_steps:
                hooks.save_checkpoint(step)
            if hooks.sample and spec.sample_every_n_steps and \
                    (step % spec.sample_every_n_steps == 0 or step == spec.total_steps):
                hooks.sample(step)
            if step >= spec.total_steps:
                break
    return LoopOutcome("completed", step, None, losses)
