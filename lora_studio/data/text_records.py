"""Text training records: read .jsonl / .json / .txt files and normalise every record
to a list of chat turns. No Qt, no torch: the engine tokenises the result and the
dataset browser shows it as a table.

Accepted shapes (``format`` = "auto" detects them per file: the shape most of its
records have, so an odd first record does not decide):

- ``prompt_response``: ``{"prompt": ..., "response": ...}``; aliases question/answer,
  input/output, query/completion; an optional ``"system"`` string.
- ``alpaca``: ``{"instruction": ..., "input": ..., "output": ...}`` (input optional).
- ``messages``: ``{"messages": [{"role": "user", "content": ...}, ...]}`` or sharegpt
  ``{"conversations": [{"from": "human", "value": ...}, ...]}``; roles user / assistant
  / system, with the aliases human, gpt, model, bot.
- ``text``: ``{"text": ...}``, or a .txt file: one record per blank-line-separated
  block (a file without blank lines is one record).

Files: .jsonl (one object a line, blank lines ignored; lines end at LF only, so a
U+2028 or U+0085 inside a string is text, not a line break; a line that is not UTF-8
is skipped alone); .json (a list of objects, or ``{"data": [...]}``); .txt. UTF-8 with
or without BOM, LF or CRLF. A folder means every such file under it, in name order
(hidden ones left out; see walk.py for links). Only regular files are opened: a pipe
or a device named like a record file is a problem, not a hang.

A record that cannot be used (invalid JSON, a missing field, an unknown role) is
skipped and reported as a :class:`RecordProblem` with its file and 1-based line.
"""
from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from itertools import islice
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .walk import RefusedFile, Skipped, files_under, open_regular, read_regular

FORMATS = ("prompt_response", "alpaca", "messages", "text")
SUFFIXES = (".jsonl", ".json", ".txt")
CHAT_ROLES = ("system", "user", "assistant")
TEXT_ROLE = "text"  # a plain-text record: trained as-is, without a chat template

PROMPT_KEYS = ("prompt", "question", "input", "query")
RESPONSE_KEYS = ("response", "answer", "output", "completion")
ROLE_ALIASES = {
    "system": "system",
    "user": "user", "human": "user",
    "assistant": "assistant", "gpt": "assistant", "model": "assistant", "bot": "assistant",
}


@dataclass(frozen=True)
class Turn:
    role: str     # "system", "user", "assistant", or "text" for a plain-text record
    content: str


@dataclass(frozen=True)
class TextRecord:
    turns: tuple[Turn, ...]
    source: Path
    line: int     # 1-based line where the record starts
    format: str   # one of FORMATS

    @property
    def is_plain_text(self) -> bool:
        return self.turns[0].role == TEXT_ROLE


@dataclass(frozen=True)
class RecordProblem:
    source: Path
    line: int     # 1-based; 0 when the problem is the file as a whole
    message: str

    def __str__(self) -> str:
        where = f"{self.source}:{self.line}" if self.line else str(self.source)
        return f"{where}: {self.message}"


@dataclass
class LoadResult:
    records: list[TextRecord] = field(default_factory=list)
    problems: list[RecordProblem] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)

    @property
    def skipped(self) -> int:
        return len(self.problems)

    @property
    def formats(self) -> dict[str, int]:
        """Records per detected format, e.g. {"messages": 40}."""
        return dict(Counter(r.format for r in self.records))


class TextDataError(ValueError):
    """The dataset path itself is unusable (missing, or holds no readable file)."""


class RecordError(ValueError):
    """One record does not fit its format; the message says what is wrong."""


# --- format detection and normalisation -------------------------------------------------

def _first_key(obj: dict, keys: tuple[str, ...]) -> str | None:
    return next((k for k in keys if k in obj), None)


def file_format(objects) -> str | None:
    """The shape most records of a file have (the earlier one on a tie)."""
    counts = Counter(f for f in map(detect_format, objects) if f)
    return max(counts, key=counts.__getitem__) if counts else None


def detect_format(obj: Any) -> str | None:
    """The format a single parsed record looks like, or None."""
    if not isinstance(obj, dict):
        return None
    if "messages" in obj or "conversations" in obj:
        return "messages"
    if "instruction" in obj and "output" in obj:
        return "alpaca"
    if _first_key(obj, PROMPT_KEYS) and _first_key(obj, RESPONSE_KEYS):
        return "prompt_response"
    if "text" in obj:
        return "text"
    return None


