"""The caption-editing session the dataset browser wraps: current text of every
caption, which ones are unsaved, undo / redo across images, tag counts kept up to
date, health problems per image, and saving (one, the dirty ones, on conflict
keep mine or take the disk's version). Images are addressed by their index."""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from lora_studio.data.captions import (CaptionConflict, CaptionFile, CaptionReadError,
                                       disk_changed, read_caption, write_captions)
from lora_studio.data.clip_tokens import CaptionTokens
from lora_studio.data.edits import UndoStack
from lora_studio.data.health import (DEFAULT_MIN_SIDE, ImageCheck, caption_problems,
                                     image_problems, problem_counts)
from lora_studio.data.tags import Change, split_tags


@dataclass
class SaveReport:
    saved: list[int] = field(default_factory=list)
    conflicts: dict[int, CaptionConflict] = field(default_factory=dict)
    errors: dict[int, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.conflicts and not self.errors


def load_caption(path: Path) -> tuple[CaptionFile, str]:
    """(caption, error message or ""); an unreadable caption reads as empty and
    is never written over."""
    try:
        return read_caption(path), ""
    except CaptionReadError as exc:
        return CaptionFile(Path(path), ""), str(exc)


class CaptionSession:
    """`image_paths` and `caption_paths` are parallel sequences (one per image).
    `loaded`, when given, is what load_caption() returned for each caption path
    (so a caller can read them in slices between paints). `stand_ins`, when given, is
    what each image trains on while it has no caption (a regularisation image's class;
    see reg_images.stand_in_caption), so such an image is not reported uncaptioned."""

    def __init__(self, image_paths: Sequence[Path], caption_paths: Sequence[Path],
                 min_side: int = DEFAULT_MIN_SIDE,
                 loaded: Sequence[tuple[CaptionFile, str]] | None = None,
                 stand_ins: Sequence[str] = ()):
        self.image_paths = list(image_paths)
        self.stand_ins = {i: text for i, text in enumerate(stand_ins) if text}
        if loaded is None:
            loaded = [load_caption(p) for p in caption_paths]
        self.files: list[CaptionFile] = [cf for cf, _err in loaded]
        self.read_errors: dict[int, str] = {i: err for i, (_cf, err) in enumerate(loaded) if err}
        self.texts = [cf.text for cf in self.files]
        self.dirty: set[int] = set()
        self.conflicts: dict[int, CaptionConflict] = {}
        self.undo_stack = UndoStack()
        # Caption files another process created (auto-captioning) where there was none:
        # saved empty (that edit undone), such a file is removed again, as it was.
        self.created: set[int] = set()
        self.counts: Counter = Counter()
        for text in self.texts:
            self.counts.update(set(split_tags(text)))
        self.min_side = min_side
        self.checks: dict[int, ImageCheck] = {}
        self.duplicates: set[int] = set()
        # counts each caption's CLIP tokens (data/clip_tokens.py); None: not checked
        self.tokens: CaptionTokens | None = None

    def __len__(self) -> int:
        return len(self.texts)

    # -- editing -----------------------------------------------------------
    def _assign(self, i: int, text: str) -> None:
        old = self.texts[i]
        if old == text:
            return
        for tag in set(split_tags(old)):
            self.counts[tag] -= 1
            if self.counts[tag] <= 0:
                del self.counts[tag]
        self.counts.update(set(split_tags(text)))
        self.texts[i] = text
        if text == self.files[i].text:
            self.dirty.discard(i)
        else:
            self.dirty.add(i)

    def set_text(self, i: int, text: str, label: str = "Edit caption") -> bool:
        """Record a user edit of one caption; False when nothing changed."""
        return self.apply([Change(i, self.texts[i], text)], label)

    def apply(self, changes: Iterable[Change], label: str) -> bool:
        """Apply changes (e.g. from a tag edit or find-and-replace preview) as
        one undoable command."""
        triples = [(c.key, self.texts[c.key], c.new) for c in changes]
        cmd = self.undo_stack.push(label, triples)
        if cmd is None:
            return False
        for key, _old, new in cmd.changes:
            self._assign(key, new)
        return True

    def adopt_written(self, keys: Iterable[int], label: str) -> list[int]:
        """Take in captions another process has just written to disk (auto-captioning)
        as one undoable command: what is on disk now is the saved text, and undo brings
        back every caption as it was here before, in one step. Returns the images
        changed."""
        triples = []
        for i in sorted(set(keys)):
            try:
                cf = read_caption(self.files[i].path)
            except CaptionReadError as exc:
                self.read_errors[i] = str(exc)
                continue
            if not self.files[i].exists and cf.exists:
                self.created.add(i)
            self.files[i] = cf
            self.read_errors.pop(i, None)
            self.conflicts.pop(i, None)
            triples.append((i, self.texts[i], cf.text))
        cmd = self.undo_stack.push(label, triples)
        for key, _old, new in cmd.changes if cmd else ():
            self._assign(key, new)
        return [key for key, _old, _new in cmd.changes] if cmd else []

    def undo(self) -> list[int]:
        """Undo the last command; returns the images it touched."""
        restored = self.undo_stack.undo()
        for key, text in restored.items():
            self._assign(key, text)
        return sorted(restored)

    def redo(self) -> list[int]:
        restored = self.undo_stack.redo()
        for key, text in restored.items():
            self._assign(key, text)
        return sorted(restored)

    def items(self, keys: Iterable[int] | None = None) -> list[tuple[int, str]]:
        """(index, current text) pairs, the input of the tags.* previews."""
        keys = range(len(self.texts)) if keys is None else keys
        return [(i, self.texts[i]) for i in keys]

    # -- saving ------------------------------------------------------------
    def save(self, keys: Iterable[int] | None = None, force: bool = False) -> SaveReport:
        """Write the dirty captions among `keys` (all dirty ones by default).
        A caption changed on disk since it was read is not written: it lands in
        report.conflicts until keep_mine() or take_disk() settles it."""
        report = SaveReport()
        todo = sorted(self.dirty if keys is None else set(keys) & self.dirty)
        for i in [i for i in todo if i in self.read_errors]:
            report.errors[i] = self.read_errors[i]
        todo = [i for i in todo if i not in self.read_errors]
        for i in [i for i in todo if i in self.created and not self.texts[i]]:
            todo.remove(i)
            self._remove_created(i, force, report)
        results = write_captions([(self.files[i], self.texts[i]) for i in todo], force=force)
        for i, result in zip(todo, results):
            if isinstance(result, CaptionConflict):
                self.conflicts[i] = result
                report.conflicts[i] = result
            elif isinstance(result, OSError):
                report.errors[i] = (f"Cannot write {self.files[i].path}: {result.strerror or result}. "
                                    f"Check the folder is writable and the file not locked.")
            else:
                self.files[i] = result
                self.dirty.discard(i)
                self.conflicts.pop(i, None)
                report.saved.append(i)
        return report

    def _remove_created(self, i: int, force: bool, report: SaveReport) -> None:
        cf = self.files[i]
        if not force:
            changed, disk_text = disk_changed(cf)
            if changed:
                self.conflicts[i] = report.conflicts[i] = CaptionConflict(cf.path, disk_text)
                return
        try:
            cf.path.unlink(missing_ok=True)
        except OSError as exc:
            report.errors[i] = (f"Cannot remove {cf.path}: {exc.strerror or exc}. "
                                "Check the folder is writable and the file not locked.")
            return
        self.files[i] = CaptionFile(cf.path, "")
        self.dirty.discard(i)
        self.conflicts.pop(i, None)
        report.saved.append(i)

    def keep_mine(self, i: int) -> SaveReport:
        """Overwrite the file changed on disk with our text."""
        return self.save([i], force=True)

    def reload_if_changed(self, i: int) -> bool:
        """Pick up a change another program made to a caption we have not edited
        (an auto-tagger run meanwhile); True when the text changed."""
        if i in self.dirty or i in self.read_errors:
            return False
        changed, _disk_text = disk_changed(self.files[i])
        if not changed:
            return False
        before = self.texts[i]
        self.take_disk(i)
        return self.texts[i] != before

    def take_disk(self, i: int) -> None:
        """Drop our unsaved text and use the file as it is on disk now."""
        self.files[i] = read_caption(self.files[i].path)
        self.conflicts.pop(i, None)
        self._assign(i, self.files[i].text)
        self.dirty.discard(i)

    # -- leaving -------------------------------------------------------------
    def unsaved_summary(self) -> str:
        """What closing this session now would lose, in words; "" when nothing."""
        if not self.dirty:
            return ""
        conflicts = len(self.dirty & set(self.conflicts))
        unreadable = len(self.dirty & set(self.read_errors))
        other = len(self.dirty) - conflicts - unreadable
        parts = []
        if conflicts:
            parts.append(f"{conflicts} caption(s) you edited were changed on disk by another "
                         "program; Save writes your version over theirs.")
        if unreadable:
            parts.append(f"{unreadable} edited caption file(s) could not be read when opened and "
                         "are never written over: Save cannot keep those edits.")
        if other:
            parts.append(f"{other} other caption edit(s) are not saved yet.")
        return " ".join(parts)

    def leave(self, choice: str) -> tuple[bool, SaveReport]:
        """Settle the unsaved edits before this session is closed. ``choice``: "save"
        writes them all (over changes made on disk too), "discard" drops them,
        "cancel" keeps the session. True when it may close; the report lists what
        "save" wrote and what it could not."""
        if not self.dirty or choice == "discard":
            return True, SaveReport()
        if choice == "save":
            report = self.save(force=True)
            return report.ok, report
        return False, SaveReport()

    # -- health and filters --------------------------------------------------
    def set_image_checks(self, checks: dict[int, ImageCheck]) -> None:
        self.checks.update(checks)

    def set_duplicate_groups(self, groups: Iterable[Sequence[int]]) -> None:
        self.duplicates = {i for g in groups for i in g}

    def problems(self, i: int) -> set[str]:
        if i in self.read_errors:  # it exists, so "no caption" would be wrong
            found = {"caption_unreadable"}
        elif i in self.stand_ins and not self.texts[i].strip():
            found = set()
        else:
            found = caption_problems(self.files[i].exists or i in self.dirty, self.texts[i])
        if i in self.checks:
            found |= image_problems(self.checks[i], self.min_side)
        if i in self.duplicates:
            found.add("duplicate")
        if self.tokens is not None and self.tokens.count(self.texts[i]).over:
            found.add("over_clip")
        return found

    def problem_counts(self) -> dict[str, int]:
        return problem_counts(self.problems(i) for i in range(len(self.texts)))

    def filter(self, tag: str | None = None, problem: str | None = None,
               text: str | None = None) -> list[int]:
        """Indices of images that have `tag`, show `problem` and whose caption
        contains `text` (case-insensitive); None means no condition."""
        needle = text.lower() if text else None
        out = []
        for i, caption in enumerate(self.texts):
            if tag is not None and tag not in split_tags(caption):
                continue
            if needle is not None and needle not in caption.lower():
                continue
            if problem is not None and problem not in self.problems(i):
                continue
            out.append(i)
        return out
