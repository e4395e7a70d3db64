"""Walking dataset folders and opening their small files without being led astray.

Datasets come from archives other people packed. Only regular files are opened: a
pipe blocks the reader forever and a link to /dev/zero never ends. Links to folders
are followed (Windows users share folders by junction), but a folder reached a second
time (a link to itself, to a folder above it, or a second link to the same folder) is
walked once. Whatever is passed over becomes a `Skipped` record naming the path and
saying what to do, so the scanner, `check`, the GUI and the engine can all show it.
"""
from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

# What each kind of Skipped record is, as a short label (health panel, summaries).
SKIP_KINDS = {
    "repeats_too_large": "Repeat prefix too large",
    "not_a_file": "Not a regular file",
    "broken_link": "Broken link",
    "unreadable_folder": "Unreadable folder",
    "folder_loop": "Folder reached twice",
    "unsupported_format": "Unsupported format",
    "caption_too_large": "Caption too large",
}


@dataclass(frozen=True)
class Skipped:
    """One thing a dataset holds that is not used, and why."""
    path: Path
    kind: str      # a key of SKIP_KINDS
    reason: str    # plain words, read after the path: "is a pipe or a device, ..."
    hint: str      # what to do about it

    def __str__(self) -> str:
        return f"'{self.path}' {self.reason}. {self.hint}"


class RefusedFile(OSError):
    """A file that is not opened (not a regular file) or not read whole (too large)."""

    def __init__(self, skipped: Skipped):
        super().__init__(f"{skipped.reason}. {skipped.hint}")
        self.skipped = skipped


def not_a_file(path: Path) -> Skipped:
    if os.path.islink(path) and not os.path.exists(path):
        return Skipped(path, "broken_link", "is a link to something that does not exist (or a "
                       "loop of links)", "Point the link at the real file, or delete it.")
    return Skipped(path, "not_a_file", "is a pipe, a device or a socket, not a regular file; it "
                   "was not opened", "Replace it with a regular file, or delete it.")


def too_large(path: Path, size: int, limit: int) -> Skipped:
    return Skipped(path, "caption_too_large", f"is {size:,} bytes, more than the {limit:,} a "
                   "caption may have; it was not read", "A caption is a line or a paragraph: "
                   "check that this is the right file, and shorten it or delete it.")


def unreadable_folder(folder: Path, exc: OSError) -> Skipped:
    return Skipped(folder, "unreadable_folder", f"cannot be read ({exc.strerror or exc}); its "
                   "files are not used", "Check that you may open this folder (its permissions, "
                   "or another program locking it), or remove it from the dataset.")


def folder_reached_twice(folder: Path) -> Skipped:
    return Skipped(folder, "folder_loop", "leads to a folder that is already part of the dataset "
                   "(a link to itself, to a folder above it, or a second link to the same "
                   "folder); it was not read again", "Remove the link if you did not mean it; "
                   "every image is used once either way.")


# O_NONBLOCK: should a pipe slip past the stat check, opening it returns at once
# instead of waiting for a writer. O_BINARY: Windows would otherwise turn CRLF into LF.
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_BINARY", 0) | getattr(os, "O_NONBLOCK", 0)


def open_regular(path: str | os.PathLike, limit: int | None = None) -> BinaryIO:
    """Open a regular file for reading; RefusedFile for anything else (checked before
    opening and again on the open file) or for a file over `limit` bytes."""
    path = Path(path)
    if not stat.S_ISREG(os.stat(path).st_mode):
        raise RefusedFile(not_a_file(path))
    fh = os.fdopen(os.open(path, _OPEN_FLAGS), "rb")
    try:
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode):  # swapped between the stat and the open
            raise RefusedFile(not_a_file(path))
        if limit is not None and st.st_size > limit:
            raise RefusedFile(too_large(path, st.st_size, limit))
    except BaseException:
        fh.close()
        raise
    return fh


def read_regular(path: str | os.PathLike, limit: int | None = None) -> tuple[bytes, os.stat_result]:
    """The bytes of a regular file and its stat, never more than `limit` bytes."""
    with open_regular(path, limit) as fh:
        st = os.fstat(fh.fileno())
        data = fh.read() if limit is None else fh.read(limit + 1)
    if limit is not None and len(data) > limit:  # grew while we read it
        raise RefusedFile(too_large(Path(path), len(data), limit))
    return data, st


@dataclass
class Listing:
    """The entries of one folder, hidden ones (starting with '.') left out."""
    folder: Path
    files: list[os.DirEntry] = field(default_factory=list)   # regular files, links followed
    dirs: list[os.DirEntry] = field(default_factory=list)    # folders, links followed
    others: list[os.DirEntry] = field(default_factory=list)  # pipes, devices, broken links

    def refused(self, wanted: Callable[[str], bool]) -> list[Skipped]:
        """A record for each non-regular entry whose name `wanted` (a caption, an image)."""
        return [not_a_file(Path(e.path)) for e in self.others if wanted(e.name)]


def list_folder(folder: Path) -> Listing:
    """Raises OSError when the folder cannot be listed."""
    listing = Listing(folder)
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.name.startswith("."):
                continue
            try:
                kind = listing.dirs if entry.is_dir() else \
                    listing.files if entry.is_file() else listing.others
            except OSError:
                kind = listing.others
            kind.append(entry)
    return listing


def folder_key(folder: str | os.PathLike) -> object:
    """What tells two paths to the same real folder apart from two folders."""
    st = os.stat(folder)
    # FAT drives and some network shares report inode 0 for everything.
    return (st.st_dev, st.st_ino) if st.st_ino else os.path.realpath(folder)


def claim(folder: Path, seen: set, problems: list[Skipped]) -> bool:
    """True the first time a real folder is met; a warning for each later time."""
    try:
        key = folder_key(folder)
    except OSError as exc:
        problems.append(unreadable_folder(folder, exc))
        return False
    if key in seen:
        problems.append(folder_reached_twice(folder))
        return False
    seen.add(key)
    return True


def by_name(entries: list[os.DirEntry]) -> list[os.DirEntry]:
    return sorted(entries, key=lambda e: e.name.casefold())


def walk(top: Path, seen: set, problems: list[Skipped]) -> Iterator[Listing]:
    """Every readable folder under `top` (`top` first, then depth first in name order).
    The caller claims `top`; sub-folders whose real folder is in `seen` are passed over,
    and a folder that cannot be listed is a warning, not the end of the walk."""
    stack = [top]
    while stack:
        folder = stack.pop()
        try:
            listing = list_folder(folder)
        except OSError as exc:
            problems.append(unreadable_folder(folder, exc))
            continue
        yield listing
        subs = [Path(d.path) for d in by_name(listing.dirs)]
        stack.extend(reversed([s for s in subs if claim(s, seen, problems)]))


def files_under(top: Path, wanted: Callable[[str], bool],
                problems: list[Skipped]) -> list[Path]:
    """The regular files under `top` whose name `wanted`, each once; the rest of what
    matches (pipes, devices, broken links) and the folders passed over go to `problems`."""
    seen: set = set()
    if not claim(top, seen, problems):
        return []
    found = []
    for listing in walk(top, seen, problems):
        found += [Path(e.path) for e in listing.files if wanted(e.name)]
        problems += listing.refused(wanted)
    return found
