"""Captions as comma-separated tags (booru style, what kohya's shuffle_caption and
keep_tokens work on): splitting, counting, batch edits, find-and-replace with a
preview, and autocompletion. Every edit returns the new caption and leaves a
caption whose tags do not change byte-for-byte as it was."""
from __future__ import annotations

import re
from collections import Counter
from collections.abc import Hashable, Iterable
from dataclasses import dataclass

SEPARATOR = ", "


def split_tags(caption: str) -> list[str]:
    return [t for t in (part.strip() for part in caption.split(",")) if t]


def join_tags(tags: Iterable[str]) -> str:
    return SEPARATOR.join(tags)


def _dedupe(tags: Iterable[str]) -> list[str]:
    seen: set[str] = set()
    out = []
    for t in tags:
        if t not in seen:
            seen.add(t)
            out.append(t)
    return out


def tag_counts(captions: Iterable[str]) -> Counter:
    """How many captions contain each tag (a tag twice in one caption counts once)."""
    counts: Counter = Counter()
    for caption in captions:
        counts.update(set(split_tags(caption)))
    return counts


def add_tag(caption: str, tag: str, at_start: bool = False) -> str:
    """Add `tag` (or several, comma-separated) unless already present."""
    tags = split_tags(caption)
    new = [t for t in split_tags(tag) if t not in tags]
    if not new:
        return caption
    return join_tags(new + tags if at_start else tags + new)


def remove_tag(caption: str, tag: str) -> str:
    tags = split_tags(caption)
    if tag not in tags:
        return caption
    return join_tags(t for t in tags if t != tag)


def replace_tag(caption: str, old: str, new: str) -> str:
    """Rename `old` to `new` in place; `new` may be several comma-separated tags
    or empty (which removes `old`). A tag already present is not duplicated."""
    tags = split_tags(caption)
    if old not in tags:
        return caption
    out: list[str] = []
    for t in tags:
        out.extend(split_tags(new) if t == old else [t])
    return join_tags(_dedupe(out))


def keep_tokens_split(caption: str, keep_tokens: int) -> tuple[list[str], list[str]]:
    """(the first N tags, which stay in place when shuffling, the rest)."""
    tags = split_tags(caption)
    return tags[:keep_tokens], tags[keep_tokens:]


@dataclass(frozen=True)
class Change:
    key: Hashable
    old: str
    new: str


def compile_find(pattern: str, regex: bool, case_sensitive: bool) -> re.Pattern:
    """A compiled pattern; a bad regex raises ValueError with a readable message."""
    flags = 0 if case_sensitive else re.IGNORECASE
    if not regex:
        return re.compile(re.escape(pattern), flags)
    try:
        return re.compile(pattern, flags)
    except re.error as exc:
        raise ValueError(f"Invalid regular expression {pattern!r}: {exc}") from exc


def find_replace_preview(captions: Iterable[tuple[Hashable, str]], pattern: str, replacement: str,
                         regex: bool = False, case_sensitive: bool = True) -> list[Change]:
    """The changes a find-and-replace would make, without making them. In plain
    mode the replacement is literal; in regex mode it may use \\1 / \\g<name>."""
    if not pattern:
        return []
    rx = compile_find(pattern, regex, case_sensitive)
    repl = replacement if regex else (lambda _m: replacement)
    changes = []
    for key, old in captions:
        try:
            new = rx.sub(repl, old)
        except (re.error, IndexError) as exc:
            raise ValueError(f"Invalid replacement {replacement!r}: {exc}") from exc
        if new != old:
            changes.append(Change(key, old, new))
    return changes


def batch_preview(captions: Iterable[tuple[Hashable, str]], edit, *args) -> list[Change]:
    """Apply a tag edit (add_tag, remove_tag, replace_tag) to each caption and
    return only the captions that change."""
    changes = []
    for key, old in captions:
        new = edit(old, *args)
        if new != old:
            changes.append(Change(key, old, new))
    return changes


def complete(prefix: str, counts: Counter, limit: int = 20) -> list[str]:
    """Tags for autocompletion: those starting with `prefix` first, then those
    containing it, each group most frequent first (case-insensitive)."""
    p = prefix.strip().lower()
    if not p:
        return []
    starts, contains = [], []
    for tag, n in counts.items():
        low = tag.lower()
        if low.startswith(p):
            starts.append((-n, tag))
        elif p in low:
            contains.append((-n, tag))
    return [t for _, t in sorted(starts) + sorted(contains)][:limit]


def current_fragment(text: str, cursor: int) -> tuple[int, str]:
    """The tag being typed at `cursor`: (start offset, text typed so far)."""
    start = text.rfind(",", 0, cursor) + 1
    while start < cursor and text[start] == " ":
        start += 1
    return start, text[start:cursor]
