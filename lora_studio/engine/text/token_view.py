"""The dataset browser's token view, computed in a child process:
``python -m lora_studio.engine.text.token_view`` (the tokenizer loads transformers,
which the window must not import).

Requests are JSON lines on stdin. The first is the scan::

    {"tokenizer": DIR, "path": FILE, "format": "auto", "columns": [], "seed": 0,
     "chat_template": "auto", "max_seq_length": 2048, "responses_only": true,
     "mix": ["more.jsonl @ 0.5"], "base_dir": DIR}

(``mix``: the job's dataset.mix, whose records follow the file's, weighted as training
takes them), and every later one asks for the tokens of a record: the one at a line of
the file, ``{"line": LINE}``, or any scanned one by its place in the scan,
``{"index": INDEX}`` (a mixed-in record). Replies are
JSON lines on stdout: ``loaded`` (how many records, from which sources, the bad
lines), ``lengths`` for
each batch of records (token length, truncated, dropped, template errors), ``done``,
``record`` (its tokens, the ones the loss is on marked) and ``error``. A record asked
for is answered between two batches of the scan, not after it. The end of stdin (the
window closed it, or is gone) ends the process, mid-scan or not.

The lengths and labels are the engine's own (tokens.record_pieces / joined /
has_target, the functions training encodes with); the pieces of a batch of records are
tokenised in one call of the fast tokenizer, which is what keeps the scan of 100,000
records close to the cost of tokenising them at all.
"""
from __future__ import annotations

import json
import queue
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from ...data.chat_template import TemplateProblem
from ...data.text_records import TextDataError, TextRecord
from ...data.text_sources import Source, SourceError, load_parts
from ..core.control import EngineError
from .tokens import (IGNORE, has_target, joined, record_pieces, template_in_use, tokenise_pieces,
                     tokenizer_by_name)

BATCH = 1000
SHOWN_PROBLEMS = 50
# A token's text is decoded with this many tokens before it, so that a tokenizer that
# strips a leading space at the start of a text keeps it inside one.
CONTEXT_TOKENS = 4
# A character is at most 4 bytes, so a byte-level token run longer than this is broken.
MAX_FRAGMENTS = 4
# Tokens beyond max_seq_length shown for a long record; the rest are counted, so that
# a huge record costs the window no more than a long one.
SHOWN_BEYOND_CUT = 200


@dataclass(frozen=True)
class Settings:
    """What the scan of one dataset depends on (the job's dataset.* keys)."""
    use_template: bool
    responses_only: bool
    max_length: int


def settings_for(tokenizer, request: dict) -> Settings:
    return Settings(template_in_use(tokenizer, request.get("chat_template", "auto")),
                    bool(request.get("responses_only", True)), int(request["max_seq_length"]))


def scan(records: list[TextRecord], tokenizer, settings: Settings,
         batch: int = BATCH) -> Iterator[dict]:
    """One ``lengths`` message per batch of records: every record's token length before
    the cut at max_seq_length (0 for a record the template fails on), the indices of
    those truncated, dropped (no token to learn from after the cut, skipped by
    training) and failed (with the template's message).

    The fast tokenizer lets go of the GIL while it encodes, so a batch is tokenised
    in a second thread while the chat template renders the next one here."""
    with ThreadPoolExecutor(1) as tokenising:
        previous = None
        for start in range(0, len(records), batch):
            chunk = records[start:start + batch]
            pieces, clipped, errors = _pieces(chunk, start, tokenizer, settings)
            current = (start, chunk, clipped, errors,
                       tokenising.submit(tokenise_pieces, tokenizer, pieces))
            if previous is not None:
                yield _lengths(*previous, settings)
            previous = current
        if previous is not None:
            yield _lengths(*previous, settings)