def _string(obj: dict, key: str, *, required: bool = True) -> str:
    value = obj.get(key)
    if value is None:
        if required:
            raise RecordError(f"missing field '{key}'")
        return ""
    if not isinstance(value, str):
        raise RecordError(f"field '{key}' must be a string, not {type(value).__name__}")
    if required and not value.strip():
        raise RecordError(f"field '{key}' is empty")
    return value


def _system(obj: dict) -> list[Turn]:
    system = _string(obj, "system", required=False)
    return [Turn("system", system)] if system.strip() else []


def _prompt_response(obj: dict) -> list[Turn]:
    prompt_key = _first_key(obj, PROMPT_KEYS)
    response_key = _first_key(obj, RESPONSE_KEYS)
    if prompt_key is None:
        raise RecordError(f"missing a prompt field (one of {', '.join(PROMPT_KEYS)})")
    if response_key is None:
        raise RecordError(f"missing a response field (one of {', '.join(RESPONSE_KEYS)})")
    return _system(obj) + [Turn("user", _string(obj, prompt_key)),
                           Turn("assistant", _string(obj, response_key))]


def _alpaca(obj: dict) -> list[Turn]:
    instruction = _string(obj, "instruction")
    extra = _string(obj, "input", required=False).strip()
    prompt = f"{instruction}\n\n{extra}" if extra else instruction
    return _system(obj) + [Turn("user", prompt), Turn("assistant", _string(obj, "output"))]


def _messages(obj: dict) -> list[Turn]:
    key = "messages" if "messages" in obj else "conversations"
    items = obj.get(key)
    if not isinstance(items, list) or not items:
        raise RecordError(f"field '{key}' must be a non-empty list of turns")
    turns = []
    for i, item in enumerate(items, 1):
        if not isinstance(item, dict):
            raise RecordError(f"turn {i} is not an object")
        role_key = "role" if "role" in item else "from"
        content_key = "content" if "content" in item else "value"
        raw_role = item.get(role_key)
        role = ROLE_ALIASES.get(str(raw_role).strip().lower()) if raw_role is not None else None
        if role is None:
            raise RecordError(f"turn {i} has role {raw_role!r}; use user, assistant or system "
                              "(or human / gpt)")
        content = item.get(content_key)
        if not isinstance(content, str):
            raise RecordError(f"turn {i} has no text in '{content_key}'")
        turns.append(Turn(role, content))
    if not any(t.role == "assistant" for t in turns):
        raise RecordError("the conversation has no assistant turn to learn from")
    return turns


def _text(obj: dict) -> list[Turn]:
    return [Turn(TEXT_ROLE, _string(obj, "text"))]


_NORMALISERS = {"prompt_response": _prompt_response, "alpaca": _alpaca,
                "messages": _messages, "text": _text}


def normalise(obj: Any, fmt: str) -> tuple[Turn, ...]:
    """Turns of one parsed record in the given format; RecordError if it does not fit."""
    if not isinstance(obj, dict):
        raise RecordError(f"expected a JSON object, got {type(obj).__name__}")
    return tuple(_NORMALISERS[fmt](obj))


# --- reading files ---------------------------------------------------------------------

def _line_of(text: str, index: int) -> int:
    return text.count("\n", 0, index) + 1


def _skip_ws(text: str, i: int) -> int:
    while i < len(text) and text[i] in " \t\r\n":
        i += 1
    return i


def _array_items(text: str, start: int, decoder: json.JSONDecoder) -> list[tuple[int, Any]]:
    """(line, value) of each element of the JSON array whose '[' is at ``start``."""
    items, i = [], _skip_ws(text, start + 1)
    while i < len(text) and text[i] != "]":
        value, end = decoder.raw_decode(text, i)
        items.append((_line_of(text, i), value))
        i = _skip_ws(text, end)
        if i < len(text) and text[i] == ",":
            i = _skip_ws(text, i + 1)
    return items


def json_items(text: str) -> list[tuple[int, Any]]:
    """The records of a .json dataset file with the line each starts on: the elements
    of a top-level list, or of the "data" list of a top-level object.

    ``text`` must be valid JSON (check it with json.loads first; the line numbers are
    what that check cannot give). Raises RecordError when the top level is neither a
    list nor an object with a "data" list."""
    decoder = json.JSONDecoder()
    i = _skip_ws(text, 0)
    if i == len(text) or text[i] not in "[{":
        raise RecordError('a .json file must hold a list of records or {"data": [...]}')
    if text[i] == "[":
        return _array_items(text, i, decoder)
    i = _skip_ws(text, i + 1)  # inside the top-level object: walk its keys
    while text[i] != "}":
        key, i = decoder.raw_decode(text, i)
        i = _skip_ws(text, _skip_ws(text, i) + 1)  # past ':'
        if key == "data" and text[i] == "[":
            return _array_items(text, i, decoder)
        _, i = decoder.raw_decode(text, i)
        i = _skip_ws(text, i)
        if text[i] == ",":
            i = _skip_ws(text, i + 1)
    raise RecordError('a .json file must hold a list of records or {"data": [...]}')


