"""Resumable training state, one folder per checkpoint:

    checkpoints/step-000120/
      trainable.safetensors   the trained (adapter) tensors, the point training goes on from
      evaluated.safetensors   schedule-free only: the averaged weights, the ones evaluated
                              and exported (absent when they are trainable.safetensors)
      optimizer.pt            optimizer state_dict
      scheduler.pt            LR scheduler state_dict
      rng.pt                  python / numpy / torch (CPU and CUDA) random states
      state.json              step, data position and whatever the family adds
      COMPLETE                written last: a folder without it is ignored

Everything is loaded with ``torch.load(weights_only=True)``: a checkpoint never
runs code.
"""
from __future__ import annotations

import json
import os
import random
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file

from ...fsutil import atomic_write_bytes, atomic_write_text, temp_dir_beside
from ...runs.events import Emit, event
from .control import EngineError
from .safetensors_io import atomic_save_safetensors

COMPLETE = "COMPLETE"
TRAINABLE = "trainable.safetensors"
EVALUATED = "evaluated.safetensors"


def checkpoint_dir(root: Path, step: int) -> Path:
    return Path(root) / f"step-{step:06d}"


def capture_rng() -> dict:
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]),
                  float(np_state[4])],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict) -> None:
    random.setstate(state["python"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _torch_bytes(obj: Any) -> bytes:
    import io
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def save_checkpoint(root: Path, step: int, *, trainable: dict[str, torch.Tensor], optimizer,
                    scheduler, state: dict,
                    evaluated: dict[str, torch.Tensor] | None = None) -> Path:
    """Write a complete checkpoint for ``step``; call it on the main process only. It is
    built in a hidden folder and renamed into place when complete, so a checkpoint of
    the same step already there (a resumed run passing it again) stays whole until
    its successor is. ``evaluated``: the weights to use, where they are not
    ``trainable`` (a schedule-free optimizer in training mode)."""
    folder = checkpoint_dir(root, step)
    folder.parent.mkdir(parents=True, exist_ok=True)
    building = temp_dir_beside(folder)
    replaced = folder.with_name(f".{folder.name}.replaced")
    try:
        atomic_save_safetensors(trainable, building / TRAINABLE, {"step": str(step)})
        if evaluated is not None:
            atomic_save_safetensors(evaluated, building / EVALUATED, {"step": str(step)})
        atomic_write_bytes(building / "optimizer.pt", _torch_bytes(optimizer.state_dict()))
        atomic_write_bytes(building / "scheduler.pt", _torch_bytes(scheduler.state_dict()))
        atomic_write_bytes(building / "rng.pt", _torch_bytes(capture_rng()))
        atomic_write_text(building / "state.json", json.dumps({"step": step, **state}, indent=2))
        atomic_write_text(building / COMPLETE, "")
        if folder.exists():
            shutil.rmtree(replaced, ignore_errors=True)
            os.replace(folder, replaced)
        os.replace(building, folder)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise
    shutil.rmtree(replaced, ignore_errors=True)
    return folder


def save_checkpoint_in_step(accelerator, emit: Emit, root: Path, step: int, *,
                            trainable: Callable[[], dict[str, torch.Tensor]], optimizer,
                            scheduler, state: dict, keep_last: int = 0,
                            evaluated: Callable[[], dict[str, torch.Tensor]] | None = None
                            ) -> Path | None:
    """save_checkpoint, called by every process of a run: all wait for each other, the
    main process gathers ``trainable`` (and ``evaluated``), writes the checkpoint and
    announces it, then prunes to the last ``keep_last`` (prune_checkpoints), and all
    wait again, so no process runs ahead (or exits) while it is being written. The
    folder on the main process, None on the others."""
    accelerator.wait_for_everyone()
    folder = None
    if accelerator.is_main_process:
        folder = save_checkpoint(root, step, trainable=trainable(), optimizer=optimizer,
                                 scheduler=scheduler, state=state,
                                 evaluated=evaluated() if evaluated else None)
        emit(event("checkpoint", step=step, path=str(folder)))
        removed = prune_checkpoints(root, keep_last, step)
        if removed:
            emit(event("log", level="info", message=f"Removed {', '.join(p.name for p in removed)}"
                                                    f" (keeping the last {keep_last} checkpoints)."))
    accelerator.wait_for_everyone()
    return folder


@dataclass
class Checkpoint:
    path: Path
    step: int
    trainable: dict[str, torch.Tensor]
    optimizer: dict
    scheduler: dict
    rng: dict
    state: dict


def _read(file: Path, read: Callable[[Path], Any]) -> Any:
    try:
        return read(file)
    except Exception as exc:  # truncated or damaged: safetensors, pickle, json, OS errors
        raise EngineError("io", f"Cannot read {file}: {type(exc).__name__}: {exc}",
                          "The checkpoint is damaged; resume from an earlier checkpoint "
                          "folder.") from exc


def load_checkpoint(path: Path) -> Checkpoint:
    """Every file of a complete checkpoint; EngineError('io') naming the file that cannot
    be read."""
    path = Path(path)
    if not (path / COMPLETE).exists():
        raise EngineError("config", f"{path} is not a complete checkpoint (no {COMPLETE} marker).",
                          "Resume from another checkpoint folder, or from the run folder to take "
                          "its latest complete one.")

    def torch_file(file: Path) -> Any:
        return torch.load(file, weights_only=True)

    state = _read(path / "state.json", lambda f: json.loads(f.read_text(encoding="utf-8")))
    if not isinstance(state, dict) or not isinstance(state.get("step"), int):
        raise EngineError("io", f"Cannot read {path / 'state.json'}: it has no step number.",
                          "The checkpoint is damaged; resume from an earlier checkpoint folder.")
    return Checkpoint(path=path, step=state["step"],
                      trainable=_read(path / TRAINABLE, load_file),
                      optimizer=_read(path / "optimizer.pt", torch_file),
                      scheduler=_read(path / "scheduler.pt", torch_file),
                      rng=_read(path / "rng.pt", torch_file), state=state)


def adapter_weights(path: Path) -> dict[str, torch.Tensor]:
    """The weights of a complete checkpoint to use and export: the evaluated ones where
    they differ from the training point."""
    path = Path(path)
    file = path / EVALUATED if (path / EVALUATED).is_file() else path / TRAINABLE
    return _read(file, load_file)


def complete_checkpoints(folder: Path) -> list[Path]:
    """The complete checkpoints of a run's checkpoints/ folder, newest first."""
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if p.is_dir() and re.fullmatch(r"step-\d+", p.name)
             and (p / COMPLETE).exists()]
    return sorted(found, key=lambda p: int(p.name[5:]), reverse=True)


def _best_step(root: Path) -> int | None:
    """The step BEST.json names, whatever it was judged by."""
    try:
        return int(json.loads((Path(root) / BEST).read_text(encoding="utf-8"))["step"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def prune_checkpoints(root: Path, keep: int, newest: int) -> list[Path]:
    """Delete the complete checkpoints at or before step ``newest`` but the ``keep``
    latest of them and the best evaluated one; 0 keeps all. Called once ``newest`` is
    complete, so the last complete checkpoint is never deleted before its successor is.
    Later ones (left by a run resumed from an earlier checkpoint) stay until the resumed
    run replaces them. A folder is renamed away before it is deleted, so one that cannot
    be deleted whole (a file open on Windows) is never taken for a checkpoint. Returns
    the folders deleted."""
    if keep <= 0:
        return []
    best = _best_step(root)
    earlier = [p for p in complete_checkpoints(root) if int(p.name[5:]) <= newest]
    removed = []
    for folder in earlier[keep:]:
        if int(folder.name[5:]) == best:
            continue
        doomed = folder.with_name(f".{folder.name}.pruned")
        shutil.rmtree(doomed, ignore_errors=True)
        try:
            os.replace(folder, doomed)
        except OSError:
            continue   # in use: tried again after the next save
        shutil.rmtree(doomed, ignore_errors=True)
        removed.append(folder)
    return removed


def load_resumable(path: Path, emit: Emit) -> Checkpoint:
    """The checkpoint at ``path`` or, when it is damaged, the newest complete one before
    it in the same folder, with a warning naming what could not be read."""
    try:
        return load_checkpoint(path)
    except EngineError as exc:
        if exc.kind != "io":
            raise
        damaged = exc
    step = int(path.name[5:]) if re.fullmatch(r"step-\d+", path.name) else None
    for earlier in complete_checkpoints(path.parent):
        if step is None or int(earlier.name[5:]) >= step:
            continue
        try:
            checkpoint = load_checkpoint(earlier)
        except EngineError as exc:
            if exc.kind != "io":
                raise
            emit(event("log", level="warning", message=exc.message))
            continue
        emit(event("log", level="warning",
                   message=f"{damaged.message}\nResuming from the earlier checkpoint "
                           f"{earlier.name} instead."))
        return checkpoint
    raise damaged


def resolve_resume(path: Path) -> Path:
    """A checkpoint folder, or the latest complete one of a run folder."""
    from ...runs.layout import RunDir
    path = Path(path)
    if (path / COMPLETE).exists():
        return path
    latest = RunDir(path).latest_checkpoint()
    if latest is None:
        raise EngineError("config", f"No complete checkpoint in {path}.",
                          "Pick a run that saved a checkpoint (save_every_n_steps, or a cancelled run).")
    return latest


BEST = "BEST.json"  # in checkpoints/: the step, metric and value of the best evaluation


def write_best(root: Path, step: int, value: float, metric: str = "eval_loss",
               scores: dict | None = None) -> None:
    """``scores``: every figure of that evaluation, which a resumed run reports again."""
    atomic_write_text(Path(root) / BEST, json.dumps({"step": step, "metric": metric,
                                                     "value": value,
                                                     "scores": scores or {}}) + "\n")


def read_best_scores(root: Path) -> dict:
    try:
        scores = json.loads((Path(root) / BEST).read_text(encoding="utf-8"))["scores"]
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    return scores if isinstance(scores, dict) else {}


def read_best(root: Path, before: int | None = None,
              metric: str = "eval_loss") -> tuple[int, float] | None:
    """(step, metric value) of the run's best evaluation, if it was at or before ``before``
    (a resume from an earlier checkpoint forgets a best it has not reached yet) and was
    judged by ``metric`` (a resume with another early-stopping metric starts afresh)."""
    try:
        best = json.loads((Path(root) / BEST).read_text(encoding="utf-8"))
        step, value = int(best["step"]), float(best["value"])
        if best["metric"] != metric:
            return None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return (step, value) if before is None or step <= before else None
