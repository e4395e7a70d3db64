"""Turn a plain dict (a preset, a panel's values, CLI overrides) into a JobConfig.

Schema errors become Findings with field paths instead of exceptions, and the
offending values fall back to their defaults, so the cross-field rules can still
run and the user sees every problem at once.
"""
from __future__ import annotations

import copy
import difflib
from typing import Any

from pydantic import ValidationError

from .fields import SPECS, FieldSpec
from .findings import Finding
from .schema import SECTIONS, JobConfig


def _bounds_text(spec: FieldSpec) -> str:
    low = spec.minimum if spec.minimum is not None else spec.exclusive_minimum
    high = spec.maximum if spec.maximum is not None else spec.exclusive_maximum
    if low is not None and high is not None:
        return f"between {low:g} and {high:g}"
    if low is not None:
        return f"at least {low:g}"
    if high is not None:
        return f"at most {high:g}"
    return ""


def _finding_for(error: dict) -> Finding:
    loc = [str(p) for p in error["loc"]]
    path = ".".join(loc[:2])
    spec = SPECS.get(path)
    title = spec.title if spec else path
    kind = error["type"]
    value = error.get("input")
    if kind == "extra_forbidden":
        close = difflib.get_close_matches(path, list(SPECS), n=1, cutoff=0.8)
        hint = (f"Did you mean '{close[0]}'?" if close else
                "Remove it, or check the spelling against 'lora-studio check --list-keys'.")
        return Finding(path, "warning", f"Unknown key '{path}' was ignored.", hint, "unknown-key")
    if spec and spec.choices and kind in ("literal_error", "enum"):
        return Finding(path, "error", f"{title}: '{value}' is not one of {', '.join(spec.choices)}.",
                       f"Pick one of: {', '.join(spec.choices)}.", "schema-choice")
    if kind.startswith(("greater_than", "less_than")) and spec:
        return Finding(path, "error", f"{title} is {value}, out of range.",
                       f"Use a value {_bounds_text(spec)}.", "schema-bounds")
    if kind in ("string_too_short", "string_too_long", "string_pattern_mismatch") and spec:
        return Finding(path, "error", f"{title}: {error['msg']}.",
                       "Use a non-empty name without / \\ : * ? \" < > | characters."
                       if kind == "string_pattern_mismatch" else f"Change {title}.",
                       "schema-string")
    if kind == "missing":
        return Finding(path, "error", f"{title} is missing.", f"Set {path}.", "schema-missing")
    expected = spec.kind if spec else "another type"
    return Finding(path, "error", f"{title}: {value!r} is not a valid {expected} ({error['msg']}).",
                   f"Give {path} a {expected} value"
                   + (f" {_bounds_text(spec)}" if spec and _bounds_text(spec) else "") + ".",
                   "schema-type")


def _drop(data: dict, loc: tuple) -> None:
    """Remove the value at loc so the default applies."""
    node: Any = data
    for part in loc[:-1]:
        if not isinstance(node, dict) or part not in node:
            return
        node = node[part]
    if isinstance(node, dict):
        node.pop(loc[-1], None)
    elif isinstance(node, list) and isinstance(loc[-1], int) and loc[-1] < len(node):
        node.pop(loc[-1])


def parse_job(data: dict) -> tuple[JobConfig, list[Finding]]:
    """Build a JobConfig from nested data. Never raises for bad values."""
    data = copy.deepcopy(data)
    findings: list[Finding] = []
    for name in list(data):
        if name not in SECTIONS and name != "schema_version":
            findings.append(Finding(name, "warning", f"Unknown section '[{name}]' was ignored.",
                                    f"Known sections: {', '.join(SECTIONS)}.", "unknown-key"))
            data.pop(name)
        elif name in SECTIONS and not isinstance(data[name], dict):
            findings.append(Finding(name, "error", f"'{name}' must be a table of settings.",
                                    f"Write it as [{name}] with key = value lines.", "schema-type"))
            data.pop(name)
    for _ in range(50):  # each pass drops the bad values; bounded against pathological input
        try:
            return JobConfig.model_validate(data), findings
        except ValidationError as exc:
            for error in exc.errors():
                findings.append(_finding_for(error))
                _drop(data, tuple(error["loc"]))
    return JobConfig(), findings
