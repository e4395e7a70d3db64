"""Undo / redo of caption edits across images. A command is one user action:
typing in one caption, or a batch tag edit over many. The stack only remembers
texts; whoever owns the captions applies what undo() / redo() return."""
from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass


@dataclass(frozen=True)
class CaptionCommand:
    label: str
    changes: tuple[tuple[Hashable, str, str], ...]  # (key, old text, new text)

    def forward(self) -> dict:
        return {key: new for key, _old, new in self.changes}

    def backward(self) -> dict:
        return {key: old for key, old, _new in self.changes}


class UndoStack:
    def __init__(self, limit: int = 500):
        self.limit = limit
        self._done: list[CaptionCommand] = []
        self._undone: list[CaptionCommand] = []

    def push(self, label: str, changes) -> CaptionCommand | None:
        """Record changes that were just applied. No-op changes are dropped; an
        empty command is not recorded. A new command clears the redo history."""
        kept = tuple((k, old, new) for k, old, new in changes if old != new)
        if not kept:
            return None
        cmd = CaptionCommand(label, kept)
        self._done.append(cmd)
        del self._done[:-self.limit]
        self._undone.clear()
        return cmd

    def can_undo(self) -> bool:
        return bool(self._done)

    def can_redo(self) -> bool:
        return bool(self._undone)

    def undo_label(self) -> str:
        return self._done[-1].label if self._done else ""

    def redo_label(self) -> str:
        return self._undone[-1].label if self._undone else ""

    def undo(self) -> dict:
        """{key: text to restore} for the last command, or {} if none."""
        if not self._done:
            return {}
        cmd = self._done.pop()
        self._undone.append(cmd)
        return cmd.backward()

    def redo(self) -> dict:
        if not self._undone:
            return {}
        cmd = self._undone.pop()
        self._done.append(cmd)
        return cmd.forward()

    def clear(self) -> None:
        self._done.clear()
        self._undone.clear()