def split_lines(text: str) -> list[str]:
    """The lines of a JSON Lines text: split at LF (a CR before it dropped) and nowhere
    else. str.splitlines would also split at U+2028, U+0085 and the like, which JSON
    allows raw inside strings."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


NESTED_TOO_DEEPLY = "nested too deeply to read (more levels than Python's parser takes)"


def _jsonl_parsed(path: Path, lines: Iterable[bytes], problems: list[RecordProblem]
                  ) -> Iterator[tuple[int, Any]]:
    """(line, object) of each JSON Lines line (split at LF only, the caller's job); a
    line that is not UTF-8 or not JSON is a problem and the others go on."""
    for n, raw in enumerate(lines, 1):
        if n == 1:
            raw = raw.removeprefix(b"\xef\xbb\xbf")
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            problems.append(RecordProblem(path, n, f"not UTF-8 (byte 0x{raw[exc.start]:02x} at "
                                                   f"column {exc.start + 1}); this line was skipped"))
            continue
        if not line.strip():
            continue
        try:
            yield n, json.loads(line)
        except json.JSONDecodeError as exc:
            problems.append(RecordProblem(path, n, f"invalid JSON ({exc.msg})"))
        except RecursionError:
            problems.append(RecordProblem(path, n, NESTED_TOO_DEEPLY))


def _jsonl_items(path: Path, data: bytes, problems: list[RecordProblem]) -> list[tuple[int, Any]]:
    return list(_jsonl_parsed(path, data.split(b"\n"), problems))


SNIFF = 1000  # a streamed file's format is the majority of this many first records


def stream_records(path: Path, items: Iterable[tuple[int, Any]], fmt: str,
                   columns: Mapping[str, str] | None, problems: list[RecordProblem]
                   ) -> Iterator[TextRecord]:
    """add_records for items read one by one (a file larger than memory): with fmt
    "auto" the format is the majority of the first SNIFF records."""
    items = iter(items)
    while True:
        chunk = list(islice(items, SNIFF))
        if not chunk:
            return
        part = LoadResult()
        fmt = add_records(part, path, chunk, fmt, columns) or fmt
        problems += part.problems
        yield from part.records


def stream_file(path: Path, fmt: str = "auto", columns: Mapping[str, str] | None = None,
                problems: list[RecordProblem] | None = None) -> Iterator[TextRecord]:
    """The records of one file, a .jsonl line by line; .json and .txt files are one
    document each and are read whole."""
    problems = [] if problems is None else problems
    if path.suffix.lower() != ".jsonl":
        part = read_file(path, fmt, columns)
        problems += part.problems
        yield from part.records
        return
    try:
        fh = open_regular(path)
    except RefusedFile as exc:
        problems.append(_skipped_problem(exc.skipped))
        return
    except OSError as exc:
        problems.append(RecordProblem(path, 0, f"cannot read the file ({exc.strerror or exc})"))
        return
    with fh:  # binary lines end at LF only, as _jsonl_items splits them
        yield from stream_records(path, _jsonl_parsed(path, fh, problems), fmt, columns,
                                  problems)


def _raw_items(path: Path, text: str, problems: list[RecordProblem]) -> list[tuple[int, Any]]:
    if path.suffix.lower() == ".json":
        try:
            top = json.loads(text)
        except json.JSONDecodeError as exc:
            problems.append(RecordProblem(path, exc.lineno,
                                          f"invalid JSON ({exc.msg}); the whole file was skipped"))
            return []
        except RecursionError:
            problems.append(RecordProblem(path, 0, f"{NESTED_TOO_DEEPLY}; the whole file was "
                                                   "skipped"))
            return []
        if not isinstance(top, (list, dict)):
            problems.append(RecordProblem(path, 0, 'expected a list of records or {"data": [...]}'))
            return []
        try:
            return json_items(text)
        except RecordError as exc:
            problems.append(RecordProblem(path, 0, str(exc)))
            return []
    # .txt: blank-line-separated blocks
    items, block, block_line = [], [], 0
    for n, line in enumerate(text.splitlines() + [""], 1):
        if line.strip():
            if not block:
                block_line = n
            block.append(line)
        elif block:
            items.append((block_line, {"text": "\n".join(block)}))
            block = []
    return items


def is_record_file(name: str) -> bool:
    return Path(name).suffix.lower() in SUFFIXES


def _dataset_files(path: Path, problems: list[Skipped]) -> list[Path]:
    """The record files a dataset path stands for: the file itself, or every regular
    .jsonl / .json / .txt file under a folder (hidden ones left out), in name order."""
    if path.is_dir():
        return sorted(files_under(path, is_record_file, problems),
                      key=lambda p: str(p.relative_to(path)).lower())
    if path.exists():  # a file; read_file refuses it if it is a pipe or a device
        return [path]
    raise TextDataError(f"{path}: no such file or folder. Set dataset.path to a .jsonl / .json / "
                        ".txt file or a folder of them.")


def _skipped_problem(skipped: Skipped) -> RecordProblem:
    return RecordProblem(skipped.path, 0, f"{skipped.reason}. {skipped.hint}")


def read_file(path: Path, fmt: str = "auto", columns: Mapping[str, str] | None = None
              ) -> LoadResult:
    """Records of one file. ``fmt`` is one of FORMATS or "auto"; ``columns`` renames
    fields first (rename_columns)."""
    result = LoadResult(files=[path])
    if path.suffix.lower() not in SUFFIXES:
        result.problems.append(RecordProblem(
            path, 0, f"not a text dataset file (use {', '.join(SUFFIXES)})"))
        return result
    try:
        data = read_regular(path)[0]
    except RefusedFile as exc:
        result.problems.append(_skipped_problem(exc.skipped))
        return result
    except OSError as exc:
        result.problems.append(RecordProblem(path, 0, f"cannot read the file "
                                                      f"({exc.strerror or exc})"))
        return result
    if path.suffix.lower() == ".jsonl":
        items = _jsonl_items(path, data, result.problems)
    else:
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            line = data[: exc.start].count(b"\n") + 1
            result.problems.append(RecordProblem(path, line, "not UTF-8 text; save the file as UTF-8"))
            return result
        items = _raw_items(path, text, result.problems)
    add_records(result, path, items, fmt, columns)
    return result


def rename_columns(obj: Any, columns: Mapping[str, str] | None) -> Any:
    """A record with its fields renamed by ``columns`` ({"question": "prompt"}), so that
    data whose names differ from the known shapes reads as one of them."""
    if not columns or not isinstance(obj, dict):
        return obj
    return {columns.get(key, key): value for key, value in obj.items()}


def add_records(result: LoadResult, path: Path, items: list[tuple[int, Any]], fmt: str,
                columns: Mapping[str, str] | None = None) -> str | None:
    """Normalise ``items`` ((line or row, object) pairs of one file) into ``result``: the
    format is the file's majority when ``fmt`` is "auto"; a misfit is a named problem.
    Returns the format used (None when none fits)."""
    items = [(line, rename_columns(obj, columns)) for line, obj in items]
    file_fmt = fmt if fmt != "auto" else file_format(obj for _, obj in items)
    for line, obj in items:
        if file_fmt is None:
            result.problems.append(RecordProblem(
                path, line, "unrecognised record: expected prompt/response, instruction/output, "
                            "messages/conversations or text fields (map other names with "
                            "dataset.columns)"))
            continue
        try:
            turns = normalise(obj, file_fmt)
        except RecordError as exc:
            result.problems.append(RecordProblem(path, line, f"{exc} ({file_fmt} format)"))
            continue
        result.records.append(TextRecord(turns, path, line, file_fmt))
    return file_fmt


def load_text_records(path: str | Path, fmt: str = "auto",
                      columns: Mapping[str, str] | None = None) -> LoadResult:
    """Every usable record under ``path`` (a file or a folder), with the problems of the
    ones that were skipped. Raises TextDataError only when the path itself is unusable."""
    if fmt != "auto" and fmt not in FORMATS:
        raise TextDataError(f"unknown text format {fmt!r}; use auto or one of {', '.join(FORMATS)}")
    total = LoadResult()
    passed_over: list[Skipped] = []
    files = _dataset_files(Path(path), passed_over)
    total.problems += [_skipped_problem(s) for s in passed_over]
    for file in files:
        part = read_file(file, fmt, columns)
        total.records += part.records
        total.problems += part.problems
        total.files += part.files
    return total
