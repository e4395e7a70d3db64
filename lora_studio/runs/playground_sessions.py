"""Saved playground sessions: a chat (JSON) or a drawn image or grid (JSON beside its
PNG) in a run's ``playground/`` folder, written atomically, read back with a message
that names the file when it is not one. No Qt, no torch.

A record is a dict with ``kind`` ("chat", "image" or "grid") and ``version``; an image
or grid record names its PNG (``png``) relative to the JSON file.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from ..errors import HintedError
from ..fsutil import atomic_write_bytes, atomic_write_text, numbered

VERSION = 1
KINDS = ("chat", "image", "grid")
NOT_A_SESSION_HINT = "Open a .json file that LoRA Studio's Playground saved (Save session)."


def _free_stem(folder: Path, stem: str) -> str:
    """``stem``, or ``stem-2``... when a JSON or PNG of that name is already there."""
    n = 1
    while True:
        name = numbered(folder / stem, n, is_file=False).name
        if not (folder / f"{name}.json").exists() and not (folder / f"{name}.png").exists():
            return name
        n += 1


def save_session(folder: str | Path, record: dict, png: str | Path | None = None,
                 now: float | None = None) -> Path:
    """Write ``record`` (and a copy of the PNG it shows) in ``folder``; the JSON's path.
    OSError when the folder cannot be written."""
    kind = record.get("kind")
    if kind not in KINDS:
        raise ValueError(f"unknown session kind {kind!r}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    stem = _free_stem(folder, f"{kind}-{time.strftime('%Y%m%d-%H%M%S', time.localtime(now))}")
    record = {**record, "version": VERSION}
    if png is not None:
        atomic_write_bytes(folder / f"{stem}.png", Path(png).read_bytes())
        record["png"] = f"{stem}.png"
    path = folder / f"{stem}.json"
    atomic_write_text(path, json.dumps(record, indent=1, ensure_ascii=False) + "\n")
    return path


def read_session(path: str | Path) -> dict:
    """The record, with ``png`` made a full path; HintedError naming the file otherwise."""
    path = Path(path)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise HintedError("io", f"{path}: cannot be read ({exc.strerror or exc}).",
                          NOT_A_SESSION_HINT) from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise HintedError("not_session", f"{path} is not a saved session: not JSON ({exc}).",
                          NOT_A_SESSION_HINT) from exc
    if not isinstance(record, dict) or record.get("kind") not in KINDS:
        raise HintedError("not_session", f"{path} is not a saved playground session (no kind "
                                         "chat, image or grid).", NOT_A_SESSION_HINT)
    if record.get("version") != VERSION:
        raise HintedError("not_session", f"{path} was saved by another version of LoRA Studio "
                                         f"(session version {record.get('version')!r}).",
                          "Open it with the version that saved it.")
    if record["kind"] != "chat":
        png = path.parent / str(record.get("png") or "")
        if not png.is_file() or not record.get("png"):
            raise HintedError("missing", f"{path} names the picture {png.name or '(none)'}, which "
                                         "is not beside it.",
                              "Keep the .png saved with the session in the same folder.")
        record["png"] = str(png)
    return record

