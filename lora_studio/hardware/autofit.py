"""Auto-fit: the fewest changes that make a job fit the card, and the validation hook.

Changes are tried in the order users lose least by them: gradient checkpointing
(slower, same result), a smaller batch with more gradient accumulation (same
effective batch), an 8-bit optimizer, a 4-bit base for text models, and a lower
resolution last (it changes what the model learns).
"""
from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lora_studio.config.fields import get_value, set_in
from lora_studio.config.findings import Finding
from lora_studio.config.gpu import GpuFacts
from lora_studio.config.model_info import ModelInfoError
from lora_studio.config.schema import JobConfig

from .estimate import DEFAULT_MARGIN, Estimate, ModelSpec, estimate, gib, model_spec
from .monitor import GpuInfo

MIN_RESOLUTION = 256
RESOLUTION_STEP = 64


@dataclass(frozen=True)
class Change:
    path: str        # dotted field path, e.g. "training.batch_size"
    old: Any
    new: Any
    saving: int      # bytes this change saves, applied after the changes listed before it
    reason: str

    def __str__(self) -> str:
        saves = f"saves {gib(self.saving)}; " if self.saving else ""
        return f"{self.path}: {self.old!r} -> {self.new!r} ({saves}{self.reason})"


class DoesNotFit(Exception):
    """Even every change auto-fit may make leaves the job too big for the card."""

    def __init__(self, message: str, estimate: Estimate, changes: list[Change]):
        super().__init__(message)
        self.message = message
        self.estimate = estimate
        self.changes = changes


def apply_changes(job: JobConfig, changes: list[Change]) -> JobConfig:
    """A new job with the changes applied (validated like any other job)."""
    data = job.model_dump()
    for change in changes:
        set_in(data, change.path, change.new)
    return JobConfig.model_validate(data)


# A step proposes the field values of one change for a job (given whether CUDA is
# there and the model's family), mildest first; an empty list: it does not apply.
Step = Callable[[JobConfig, bool, str], list[dict[str, Any]]]


def _checkpointing(job: JobConfig, cuda: bool, family: str) -> list[dict[str, Any]]:
    return [] if job.training.gradient_checkpointing else [{"training.gradient_checkpointing": True}]


