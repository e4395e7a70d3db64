"""Where a path typed into a preset or the panel points on this machine."""
from __future__ import annotations

import os
from pathlib import Path


def clean_path_text(value: str) -> str:
    """The path as the user meant it: surrounding blanks and the quotes Windows'
    'Copy as path' adds are removed, and '~' is expanded."""
    text = value.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        text = text[1:-1].strip()
    return os.path.expanduser(text) if text else ""


def path_candidates(value: str, base_dir: str | os.PathLike | None = None) -> list[Path]:
    """Places a relative path may mean, in the order they are tried: beside the
    preset file (base_dir) first, then the current folder."""
    text = clean_path_text(value)
    if not text:
        return []
    path = Path(text)
    if path.is_absolute():
        return [path]
    candidates = [Path(base_dir) / path] if base_dir else []
    candidates.append(Path.cwd() / path)
    return candidates


def resolve_local_path(value: str, base_dir: str | os.PathLike | None = None) -> Path | None:
    """The first existing file or folder `value` can mean, as an absolute path;
    None when it exists nowhere (it may then be a Hub id, or a typo)."""
    for candidate in path_candidates(value, base_dir):
        if candidate.exists():
            return candidate.absolute()
    return None


CACHE_DIR_ENV = "LORA_STUDIO_CACHE_DIR"


def cache_dir() -> Path:
    """Where LoRA Studio keeps what it can rebuild (tokenised datasets):
    $LORA_STUDIO_CACHE_DIR, else the platform's user cache folder."""
    import platformdirs
    return Path(os.environ.get(CACHE_DIR_ENV)
                or platformdirs.user_cache_dir("lora-studio", appauthor=False))
