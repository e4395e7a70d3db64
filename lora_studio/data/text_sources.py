"""Where a text job's records come from: a file or folder, a dataset in the local
Hugging Face cache, several of them mixed with weights, their fields renamed by a
column map. No Qt, no torch.

CSV, Parquet and Arrow files are read with Hugging Face ``datasets`` (streamed, so
nothing is copied into its cache and a file larger than memory is read row by row).
JSONL / JSON / .txt stay with text_records.py, whose reader names a bad line and
keeps the others, where ``datasets`` would fail the whole file.

Settings (config/schema.py):
- ``dataset.columns``: lines ``role=column`` (LLaMA-Factory's dataset_info.json
  "columns"), e.g. ``prompt=question``, ``response=answer``, ``messages=dialogue``.
- ``dataset.mix``: lines ``PATH_OR_ID @ WEIGHT`` of more sources; a weight is how many
  times its records are taken (0.5: a seeded half of them, 2: each twice).
"""
from __future__ import annotations

import os
import random
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from .text_records import (FORMATS, LoadResult, RecordProblem, TextDataError, TextRecord,
                           is_record_file, load_text_records, stream_file,
                           stream_records)
from .walk import Skipped, files_under

TABLE_BUILDERS = {".csv": "csv", ".parquet": "parquet", ".arrow": "arrow"}
ROLES = ("prompt", "response", "system", "instruction", "input", "output", "messages",
         "conversations", "text")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class SourceError(TextDataError):
    """A column map or mix line that cannot be read; the message names it."""


def parse_columns(lines: Iterable[str]) -> dict[str, str]:
    """``["prompt=question"]`` -> ``{"question": "prompt"}``: the rename applied to each
    record (dataset column -> the role it plays)."""
    columns: dict[str, str] = {}
    for line in lines:
        role, sep, column = (part.strip() for part in line.partition("="))
        if not line.strip():
            continue
        if not sep or not column or role not in ROLES:
            raise SourceError(f"dataset.columns line {line!r} is not role=column with a role "
                              f"from {', '.join(ROLES)}; e.g. prompt=question")
        columns[column] = role
    return columns


@dataclass(frozen=True)
class Source:
    where: str       # a path or a Hub dataset id
    weight: float = 1.0


def parse_mix(lines: Iterable[str]) -> list[Source]:
    """``["more.jsonl @ 0.5", "user/set"]`` -> sources with their weights."""
    sources = []
    for line in lines:
        if not line.strip():
            continue
        where, sep, weight = line.rpartition("@")
        if not sep:
            where, weight = line, "1"
        try:
            value = float(weight)
        except ValueError:
            raise SourceError(f"dataset.mix line {line!r}: '{weight.strip()}' after @ is not a "
                              "number; write PATH @ WEIGHT, e.g. more.jsonl @ 0.5") from None
        if not value > 0 or value > 100:
            raise SourceError(f"dataset.mix line {line!r}: the weight must be above 0 and at "
                              "most 100.")
        sources.append(Source(where.strip(), value))
    return sources


def is_table(name: str | os.PathLike) -> bool:
    return Path(name).suffix.lower() in TABLE_BUILDERS


def looks_like_hub_id(where: str) -> bool:
    return bool(_HUB_ID.match(where.strip())) and not Path(where).exists()


def cached_hub_dataset(repo_id: str) -> Path | None:
    """The snapshot folder of a dataset already in the local Hugging Face cache."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError
    try:
        return Path(snapshot_download(repo_id, repo_type="dataset", local_files_only=True))
    except (LocalEntryNotFoundError, ValueError, OSError):
        return None


def hub_hint(repo_id: str) -> str:
    return (f"LoRA Studio reads datasets from your local Hugging Face cache and downloads "
            f"nothing: run 'hf download {repo_id} --repo-type dataset' first, or point "
            "dataset.path at the file.")


def _table_rows(path: Path, problems: list[RecordProblem]) -> Iterator[tuple[int, dict]]:
    """(row, fields) of a CSV / Parquet / Arrow file streamed through ``datasets``; a file
    it cannot read is one named problem (after the rows read before the damage)."""
    from datasets import load_dataset
    header = 1 if path.suffix.lower() == ".csv" else 0  # rows count from the file's line
    try:
        rows = load_dataset(TABLE_BUILDERS[path.suffix.lower()], data_files=[str(path)],
                            split="train", streaming=True)
        for i, row in enumerate(rows):
            yield i + 1 + header, dict(row)
    except Exception as exc:  # datasets/pyarrow raise many kinds for a damaged file
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        problems.append(RecordProblem(path, 0, f"cannot be read as "
                                               f"{path.suffix.lower()[1:]} ({first})"))


def read_table(path: Path, fmt: str, columns: Mapping[str, str] | None) -> LoadResult:
    """The records of one CSV / Parquet / Arrow file."""
    result = LoadResult(files=[path])
    result.records = list(stream_records(path, _table_rows(path, result.problems), fmt, columns,
                                         result.problems))
    return result


def _merge(total: LoadResult, part: LoadResult) -> None:
    total.records += part.records
    total.problems += part.problems
    total.files += part.files


def load_local(path: Path, fmt: str, columns: Mapping[str, str] | None) -> LoadResult:
    """A file, or a folder's record and table files (each once, hidden ones left out)."""
    if path.is_file() and is_table(path):
        return read_table(path, fmt, columns)
    total = LoadResult()
    if path.is_dir():
        passed_over: list[Skipped] = []
        tables = sorted(files_under(path, lambda n: is_table(n), passed_over),
                        key=lambda p: str(p).casefold())
        for table in tables:
            _merge(total, read_table(table, fmt, columns))
        try:
            _merge(total, load_text_records(path, fmt, columns))
        except TextDataError:
            if not tables:
                raise
        return total
    return load_text_records(path, fmt, columns)