def _pieces(chunk: list[TextRecord], start: int, tokenizer, settings: Settings):
    pieces, clipped, errors = [], [], {}
    for i, record in enumerate(chunk):
        try:
            p, c = record_pieces(record, tokenizer, use_template=settings.use_template,
                                 responses_only=settings.responses_only,
                                 max_length=settings.max_length)
        except Exception as exc:  # a Jinja template can raise anything, as in encode_records
            errors[start + i] = str(exc.message if isinstance(exc, TemplateProblem) else exc)
            p, c = [], False
        pieces.append(p)
        clipped.append(c)
    return pieces, clipped, errors


def _lengths(start: int, chunk: list[TextRecord], clipped: list[bool], errors: dict[int, str],
             tokenised: Future, settings: Settings) -> dict:
    lengths, truncated, dropped = [], [], []
    for i, segments in enumerate(tokenised.result()):
        whole = joined(segments, settings.responses_only)
        n = len(whole.input_ids)
        lengths.append(n)
        if start + i in errors:
            continue
        if clipped[i] or n > settings.max_length:
            truncated.append(start + i)
        if not has_target(whole.labels[:settings.max_length]):
            dropped.append(start + i)
    return {"type": "lengths", "start": start, "lengths": lengths,
            "lines": [r.line for r in chunk], "truncated": truncated, "dropped": dropped,
            "errors": {str(k): v for k, v in errors.items()}}


def special_ids(tokenizer) -> set[int]:
    found = set(tokenizer.all_special_ids)
    found.update(i for i, t in getattr(tokenizer, "added_tokens_decoder", {}).items() if t.special)
    return found


def record_tokens(record: TextRecord, tokenizer, settings: Settings) -> dict:
    """One record as training sees it, token by token: ``tokens`` is a list of
    [text, ids, loss, special, cut] groups (a group is one token, or the few tokens
    of one character split into bytes); ``loss`` is true where the engine's label is
    not IGNORE, ``cut`` where the token lies beyond max_seq_length. Past
    SHOWN_BEYOND_CUT such tokens the rest are only counted (``hidden``)."""
    pieces, clipped = record_pieces(record, tokenizer, use_template=settings.use_template,
                                    responses_only=settings.responses_only,
                                    max_length=settings.max_length)
    whole = joined(tokenise_pieces(tokenizer, [pieces])[0], settings.responses_only)
    ids, cut = whole.input_ids, settings.max_length
    loss = [label != IGNORE and i < cut for i, label in enumerate(whole.labels)]
    special = special_ids(tokenizer)

    def decode(part: list[int]) -> str:
        return tokenizer.decode(part, skip_special_tokens=False,
                                clean_up_tokenization_spaces=False)

    def flags(i: int) -> tuple[bool, bool, bool]:
        return loss[i], ids[i] in special, i >= cut

    shown = min(len(ids), cut + SHOWN_BEYOND_CUT)
    groups, start = [], 0
    for i in range(shown):
        context = max(0, start - CONTEXT_TOKENS)
        before, after = decode(ids[context:start]), decode(ids[context:i + 1])
        pending = (after.endswith("\ufffd") and i + 1 < shown and i + 1 - start < MAX_FRAGMENTS
                   and flags(i + 1) == flags(start))
        if pending:
            continue
        text = after[len(before):] if after.startswith(before) else decode(ids[start:i + 1])
        groups.append([text, ids[start:i + 1], *flags(start)])
        start = i + 1
    return {"type": "record", "line": record.line, "tokens": groups, "hidden": len(ids) - shown,
            "length": len(ids),
            "max_seq_length": cut, "truncated": clipped or len(ids) > cut,
            "dropped": not has_target(whole.labels[:cut])}


def _load(request: dict):
    tokenizer = tokenizer_by_name(request["tokenizer"])
    if tokenizer is None:  # no class named: AutoTokenizer's registry decides (loads torch)
        from .model import load_tokenizer
        tokenizer = load_tokenizer(Path(request["tokenizer"]))
    settings = settings_for(tokenizer, request)
    base_dir = request.get("base_dir")
    parts = load_parts(request["path"], request.get("mix", ()), request.get("format", "auto"),
                       request.get("columns", ()), int(request.get("seed", 0)),
                       Path(base_dir) if base_dir else None)
    return tokenizer, settings, parts


