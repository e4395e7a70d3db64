"""Tokenised records, cached by content: a second run with the same records, tokenizer
and tokenising settings reads them back instead of tokenising again.

The key hashes everything the result depends on: the records' turns (not their
files' names or dates: the same data copied elsewhere hits), the tokenizer (its
vocabulary and rules, special tokens and chat template), max_seq_length, loss on
responses only, the chat template setting, and this module's format version.
Entries live in <cache dir>/tokenized/ (config/paths.cache_dir), one safetensors file
each; the least recently used beyond KEEP are removed.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import torch

from ...config.paths import cache_dir
from ...config.schema import JobConfig
from ...data.text_records import TextRecord
from ..core.safetensors_io import atomic_save_safetensors
from .token_store import TokenStore, is_complete, write_store
from .tokens import Encoded, EncodeStats, encode_each, encode_records

FORMAT = 2  # 2: the indices of the records left out (per-record losses)
KEEP = 32
_SLICE = 1 << 20


def tokenizer_fingerprint(tokenizer) -> str:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    rules = backend.to_str() if backend is not None else repr(sorted(tokenizer.get_vocab().items()))
    return json.dumps([rules, tokenizer.chat_template, tokenizer.all_special_tokens,
                       type(tokenizer).__name__], default=str)


def cache_key(records: Iterable[TextRecord], tokenizer, job: JobConfig) -> str:
    ds = job.dataset
    h = hashlib.sha256(json.dumps([FORMAT, ds.max_seq_length, ds.train_on_responses_only,
                                   ds.chat_template]).encode())
    h.update(hashlib.sha256(tokenizer_fingerprint(tokenizer).encode()).digest())
    for record in records:
        for turn in record.turns:
            h.update(f"\x00{turn.role}\x01{len(turn.content)}\x01".encode())
            for i in range(0, len(turn.content), _SLICE):  # a 100 MB record is not copied whole
                h.update(turn.content[i:i + _SLICE].encode("utf-8", "surrogatepass"))
        h.update(b"\x02")
    return h.hexdigest()[:40]


def _write(path: Path, encoded: list[Encoded], stats: EncodeStats) -> None:
    lengths = [len(e.input_ids) for e in encoded]
    tensors = {"lengths": torch.tensor(lengths, dtype=torch.int64),
               "input_ids": torch.tensor([t for e in encoded for t in e.input_ids], dtype=torch.int32),
               "labels": torch.tensor([t for e in encoded for t in e.labels], dtype=torch.int32)}
    meta = {"stats": json.dumps({"truncated": stats.truncated, "no_target": stats.no_target,
                                 "template_errors": stats.template_errors,
                                 "skipped": stats.skipped})}
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_save_safetensors(tensors, path, meta)


def _read(path: Path) -> tuple[list[Encoded], EncodeStats]:
    from safetensors import safe_open
    with safe_open(str(path), framework="pt") as f:
        meta = json.loads(f.metadata()["stats"])
        lengths = f.get_tensor("lengths").tolist()
        ids, labels = f.get_tensor("input_ids").tolist(), f.get_tensor("labels").tolist()
    encoded, at = [], 0
    for n in lengths:
        encoded.append(Encoded(ids[at:at + n], labels[at:at + n]))
        at += n
    return encoded, EncodeStats(meta["truncated"], meta["no_target"], meta["template_errors"],
                                meta["skipped"])


def _prune(folder: Path) -> None:
    """Keep the KEEP entries used last: files of in-memory runs, store folders of
    streamed ones (token_store.py)."""
    entries = [p for p in folder.iterdir() if p.suffix == ".safetensors" or
               (p.is_dir() and not p.name.startswith("."))]
    for old in sorted(entries, key=lambda p: p.stat().st_mtime, reverse=True)[KEEP:]:
        if old.is_dir():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink(missing_ok=True)


def encode_cached(records: list[TextRecord], tokenizer, job: JobConfig,
                  progress: Callable[[int, int], None] | None = None,
                  folder: Path | None = None) -> tuple[list[Encoded], EncodeStats, bool]:
    """encode_records through the cache: (encoded, stats, whether it was a hit). A
    damaged or unwritable cache is passed over: tokenising never fails because of it."""
    folder = folder or cache_dir() / "tokenized"
    path = folder / f"{cache_key(records, tokenizer, job)}.safetensors"
    if path.exists():
        try:
            encoded, stats = _read(path)
            os.utime(path)
            return encoded, stats, True
        except Exception:  # safetensors' own errors, a torn or foreign file: rebuild it
            path.unlink(missing_ok=True)
    encoded, stats = encode_records(records, tokenizer, job, progress)
    try:
        _write(path, encoded, stats)
        _prune(folder)
    except OSError:
        pass
    return encoded, stats, False


def stream_cached(records: Callable[[list], Iterable[TextRecord]], problems: list, tokenizer,
                  job: JobConfig, progress: Callable[[int, int], None] | None = None
                  ) -> tuple[TokenStore, bool]:
    """A token store of the records ``records(problems)`` streams, through the cache:
    one pass reads the records to hash (and count) them, a second tokenises them into
    a new store unless one with that key exists. (store, whether it was a hit)."""
    counted = [0]

    def counting(items: Iterable[TextRecord]) -> Iterator[TextRecord]:
        for item in items:
            counted[0] += 1
            yield item
    folder = cache_dir() / "tokenized"
    store = folder / cache_key(counting(records(problems)), tokenizer, job)
    if is_complete(store):
        os.utime(store)
        return TokenStore(store), True
    del problems[:]  # the second pass names them again
    stats = EncodeStats()
    step = (lambda done: progress(done, counted[0])) if progress is not None else None
    made = write_store(store, encode_each(records(problems), tokenizer, job, stats, step), stats)
    if progress is not None:
        progress(counted[0], counted[0])
    try:
        _prune(folder)
    except OSError:
        pass
    return made, False