def locate(where: str, fmt: str = "auto", base_dir: Path | None = None) -> Path:
    """The local file or folder a source names: a path (relative ones looked up in
    ``base_dir`` first), else the snapshot of a dataset id in the local Hub cache."""
    if fmt != "auto" and fmt not in FORMATS:
        raise TextDataError(f"unknown text format {fmt!r}; use auto or one of {', '.join(FORMATS)}")
    candidates = [Path(where)] + ([base_dir / where] if base_dir else [])
    local = next((p for p in candidates if p.exists()), None)
    if local is not None:
        return local
    if looks_like_hub_id(where):
        snapshot = cached_hub_dataset(where)
        if snapshot is None:
            raise TextDataError(f"{where}: not a file or folder here, and not a dataset in the "
                                f"local Hugging Face cache. {hub_hint(where)}")
        return snapshot
    raise TextDataError(f"{where}: no such file or folder. Set dataset.path to a .jsonl / "
                        ".json / .txt / .csv / .parquet / .arrow file, a folder of them, or a "
                        "dataset id in your Hugging Face cache.")


def load_source(where: str, fmt: str = "auto", columns: Mapping[str, str] | None = None,
                base_dir: Path | None = None) -> LoadResult:
    """The records of one source (see locate), read into memory."""
    return load_local(locate(where, fmt, base_dir), fmt, columns)


def stream_source(where: str, fmt: str, columns: Mapping[str, str] | None,
                  problems: list[RecordProblem], base_dir: Path | None = None
                  ) -> Iterator[TextRecord]:
    """The records of one source one by one, in load_source's order, for data larger
    than memory: JSON Lines and tables are read a line or a row at a time."""
    path = locate(where, fmt, base_dir)
    if path.is_file():
        yield from (stream_records(path, _table_rows(path, problems), fmt, columns, problems)
                    if is_table(path) else stream_file(path, fmt, columns, problems))
        return
    passed_over: list[Skipped] = []
    found = files_under(path, lambda n: is_table(n) or is_record_file(n), passed_over)
    tables = sorted((f for f in found if is_table(f)), key=lambda p: str(p).casefold())
    files = sorted((f for f in found if is_record_file(f.name)),
                   key=lambda p: str(p.relative_to(path)).lower())  # as load_text_records
    problems += [RecordProblem(s.path, 0, f"{s.reason}. {s.hint}") for s in passed_over]
    if not tables and not files:
        raise TextDataError(f"{path}: no .jsonl, .json, .txt, .csv, .parquet or .arrow files.")
    for table in tables:
        yield from stream_records(table, _table_rows(table, problems), fmt, columns, problems)
    for file in files:
        yield from stream_file(file, fmt, columns, problems)


def weighted(records: list, weight: float, seed: int) -> list:
    """``records`` taken ``weight`` times: whole copies, then a seeded sample for the
    fraction (the same every run)."""
    whole, part = int(weight), weight - int(weight)
    taken = records * whole
    if part:
        rng = random.Random(seed)
        taken += rng.sample(records, round(len(records) * part))
    return taken


def load_parts(path: str, mix: Iterable[str], fmt: str = "auto",
               columns: Iterable[str] = (), seed: int = 0,
               base_dir: Path | None = None) -> list[tuple[Source, LoadResult]]:
    """``dataset.path`` and every ``dataset.mix`` source, each with its records weighted,
    in that order."""
    renames = parse_columns(columns)
    parts = [(Source(path), load_source(path, fmt, renames, base_dir))]
    for n, source in enumerate(parse_mix(mix), 1):
        part = load_source(source.where, fmt, renames, base_dir)
        part.records = weighted(part.records, source.weight, seed * 1_000_003 + n)
        parts.append((source, part))
    return parts


def load_mixed(path: str, mix: Iterable[str], fmt: str = "auto",
               columns: Iterable[str] = (), seed: int = 0,
               base_dir: Path | None = None) -> LoadResult:
    """The records training reads: load_parts, one after the other."""
    total = LoadResult()
    for _source, part in load_parts(path, mix, fmt, columns, seed, base_dir):
        _merge(total, part)
    return total
