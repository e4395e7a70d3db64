"""Presets: TOML files with a [meta] table and only the settings that differ from
the defaults. Presets are data, never executed.

Built-in presets live in the repository's ``presets/`` folder and are read-only;
the user's live in ``<config dir>/presets`` (platformdirs, or $LORA_STUDIO_CONFIG_DIR).
Reading never raises for bad values: they become Findings. A file that cannot be
read at all (missing, not TOML, not UTF-8) raises PresetError naming the file and,
for TOML syntax errors, the line and column.
"""
from __future__ import annotations

import copy
import json
import os
import re
import tomllib
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import platformdirs
import tomli_w

import lora_studio

from ..fsutil import atomic_write_text
from .fields import SPECS, get_in
from .findings import Finding
from .jobfile import job_to_dict
from .kohya import convert_kohya
from .migrate import migrate
from .model_info import looks_like_hub_id
from .parse import parse_job
from .paths import clean_path_text, resolve_local_path
from .schema import SCHEMA_VERSION, SECTIONS, JobConfig
from .trust import Risk, risks

CONFIG_DIR_ENV = "LORA_STUDIO_CONFIG_DIR"
SUFFIX = ".toml"
META_KEYS = ("name", "description", "model_family", "vram_class", "schema_version", "author")
VRAM_CLASS = re.compile(r"^(\d+(\.\d+)?\s*GB|CPU)$", re.IGNORECASE)
# Paths that are looked up beside the preset file (see paths.path_candidates).
RELATIVE_TO_PRESET = ("model.path", "dataset.path", "dataset.reg_path")

Origin = Literal["built-in", "user"]


TOO_DEEP = "is nested too deeply to read (thousands of levels of brackets); nothing was changed."


class PresetError(ValueError):
    """A preset that cannot be read or changed; str() names the file and what to do."""

    def __init__(self, path: str | Path, message: str, hint: str = "",
                 line: int | None = None, column: int | None = None):
        super().__init__(message)
        self.path, self.message, self.hint, self.line, self.column = Path(path), message, hint, line, column

    def __str__(self) -> str:
        where = f"{self.path} line {self.line}, column {self.column}" if self.line else str(self.path)
        return f"{where}: {self.message}" + (f" {self.hint}" if self.hint else "")


class PresetReadOnlyError(PresetError):
    """A built-in preset was to be changed."""


@dataclass(frozen=True)
class PresetMeta:
    name: str
    description: str = ""
    model_family: str = "auto"
    vram_class: str = ""
    schema_version: int = SCHEMA_VERSION
    author: str = ""


@dataclass
class PresetFile:
    """A preset as read from disk: meta, the job settings (migrated to the current
    schema, as written otherwise) and what reading it found."""
    path: Path
    meta: PresetMeta
    data: dict
    findings: list[Finding] = field(default_factory=list)

    @property
    def base_dir(self) -> Path:
        """Relative model / dataset paths are looked up here first."""
        return self.path.parent


@dataclass
class LoadedPreset(PresetFile):
    job: JobConfig = field(default_factory=JobConfig)


@dataclass(frozen=True)
class PresetInfo:
    path: Path
    origin: Origin
    meta: PresetMeta
    error: str = ""  # why the file could not be read; meta is then a stand-in


@dataclass
class ImportResult:
    path: Path
    findings: list[Finding]
    unsupported: dict[str, Any] = field(default_factory=dict)  # kohya keys with no equivalent
    left_out: list[str] = field(default_factory=list)  # risky settings not kept (trust.py)


# ---- locations ---------------------------------------------------------------

def builtin_dir() -> Path:
    return Path(lora_studio.__file__).resolve().parents[1] / "presets"


def user_dir() -> Path:
    base = os.environ.get(CONFIG_DIR_ENV) or platformdirs.user_config_dir("lora-studio", appauthor=False)
    return Path(base) / "presets"


def is_builtin(path: str | Path) -> bool:
    return Path(path).resolve().is_relative_to(builtin_dir())


def slug(name: str) -> str:
    """A file name for a preset name: letters and digits (any script), '-' between words."""
    text = "".join(c.lower() if c.isalnum() else "-" for c in name.strip())
    return re.sub(r"-{2,}", "-", text).strip("-") or "preset"


