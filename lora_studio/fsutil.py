"""Atomic file writes: a temp file in the same folder, fsync, then rename over the
target, so a crash or a kill leaves either the old file or the new one, never a cut one.
Works on Windows (os.replace overwrites there too) and with non-ASCII paths."""
from __future__ import annotations

import hashlib
import os
import re
import secrets
import shutil
import stat
from pathlib import Path

_TEMP_FLAGS = os.O_CREAT | os.O_EXCL | os.O_RDWR | getattr(os, "O_BINARY", 0)


def _mode_to_keep(path: Path) -> int | None:
    """The permission bits of an existing ``path``, which its replacement keeps. None
    for a new path, and on Windows, whose only mode bit is read-only: a read-only temp
    could not be deleted after a failed rename."""
    if os.name == "nt":
        return None
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        return None


def _temp_name(path: Path) -> Path:
    # 64 random bits: O_EXCL / mkdir never meet a name in use in practice.
    return path.parent / f".{path.name}.{secrets.token_hex(8)}.tmp"


# Exactly the names _temp_name makes: how a folder's leftovers of a killed write are told
# apart from anything else.
TEMP_NAME = re.compile(r"\..+\.[0-9a-f]{16}\.tmp")


def is_temp_name(name: str) -> bool:
    return TEMP_NAME.fullmatch(name) is not None


def temp_beside(path: str | Path) -> tuple[int, Path]:
    """A new temp file (open fd, path) in ``path``'s folder, to be renamed over
    ``path``, with the permissions ``path`` should end up with.

    mkstemp would make it 0600, and a rename keeps that, so exported LoRAs and
    captions would be unreadable to anyone else. Here the file is created with 0o666
    and the kernel applies the umask (no umask reading, which is racy across threads);
    when ``path`` exists its mode is copied instead, so a rewrite keeps it."""
    path = Path(path)
    mode = _mode_to_keep(path)
    tmp = _temp_name(path)
    fd = os.open(tmp, _TEMP_FLAGS, 0o666)
    if mode is not None:
        try:
            os.chmod(tmp, mode)
        except OSError:
            os.close(fd)
            tmp.unlink(missing_ok=True)
            raise
    return fd, tmp


def temp_dir_beside(path: str | Path) -> Path:
    """A new empty folder beside ``path``, to be filled and swapped in for it, with
    the permissions a plain mkdir gives (mkdtemp's are 0700), or those of the folder
    it replaces."""
    path = Path(path)
    mode = _mode_to_keep(path)
    tmp = _temp_name(path)
    os.mkdir(tmp, 0o777)
    if mode is not None:
        try:
            os.chmod(tmp, mode)
        except OSError:
            tmp.rmdir()
            raise
    return tmp


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    path = Path(path)
    fd, tmp = temp_beside(path)
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


def sha256_file(path: str | Path) -> str:
    """The hex SHA-256 of a file, read in 1 MiB blocks so a large model is never held whole."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()



def numbered(wanted: Path, n: int, is_file: bool) -> Path:
    """``name.safetensors`` -> ``name-2.safetensors``; a folder ``name.v1`` -> ``name.v1-2``."""
    if n == 1:
        return wanted
    if is_file and wanted.suffix:
        return wanted.with_name(f"{wanted.stem}-{n}{wanted.suffix}")
    return wanted.with_name(f"{wanted.name}-{n}")


def _same_content(a: Path, b: Path) -> bool:
    if a.is_file() and b.is_file():
        return a.stat().st_size == b.stat().st_size and sha256_file(a) == sha256_file(b)
    if a.is_dir() and b.is_dir():
        files_a = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
        files_b = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
        return files_a == files_b and all(_same_content(a / f, b / f) for f in files_a)
    return False


def settle(tmp: Path, wanted: Path) -> Path:
    """Move the finished temp file or folder ``tmp`` to ``wanted``, never over something
    else: when ``wanted`` holds other content, to ``wanted-2``, ``-3``..., and when one
    of those already holds the same content, drop ``tmp`` and keep that one (exporting
    the same thing twice leaves one copy). Returns where the content is."""
    is_file = tmp.is_file()
    n = 1
    while True:
        target = numbered(wanted, n, is_file)
        if not target.exists():
            os.replace(tmp, target)
            return target
        if _same_content(tmp, target):
            if is_file:
                tmp.unlink()
            else:
                shutil.rmtree(tmp)
            return target
        n += 1
