"""Field metadata read from the schema, and dotted-path access to job values."""
from __future__ import annotations

import tomllib
import typing
from dataclasses import dataclass
from typing import Any

from pydantic.fields import FieldInfo

from .schema import SECTIONS, JobConfig


@dataclass(frozen=True)
class FieldSpec:
    path: str            # "network.rank"
    title: str
    help: str
    group: str
    advanced: bool
    kind: str            # "bool", "int", "float", "str", "choice", "list"
    default: Any
    choices: tuple[str, ...] = ()
    minimum: float | None = None      # inclusive
    maximum: float | None = None      # inclusive
    exclusive_minimum: float | None = None
    exclusive_maximum: float | None = None
    optional: bool = False            # None allowed (empty means "use the default")
    unset: str = ""                   # what an empty optional field means, in a few words
    widget: str | None = None
    local_path: bool = False
    applies_to: str = "all"


def _kind_of(annotation: Any) -> tuple[str, tuple[str, ...], bool]:
    optional = False
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        non_none = [a for a in args if a is not type(None)]
        optional = len(non_none) < len(args)
        annotation = non_none[0]
        args = typing.get_args(annotation)
    if typing.get_origin(annotation) is typing.Literal:
        return "choice", tuple(str(a) for a in args), optional
    if typing.get_origin(annotation) is list:
        return "list", (), optional
    return {bool: "bool", int: "int", float: "float", str: "str"}[annotation], (), optional


def _spec(section: str, name: str, info: FieldInfo) -> FieldSpec:
    extra = info.json_schema_extra or {}
    kind, choices, optional = _kind_of(info.annotation)
    bounds: dict[str, float] = {}
    for meta in info.metadata:
        for attr, key in (("ge", "minimum"), ("le", "maximum"), ("gt", "exclusive_minimum"),
                          ("lt", "exclusive_maximum")):
            value = getattr(meta, attr, None)
            if value is not None:
                bounds[key] = value
    default = info.default_factory() if info.default_factory else info.default
    return FieldSpec(
        path=f"{section}.{name}", title=info.title or name, help=info.description or "",
        group=extra.get("group", section.title()), advanced=bool(extra.get("advanced", False)),
        kind=kind, default=default, choices=choices, optional=optional,
        widget=extra.get("widget"), local_path=bool(extra.get("local_path", False)),
        applies_to=extra.get("applies_to", "all"), unset=extra.get("unset", ""), **bounds)


def field_specs() -> list[FieldSpec]:
    """Every user-facing field of JobConfig, in schema order."""
    return [_spec(section, name, info)
            for section, model in SECTIONS.items()
            for name, info in model.model_fields.items()]


SPECS: dict[str, FieldSpec] = {spec.path: spec for spec in field_specs()}


def get_value(job: JobConfig, path: str) -> Any:
    section, name = path.split(".", 1)
    return getattr(getattr(job, section), name)


def set_in(data: dict, path: str, value: Any) -> None:
    """Set a dotted path in a nested plain dict (as read from TOML)."""
    section, _, name = path.partition(".")
    if not name:
        data[section] = value
        return
    data.setdefault(section, {})[name] = value


def get_in(data: dict, path: str, default: Any = None) -> Any:
    section, _, name = path.partition(".")
    if not name:
        return data.get(section, default)
    table = data.get(section)
    return table.get(name, default) if isinstance(table, dict) else default


def parse_literal(text: str) -> Any:
    """Parse a command-line value the way TOML would: 2, 1e-4, true, ["a", "b"]; else a string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


class OverrideError(ValueError):
    pass


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply ``key=value`` strings (``--set network.rank=8``) to a nested dict, in place."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise OverrideError(f"'{item}' is not of the form key=value. "
                                "Example: --set network.rank=8")
        if key not in SPECS:
            close = [p for p in SPECS if p.endswith("." + key) or p.split(".")[1] == key]
            hint = f" Did you mean {' or '.join(close)}?" if close else \
                " Run 'lora-studio check --list-keys' for the list of keys."
            raise OverrideError(f"Unknown key '{key}'.{hint}")
        value = parse_literal(raw.strip())
        spec = SPECS[key]
        if spec.kind == "str" and not isinstance(value, str):
            value = raw.strip()
        if spec.kind == "list" and isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        set_in(data, key, value)
    return data
