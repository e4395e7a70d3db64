"""What the parameter panel holds, without Qt: the current value of every field,
the preset it was loaded from (for the '*' marker and Revert) and the findings of
the last validation, by field path. Tests drive it without a window.
"""
from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from ..config.fields import SPECS, FieldSpec, get_in, set_in
from ..config.findings import Finding, has_errors
from ..config.preset_match import kind_of_family
from ..config.schema import JobConfig
from ..config.validate import check

Checker = Callable[[dict], tuple[JobConfig, list[Finding]]]

LEVEL_ORDER = {"error": 0, "warning": 1, "info": 2}


def flat_values(data: dict) -> dict[str, Any]:
    """Every field of the schema from nested preset/job data, defaults filled in;
    keys the schema does not know are dropped (parse reports them)."""
    return {path: copy.deepcopy(get_in(data, path, spec.default)) for path, spec in SPECS.items()}


class PanelState:
    def __init__(self, checker: Checker | None = None):
        self.checker = checker or check
        self.values: dict[str, Any] = flat_values({})
        self.baseline: dict[str, Any] = dict(self.values)
        self.preset_name: str | None = None
        self.preset_meta: dict = {}
        self.job: JobConfig = JobConfig()
        self.findings: list[Finding] = []
        self.notes: list[Finding] = []  # from reading the preset (migration, unknown keys)

    # -- loading and editing -------------------------------------------------
    def load(self, data: dict, name: str | None = None, meta: dict | None = None,
             notes: list[Finding] | None = None) -> None:
        """Take a preset's settings as the new values and the new baseline. ``notes``
        are what reading the file found beyond the fields' values (they stay listed
        until the next load, since validation of the values cannot see them)."""
        data = {k: v for k, v in data.items() if k != "meta"}
        self.values = flat_values(data)
        self.baseline = copy.deepcopy(self.values)
        self.preset_name = name
        self.preset_meta = dict(meta or {})
        self.notes = [f for f in notes or [] if f.path not in SPECS]

    def set(self, path: str, value: Any) -> None:
        if path not in SPECS:
            raise KeyError(path)
        self.values[path] = value

    def revert(self) -> None:
        self.values = copy.deepcopy(self.baseline)

    def mark_saved(self, name: str | None = None) -> None:
        """The current values are now what the preset holds."""
        self.baseline = copy.deepcopy(self.values)
        if name is not None:
            self.preset_name = name

    def dirty_paths(self) -> list[str]:
        return [p for p in SPECS if self.values[p] != self.baseline[p]]

    @property
    def dirty(self) -> bool:
        return bool(self.dirty_paths())

    def title(self) -> str:
        """The preset's name as the preset bar shows it, '*' when modified."""
        name = self.preset_name or "Untitled"
        return f"{name} *" if self.dirty else name

    # -- what the job is -----------------------------------------------------
    @property
    def kind(self) -> str:
        return kind_of_family(self.values["model.family"])

    def applies(self, spec: FieldSpec) -> bool:
        """Whether the field is used by the current job kind (all fields while the
        family is 'auto')."""
        return spec.applies_to == "all" or self.kind == "unknown" or spec.applies_to == self.kind

    def to_data(self) -> dict:
        """Nested data for validation or saving; unset optionals are left out
        (TOML has no null)."""
        data: dict = {}
        for path, value in self.values.items():
            if value is not None:
                set_in(data, path, copy.deepcopy(value))
        return data

    # -- validation ----------------------------------------------------------
    def validate(self) -> list[Finding]:
        self.job, findings = self.checker(self.to_data())
        self.findings = sorted(self.notes + findings, key=lambda f: LEVEL_ORDER.get(f.level, 3))
        return self.findings

    def findings_for(self, path: str) -> list[Finding]:
        return [f for f in self.findings if f.path == path]

    @property
    def can_train(self) -> bool:
        return not has_errors(self.findings)