def user_preset_path(name: str) -> Path:
    """A free file name for a new user preset called `name` (never an existing file)."""
    folder, stem = user_dir(), slug(name)
    candidate, n = folder / f"{stem}{SUFFIX}", 2
    while candidate.exists():
        candidate, n = folder / f"{stem}-{n}{SUFFIX}", n + 1
    return candidate


# ---- reading -----------------------------------------------------------------

def _toml_error(path: Path, text: str, exc: tomllib.TOMLDecodeError) -> PresetError:
    message = str(exc)
    match = re.search(r"\(at line (\d+), column (\d+)\)", message)
    if match:
        line, column = int(match[1]), int(match[2])
    else:  # "(at end of document)"
        lines = text.split("\n")
        line, column = len(lines), len(lines[-1]) + 1
    reason = re.sub(r"\s*\(at [^)]*\)$", "", message)
    return PresetError(path, f"not valid TOML: {reason}.",
                       "Text values need quotes (name = \"x\"), true/false are lower case, and each "
                       "key = value goes on its own line.", line, column)


def _read_text(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8-sig")
    except FileNotFoundError:
        raise PresetError(path, "no such file.", "Check the path, or run 'lora-studio presets' "
                          "to list the presets.") from None
    except IsADirectoryError:
        raise PresetError(path, "is a folder, not a preset file.") from None
    except UnicodeDecodeError:
        raise PresetError(path, "is not UTF-8 text.", "Save it as UTF-8 in your editor.") from None
    except OSError as exc:
        raise PresetError(path, f"cannot be read ({exc.strerror or exc}).") from None


def _read_document(path: Path) -> dict:
    if path.suffix.lower() == ".json":
        raise PresetError(path, "is a JSON file; presets are TOML.",
                          "A kohya_ss config can be imported: the Import button of the preset bar, "
                          "or lora-studio presets import FILE.")
    text = _read_text(path)
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise _toml_error(path, text, exc) from None
    except RecursionError:
        raise PresetError(path, TOO_DEEP, "A preset is a few flat tables of settings.") from None


def _meta_finding(key: str, message: str, hint: str, rule: str = "preset-meta") -> Finding:
    return Finding(f"meta.{key}" if key else "meta", "warning", message, hint, rule)


def _schema_version(doc: dict) -> tuple[int, list[Finding]]:
    meta = doc.get("meta") if isinstance(doc.get("meta"), dict) else {}
    version = meta.get("schema_version", doc.get("schema_version"))
    if version is None:
        # Only schema 1 kept its settings in [train]; without a version, that is the tell.
        if "train" in doc and not any(s in doc for s in SECTIONS):
            return 1, [Finding("meta.schema_version", "info", "No schema_version in [meta]; the [train] "
                               "table marks it as version 1.", "Save the preset to store it in the "
                               "current format.", "preset-meta")]
        return SCHEMA_VERSION, []
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        return SCHEMA_VERSION, [_meta_finding("schema_version", f"schema_version {version!r} is not a "
                                              "version number; read as the current version.",
                                              f"Write schema_version = {SCHEMA_VERSION}.")]
    return version, []


def _parse_meta(raw: Any, path: Path) -> tuple[PresetMeta, list[Finding]]:
    findings: list[Finding] = []
    if not isinstance(raw, dict):
        if raw is not None:
            findings.append(_meta_finding("", "[meta] is not a table and was ignored.",
                                          "Write it as [meta] with name = \"...\" lines."))
        raw = {}
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in META_KEYS:
            findings.append(Finding(f"meta.{key}", "warning", f"Unknown key 'meta.{key}' was ignored.",
                                    f"[meta] knows: {', '.join(META_KEYS)}.", "unknown-key"))
        elif key == "schema_version":
            continue  # read by _schema_version
        elif key == "vram_class" and isinstance(value, (int, float)) and not isinstance(value, bool):
            values[key] = f"{value:g}GB"
        elif not isinstance(value, str):
            findings.append(_meta_finding(key, f"meta.{key} should be text, not {value!r}; ignored.",
                                          f"Write {key} = \"...\" with quotes."))
        else:
            values[key] = value.strip()
    families = SPECS["model.family"].choices
    if values.get("model_family", "auto") not in families:
        bad = values.pop("model_family")
        findings.append(_meta_finding("model_family", f"meta.model_family '{bad}' is not one of "
                                      f"{', '.join(families)}.", "Use the same value as model.family."))
    if values.get("vram_class") and not VRAM_CLASS.match(values["vram_class"]):
        findings.append(_meta_finding("vram_class", f"meta.vram_class '{values['vram_class']}' is not of the "
                                      "form 8GB.", "Write the card's memory, e.g. vram_class = \"12GB\"."))
    values["name"] = values.get("name") or path.stem
    return PresetMeta(**values), findings


def read_preset(path: str | Path) -> PresetFile:
    """Read and migrate a preset file; PresetError when it is not a readable TOML file."""
    path = Path(path)
    doc = _read_document(path)
    version, findings = _schema_version(doc)
    if version > SCHEMA_VERSION:
        findings.append(Finding("meta.schema_version", "warning",
                                f"This preset is schema version {version}, newer than this LoRA Studio "
                                f"understands ({SCHEMA_VERSION}); settings it does not know are ignored.",
                                "Update LoRA Studio to use every setting of this preset.", "preset-newer"))
    elif version < SCHEMA_VERSION:
        doc, notes = migrate(doc, version)
        findings.extend(notes)
    meta, meta_findings = _parse_meta(doc.pop("meta", None), path)
    findings.extend(meta_findings)
    doc.pop("schema_version", None)
    family = get_in(doc, "model.family")
    if family in SPECS["model.family"].choices:  # a bad family is parse_job's to report
        if meta.model_family == "auto":
            meta = replace(meta, model_family=family)
        elif meta.model_family != family:
            findings.append(_meta_finding("model_family", f"meta.model_family is '{meta.model_family}' "
                                          f"but model.family is '{family}'.", "Make them the same.",
                                          "preset-family-mismatch"))
    return PresetFile(path, replace(meta, schema_version=SCHEMA_VERSION), doc, findings)


def load_preset(path: str | Path) -> LoadedPreset:
    """A preset file as a JobConfig plus every finding; PresetError only for unreadable files."""
    preset = read_preset(path)
    job, findings = parse_job(preset.data)
    return LoadedPreset(preset.path, preset.meta, preset.data, preset.findings + findings, job)


def list_presets() -> list[PresetInfo]:
    """Built-in presets, then the user's, each sorted by file name."""
    found = []
    for origin, folder in (("built-in", builtin_dir()), ("user", user_dir())):
        for path in sorted(folder.glob(f"*{SUFFIX}")) if folder.is_dir() else []:
            if path.name.startswith("."):  # atomic-write temp files
                continue
            try:
                found.append(PresetInfo(path, origin, read_preset(path).meta))
            except PresetError as exc:
                found.append(PresetInfo(path, origin, PresetMeta(name=path.stem), error=str(exc)))
    return found


def find_preset(ref: str | Path) -> Path:
    """A preset file from a path, or from the file stem or name of a listed preset."""
    path = Path(clean_path_text(str(ref)))
    if path.is_file():
        return path
    wanted = str(ref).strip().casefold()
    for info in list_presets():
        if wanted in (info.path.stem.casefold(), info.meta.name.casefold()):
            return info.path
    raise PresetError(path, "no such preset file, and no preset with that name.",
                      "Run 'lora-studio presets' to list the presets.")


# ---- writing -----------------------------------------------------------------

def diff_from_defaults(data: dict) -> dict:
    """Only the settings whose value differs from JobConfig's default (unknown keys stay)."""
    defaults = job_to_dict(JobConfig())
    out: dict = {}
    for section, values in data.items():
        if section in SECTIONS and isinstance(values, dict):
            changed = {k: v for k, v in values.items()
                       if v is not None and v != defaults[section].get(k, object())}
            if changed:
                out[section] = changed
        elif section != "schema_version":
            out[section] = values
    return out


def _check_writable(path: Path) -> None:
    if is_builtin(path):
        raise PresetReadOnlyError(path, "is a built-in preset and cannot be changed.",
                                  "Duplicate it first; the copy is yours to edit.")


def _meta_table(meta: PresetMeta) -> dict:
    table = asdict(replace(meta, schema_version=SCHEMA_VERSION))
    return {k: v for k, v in table.items() if v != "" or k == "name"}


def _write(path: Path, meta: PresetMeta, data: dict) -> Path:
    _check_writable(path)
    document = {"meta": _meta_table(meta), **diff_from_defaults(data)}
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, tomli_w.dumps(document))
    return path


