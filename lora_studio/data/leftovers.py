"""Temp files that a caption save killed mid-write left behind.

An atomic write (fsutil) goes through a hidden ``.NAME.<16 hex digits>.tmp`` beside
its target; a kill between creating and renaming it leaves that file for good. Only
files named exactly so, and older than any write still in progress could be, are
removed: nothing else in a user's dataset folder is ever touched.
"""
from __future__ import annotations

import os
import time
from collections.abc import Iterable
from pathlib import Path

from ..fsutil import is_temp_name

STALE_AFTER_S = 600.0  # a live write holds its temp file for milliseconds


def remove_stale_temp_files(folders: Iterable[Path], older_than_s: float = STALE_AFTER_S,
                            now: float | None = None) -> list[Path]:
    """Delete the leftover temp files directly in each of ``folders``; returns those
    deleted. A folder or file that cannot be read or removed is left as it is."""
    now = time.time() if now is None else now
    removed: list[Path] = []
    for folder in dict.fromkeys(Path(f) for f in folders):
        try:
            with os.scandir(folder) as entries:
                found = [e for e in entries if is_temp_name(e.name)]
        except OSError:
            continue
        for entry in found:
            try:
                if not entry.is_file(follow_symlinks=False) or \
                        now - entry.stat(follow_symlinks=False).st_mtime < older_than_s:
                    continue
                os.unlink(entry.path)
            except OSError:
                continue
            removed.append(Path(entry.path))
    return removed
