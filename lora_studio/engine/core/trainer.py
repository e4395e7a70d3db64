"""One training run of any family: the family prepares its Trainee (family.py), the
core does the rest in the same order for every family — optimizer and schedule,
resume, the loop, checkpoints, the final adapter and the ``finished`` event."""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ...config.schema import JobConfig
from ...runs.events import Emit, event
from ...runs.layout import RunDir
from .checkpoint import (adapter_weights, checkpoint_dir, load_resumable, read_best,
                         read_best_scores, restore_rng, save_checkpoint_in_step, write_best)
from .control import EngineError, Phases, StopRequest
from .family import Exported, RunContext, Trainee
from .item_losses import STATE_KEY as ITEM_LOSS_STATE
from .item_losses import ItemLossMeter
from .loop import LoopHooks, LoopOutcome, LoopSpec, make_accelerator, train_loop
from .optim import at_training_point, build_optimizer, build_scheduler, evaluation_weights
from .order import shard, steps_per_epoch, total_steps

Prepare = Callable[[JobConfig, RunContext], Trainee]


@dataclass
class RunResult:
    """What a run leaves in this process: the outcome, the family's trainee (its model
    as trained, for callers that compare it with the export) and the exports."""
    outcome: LoopOutcome
    trainee: Trainee
    exports: list[Exported] = field(default_factory=list)


def _no_emit(ev: dict) -> None:
    pass