def save_preset(job: JobConfig, meta: PresetMeta, path: str | Path,
                base_dir: str | Path | None = None) -> Path:
    """Write `job` as a preset holding only what differs from the defaults.

    base_dir: the folder the job's relative model / dataset paths were written
    against (the preset it was loaded from); saved elsewhere, they are made absolute.
    """
    path, data = Path(path), job_to_dict(job)
    if base_dir is not None and Path(base_dir).resolve() != path.parent.resolve():
        data = _anchored(data, Path(base_dir))
    return _write(path, meta, data)


def _anchored(data: dict, base_dir: Path) -> dict:
    """Relative model / dataset paths made absolute where they exist (looked up from
    base_dir first, as validation does), so they still point there from another folder."""
    data = copy.deepcopy(data)
    for path in RELATIVE_TO_PRESET:
        value = get_in(data, path)
        if isinstance(value, str) and value and not Path(clean_path_text(value)).is_absolute():
            found = resolve_local_path(value, base_dir)
            if found is not None:
                section, key = path.split(".")
                data[section][key] = str(found.resolve())
    return data


def duplicate_preset(path: str | Path, new_name: str) -> Path:
    """Copy any preset (built-in ones included) into the user folder under a new name."""
    preset = read_preset(path)
    target = user_preset_path(new_name)
    return _write(target, replace(preset.meta, name=new_name), _anchored(preset.data, preset.base_dir))


