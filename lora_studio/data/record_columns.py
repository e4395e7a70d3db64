"""The record table's columns for a text dataset: one column per role of a
conversation (System, User, Assistant) or per field of a flat record (Prompt,
Response, Instruction, …) under a readable header, and readable labels for the
fields of the record form. Cells are read leniently, so a record training would
skip still shows what it holds."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .text_records import PROMPT_KEYS, RESPONSE_KEYS, ROLE_ALIASES

FIELD_TITLES = {
    "system": "System", "instruction": "Instruction", "prompt": "Prompt",
    "question": "Question", "input": "Input", "query": "Query", "response": "Response",
    "answer": "Answer", "output": "Output", "completion": "Completion", "text": "Text",
}
# Known fields in reading order: what the model is told, asked, then answers.
FIELD_ORDER = ("system", "instruction", *PROMPT_KEYS, *RESPONSE_KEYS, "text")
ROLE_TITLES = {"system": "System", "user": "User", "assistant": "Assistant"}
CONVERSATION_KEYS = ("messages", "conversations")
TURN_PART_TITLES = {"role": "role", "from": "role", "content": "text", "value": "text"}
TURNS_SEPARATOR = " │ "


@dataclass(frozen=True)
class Column:
    title: str
    key: str            # a top-level field; for kind "role" a role; "" for the turn count
    kind: str = "field"  # "field", "role" (the turns of that role) or "turns" (how many)


def title_of(key: str) -> str:
    return FIELD_TITLES.get(key) or key.replace("_", " ").strip().capitalize() or key


def conversation(obj: Any) -> list[tuple[str, str]]:
    """(role, text) of each turn a conversation record holds, roles normalised
    (human -> user, gpt -> assistant); turns without a known role or text left out."""
    if not isinstance(obj, dict):
        return []
    key = next((k for k in CONVERSATION_KEYS if k in obj), None)
    items = obj.get(key) if key else None
    turns = []
    for item in items if isinstance(items, list) else []:
        if not isinstance(item, dict):
            continue
        role = ROLE_ALIASES.get(str(item.get("role", item.get("from", ""))).strip().lower())
        text = item.get("content", item.get("value"))
        if role and isinstance(text, str):
            turns.append((role, text))
    return turns


def _ordered(keys: list[str]) -> list[str]:
    known = [k for k in FIELD_ORDER if k in keys]
    return known + [k for k in keys if k not in known]


def record_columns(objs: list[Any], fmt: str | None) -> list[Column]:
    """The columns for a file's records (all of them, so a field only some records
    have still gets its column)."""
    seen: dict[str, None] = {}
    roles: set[str] = set()
    for obj in objs:
        if not isinstance(obj, dict):
            continue
        seen.update((k, None) for k, v in obj.items() if isinstance(v, str))
        if fmt == "messages":
            roles.update(role for role, _ in conversation(obj))
    columns = []
    if fmt == "messages":
        columns = [Column("Turns", "", "turns")] + [
            Column(title, role, "role") for role, title in ROLE_TITLES.items() if role in roles]
    return columns + [Column(title_of(k), k) for k in _ordered(list(seen))]


def cell_text(obj: Any, column: Column) -> str:
    if column.kind == "role":
        return TURNS_SEPARATOR.join(t for r, t in conversation(obj) if r == column.key)
    if column.kind == "turns":
        return str(len(conversation(obj)))
    value = obj.get(column.key) if isinstance(obj, dict) else None
    return value if isinstance(value, str) else ""


def field_title(path: tuple) -> str:
    """The form's label for a field path: ("messages", 0, "content") -> "Turn 1 text",
    ("instruction",) -> "Instruction", ("meta", "source") -> "Meta › source"."""
    if len(path) == 3 and path[0] in CONVERSATION_KEYS and isinstance(path[1], int):
        return f"Turn {path[1] + 1} {TURN_PART_TITLES.get(str(path[2]), str(path[2]))}"
    head = title_of(str(path[0])) if path else ""
    return " › ".join([head] + [str(p + 1 if isinstance(p, int) else p) for p in path[1:]])
