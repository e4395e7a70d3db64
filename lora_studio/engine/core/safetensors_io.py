"""Safetensors files written so that a kill or a full disk never leaves a half file
under the final name, with a canonical header so the same tensors and metadata give
the same bytes (and SHA-256) every time."""
from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

from ...fsutil import temp_beside


def atomic_save_safetensors(tensors: dict, path: str | Path,
                            metadata: dict[str, str] | None = None) -> Path:
    """save_file to a temp file beside ``path``, put its header in canonical order, fsync,
    rename over it. Streams to disk, so large merged models are not held twice in memory."""
    from safetensors.torch import save_file
    path = Path(path)
    fd, tmp = temp_beside(path)
    mode = stat.S_IMODE(os.fstat(fd).st_mode)
    os.close(fd)
    try:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, tmp,
                  metadata=metadata)
        # safetensors 0.8 writes its own 0600 temp file and renames it over ours.
        os.chmod(tmp, mode)
        canonicalise_header(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def canonical_header(header: dict) -> bytes:
    """The safetensors header as sorted, compact JSON padded with spaces to a multiple
    of 8 (the format aligns the data that way)."""
    text = json.dumps(header, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    return text + b" " * (-len(text) % 8)


def canonicalise_header(file: Path) -> None:
    """Rewrite the header of the safetensors file ``file`` canonically, and fsync it.

    safetensors writes ``__metadata__`` in a random order (a Rust HashMap), so the same
    export would get a new SHA-256 each time. Data offsets are relative to the end of
    the header, so the data bytes stay as they are: patched in place when the header
    keeps its length (what save_file writes always does), streamed after the new header
    into a second temp file otherwise."""
    with open(file, "r+b") as fh:
        old_len = int.from_bytes(fh.read(8), "little")
        header = canonical_header(json.loads(fh.read(old_len)))
        if len(header) == old_len:
            fh.seek(8)
            fh.write(header)
            fh.flush()
            os.fsync(fh.fileno())
            return
        out_fd, out = temp_beside(file)
        try:
            with os.fdopen(out_fd, "wb") as dest:
                dest.write(len(header).to_bytes(8, "little") + header)
                shutil.copyfileobj(fh, dest, 1 << 20)
                dest.flush()
                os.fsync(dest.fileno())
        except BaseException:
            out.unlink(missing_ok=True)
            raise
    os.replace(out, file)


def read_metadata(path: str | Path) -> dict[str, str]:
    from safetensors import safe_open
    with safe_open(str(path), framework="pt") as fh:
        return dict(fh.metadata() or {})
