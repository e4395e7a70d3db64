"""Caption files (kohya `image.txt`): read them keeping their encoding and line
endings, write them back atomically in the same form, and notice when another
program changed a file since we read it instead of overwriting it silently."""
from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

from lora_studio.fsutil import temp_beside

from .walk import RefusedFile, read_regular

UTF8 = "utf-8"
UTF8_BOM = "utf-8-sig"
# Byte-order marks that decide the encoding before any guess (Notepad's "Unicode" is
# UTF-16 LE). Written back with the file's own BOM; see encode_caption.
UTF16_BOMS = {"utf-16-le": b"\xff\xfe", "utf-16-be": b"\xfe\xff"}
CAPTION_MAX_BYTES = 1 << 20  # a caption is a line or a paragraph; past this it is not one


@dataclass(frozen=True)
class DiskStamp:
    """What the file looked like when we last read or wrote it."""
    mtime_ns: int
    size: int
    sha256: str


@dataclass(frozen=True)
class CaptionFile:
    path: Path
    text: str                 # "\n" line endings, without the file's final newline
    encoding: str = UTF8      # utf-8, utf-8-sig, utf-16-le / -be (with BOM), cp1252 or latin-1
    newline: str = "\n"       # "\n" or "\r\n", as found in the file
    final_newline: bool = False
    stamp: DiskStamp | None = None  # None: the file did not exist

    @property
    def exists(self) -> bool:
        return self.stamp is not None


class CaptionConflict(Exception):
    """The caption file changed on disk since it was read; nothing was written."""

    def __init__(self, path: Path, disk_text: str | None):
        self.path = path
        self.disk_text = disk_text  # None when the file was deleted
        what = "was deleted" if disk_text is None else "was changed by another program"
        super().__init__(f"{path} {what} since it was opened. Reload it to take the version on disk, "
                         f"or save again with 'keep mine' to overwrite it.")


class CaptionReadError(OSError):
    """A caption that is not read: not a regular file, too large, or undecodable.
    `path`, `reason` and `hint` say which, in words; str() is the whole message."""

    def __init__(self, path: Path, reason: str, hint: str):
        super().__init__(f"Caption '{path}' {reason}. {hint}")
        self.path, self.reason, self.hint = Path(path), reason, hint


class CaptionDecodeError(ValueError):
    """The bytes are not text in any encoding a caption may have."""


def _stamp(data: bytes, st: os.stat_result) -> DiskStamp:
    return DiskStamp(st.st_mtime_ns, st.st_size, hashlib.sha256(data).hexdigest())


def decode_caption(data: bytes) -> tuple[str, str]:
    """Return (text, encoding). A BOM decides first; then UTF-8, then cp1252 (what
    Windows Notepad wrote for years), then latin-1, which decodes any byte. Raises
    CaptionDecodeError for bytes that break their own BOM or hold NUL characters
    (binary data, or UTF-16 without a BOM): never trained or written over as text."""
    text, encoding = _decode(data)
    if "\x00" in text:
        raise CaptionDecodeError("holds NUL characters: it is binary data or UTF-16 without "
                                 "a byte-order mark")
    return text, encoding


def _decode(data: bytes) -> tuple[str, str]:
    boms = {UTF8_BOM: b"\xef\xbb\xbf", **UTF16_BOMS}
    for enc, bom in boms.items():
        if data.startswith(bom):
            try:
                return data[len(bom):].decode(enc.removesuffix("-sig")), enc
            except UnicodeDecodeError as exc:
                raise CaptionDecodeError(f"starts with a {enc.removesuffix('-sig').upper()} "
                                         f"byte-order mark but byte {exc.start + len(bom)} "
                                         "does not fit it") from None
    for enc in (UTF8, "cp1252"):
        try:
            return data.decode(enc), enc
        except UnicodeDecodeError:
            pass
    return data.decode("latin-1"), "latin-1"


def _read(path: Path) -> tuple[bytes, os.stat_result]:
    try:
        return read_regular(path, CAPTION_MAX_BYTES)
    except RefusedFile as exc:
        raise CaptionReadError(path, exc.skipped.reason, exc.skipped.hint) from None


def _text_of(path: Path, data: bytes) -> tuple[str, str]:
    try:
        return decode_caption(data)
    except CaptionDecodeError as exc:
        raise CaptionReadError(path, f"cannot be decoded as text: it {exc}",
                               "Open it in a text editor and save it as UTF-8.") from None


def _split_newlines(raw: str) -> tuple[str, str, bool]:
    newline = "\r\n" if "\r\n" in raw else "\n"
    text = raw.replace("\r\n", "\n")
    final = text.endswith("\n")
    if final:
        text = text[:-1]
    return text, newline, final


def read_caption(path: str | Path) -> CaptionFile:
    """Read a caption; a missing file gives an empty, not-yet-existing caption.
    CaptionReadError (naming the file) for one that is not a regular file, is over
    CAPTION_MAX_BYTES, is undecodable or cannot be opened."""
    path = path if isinstance(path, Path) else Path(path)  # re-wrapping costs at 10,000 files
    try:
        data, st = _read(path)
    except FileNotFoundError:
        return CaptionFile(path, "")
    except CaptionReadError:
        raise
    except OSError as exc:
        raise CaptionReadError(path, f"cannot be read ({exc.strerror or exc})",
                               "Check that the file is not locked by another program.") from exc
    raw, encoding = _text_of(path, data)
    text, newline, final = _split_newlines(raw)
    return CaptionFile(path, text, encoding, newline, final, _stamp(data, st))


