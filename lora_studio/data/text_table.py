"""One .jsonl / .json text dataset file as an editable table of records. Problems
come from text_records (the same reader the text engine uses), so the table shows
exactly the lines training would skip. Edits change the record's JSON object in
place; saving writes the file atomically, keeping untouched lines byte-for-byte
(bad lines included) and the file's line endings."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lora_studio.data.text_records import (PROMPT_KEYS, RESPONSE_KEYS, RecordError, RecordProblem,
                                           detect_format, json_items, normalise, read_file,
                                           split_lines)
from lora_studio.data.walk import RefusedFile, read_regular
from lora_studio.fsutil import atomic_write_bytes

EDITABLE_SUFFIXES = (".jsonl", ".json")
# Per format, the top-level fields a record needs (any one name of each group).
REQUIRED_FIELDS = {
    "prompt_response": (PROMPT_KEYS, RESPONSE_KEYS),
    "alpaca": (("instruction",), ("output",)),
    "text": (("text",),),
}
FieldPath = tuple[Any, ...]  # keys / list indices from the record object to a string


class TextTableError(ValueError):
    pass


@dataclass
class Row:
    line: int           # 1-based line where the record starts
    obj: Any            # the parsed JSON value; edited in place
    raw: str            # the original line (jsonl) so an untouched row is written as it was
    error: str = ""     # why the text engine would skip this record ("" when usable)
    edited: bool = False


def string_fields(obj: Any, prefix: FieldPath = ()) -> list[tuple[FieldPath, str]]:
    """Every string inside a record, with its path: the fields a form can edit."""
    if isinstance(obj, str):
        return [(prefix, obj)]
    if isinstance(obj, dict):
        return [f for k, v in obj.items() for f in string_fields(v, prefix + (k,))]
    if isinstance(obj, list):
        return [f for i, v in enumerate(obj) for f in string_fields(v, prefix + (i,))]
    return []


class TextTable:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        if self.path.suffix.lower() not in EDITABLE_SUFFIXES:
            raise TextTableError(f"{self.path}: only .jsonl and .json files open as a table "
                                 f"(convert the file to JSON Lines to edit it here).")
        try:
            data = read_regular(self.path)[0]
        except RefusedFile as exc:
            raise TextTableError(str(exc.skipped)) from exc
        except OSError as exc:
            raise TextTableError(f"Cannot read {self.path}: {exc.strerror or exc}.") from exc
        self.bom = data.startswith(b"\xef\xbb\xbf")
        try:
            self.text = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise TextTableError(f"{self.path} is not UTF-8 text; save it as UTF-8 and open it again.") from exc
        self.newline = "\r\n" if "\r\n" in self.text else "\n"
        loaded = read_file(self.path)
        self.problems: list[RecordProblem] = loaded.problems
        self.format = loaded.records[0].format if loaded.records else None
        self.rows: list[Row] = []
        self.top: Any = None
        if self.path.suffix.lower() == ".jsonl":
            self._lines = split_lines(self.text)
            for n, line in enumerate(self._lines, 1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError:
                    continue  # listed in self.problems; kept verbatim on save
                self.rows.append(Row(n, obj, line))
        else:
            try:
                self.top = json.loads(self.text)
                items = json_items(self.text)
            except (json.JSONDecodeError, RecordError):
                items = []
            self.rows = [Row(line, obj, "") for line, obj in items]
            self._rebind_json_rows()
        errors = {p.line: p.message for p in self.problems}
        for row in self.rows:
            row.error = errors.get(row.line, "")

    def _rebind_json_rows(self) -> None:
        """Make row objects the very objects inside self.top, so edits reach the file."""
        items = self.top if isinstance(self.top, list) else (
            self.top.get("data") if isinstance(self.top, dict) else None)
        if isinstance(items, list) and len(items) == len(self.rows):
            for row, obj in zip(self.rows, items):
                row.obj = obj

    @property
    def dirty(self) -> bool:
        return any(r.edited for r in self.rows)

    def fields(self, row: int) -> list[tuple[FieldPath, str]]:
        """The record's strings, plus the fields its format needs but it lacks
        (empty), so a record the engine would skip can be completed in the form."""
        obj = self.rows[row].obj
        fields = string_fields(obj)
        if isinstance(obj, dict):
            for choices in REQUIRED_FIELDS.get(self.format, ()):
                if not any(k in obj for k in choices):
                    fields.append(((choices[0],), ""))
        return fields

    def set_field(self, row: int, path: FieldPath, value: str) -> str:
        """Change one string of a record; returns the record's new error ("" if usable)."""
        r = self.rows[row]
        target = r.obj
        for key in path[:-1]:
            target = target[key]
        if isinstance(target, dict) and path[-1] not in target:
            if not value:
                return r.error
        elif target[path[-1]] == value:
            return r.error
        target[path[-1]] = value
        r.edited = True
        r.error = self.validate(r.obj)
        return r.error

    def validate(self, obj: Any) -> str:
        fmt = self.format or detect_format(obj)
        if fmt is None:
            return "unrecognised record"
        try:
            normalise(obj, fmt)
        except RecordError as exc:
            return f"{exc} ({fmt} format)"
        return ""

    def unsaved_summary(self) -> str:
        """What closing the table now would lose, in words; "" when nothing."""
        edited = sum(r.edited for r in self.rows)
        return f"{edited} edited record(s) in {self.path} are not saved." if edited else ""

    def try_save(self) -> str:
        """save(); a write that failed comes back as the message to show ("" when saved)."""
        try:
            self.save()
        except OSError as exc:
            return f"Cannot save {self.path}: {exc.strerror or exc}. Nothing was changed on disk."
        return ""

    def save(self) -> None:
        """Write the file atomically; nothing is written when nothing was edited."""
        if not self.dirty:
            return
        if self.path.suffix.lower() == ".jsonl":
            lines = list(self._lines)
            for r in self.rows:
                if r.edited:
                    lines[r.line - 1] = json.dumps(r.obj, ensure_ascii=False)
            text = self.newline.join(lines) + (self.newline if self.text.endswith(("\n", "\r")) else "")
        else:
            text = json.dumps(self.top, ensure_ascii=False, indent=2) + "\n"
            text = text.replace("\n", self.newline)
        atomic_write_bytes(self.path, (b"\xef\xbb\xbf" if self.bom else b"") + text.encode("utf-8"))
        if self.path.suffix.lower() == ".jsonl":
            self._lines = text.splitlines()
        else:  # re-indented: records start on new lines now
            for r, (line, _obj) in zip(self.rows, json_items(text)):
                r.line = line
        self.text = text
        for r in self.rows:
            r.edited = False