def _accumulate(job: JobConfig, cuda: bool, family: str) -> list[dict[str, Any]]:
    batch, accumulation = job.training.batch_size, job.training.gradient_accumulation_steps
    return [{"training.batch_size": b, "training.gradient_accumulation_steps": accumulation * batch // b}
            for b in range(batch - 1, 0, -1) if batch % b == 0 and accumulation * batch // b <= 1024]


def _eight_bit_optimizer(job: JobConfig, cuda: bool, family: str) -> list[dict[str, Any]]:
    if not cuda or job.optimizer.optimizer != "AdamW":
        return []
    return [{"optimizer.optimizer": "AdamW8bit"}]


def _four_bit_base(job: JobConfig, cuda: bool, family: str) -> list[dict[str, Any]]:
    if not cuda or family != "text" or job.model.load_in_4bit:
        return []
    return [{"model.load_in_4bit": True, "model.load_in_8bit": False}]


def _lower_resolution(job: JobConfig, cuda: bool, family: str) -> list[dict[str, Any]]:
    if family == "text":
        return []
    start = (job.dataset.resolution - 1) // RESOLUTION_STEP * RESOLUTION_STEP
    return [{"dataset.resolution": r} for r in range(start, MIN_RESOLUTION - 1, -RESOLUTION_STEP)]


STEPS: tuple[tuple[Step, str], ...] = (
    (_checkpointing, "recomputes activations in the backward pass: about 20-30% slower"),
    (_accumulate, "same effective batch, more steps per optimizer update"),
    (_eight_bit_optimizer, "8-bit optimizer state (bitsandbytes)"),
    (_four_bit_base, "QLoRA: the frozen base in 4-bit NF4"),
    (_lower_resolution, "lower resolution: the LoRA learns less fine detail"),
)


def _with(job: JobConfig, values: dict[str, Any]) -> JobConfig:
    data = job.model_dump()
    for path, value in values.items():
        set_in(data, path, value)
    return JobConfig.model_validate(data)


def _plan(job: JobConfig, steps: tuple[int, ...], fits: Callable[[JobConfig], bool],
          cuda: bool, family: str) -> list[dict[str, Any]] | None:
    """Values for each chosen step (applied in order) that make the job fit: for steps
    with several options, the mildest option that still fits with the later steps'
    strongest; None when none does."""
    chosen: list[dict[str, Any]] = []
    current = job
    for i, index in enumerate(steps):
        options = STEPS[index][0](current, cuda, family)
        if not options:
            return None
        later = steps[i + 1:]
        for option in options:
            candidate = _with(current, option)
            strongest = candidate
            for j in later:
                later_options = STEPS[j][0](strongest, cuda, family)
                if not later_options:
                    break
                strongest = _with(strongest, later_options[-1])
            if fits(strongest):
                chosen.append(option)
                current = candidate
                break
        else:
            return None
    return chosen


def autofit(job: JobConfig, gpu_free_bytes: int, margin: float = DEFAULT_MARGIN, cuda: bool = True,
            spec: ModelSpec | None = None, **estimate_kwargs: Any) -> list[Change]:
    """The smallest set of changes after which the job's estimate, with `margin`, fits
    in `gpu_free_bytes`; among sets of one size, the one with the most preferred
    changes. [] when the job fits as it is. Raises DoesNotFit when nothing fits and
    ModelInfoError when the model cannot be read.

    cuda: whether bitsandbytes can be used (8-bit optimizer, 4-bit base)."""
    spec = model_spec(job) if spec is None else spec

    def total(j: JobConfig) -> int:
        return estimate(j, None, spec, margin, **estimate_kwargs).total

    def fits(j: JobConfig) -> bool:
        return total(j) <= gpu_free_bytes

    if fits(job):
        return []
    usable = tuple(i for i, (step, _) in enumerate(STEPS) if step(job, cuda, spec.family))
    for size in range(1, len(usable) + 1):
        for steps in itertools.combinations(usable, size):  # preference order within a size
            plan = _plan(job, steps, fits, cuda, spec.family)
            if plan is not None:
                return _describe(job, steps, plan, total)
    strongest: list[dict[str, Any]] = []
    everything = job
    for index in usable:
        strongest.append(STEPS[index][0](everything, cuda, spec.family)[-1])
        everything = _with(everything, strongest[-1])
    best = estimate(everything, None, spec, margin, **estimate_kwargs)
    raise DoesNotFit(
        f"Even with every change auto-fit can make, the job needs {gib(best.total)} "
        f"(with a {margin:.0%} margin) and the card has {gib(gpu_free_bytes)} free.",
        best, _describe(job, usable, strongest, total))


def _describe(job: JobConfig, steps: tuple[int, ...], plan: list[dict[str, Any]],
              total: Callable[[JobConfig], int]) -> list[Change]:
    """One Change per changed field, with the saving of the step it belongs to
    (a step changing two fields, like batch and accumulation, credits the first)."""
    changes: list[Change] = []
    current = job
    for values, reason in zip(plan, (STEPS[i][1] for i in steps)):
        after = _with(current, values)
        saving = total(current) - total(after)
        for k, (path, new) in enumerate(values.items()):
            old = get_value(current, path)
            if old != new:
                changes.append(Change(path, old, new, saving if k == 0 else 0, reason))
        current = after
    return changes


def _free_bytes(gpu: GpuInfo | GpuFacts) -> int | None:
    if isinstance(gpu, GpuInfo):
        return gpu.vram_free
    return gpu.total_vram_bytes if gpu.cuda_available and gpu.total_vram_bytes else None


def fit_findings(job: JobConfig, gpu: GpuInfo | GpuFacts | None, spec: ModelSpec | None = None,
                 margin: float = DEFAULT_MARGIN, base_dir: str | None = None) -> list[Finding]:
    """A warning when the job's estimated VRAM exceeds the card, naming the auto-fit
    changes. Nothing when there is no CUDA card or the model cannot be read (the
    validator reports model problems). base_dir: the preset's folder, for relative
    model paths."""
    if gpu is None:
        return []
    free = _free_bytes(gpu)
    if free is None:
        return []
    try:
        spec = model_spec(job, base_dir) if spec is None else spec
        est = estimate(job, gpu, spec, margin)
    except ModelInfoError:
        return []
    if est.total <= free:
        return []
    name = gpu.name or "the GPU"
    message = (f"The run needs about {gib(est.total)} of VRAM (with a {margin:.0%} margin); "
               f"{name} has {gib(free)} {'free' if isinstance(gpu, GpuInfo) else 'in all'}.")
    try:
        changes = autofit(job, free, margin, cuda=True, spec=spec)
    except DoesNotFit as exc:
        return [Finding("", "warning", message + " " + exc.message,
                        "Pick a smaller model, a lower rank, a shorter max sequence length or a "
                        "lower resolution, or train on a card with more memory.", "vram-fit")]
    hint = "Auto-fit proposes: " + "; ".join(
        f"{c.path} = {c.new!r}" + (f" (saves {gib(c.saving)})" if c.saving else "") for c in changes) + "."
    return [Finding(changes[0].path if changes else "", "warning", message, hint, "vram-fit")]
