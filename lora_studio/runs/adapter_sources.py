"""What a path the user gives the playground holds, read from names alone (no torch):
a PEFT folder, a run's checkpoint, a run folder (its ``final/``), or one
``.safetensors`` file (PEFT, kohya or diffusers keys). Both the window (to list a run's
adapters) and the playground process (to load one) use it.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import HintedError
from .exports import IMAGE_ADAPTER, TEXT_ADAPTER
from .layout import RunDir

PEFT_CONFIG = "adapter_config.json"
CHECKPOINT_WEIGHTS = "trainable.safetensors"
# A schedule-free run's checkpoint also keeps the averaged weights, the ones to use.
CHECKPOINT_EVALUATED = "evaluated.safetensors"
COMPLETE = "COMPLETE"   # engine/core/checkpoint.py writes it last


@dataclass(frozen=True)
class AdapterSource:
    kind: str             # "peft" (folder), "checkpoint", "file"
    weights: Path         # the .safetensors to read
    job_toml: Path | None  # the run's job.toml, for a checkpoint or a run's final/

    @property
    def label(self) -> str:
        return self.weights.parent.name if self.kind != "file" else self.weights.stem


def _run_of(folder: Path) -> Path | None:
    """job.toml of the run that holds ``folder`` (final/ or checkpoints/step-N/)."""
    for parent in (folder.parent, folder.parent.parent):
        if (parent / "job.toml").is_file():
            return parent / "job.toml"
    return None


def adapter_source(path: str | Path) -> AdapterSource:
    """HintedError('not_adapter' / 'missing') naming the path when it holds none."""
    path = Path(path)
    if not path.exists():
        raise HintedError("missing", f"{path}: no such file or folder.",
                          "Pick a run's final/ folder, one of its checkpoints, a PEFT adapter "
                          "folder or a LoRA .safetensors file.")
    if path.is_file():
        if path.suffix.lower() != ".safetensors":
            raise HintedError("not_adapter", f"{path} is not a .safetensors file.",
                              "LoRA files are read from .safetensors only (never pickles).")
        return AdapterSource("file", path, None)
    if (path / "job.toml").is_file() and (path / "final").is_dir():
        return adapter_source(path / "final")
    if (path / PEFT_CONFIG).is_file() and (path / TEXT_ADAPTER).is_file():
        return AdapterSource("peft", path / TEXT_ADAPTER, _run_of(path))
    if (path / IMAGE_ADAPTER).is_file():
        return AdapterSource("checkpoint", path / IMAGE_ADAPTER, _run_of(path))
    if (path / CHECKPOINT_WEIGHTS).is_file():
        if not (path / COMPLETE).exists():
            raise HintedError("not_adapter", f"{path} is an incomplete checkpoint (no {COMPLETE} "
                                             "marker): it was being written when the run stopped.",
                              "Pick an earlier checkpoint of the run.")
        weights = path / CHECKPOINT_EVALUATED
        if not weights.is_file():
            weights = path / CHECKPOINT_WEIGHTS
        return AdapterSource("checkpoint", weights, _run_of(path))
    raise HintedError("not_adapter", f"{path} holds no adapter ({PEFT_CONFIG} + {TEXT_ADAPTER}, "
                                     f"{IMAGE_ADAPTER} or {CHECKPOINT_WEIGHTS}).",
                      "Pick a run's final/ folder, one of its checkpoints/step-N folders, a PEFT "
                      "adapter folder or a LoRA .safetensors file.")


def run_adapters(run_dir: str | Path) -> list[tuple[str, Path]]:
    """(label, folder) of each adapter a run left: its final/ and every complete
    checkpoint, oldest first."""
    run = RunDir(Path(run_dir))
    found: list[tuple[str, Path]] = []
    if run.checkpoints.is_dir():
        steps = [p for p in run.checkpoints.iterdir()
                 if p.is_dir() and p.name.startswith("step-") and (p / COMPLETE).exists()]
        for folder in sorted(steps, key=lambda p: p.name):
            found.append((f"{run.root.name} · {folder.name}", folder))
    for name in (TEXT_ADAPTER, IMAGE_ADAPTER):
        if (run.final / name).is_file():
            found.append((f"{run.root.name} · final", run.final))
            break
    return found
