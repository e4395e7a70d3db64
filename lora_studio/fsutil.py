"""Atomic file writes: a temp file in the same folder, fsync, then rename over the
target, so a crash or a kill leaves either the old file or the new one, never a cut one.
Works on Windows (os.replace overwrites there too) and with non-ASCII paths."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def atomic_write_text(path: str | Path, text: str, encoding: str = "utf-8",
                      newline: str = "\n") -> None:
    """Write text with the given line ending ("\\n" or "\\r\\n") and encoding."""
    if newline != "\n":
        text = text.replace("\r\n", "\n").replace("\n", newline)
    atomic_write_bytes(path, text.encode(encoding))