def rename_preset(path: str | Path, new_name: str) -> Path:
    """Give a user preset a new name (and file name, in the same folder)."""
    path = Path(path)
    _check_writable(path)
    preset = read_preset(path)
    target = path.parent / f"{slug(new_name)}{SUFFIX}"
    if target.exists() and target.resolve() != path.resolve():
        raise PresetError(target, "already exists.", "Pick another name, or delete that preset first.")
    _write(target, replace(preset.meta, name=new_name), preset.data)
    if target.resolve() != path.resolve():
        path.unlink()
    return target


def delete_preset(path: str | Path) -> None:
    path = Path(path)
    _check_writable(path)
    try:
        path.unlink()
    except FileNotFoundError:
        raise PresetError(path, "no such file.") from None


@dataclass
class PendingImport:
    """A preset file read for import, not yet written: what a user is asked about."""
    file: Path
    meta: PresetMeta
    data: dict
    findings: list[Finding]
    unsupported: dict[str, Any]
    risks: list[Risk]


def read_import(file: str | Path) -> PendingImport:
    """Read a .toml preset, or convert a kohya_ss LoRA .json config, for import;
    PresetError when the file cannot be read."""
    file = Path(file)
    suffix = file.suffix.lower()
    if suffix == SUFFIX:
        preset = read_preset(file)
        meta, data, findings, unsupported = preset.meta, _anchored(preset.data, preset.base_dir), \
            preset.findings, {}
    elif suffix == ".json":
        text = _read_text(file)
        try:
            config = json.loads(text)
        except json.JSONDecodeError as exc:
            raise PresetError(file, f"not valid JSON: {exc.msg}.", "Is this a kohya_ss config file?",
                              exc.lineno, exc.colno) from None
        except RecursionError:
            raise PresetError(file, TOO_DEEP, "Is this a kohya_ss config file?") from None
        if not isinstance(config, dict):
            raise PresetError(file, "is not a kohya_ss config (expected a JSON object of settings).")
        dataset_config, notes = _kohya_dataset_config(file, config)
        result = convert_kohya(config, fallback_name=file.stem, dataset_config=dataset_config)
        meta, data = PresetMeta(**result.meta), result.data
        findings, unsupported = notes + result.findings, result.unsupported_set
    else:
        raise PresetError(file, "cannot be imported.",
                          "Import a LoRA Studio preset (.toml) or a kohya_ss LoRA config (.json).")
    return PendingImport(file, meta, data, findings, unsupported, risks(data))