def train(job: JobConfig, run: RunDir, emit: Emit, stop: StopRequest | Callable[[], bool],
          prepare: Prepare, resume: Path | None = None) -> RunResult:
    """Train ``job`` into ``run`` with the family whose ``prepare`` is given. Until the
    first step a stop raises control.Cancelled at once (``stop.interrupting``); from
    then on the loop polls it once per step."""
    from accelerate.utils import set_seed

    tr = job.training
    if tr.mixed_precision == "fp16" and not torch.cuda.is_available():
        raise EngineError("config", "fp16 mixed precision needs an NVIDIA GPU; none was found.",
                          "Set training.mixed_precision to 'no' (or 'bf16' on a recent CPU).")
    started_at = time.time()
    # Accumulation is the loop's own: accelerate's would divide the loss a second time.
    accelerator = make_accelerator(tr.mixed_precision)
    set_seed(tr.seed)
    main = accelerator.is_main_process
    emit_main = emit if main else _no_emit
    n_proc, rank = accelerator.num_processes, accelerator.process_index
    stop = stop if isinstance(stop, StopRequest) else StopRequest(stop)
    phase = Phases(emit_main, stop)
    with stop.interrupting():
        trainee = prepare(job, RunContext(run, emit_main, accelerator.device, main, n_proc, phase))
        phase("preparing the optimizer")
        checkpoint = load_resumable(Path(resume), emit_main) if resume else None
        if checkpoint:
            trainee.load_trainable_state(checkpoint.trainable)
        params = [p for group in trainee.param_groups for p in group["params"]]
        optimizer = build_optimizer(trainee.param_groups, job.optimizer,
                                    accelerator.device.type == "cuda")

        def epoch_batches(epoch: int) -> list:
            return shard(trainee.epoch_batches(epoch), n_proc, rank)

        gas = tr.gradient_accumulation_steps
        per_epoch = steps_per_epoch(len(epoch_batches(0)), gas)
        total = total_steps(tr.max_steps, tr.epochs, per_epoch)
        scheduler = build_scheduler(optimizer, job.optimizer, total)
        model, optimizer = accelerator.prepare(trainee.model, optimizer)
        if checkpoint:
            optimizer.load_state_dict(checkpoint.optimizer)
            scheduler.load_state_dict(checkpoint.scheduler)
            if checkpoint.state.get("dataset_size") != trainee.dataset_size:
                emit_main(event("log", level="warning",
                                message=f"The dataset has {trainee.dataset_size} items now, "
                                        f"{checkpoint.state.get('dataset_size')} when the "
                                        "checkpoint was written: the data order differs from "
                                        "the original run."))
            restore_rng(checkpoint.rng)
    item_losses: ItemLossMeter | None = getattr(trainee, "item_losses", None)
    if checkpoint and item_losses is not None and \
            not item_losses.restore(checkpoint.state.get(ITEM_LOSS_STATE, {}), main):
        emit_main(event("log", level="info", message="The checkpoint holds no per-item losses "
                                                     "for this dataset: they count from here."))
    start = checkpoint.step if checkpoint else 0
    emit_main(event("started", family=trainee.family, total_steps=total, start_step=start,
                    dataset_size=trainee.dataset_size,
                    trainable_params=sum(p.numel() for p in params),
                    device=str(accelerator.device), processes=n_proc, run_dir=str(run.root),
                    resumed_from=str(checkpoint.path) if checkpoint else None,
                    **trainee.started_facts))
    emit_main(event("phase", phase="first step"))

    def evaluated_state() -> dict[str, torch.Tensor]:
        with evaluation_weights(optimizer):
            return {k: v.detach().clone() for k, v in trainee.trainable_state().items()}

    def save(step: int) -> Path | None:
        kept = {} if item_losses is None else \
            {ITEM_LOSS_STATE: item_losses.save(accelerator, run.root, step)}
        # A schedule-free run resumes from y but is evaluated and exported at x: both are kept.
        return save_checkpoint_in_step(
            accelerator, emit, run.checkpoints, step, trainable=trainee.trainable_state,
            evaluated=evaluated_state if at_training_point(optimizer) else None,
            optimizer=optimizer, scheduler=scheduler,
            state={"family": trainee.family, "epoch": step // per_epoch,
                   "step_in_epoch": step % per_epoch, "total_steps": total,
                   "dataset_size": trainee.dataset_size, "seed": tr.seed, **kept},
            keep_last=job.output.save_last_n)

    def sample(step: int) -> None:
        if main:
            with accelerator.autocast():
                trainee.sample(step)
        accelerator.wait_for_everyone()

    # A family may write each saved epoch's adapter as its own file (image: kohya's
    # name-000001.safetensors); one without write_epoch has only checkpoints.
    write_epoch = getattr(trainee, "write_epoch", None)

    def save_epoch(epoch: int, step: int) -> None:
        if main:
            for done in write_epoch(epoch, step, per_epoch, started_at):
                emit(event("log", level="info", message=f"Epoch {epoch}: {done.path} "
                                                        f"(SHA-256 {done.sha256})"))
        accelerator.wait_for_everyone()

    eval_batches = list(getattr(trainee, "eval_batches", lambda: [])())
    # A family that measures only the loss names it (the setting is then not used).
    metric = getattr(trainee, "eval_metric", tr.early_stopping_metric)

    def evaluate(step: int) -> dict:
        """The mean loss over the held-out items and the family's generation metrics
        (eval_generate), every process on all of them, so that all stop alike."""
        trainee.set_train(False)
        try:
            with torch.no_grad():
                total_loss = sum(float(trainee.eval_loss_sum(model, b)) for b in eval_batches)
            scores = {"loss": total_loss / max(1, sum(trainee.eval_items(b)
                                                      for b in eval_batches))}
            generate = getattr(trainee, "eval_generate", None)
            if generate is not None:
                with accelerator.autocast():
                    scores.update(generate(step))
        finally:
            trainee.set_train(True)
        return scores

    def mark_best(step: int, value: float, scores: dict) -> None:
        save(step)
        if main:
            write_best(run.checkpoints, step, value, metric, scores)

    spec = LoopSpec(total_steps=total, steps_per_epoch=per_epoch, gradient_accumulation_steps=gas,
                    max_grad_norm=job.optimizer.max_grad_norm,
                    save_every_n_steps=job.output.save_every_n_steps,
                    sample_every_n_steps=job.output.sample_every_n_steps if
                    job.output.sample_prompts else 0,
                    save_every_n_epochs=job.output.save_every_n_epochs,
                    sample_every_n_epochs=job.output.sample_every_n_epochs if
                    job.output.sample_prompts else 0,
                    mixed_precision=tr.mixed_precision,
                    eval_every_n_steps=job.output.eval_every_n_steps,
                    early_stopping_patience=tr.early_stopping_patience,
                    early_stopping_metric=metric)
    hooks = LoopHooks(epoch_batches=epoch_batches, batch_items=trainee.batch_items,
                      loss_sum=lambda batch: trainee.loss_sum(model, batch),
                      save_checkpoint=save, sample=sample,
                      save_epoch=save_epoch if write_epoch else None,
                      evaluate=evaluate if eval_batches else None, mark_best=mark_best)
    best = read_best(run.checkpoints, start, metric) if checkpoint else None
    trainee.set_train(True)
    try:
        outcome = train_loop(accelerator, model, optimizer, scheduler, params, spec, hooks,
                             emit_main, stop, start_step=start, best=best,
                             best_scores=read_best_scores(run.checkpoints) if best else None)
    finally:
        trainee.set_train(False)
    result = RunResult(outcome, trainee)
    if outcome.status == "cancelled":
        emit_main(event("finished", status="cancelled", step=outcome.step,
                        checkpoint=str(outcome.checkpoint) if outcome.checkpoint else None))
        return result
    if outcome.step > start:  # a resumed run that had nothing left keeps its checkpoint as is
        save(outcome.step)
    best = outcome.best
    if best is not None and best[0] != outcome.step:
        # final/ and the exports hold the best evaluated weights; the last step's stay in
        # their checkpoint
        trainee.load_trainable_state(adapter_weights(checkpoint_dir(run.checkpoints, best[0])))
        emit_main(event("log", level="info",
                        message=f"The adapter exported is the best evaluated one: step {best[0]} "
                                f"({metric.replace('_', ' ')} {best[1]:.4f}); the weights of step "
                                f"{outcome.step} are in checkpoints/step-{outcome.step:06d}."))
    if main:
        result.exports = trainee.write_final(outcome.step, per_epoch, started_at)
        for done in result.exports:
            emit(event("log", level="info", message=f"Exported {done.format} {done.path} "
                                                    f"(SHA-256 {done.sha256})"))
    extra = {} if best is None else {
        "best_step": best[0], "best_metric": metric, "early_stopped": outcome.early_stopped,
        **{("best_eval_loss" if k == "loss" else f"best_{k}"): v
           for k, v in outcome.best_scores.items()}}
    emit_main(event("finished", status="completed", step=outcome.step, final=str(run.final),
                    files=[str(d.path) for d in result.exports],
                    sha256={str(d.path): d.sha256 for d in result.exports}, **extra))
    return result
