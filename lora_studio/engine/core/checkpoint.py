"""Resumable training state, one folder per checkpoint:

    checkpoints/step-000120/
      trainable.safetensors   the trained (adapter) tensors
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
import random
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file

from ...fsutil import atomic_write_bytes, atomic_write_text
from ...runs.events import Emit, event
from .control import EngineError
from .safetensors_io import atomic_save_safetensors

COMPLETE = "COMPLETE"


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
                    scheduler, state: dict) -> Path:
    """Write a complete checkpoint for ``step``; call it on the main process only."""
    folder = checkpoint_dir(root, step)
    if folder.exists():  # a resumed run passing the same step again
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    atomic_save_safetensors(trainable, folder / "trainable.safetensors", {"step": str(step)})
    atomic_write_bytes(folder / "optimizer.pt", _torch_bytes(optimizer.state_dict()))
    atomic_write_bytes(folder / "scheduler.pt", _torch_bytes(scheduler.state_dict()))
    atomic_write_bytes(folder / "rng.pt", _torch_bytes(capture_rng()))
    atomic_write_text(folder / "state.json", json.dumps({"step": step, **state}, indent=2))
    atomic_write_text(folder / COMPLETE, "")
    return folder


def save_checkpoint_in_step(accelerator, emit: Emit, root: Path, step: int, *,
                            trainable: Callable[[], dict[str, torch.Tensor]], optimizer,
                            scheduler, state: dict) -> Path | None:
    """save_checkpoint, called by every process of a run: all wait for each other, the
    main process gathers ``trainable``, writes the checkpoint and announces it, and all
    wait again, so no process runs ahead (or exits) while it is being written. The
    folder on the main process, None on the others."""
    accelerator.wait_for_everyone()
    folder = None
    if accelerator.is_main_process:
        folder = save_checkpoint(root, step, trainable=trainable(), optimizer=optimizer,
                                 scheduler=scheduler, state=state)
        emit(event("checkpoint", step=step, path=str(folder)))
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


def load_checkpoint(path: Path) -> Checkpoint:
    path = Path(path)
    if not (path / COMPLETE).exists():
        raise EngineError("config", f"{path} is not a complete checkpoint (no {COMPLETE} marker).",
                          "Resume from another checkpoint folder, or from the run folder to take "
                          "its latest complete one.")
    try:
        state = json.loads((path / "state.json").read_text(encoding="utf-8"))
        return Checkpoint(
            path=path, step=int(state["step"]), trainable=load_file(path / "trainable.safetensors"),
            optimizer=torch.load(path / "optimizer.pt", weights_only=True),
            scheduler=torch.load(path / "scheduler.pt", weights_only=True),
            rng=torch.load(path / "rng.pt", weights_only=True), state=state)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise EngineError("io", f"Cannot read checkpoint {path}: {exc}",
                          "Resume from an earlier checkpoint folder.") from exc


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
