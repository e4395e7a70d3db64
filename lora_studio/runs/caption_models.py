"""Which captioning models there are and where a chosen one lies on this computer: a
folder, or a Hub id already in the local Hugging Face cache (never downloaded). A model
that is not here is an error naming the exact ``hf download`` command. No torch, no Qt:
the window lists the models with it."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..config.model_info import hub_download_command, looks_like_hub_id
from ..config.paths import clean_path_text, resolve_local_path
from ..errors import HintedError

# The files a model folder must hold, per kind: a WD14 tagger is SmilingWolf's ONNX
# export with its tag list; a captioner is a transformers folder.
NEEDED_FILES = {"tagger": ("model.onnx", "selected_tags.csv"), "captioner": ("config.json",)}

# Offered in the dialog, best first; any other folder or cached id works too.
KNOWN_MODELS = {
    "tagger": ("SmilingWolf/wd-eva02-large-tagger-v3", "SmilingWolf/wd-vit-large-tagger-v3",
               "SmilingWolf/wd-swinv2-tagger-v3", "SmilingWolf/wd-vit-tagger-v3",
               "SmilingWolf/wd-convnext-tagger-v3"),
    "captioner": ("florence-community/Florence-2-large", "florence-community/Florence-2-base",
                  "Salesforce/blip-image-captioning-large", "Salesforce/blip-image-captioning-base"),
}

# What a natural-language captioner is asked, per model type (config.json's model_type):
# Florence-2 takes a task token, BLIP an optional start of the caption.
TASKS = {
    "florence2": ("<MORE_DETAILED_CAPTION>", "<DETAILED_CAPTION>", "<CAPTION>"),
    "blip": ("", "a photography of", "a picture of"),
}


class ModelMissing(HintedError):
    pass


@dataclass(frozen=True)
class Located:
    path: Path          # the folder holding the model's files


def _in_cache(repo: str, filename: str) -> Path | None:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    try:
        hit = try_to_load_from_cache(repo, filename)
    except ValueError:  # not a valid repo id after all
        return None
    return Path(hit).parent if isinstance(hit, str) else None


def locate(kind: str, model: str) -> Located:
    """The folder of ``model`` (a path, or a Hub id in the local cache) holding every
    file a ``kind`` model needs. ModelMissing says what is missing and how to get it."""
    needed = NEEDED_FILES[kind]
    text = clean_path_text(model)
    if not text:
        raise ModelMissing("empty", "No captioning model is chosen.",
                           "Pick one from the list or choose its folder.")
    folder = resolve_local_path(text)
    hub = looks_like_hub_id(text)
    if folder is not None and folder.is_file():
        folder = folder.parent
    if folder is None and hub:
        folder = _in_cache(text, needed[0])
    if folder is None:
        hint = (f"Download it once with '{hub_download_command(text)}' (nothing is downloaded "
                "while captioning), or choose the model's folder.") if hub else \
            "Check the path, or give a Hugging Face id such as " \
            f"{KNOWN_MODELS[kind][-1]} that is in your cache."
        where = "in your Hugging Face cache" if hub else "on this computer"
        raise ModelMissing("missing", f"The {kind} model '{text}' is not {where}.", hint)
    lacking = [name for name in needed if not (folder / name).is_file()]
    if lacking:
        get = (f"Download it with '{hub_download_command(text)}'." if hub
               else "Choose the folder that holds the whole model.")
        what = ("a WD14 tagger (SmilingWolf's model.onnx and selected_tags.csv)"
                if kind == "tagger" else "a transformers captioning model (BLIP, Florence-2)")
        raise ModelMissing("incomplete", f"'{folder}' has no {', '.join(lacking)}, so it is not "
                                         f"{what}.", get)
    return Located(folder)


def _fits(kind: str, folder: Path) -> bool:
    if not all((folder / name).is_file() for name in NEEDED_FILES[kind]):
        return False
    if kind == "captioner":
        try:
            return model_type(folder) in TASKS
        except HintedError:
            return False
    return True


def _other_cached(kind: str) -> list[str]:
    """Hub ids in the local cache, beyond KNOWN_MODELS, whose snapshot is a ``kind``
    model (a tagger's files; a captioner of a model type TASKS knows)."""
    try:
        from huggingface_hub import constants
    except ImportError:
        return []
    found = []
    try:
        repos = sorted(Path(constants.HF_HUB_CACHE).glob("models--*--*"))
    except OSError:
        return []
    for repo_dir in repos:
        repo = repo_dir.name.removeprefix("models--").replace("--", "/", 1)
        snapshots = repo_dir / "snapshots"
        if repo not in KNOWN_MODELS[kind] and snapshots.is_dir() and \
                any(_fits(kind, snapshot) for snapshot in snapshots.iterdir()):
            found.append(repo)
    return found


def cached_models(kind: str) -> list[tuple[str, bool]]:
    """KNOWN_MODELS[kind] with whether each is in the local Hub cache, then the other
    ``kind`` models found there."""
    known = [(repo, _in_cache(repo, NEEDED_FILES[kind][0]) is not None)
             for repo in KNOWN_MODELS[kind]]
    return known + [(repo, True) for repo in _other_cached(kind)]


def model_type(folder: Path) -> str:
    """config.json's model_type of a captioner folder (blip, florence2, ...)."""
    try:
        return str(json.loads((folder / "config.json").read_text(encoding="utf-8"))["model_type"])
    except (OSError, ValueError, KeyError) as exc:
        raise HintedError("model", f"'{folder / 'config.json'}' does not say which model it is "
                                   f"({exc}).", "Choose a BLIP or Florence-2 model folder.")
