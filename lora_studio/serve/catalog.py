"""What ``lora-studio serve`` offers: one base model and the adapters given on the
command line, each under a model id a chat front-end shows. Read from names, job.toml
and adapter_config.json alone (no torch): the base is the one the runs trained on, the
prompt format the runs' ``dataset.chat_template``."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..config.jobfile import JobFileError, read_job_toml
from ..config.model_info import find_in_hf_cache, looks_like_hub_id
from ..config.paths import clean_path_text, resolve_local_path
from ..errors import HintedError
from ..runs.adapter_sources import PEFT_CONFIG, adapter_source


@dataclass(frozen=True)
class Served:
    id: str
    path: Path | None      # the adapter; None for the base model alone


@dataclass(frozen=True)
class Catalog:
    base: Path
    chat_template: str     # "auto", "none" or a Jinja template, as the runs trained
    models: tuple[Served, ...]   # the base first

    def find(self, model_id: str) -> Served | None:
        return next((m for m in self.models if m.id == model_id), None)

    @property
    def ids(self) -> list[str]:
        return [m.id for m in self.models]


def _split(arg: str) -> tuple[str | None, Path]:
    """``NAME=PATH`` or ``PATH`` (a path that exists wins, even with '=' in it)."""
    text = clean_path_text(arg)
    if "=" in text and not Path(text).exists():
        name, _, path = text.partition("=")
        if name.strip():
            return name.strip(), Path(clean_path_text(path))
    return None, Path(text)


def _default_id(path: Path, job_toml: Path | None) -> str:
    if (path / "job.toml").is_file():
        return path.name
    if job_toml is not None:
        run = job_toml.parent
        return run.name if path.name == "final" else f"{run.name}/{path.name}"
    return path.stem if path.is_file() else path.name


def _unique(name: str, taken: set[str]) -> str:
    unique, n = name, 1
    while unique in taken:
        n += 1
        unique = f"{name}-{n}"
    return unique


@dataclass(frozen=True)
class _Origin:
    """What one adapter says about its base model and prompt format."""
    base: str | None
    base_dir: Path | None
    chat_template: str | None
    family: str | None


def _origin(path: Path, job_toml: Path | None) -> _Origin:
    if job_toml is not None:
        try:
            job, _ = read_job_toml(job_toml)
        except JobFileError as exc:
            raise HintedError("config", str(exc), "Fix the run's job.toml, or serve its final/ "
                                                  "folder with --base naming the base model.")
        return _Origin(job.model.path, job_toml.parent, job.dataset.chat_template,
                       job.model.family)
    config = path / PEFT_CONFIG
    if config.is_file():
        try:
            named = json.loads(config.read_text(encoding="utf-8")).get("base_model_name_or_path")
        except (OSError, ValueError, AttributeError):
            named = None
        return _Origin(named or None, path, None, None)
    return _Origin(None, None, None, None)


def resolve_base(value: str, base_dir: Path | None = None) -> Path:
    """A local model folder, or the snapshot of a Hub id already in the cache."""
    found = resolve_local_path(value, base_dir)
    if found is None and looks_like_hub_id(value):
        found = find_in_hf_cache(value)
    if found is None or not (found / "config.json").is_file():
        raise HintedError("missing", f"The base model {value} is not a model folder on this "
                                     "computer (no config.json there, not in the Hugging Face "
                                     "cache).",
                          "Pass --base with the folder of the model the adapters were trained "
                          "on.")
    return found


def build_catalog(adapters: list[str], base: str | None = None) -> Catalog:
    """HintedError naming the path or the disagreement when the adapters cannot be
    served together."""
    named: list[tuple[str | None, Path]] = [_split(a) for a in adapters]
    origins: list[tuple[Path, _Origin]] = []
    sources = []
    for _, path in named:
        source = adapter_source(path)
        origin = _origin(source.weights.parent, source.job_toml)
        if origin.family not in (None, "text"):
            raise HintedError("config", f"{path} is an image ({origin.family}) run; serve takes "
                                        "text adapters.",
                              "Load image LoRAs in ComfyUI, A1111 or the Playground tab.")
        sources.append(source)
        origins.append((path, origin))
    if base is not None:
        base_path = resolve_base(base)
    else:
        said = {}
        for path, origin in origins:
            if origin.base:
                said.setdefault(str(resolve_base(origin.base, origin.base_dir)), path)
        if not said:
            raise HintedError("config", "No adapter names its base model"
                                        + (" (no job.toml, no base_model_name_or_path)."
                                           if adapters else "."),
                              "Pass --base with the folder of the model to serve.")
        if len(said) > 1:
            raise HintedError("config", "The adapters were trained on different base models: "
                              + "; ".join(f"{p} ({b})" for b, p in said.items()) + ".",
                              "Serve the adapters of one base model at a time, or pass --base "
                              "to say which base to load.")
        base_path = Path(next(iter(said)))
    templates = {o.chat_template for _, o in origins if o.chat_template is not None}
    if len(templates) > 1:
        raise HintedError("config", "The runs formatted their prompts with different chat "
                                    "templates (dataset.chat_template); one server formats every "
                                    "prompt one way.",
                          "Serve the runs that share a chat template together.")
    taken = {base_path.name}
    models = [Served(base_path.name, None)]
    for (name, path), source in zip(named, sources):
        model_id = _unique(name or _default_id(path, source.job_toml), taken)
        taken.add(model_id)
        models.append(Served(model_id, path))
    return Catalog(base_path, next(iter(templates), "auto"), tuple(models))