def source_name(source: Source, first: bool) -> str:
    """The open file by its name, a mixed-in source as the mix line names it."""
    return Path(source.where).name if first else source.where


def _answer(asked: tuple[str, int], at_line: dict[int, TextRecord], records: list[TextRecord],
            names: list[str], tokenizer, settings: Settings) -> dict:
    """The record at a line of the file (``("line", LINE)``) or at a place in the scan
    (``("index", INDEX)``), token by token."""
    kind, value = asked
    if kind == "line":
        record, reply = at_line.get(value), {"type": "record", "line": value}
        missing = "Training reads no record from this line (see the skipped lines)."
    else:
        record = records[value] if 0 <= value < len(records) else None
        reply = {"type": "record", "index": value, "source": names[value] if record else ""}
        missing = "The scan has no record there."
    if record is None:
        return {**reply, "error": missing}
    try:
        return {**record_tokens(record, tokenizer, settings), **reply, "line": record.line}
    except Exception as exc:  # the template's failure on this record, shown in its place
        return {**reply, "line": record.line, "error": str(getattr(exc, "message", exc))}


def serve(requests: IO[str], out: IO[str]) -> None:
    def send(msg: dict) -> None:
        out.write(json.dumps(msg) + "\n")
        out.flush()

    first = requests.readline()
    if not first:
        return
    try:
        tokenizer, settings, parts = _load(json.loads(first))
    except (EngineError, TemplateProblem) as exc:
        send({"type": "error", "message": exc.message, "hint": exc.hint})
        return
    except (SourceError, TextDataError) as exc:
        send({"type": "error", "message": str(exc), "hint": "Fix the dataset or its settings."})
        return
    except (OSError, ValueError) as exc:
        send({"type": "error", "message": f"Cannot load the tokenizer: {exc}",
              "hint": "Check model.path: the tokenizer comes from the job's base model."})
        return
    records = [r for _source, part in parts for r in part.records]
    names = [source_name(source, n == 0) for n, (source, part) in enumerate(parts)
             for _ in part.records]
    at_line = {r.line: r for r in parts[0][1].records}  # the lines of the open file
    problems = [p for _source, part in parts for p in part.problems]
    send({"type": "loaded", "records": len(records), "skipped": len(problems),
          "problems": [str(p) for p in problems[:SHOWN_PROBLEMS]],
          "sources": [{"name": source_name(source, n == 0), "weight": source.weight,
                       "records": len(part.records)} for n, (source, part) in enumerate(parts)]})

    asked: queue.Queue = queue.Queue()

    def read() -> None:
        for line in requests:
            try:
                request = json.loads(line)
                kind = "index" if "index" in request else "line"
                asked.put((kind, int(request[kind])))
            except (ValueError, KeyError, TypeError, AttributeError):
                continue  # only the window writes here; a line it did not mean is ignored
        asked.put(None)
    threading.Thread(target=read, daemon=True).start()

    def answer_pending() -> bool:
        while True:
            try:
                question = asked.get_nowait()
            except queue.Empty:
                return True
            if question is None:
                return False
            send(_answer(question, at_line, records, names, tokenizer, settings))

    for msg in scan(records, tokenizer, settings, BATCH):
        send(msg)
        if not answer_pending():
            return
    send({"type": "done", "records": len(records)})
    while (question := asked.get()) is not None:
        send(_answer(question, at_line, records, names, tokenizer, settings))


if __name__ == "__main__":
    sys.stdout.reconfigure(encoding="utf-8")
    sys.stdin.reconfigure(encoding="utf-8")
    serve(sys.stdin, sys.stdout)
