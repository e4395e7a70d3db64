"""A booru tag list the user points at, for tag completion beside the dataset's own
tags: a CSV as a1111-tagcomplete ships it (danbooru.csv, e621.csv), one tag a row as
``name,category,count,aliases`` (aliases one quoted, comma-separated field), with or
without a header row, LF or CRLF. A list of 100,000+ tags is read once and kept while
the file is unchanged; completion looks prefixes up in a sorted index."""
from __future__ import annotations

import bisect
import csv
import heapq
from dataclasses import dataclass
from pathlib import Path

from ..errors import HintedError
from .tags import complete

HEADER_NAMES = {"name", "tag", "tags"}
# Emoticon tags keep their underscores ("^_^", "o_o"); others read as words ("long hair").
EMOTICON_MAX_LEN = 3


class BooruListError(HintedError):
    pass


@dataclass(frozen=True)
class BooruTag:
    name: str          # as captions write it: underscores as spaces
    category: int
    count: int
    aliases: tuple[str, ...]


def caption_form(tag: str) -> str:
    tag = tag.strip()
    return tag if len(tag) <= EMOTICON_MAX_LEN else tag.replace("_", " ")


def _number(text: str) -> int | None:
    try:
        return int(float(text.strip()))
    except ValueError:
        return None


class BooruTags:
    """The tags of one list, and a prefix index over their names and aliases."""

    def __init__(self, path: Path, tags: list[BooruTag], skipped: int):
        self.path, self.tags, self.skipped = path, tags, skipped
        keys = [(t.name.lower(), i) for i, t in enumerate(tags)]
        keys += [(caption_form(a).lower(), i) for i, t in enumerate(tags) for a in t.aliases]
        keys.sort()
        self._keys = [k for k, _ in keys]
        self._index = [i for _, i in keys]

    def __len__(self) -> int:
        return len(self.tags)

    def complete(self, prefix: str, limit: int = 20) -> list[str]:
        """Tags whose name or an alias starts with ``prefix`` (case-insensitive), most
        used first; an alias completes to its tag."""
        p = caption_form(prefix).lower()
        if not p:
            return []
        lo = bisect.bisect_left(self._keys, p)
        hi = bisect.bisect_left(self._keys, p + "\U0010ffff")
        hits = {self._index[j] for j in range(lo, hi)}
        best = heapq.nsmallest(limit, hits, key=lambda i: (-self.tags[i].count, self.tags[i].name))
        return [self.tags[i].name for i in best]


def parse_booru_csv(path: str | Path) -> BooruTags:
    """Read a tag list; BooruListError naming the file when it has no tag in it."""
    path = Path(path)
    try:
        with open(path, encoding="utf-8-sig", newline="", errors="replace") as fh:
            rows = list(csv.reader(fh))
    except OSError as exc:
        raise BooruListError("unreadable", f"Cannot read the tag list '{path}': "
                             f"{exc.strerror or exc}.", "Pick the file again.") from None
    except csv.Error as exc:
        raise BooruListError("format", f"'{path}' is not a CSV tag list: {exc}.",
                             "Use a name,category,count,aliases list such as "
                             "a1111-tagcomplete's danbooru.csv.") from None
    if rows and rows[0] and rows[0][0].strip().lower() in HEADER_NAMES:
        rows = rows[1:]
    tags, seen, skipped = [], set(), 0
    for row in rows:
        name = caption_form(row[0]) if row else ""
        if not name:
            skipped += bool(row)
            continue
        category = _number(row[1]) if len(row) > 1 else 0
        count = _number(row[2]) if len(row) > 2 else 0
        if category is None or count is None:
            skipped += 1
            continue
        if name in seen:
            continue
        seen.add(name)
        aliases = tuple(a.strip() for a in row[3].split(",") if a.strip()) if len(row) > 3 else ()
        tags.append(BooruTag(name, category, count, aliases))
    if not tags:
        raise BooruListError("empty", f"'{path}' holds no tags ({skipped} row(s) not of the "
                             "form name,category,count,aliases).",
                             "Use a tag list such as a1111-tagcomplete's danbooru.csv.")
    return BooruTags(path, tags, skipped)


_cache: dict[Path, tuple[tuple[int, int], BooruTags]] = {}


def load_booru_tags(path: str | Path) -> BooruTags:
    """parse_booru_csv, read again only when the file changed (size or time)."""
    path = Path(path).resolve()
    try:
        st = path.stat()
    except OSError as exc:
        raise BooruListError("missing", f"The tag list '{path}' cannot be opened: "
                             f"{exc.strerror or exc}.", "Pick the file again.") from None
    stamp = (st.st_size, st.st_mtime_ns)
    hit = _cache.get(path)
    if hit is not None and hit[0] == stamp:
        return hit[1]
    tags = parse_booru_csv(path)
    _cache[path] = (stamp, tags)
    return tags


def complete_tags(prefix: str, counts, booru: BooruTags | None, limit: int = 12) -> list[str]:
    """Completions of ``prefix``: the dataset's own tags first (``counts``: images per
    tag), then the list's by how often the booru uses them, each tag once."""
    own = complete(prefix, counts, limit)
    if booru is None or len(own) >= limit:
        return own
    seen = set(own)
    more = [t for t in booru.complete(prefix, limit + len(own)) if t not in seen]
    return own + more[:limit - len(own)]