def _kohya_dataset_config(file: Path, config: dict) -> tuple[dict | None, list[Finding]]:
    """The dataset config TOML a kohya config names (looked up beside it first), parsed;
    None and a finding naming the file when it cannot be read."""
    name = config.get("dataset_config")
    if not isinstance(name, str) or not name.strip():
        return None, []
    path = resolve_local_path(name, file.parent)
    try:
        if path is None:
            raise PresetError(Path(name), "no such file.")
        return _anchored_image_dirs(_read_document(path), path.parent), []
    except PresetError as exc:
        return None, [Finding("dataset.subsets", "warning", f"The dataset config of this kohya "
                              f"config was not imported: {exc}",
                              "Put the file beside the kohya config, or add its folders as "
                              "concept folder lines yourself.", "kohya-dataset-config")]


def _anchored_image_dirs(doc: dict, base_dir: Path) -> dict:
    """Relative subset image_dir values that exist beside the dataset config made absolute,
    so the imported preset finds them from the presets folder."""
    for dataset in doc.get("datasets", []) if isinstance(doc.get("datasets"), list) else []:
        subsets = dataset.get("subsets", []) if isinstance(dataset, dict) else []
        for subset in subsets if isinstance(subsets, list) else []:
            folder = subset.get("image_dir") if isinstance(subset, dict) else None
            if isinstance(folder, str) and folder and not Path(folder).is_absolute():
                found = resolve_local_path(folder, base_dir)
                if found is not None:
                    subset["image_dir"] = str(found.resolve())
    return doc


KEEP_HINT = ("If you trust the file, import it again and keep them (the window asks; on the "
             "command line add --trust).")


def write_import(pending: PendingImport, name: str = "", trust: bool = False) -> ImportResult:
    """Write a read preset into the user folder, renamed to `name` when given. Its risky
    settings (config/trust.py) are kept only with `trust`; otherwise they are left out,
    so the defaults apply, and each is named in a finding."""
    data, notes = copy.deepcopy(pending.data), []
    for risk in pending.risks:
        if trust:
            notes.append(Finding(risk.path, "warning", f"Kept because you trust the file: "
                                 f"{risk.message}", risk.hint, risk.rule))
            continue
        section, key = risk.path.split(".")
        del data[section][key]
        notes.append(Finding(risk.path, "warning", f"Left out: {risk.message}", KEEP_HINT, risk.rule))
    meta = replace(pending.meta, name=name.strip()) if name.strip() else pending.meta
    path = _write(user_preset_path(meta.name), meta, data)
    return ImportResult(path, pending.findings + notes + parse_job(data)[1], pending.unsupported,
                        [r.path for r in pending.risks if not trust])


def import_preset(file: str | Path, name: str = "", trust: bool = False) -> ImportResult:
    """read_import then write_import: nothing is written when the file cannot be read."""
    return write_import(read_import(file), name, trust)


def _shareable_model_path(value: str, base_dir: Path) -> bool:
    """A Hub id ('org/model') says nothing about this machine; a local path does."""
    return looks_like_hub_id(value) and resolve_local_path(value, base_dir) is None


def export_preset(path: str | Path, dest: str | Path, include_local_paths: bool = False) -> list[str]:
    """Write a copy of a preset for sharing. Paths on this machine are left out unless
    asked for; returns the dotted paths that were left out."""
    preset = read_preset(path)
    data = _anchored(preset.data, preset.base_dir)
    left_out = []
    if not include_local_paths:
        for spec in SPECS.values():
            value = get_in(data, spec.path)
            if not spec.local_path or value is None:
                continue
            if spec.path == "model.path" and isinstance(value, str) \
                    and _shareable_model_path(value, preset.base_dir):
                continue
            section, key = spec.path.split(".")
            del data[section][key]
            left_out.append(spec.path)
    _write(Path(dest), preset.meta, data)
    return left_out
