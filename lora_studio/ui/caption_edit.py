"""The caption text box: completes the tag being typed from the dataset's own
tags (most frequent first), then from a booru tag list when one is loaded, and hands undo / redo / page keys to the browser, whose
undo spans all images."""
from __future__ import annotations

from collections import Counter

from PySide6.QtCore import QEvent, QStringListModel, Qt, Signal
from PySide6.QtGui import QTextCursor
from PySide6.QtWidgets import QCompleter, QPlainTextEdit

from ..data.booru_tags import BooruTags, complete_tags
from ..data.tags import current_fragment, split_tags


class CaptionEdit(QPlainTextEdit):
    undo_requested = Signal()
    redo_requested = Signal()
    page_requested = Signal(int)  # -1 previous image, +1 next image

    def __init__(self, parent=None):
        super().__init__(parent)
        self.counts: Counter = Counter()
        self.booru: BooruTags | None = None
        self.setUndoRedoEnabled(False)  # the browser's stack undoes, across images
        self.setPlaceholderText("Caption: comma-separated tags or a sentence")
        self._model = QStringListModel(self)
        self.completer = QCompleter(self._model, self)
        self.completer.setWidget(self)
        self.completer.setCompletionMode(QCompleter.CompletionMode.UnfilteredPopupCompletion)
        self.completer.setCaseSensitivity(Qt.CaseSensitivity.CaseInsensitive)
        self.completer.activated.connect(self.insert_completion)

    @staticmethod
    def _routed(event) -> str | None:
        mods = event.modifiers() & ~Qt.KeyboardModifier.KeypadModifier
        ctrl, shift = Qt.KeyboardModifier.ControlModifier, Qt.KeyboardModifier.ShiftModifier
        if event.key() == Qt.Key.Key_Z and mods == ctrl:
            return "undo"
        if (event.key() == Qt.Key.Key_Z and mods == ctrl | shift) or (
                event.key() == Qt.Key.Key_Y and mods == ctrl):
            return "redo"
        return None

    def event(self, event) -> bool:
        if event.type() == QEvent.Type.ShortcutOverride and self._routed(event):
            event.accept()  # deliver as a key press here instead of a window shortcut
            return True
        return super().event(event)

    def keyPressEvent(self, event) -> None:
        popup = self.completer.popup()
        if popup.isVisible() and event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter,
                                                 Qt.Key.Key_Tab, Qt.Key.Key_Escape,
                                                 Qt.Key.Key_Backtab):
            event.ignore()  # the completer's popup handles these
            return
        routed = self._routed(event)
        if routed == "undo":
            self.undo_requested.emit()
            return
        if routed == "redo":
            self.redo_requested.emit()
            return
        if event.key() in (Qt.Key.Key_PageUp, Qt.Key.Key_PageDown):
            self.page_requested.emit(-1 if event.key() == Qt.Key.Key_PageUp else 1)
            return
        super().keyPressEvent(event)
        if event.text() and (event.text().isprintable() or event.key() == Qt.Key.Key_Backspace):
            self.update_completions()

    def fragment(self) -> tuple[int, str]:
        cursor = self.textCursor()
        return current_fragment(self.toPlainText(), cursor.position())

    def update_completions(self) -> None:
        _start, typed = self.fragment()
        present = set(split_tags(self.toPlainText()))
        matches = [t for t in complete_tags(typed, self.counts, self.booru, limit=24)
                   if t not in present][:12]
        if len(typed) < 1 or not matches:
            self.completer.popup().hide()
            return
        self._model.setStringList(matches)
        rect = self.cursorRect()
        rect.setWidth(max(220, self.completer.popup().sizeHintForColumn(0) + 30))
        self.completer.complete(rect)
        self.completer.popup().setCurrentIndex(self._model.index(0, 0))

    def insert_completion(self, tag: str) -> None:
        start, _typed = self.fragment()
        cursor = self.textCursor()
        end = cursor.position()
        cursor.setPosition(start)
        cursor.setPosition(end, QTextCursor.MoveMode.KeepAnchor)
        cursor.insertText(tag)
        self.setTextCursor(cursor)
