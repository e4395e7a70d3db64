"""A text job's records, read, tokenised and reported."""
from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Sequence

from ...config.schema import JobConfig
from ...data.text_records import RecordProblem, TextDataError, TextRecord
from ...data.text_sources import SourceError, load_mixed, parse_columns, stream_source
from ...runs.events import Emit, event
from ..core.control import EngineError
from .token_cache import encode_cached, stream_cached
from .token_store import Subset, TokenStore
from .tokens import Encoded, EncodeStats


def load_dataset(job: JobConfig, tokenizer, emit: Emit,
                 phase: Callable[..., None] = lambda *args: None) -> Sequence[Encoded]:
    """The job's records tokenised: a list, or with dataset.streaming a store on disk
    read through memory maps (token_store.py)."""
    fmt = job.dataset.format
    if fmt == "images":
        raise EngineError("config", "dataset.format is 'images' but the model is a text model.",
                          "Set dataset.format to auto, prompt_response, alpaca, messages or text.")
    phase("reading the dataset")
    ds = job.dataset
    try:
        if ds.streaming:
            return _streamed(job, tokenizer, emit, phase)
        loaded = load_mixed(ds.path, ds.mix, fmt, ds.columns, job.training.seed)
    except SourceError as exc:
        raise EngineError("config", str(exc), "Fix the line in the job's settings.") from exc
    except TextDataError as exc:
        raise EngineError("data", str(exc), "Point dataset.path at your .jsonl / .json file, "
                                            "or a .csv / .parquet / .arrow file.") from exc
    _report_problems(loaded.problems, emit)
    encoded, stats, hit = encode_cached(loaded.records, tokenizer, job,
                                        lambda done, total: phase("tokenising", done, total))
    _report(job, encoded, stats, hit, len(loaded.problems), emit)
    mark_origins(encoded, loaded.records, stats.skipped)
    emit(event("log", level="info", message=f"{len(encoded)} record(s) from {len(loaded.files)} "
                                            f"file(s), formats {loaded.formats}.",
               records=len(encoded), formats=loaded.formats))
    return encoded


def mark_origins(encoded: list[Encoded], records: Sequence[TextRecord], skipped: list[int]) -> None:
    """Each encoded record's (file, line): the records in order, less those left out."""
    left_out = set(skipped)
    kept = [r for i, r in enumerate(records) if i not in left_out]
    if len(kept) == len(encoded):  # a miscount would name wrong records: then none
        for item, record in zip(encoded, kept):
            item.origin = (record.source, record.line)


def _streamed(job: JobConfig, tokenizer, emit: Emit, phase: Callable[..., None]) -> TokenStore:
    """dataset.path read and tokenised one record at a time into a token store (mixed-in
    sources are read into memory: streaming is for the one large dataset)."""
    ds = job.dataset
    if ds.mix:
        raise SourceError("dataset.mix cannot be used with dataset.streaming: mix the files "
                          "into one dataset, or turn streaming off.")
    columns = parse_columns(ds.columns)
    problems: list[RecordProblem] = []

    def records(into: list[RecordProblem]) -> Iterator[TextRecord]:
        return stream_source(ds.path, ds.format, columns, into)
    store, hit = stream_cached(records, problems, tokenizer, job,
                               lambda done, total: phase("tokenising", done, total))
    _report_problems(problems, emit)
    _report(job, store, store.stats, hit, len(problems), emit)
    emit(event("log", level="info", message=f"{len(store)} record(s) streamed into "
                                            f"{store.folder}.", records=len(store), streamed=True))
    return store


def _report_problems(problems: list[RecordProblem], emit: Emit) -> None:
    if problems:
        shown = "\n".join(str(p) for p in problems[:20])
        more = f"\n... and {len(problems) - 20} more" if len(problems) > 20 else ""
        emit(event("log", level="warning", message=f"Skipped {len(problems)} bad record(s):\n"
                                                   f"{shown}{more}"))


def _report(job: JobConfig, encoded: Sequence[Encoded], stats: EncodeStats, hit: bool,
            bad: int, emit: Emit) -> None:
    if hit:
        emit(event("log", level="info", message=f"{len(encoded)} record(s) tokenised by an "
                                                "earlier run: read from the cache.", cached=True))
    if stats.template_errors:
        emit(event("log", level="warning",
                   message=f"The chat template failed on {len(stats.template_errors)} record(s), "
                           "which were skipped:\n" + "\n".join(stats.template_errors[:20])))
    if stats.truncated:
        emit(event("log", level="warning",
                   message=f"{stats.truncated} record(s) were longer than {job.dataset.max_seq_length}"
                           " tokens and were truncated.", truncated=stats.truncated))
    if stats.no_target:
        emit(event("log", level="warning",
                   message=f"{stats.no_target} record(s) had no response tokens left after "
                           "truncation and were skipped; raise dataset.max_seq_length.",
                   no_target=stats.no_target))
    if not len(encoded):
        raise EngineError("data", f"No usable records in {job.dataset.path} "
                                  f"({bad} bad, {stats.no_target} empty after truncation).",
                          "Fix the lines listed in the log, or set dataset.format to the shape "
                          "of your records.")


def held_out(job: JobConfig, encoded: list[Encoded], tokenizer, emit: Emit,
             phase: Callable[..., None] = lambda *args: None
             ) -> tuple[list[Encoded], list[Encoded]]:
    """(training records, eval records): the records of dataset.eval_path, or a seeded
    share of the dataset's own (dataset.eval_split, the same ones every run), or none."""
    ds = job.dataset
    if ds.eval_path.strip():
        eval_job = job.model_copy(update={"dataset": ds.model_copy(
            update={"path": ds.eval_path, "mix": [], "eval_path": "", "eval_split": 0.0})})
        phase("reading the eval dataset")
        return encoded, load_dataset(eval_job, tokenizer, emit, phase)
    if not ds.eval_split:
        return encoded, []
    n = max(1, round(len(encoded) * ds.eval_split))
    if n >= len(encoded):
        raise EngineError("data", f"Holding out {ds.eval_split:.0%} of {len(encoded)} record(s) "
                                  "leaves none to train on.",
                          "Lower dataset.eval_split, or add records.")
    picked = set(random.Random(job.training.seed).sample(range(len(encoded)), n))
    emit(event("log", level="info", message=f"Held out {n} of {len(encoded)} record(s) for the "
                                            "eval loss.", eval_records=n))
    if isinstance(encoded, TokenStore):  # index views: a streamed store stays on disk
        return (Subset(encoded, [i for i in range(len(encoded)) if i not in picked]),
                Subset(encoded, sorted(picked)))
    return ([e for i, e in enumerate(encoded) if i not in picked],
            [e for i, e in enumerate(encoded) if i in picked])
