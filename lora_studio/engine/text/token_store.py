"""Tokenised records on disk, for datasets larger than memory (dataset.streaming).

The records are read and tokenised one at a time and appended to three flat files of
a folder — input ids and labels (int32) and each record's end offset (int64) — which
training then reads through memory maps: only the records of the current batch are
in memory. The folder is built under a temporary name and renamed when complete, so
an interrupted run leaves no half store; it lives in the token cache
(token_cache.py) and the next run with the same records and settings reuses it.
"""
from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np

from ...fsutil import temp_dir_beside
from .tokens import Encoded, EncodeStats

FILES = ("input_ids.i32", "labels.i32", "ends.i64")
META = "meta.json"


class TokenStore(Sequence):
    """The records of a store folder as Encoded items, read on demand."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        meta = json.loads((self.folder / META).read_text(encoding="utf-8"))
        self.stats = EncodeStats(**meta["stats"])
        self.ends = np.fromfile(self.folder / "ends.i64", dtype=np.int64)
        size = int(self.ends[-1]) if len(self.ends) else 0
        self._ids = self._map("input_ids.i32", size)
        self._labels = self._map("labels.i32", size)

    def _map(self, name: str, size: int) -> np.ndarray:
        if not size:
            return np.zeros(0, dtype=np.int32)
        return np.memmap(self.folder / name, dtype=np.int32, mode="r", shape=(size,))

    def __len__(self) -> int:
        return len(self.ends)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        start = int(self.ends[i - 1]) if i > 0 else 0
        end = int(self.ends[i])
        return Encoded(self._ids[start:end].tolist(), self._labels[start:end].tolist())

    def lengths(self) -> np.ndarray:
        return np.diff(self.ends, prepend=0)


class Subset(Sequence):
    """Some records of a sequence, by index, without copying them (a held-out split
    of a store)."""

    def __init__(self, items: Sequence, indices: Sequence[int]):
        self.items, self.indices = items, list(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self.items[j] for j in self.indices[i]]
        return self.items[self.indices[i]]

    def lengths(self) -> np.ndarray:
        return np.asarray(lengths_of(self.items))[self.indices]


def lengths_of(items: Sequence[Encoded]) -> list[int]:
    """Token counts of a list of records or a store, without reading a store's tokens."""
    if hasattr(items, "lengths"):
        return items.lengths().tolist()
    return [len(x.input_ids) for x in items]


def is_complete(folder: Path) -> bool:
    return (Path(folder) / META).is_file() and all((Path(folder) / f).is_file() for f in FILES)


def write_store(folder: Path, encoded: Iterable[Encoded], stats: EncodeStats,
                chunk: int = 4096) -> TokenStore:
    """Append ``encoded`` (a stream) to a new store at ``folder``, in chunks; the folder
    appears only when complete. ``stats`` is read after the stream is used up."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_dir_beside(folder)
    try:
        with open(tmp / "input_ids.i32", "wb") as ids, open(tmp / "labels.i32", "wb") as labels, \
                open(tmp / "ends.i64", "wb") as ends:
            end = 0
            for batch in _chunks(encoded, chunk):
                ids.write(np.asarray([t for e in batch for t in e.input_ids], np.int32).tobytes())
                labels.write(np.asarray([t for e in batch for t in e.labels], np.int32).tobytes())
                offsets = np.cumsum([len(e.input_ids) for e in batch], dtype=np.int64) + end
                ends.write(offsets.tobytes())
                end = int(offsets[-1])
        (tmp / META).write_text(json.dumps({"stats": {
            "truncated": stats.truncated, "no_target": stats.no_target,
            "template_errors": stats.template_errors[:1000]}}), encoding="utf-8")
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return TokenStore(folder)


def _chunks(items: Iterable[Encoded], size: int) -> Iterator[list[Encoded]]:
    batch: list[Encoded] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
