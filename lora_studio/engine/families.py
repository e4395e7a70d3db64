"""Which package under engine/ trains which model family. A new family (Flux, SD3)
is a new package with prepare / export / OOM_HINT (core/family.py) and its rows here,
in runs/exports.py (its export formats) and in the schema's ModelFamily."""
from __future__ import annotations

import importlib
from types import ModuleType

from ..config.schema import JobConfig
from .core.control import EngineError

# job.model.family -> package; the package name is also the run's family in
# runs/exports.py ("text" or "image").
PACKAGES = {"text": "text", "sd1": "image", "sd2": "image", "sdxl": "image"}


def family_package(name: str) -> ModuleType:
    """The package of a model family ("sdxl") or of a package name ("image")."""
    package = PACKAGES.get(name, name)
    if package not in PACKAGES.values():
        raise EngineError("config", f"No engine trains the model family '{name}'.",
                          f"Set model.family to one of {', '.join(PACKAGES)}.")
    return importlib.import_module(f"{__package__}.{package}")


def detect_family(job: JobConfig) -> str:
    """job.model.family, or the family read from the model files when it is 'auto'."""
    if job.model.family != "auto":
        return job.model.family
    from ..config.model_info import ModelInfoError, inspect_model
    try:
        family = inspect_model(job.model.path, allow_pickle=job.model.allow_pickle).family
    except ModelInfoError as exc:
        raise EngineError("config", exc.message, exc.hint) from exc
    if family not in PACKAGES:
        raise EngineError("config", f"Cannot tell what kind of model {job.model.path} is.",
                          "Set model.family to text, sd1, sd2 or sdxl.")
    return family


def family_entry(package: ModuleType, name: str):
    """A family's ``prepare`` or ``export`` function. The text package loads them only
    when asked (so its tokenizing code imports no torch), and then its ``export``
    submodule, once imported, can stand on the package where the function would."""
    entry = getattr(package, name)
    return getattr(entry, name) if isinstance(entry, ModuleType) else entry
