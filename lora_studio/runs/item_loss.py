"""Each training item's loss in a run: ``item_loss.json`` in the run folder, written by
the engine at every checkpoint and at the end, read by the Dataset tab to show and sort
the images (or text records) the model learned worst. No torch.

An item is an image, keyed by its path relative to the dataset folder ('4_cat/a.png'),
or a text record, keyed by its file relative to the dataset folder and the line its
record starts on ('chat.jsonl:12'). Its loss is the mean over the times it was seen of
the loss training optimised for it: an image's denoising loss (min-SNR weighted when
the job weights it, times the prior loss weight for a regularisation image), a record's
mean cross-entropy over its label tokens.
"""
from __future__ import annotations

import json
import math
import tomllib
from dataclasses import dataclass
from pathlib import Path

from ..errors import HintedError
from ..fsutil import atomic_write_text
from .layout import list_runs

ITEM_LOSS_FILE = "item_loss.json"
FORMAT = 1


class ItemLossError(HintedError):
    pass


@dataclass(frozen=True)
class ItemLoss:
    loss: float    # mean over the times it was seen
    seen: int      # how many times


@dataclass(frozen=True)
class ItemLosses:
    run: Path
    kind: str                     # "image" or "text"
    root: Path                    # the dataset folder the keys are relative to
    step: int                     # the step they were written after
    items: dict[str, ItemLoss]

    def for_path(self, path: str | Path) -> ItemLoss | None:
        """The loss of the image at ``path`` (a path under ``root``)."""
        return self.items.get(item_key(path, self.root))

    def for_record(self, file: str | Path, line: int) -> ItemLoss | None:
        return self.items.get(record_key(file, line, self.root))


def item_key(path: str | Path, root: str | Path) -> str:
    """``path`` relative to ``root`` with forward slashes (the same key on Windows and
    Linux); the whole path when it lies outside ``root`` (a mixed-in text file)."""
    path, root = Path(path), Path(root)
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return path.resolve().as_posix()


def record_key(file: str | Path, line: int, root: str | Path) -> str:
    return f"{item_key(file, root)}:{line}"


def dataset_root(path: str | Path) -> Path:
    """The folder keys are relative to: the dataset folder, or a dataset file's folder."""
    path = Path(path)
    return (path if path.is_dir() else path.parent).resolve()


def merge(keys: list[str], sums: list[float], seen: list[int]) -> dict[str, ItemLoss]:
    """Per-index sums and counts as per-key means; a key that names several indices (a
    record a text mix repeats) adds them up. Items never seen are left out."""
    total: dict[str, list] = {}
    for key, s, n in zip(keys, sums, seen):
        if n:
            acc = total.setdefault(key, [0.0, 0])
            acc[0] += s
            acc[1] += n
    return {key: ItemLoss(s / n, n) for key, (s, n) in total.items()}


def write_item_losses(run_root: str | Path, kind: str, root: str | Path, step: int,
                      items: dict[str, ItemLoss]) -> Path:
    path = Path(run_root) / ITEM_LOSS_FILE
    body = {"format": FORMAT, "kind": kind, "root": str(root), "step": step,
            "items": {k: {"loss": round(v.loss, 7), "seen": v.seen} for k, v in items.items()
                      if math.isfinite(v.loss)}}
    atomic_write_text(path, json.dumps(body, ensure_ascii=False, indent=0))
    return path


def read_item_losses(run_root: str | Path) -> ItemLosses | None:
    """The run's item losses; None when it wrote none (older runs, a streamed text
    dataset); ItemLossError naming the file when it cannot be read."""
    run_root = Path(run_root)
    path = run_root / ITEM_LOSS_FILE
    if not path.is_file():
        return None
    try:
        body = json.loads(path.read_text(encoding="utf-8"))
        items = {str(k): ItemLoss(float(v["loss"]), int(v["seen"]))
                 for k, v in body["items"].items()}
        return ItemLosses(run_root, str(body["kind"]), Path(body["root"]), int(body["step"]),
                          items)
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ItemLossError("unreadable", f"Cannot read the per-item losses in '{path}': {exc}.",
                            "Train or resume the run again to rewrite it, or pick another "
                            "run.") from None


@dataclass(frozen=True)
class RunWithLosses:
    root: Path
    step: int

    @property
    def name(self) -> str:
        return self.root.name


def runs_with_item_losses(runs_folder: str | Path, dataset: str | Path) -> list[RunWithLosses]:
    """The runs under ``runs_folder`` that recorded item losses for ``dataset`` (a
    folder of images, or a text file or folder), newest first. A run whose file cannot
    be read is left out here; picking it says why."""
    want = dataset_root(dataset)
    out = []
    for run in list_runs(runs_folder):
        try:
            losses = read_item_losses(run.root)
        except ItemLossError:
            continue
        if losses is not None and losses.root == want:
            out.append(RunWithLosses(run.root, losses.step))
    return sorted(out, key=lambda r: (r.root / ITEM_LOSS_FILE).stat().st_mtime, reverse=True)


def dataset_of_run(run_root: str | Path) -> Path | None:
    """The dataset a run trained on, as its job.toml names it (a text run's file), else
    the folder its item losses are keyed under; None when neither can be told."""
    run_root = Path(run_root)
    try:
        job = tomllib.loads((run_root / "job.toml").read_text(encoding="utf-8"))
        path = Path(str(job["dataset"]["path"]))
        if path.exists():
            return path
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, KeyError, TypeError):
        pass
    try:
        losses = read_item_losses(run_root)
    except ItemLossError:
        return None
    return losses.root if losses is not None and losses.root.exists() else None