_READ_CHECKS: dict[tuple[Path, int, int], CaptionReadError | None] = {}  # (path, mtime, size)


def caption_read_errors(paths: Iterable[Path]) -> dict[Path, CaptionReadError]:
    """The captions among `paths` that cannot be read as text, with why. Validation
    runs on every edit, so each file is read once until its mtime or size changes."""
    errors = {}
    for path in paths:
        try:
            st = os.stat(path)
        except OSError:
            continue  # gone since the scan: the scan names it next time
        key = (path, st.st_mtime_ns, st.st_size)
        if key not in _READ_CHECKS:
            if len(_READ_CHECKS) > 200_000:
                _READ_CHECKS.clear()
            try:
                read_caption(path)
                _READ_CHECKS[key] = None
            except CaptionReadError as exc:
                _READ_CHECKS[key] = exc
        if _READ_CHECKS[key] is not None:
            errors[path] = _READ_CHECKS[key]
    return errors


def encode_caption(cf: CaptionFile, text: str) -> tuple[bytes, str]:
    """Bytes for `text` in the file's own form; a legacy encoding that cannot hold
    the new text (e.g. Japanese typed into a cp1252 file) is upgraded to utf-8."""
    body = text.replace("\r\n", "\n")
    if cf.final_newline:
        body += "\n"
    if cf.newline != "\n":
        body = body.replace("\n", cf.newline)
    try:
        return UTF16_BOMS.get(cf.encoding, b"") + body.encode(cf.encoding), cf.encoding
    except UnicodeEncodeError:
        return body.encode(UTF8), UTF8


def disk_changed(cf: CaptionFile) -> tuple[bool, str | None]:
    """(changed, text on disk or None if gone). mtime and size first; the hash
    settles it when they differ, so a mere `touch` or re-save is not a conflict."""
    try:
        st = os.stat(cf.path)
    except FileNotFoundError:
        return cf.stamp is not None, None
    if cf.stamp is None:
        return True, read_caption(cf.path).text
    if st.st_mtime_ns == cf.stamp.mtime_ns and st.st_size == cf.stamp.size:
        return False, cf.text
    data, _st = _read(cf.path)
    if hashlib.sha256(data).hexdigest() == cf.stamp.sha256:
        return False, cf.text
    return True, _split_newlines(_text_of(cf.path, data)[0])[0]


def write_caption(cf: CaptionFile, text: str, force: bool = False) -> CaptionFile:
    """Atomically write `text`, returning the new CaptionFile. Raises
    CaptionConflict (writing nothing) when the file changed since `cf` was read,
    unless `force`; OSError when the file cannot be written."""
    result = write_captions([(cf, text)], force)[0]
    if isinstance(result, Exception):
        raise result
    return result


_BATCH = 512  # temp files open at once
_pool: ThreadPoolExecutor | None = None


def _commit(tmp: Path, fd: int, target: Path) -> os.stat_result | OSError:
    """fsync the temp file and rename it over the target. Run for many files at
    once in a thread pool: the filesystem journals them together, an order of
    magnitude faster than one after the other on a busy disk."""
    try:
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, target)
        return os.stat(target)
    except OSError as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        return exc


def write_captions(batch: Sequence[tuple[CaptionFile, str]],
                   force: bool = False) -> list[CaptionFile | CaptionConflict | OSError]:
    """Write many captions, each atomically (temp file, fsync, rename over the
    target): a crash or kill leaves every file old or new, never cut. Returns, per
    item, the new CaptionFile or the CaptionConflict / OSError that kept it from
    being written."""
    global _pool
    results: list = [None] * len(batch)
    for start in range(0, len(batch), _BATCH):
        staged = []  # (index, data, encoding, fd, temp path)
        for i in range(start, min(len(batch), start + _BATCH)):
            cf, text = batch[i]
            fd = None
            try:
                if not force:
                    changed, disk_text = disk_changed(cf)
                    if changed:
                        results[i] = CaptionConflict(cf.path, disk_text)
                        continue
                data, encoding = encode_caption(cf, text)
                fd, tmp = temp_beside(cf.path)
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
            except OSError as exc:
                results[i] = exc
                if fd is not None:
                    os.close(fd)
                    os.unlink(tmp)
                continue
            staged.append((i, data, encoding, fd, tmp))
        if len(staged) > 1 and _pool is None:
            _pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix="caption-commit")
        jobs = [(tmp, fd, batch[i][0].path) for i, _d, _e, fd, tmp in staged]
        done = _pool.map(lambda job: _commit(*job), jobs) if len(staged) > 1 else \
            [_commit(*job) for job in jobs]
        for (i, data, encoding, _fd, _tmp), st in zip(staged, done):
            if isinstance(st, OSError):
                results[i] = st
                continue
            cf, text = batch[i]
            results[i] = replace(cf, text=text.replace("\r\n", "\n"), encoding=encoding,
                                 stamp=_stamp(data, st))
    return results
