"""Logging other tools read (output.log_with): TensorBoard event files in the run
folder, and Weights & Biases. Off by default. Both follow the engine's own events, so
they show what the window plots: loss and learning rate per step, eval loss, samples.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ..config.jobfile import job_to_dict
from ..config.schema import JobConfig
from ..runs.events import Emit, event
from .core.control import EngineError

LOGGING_EXTRA = 'pip install "lora-studio[logging]"'


class TensorBoard:
    def __init__(self, folder: Path):
        try:
            from tensorboardX import SummaryWriter
        except ImportError:
            raise EngineError("config", "output.log_with asks for TensorBoard, but tensorboardX "
                                        "is not installed.",
                              f"Run {LOGGING_EXTRA}, or set output.log_with to none.") from None
        self.writer = SummaryWriter(str(folder))

    def scalars(self, values: dict[str, float], step: int) -> None:
        for name, value in values.items():
            self.writer.add_scalar(name, value, step)

    def text(self, name: str, value: str, step: int) -> None:
        self.writer.add_text(name, value, step)

    def image(self, name: str, path: Path, step: int) -> None:
        import numpy as np
        from PIL import Image
        with Image.open(path) as img:
            self.writer.add_image(name, np.asarray(img.convert("RGB")), step, dataformats="HWC")

    def close(self) -> None:
        self.writer.close()


class WandB:
    def __init__(self, job: JobConfig, run_dir: Path):
        import wandb  # checked by open_trackers
        self.wandb = wandb
        self.run = wandb.init(project="lora-studio", name=run_dir.name, dir=str(run_dir),
                              config=job_to_dict(job), id=run_dir.name, resume="allow")

    def scalars(self, values: dict[str, float], step: int) -> None:
        self.run.log(values, step=step)

    def text(self, name: str, value: str, step: int) -> None:
        self.run.log({name: value}, step=step)

    def image(self, name: str, path: Path, step: int) -> None:
        self.run.log({name: self.wandb.Image(str(path))}, step=step)

    def close(self) -> None:
        self.run.finish()


def _forward(tracker, ev: dict) -> None:
    kind, step = ev["type"], ev.get("step", 0)
    if kind == "progress":
        tracker.scalars({"train/loss": ev["loss"], "train/lr": ev["lr"]}, step)
    elif kind == "eval":
        tracker.scalars({f"eval/{k}": v for k, v in ev.items()
                         if k not in ("type", "time", "step") and isinstance(v, (int, float))},
                        step)
    elif kind == "sample" and ev.get("kind") == "text":
        tracker.text("samples", "\n\n".join(f"**{s['prompt']}**\n\n{s['text']}"
                                            for s in ev.get("samples", [])), step)
    elif kind == "sample" and ev.get("path"):
        tracker.image(f"samples/{ev.get('index', 0)}", Path(ev["path"]), step)
    elif kind in ("finished", "error"):
        tracker.close()


def open_trackers(job: JobConfig, run_dir: Path, emit: Emit) -> list:
    """The trackers output.log_with asks for. TensorBoard missing is a config error (it was
    asked for and can be installed); W&B not installed or not logged in is a warning."""
    wanted = job.output.log_with
    trackers: list = []
    if wanted in ("tensorboard", "both"):
        trackers.append(TensorBoard(run_dir / "tensorboard"))
        emit(event("log", level="info", message=f"TensorBoard: tensorboard --logdir "
                                                f"\"{run_dir / 'tensorboard'}\""))
    if wanted in ("wandb", "both"):
        try:
            trackers.append(WandB(job, run_dir))
        except ImportError:
            emit(event("log", level="warning", message="output.log_with asks for W&B, but wandb "
                                                       "is not installed: pip install wandb."))
        except Exception as exc:  # not logged in, offline, a bad API key: the run goes on
            emit(event("log", level="warning", message=f"W&B did not start ({exc}); run "
                                                       "'wandb login', or log offline with "
                                                       "WANDB_MODE=offline. Training goes on."))
    return trackers


def tracked(emit: Emit, trackers: list) -> Callable[[dict], None]:
    """``emit`` that also forwards each event to the trackers; a tracker that fails is
    dropped with a warning instead of ending the run."""
    if not trackers:
        return emit

    def both(ev: dict) -> None:
        emit(ev)
        for tracker in list(trackers):
            try:
                _forward(tracker, ev)
            except Exception as exc:
                trackers.remove(tracker)
                emit(event("log", level="warning", message=f"{type(tracker).__name__} logging "
                                                           f"stopped: {exc}"))
    return both
