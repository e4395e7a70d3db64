"""The dataset browser's right pane: the current image and its facts, the bar for
a caption changed on disk meanwhile, the caption editor with the keep_tokens
preview, and the batch tag edit row. It shows what the browser gives it and
reports what the user asks for; the browser decides."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (QComboBox, QCompleter, QFrame, QHBoxLayout, QLabel, QLineEdit,
                               QPushButton, QSpinBox, QVBoxLayout, QWidget)

from ..data.clip_tokens import CLIP_WINDOW, CaptionTokens
from ..data.tags import keep_tokens_split
from .caption_edit import CaptionEdit
from .image_preview import ImagePreview

SCOPES = ("Selected images", "Shown images", "All images")


def facts_html(facts: dict, resolution: int) -> str:
    lines = [f"<b>{facts['file']}</b> — {facts['size']}"]
    if "dimensions" in facts:
        lines.append(f"{facts['dimensions']} px · bucket {facts['bucket']} at {resolution}")
    if facts["folder"]:
        lines.append(f"folder {facts['folder']} · ×{facts['repeats']} repeats")
    if facts.get("group"):
        lines.append(facts["group"])
    lines.append(f"caption: {facts['caption']}")
    for bad in (facts["problems"], facts.get("error")):
        if bad:
            lines.append(f"<span style='color:#d32f2f'>{bad}</span>")
    return "<br>".join(lines)


class CaptionPane(QWidget):
    edited = Signal()             # the user typed in the caption
    batch_requested = Signal(str)  # "add", "remove" or "replace"
    keep_mine = Signal()
    take_disk = Signal()
    tag_list_requested = Signal()  # "Tag list…": pick a booru tag list for completion

    def __init__(self, parent=None):
        super().__init__(parent)
        self._loading = False
        self._caption: str | None = None  # the saved-to-session text, for keep_tokens
        self.tokens: CaptionTokens | None = None  # counts the caption's CLIP tokens
        self.preview = ImagePreview("Open a folder of images (File › Open folder).")
        self.info = QLabel()
        self.info.setWordWrap(True)
        self.info.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)

        self.conflict_bar = QFrame()
        self.conflict_bar.setStyleSheet("QFrame { background: #fff4d6; color: #5a4000; }")
        self.conflict_label = QLabel()
        self.conflict_label.setWordWrap(True)
        self.keep_mine_button = QPushButton("Keep mine")
        self.keep_mine_button.clicked.connect(self.keep_mine)
        self.take_disk_button = QPushButton("Use disk version")
        self.take_disk_button.clicked.connect(self.take_disk)
        bar = QHBoxLayout(self.conflict_bar)
        bar.setContentsMargins(6, 4, 6, 4)
        bar.addWidget(self.conflict_label, 1)
        bar.addWidget(self.keep_mine_button)
        bar.addWidget(self.take_disk_button)
        self.conflict_bar.hide()

        self.editor = CaptionEdit()
        self.editor.setMaximumHeight(110)
        self.editor.textChanged.connect(self._editor_changed)
        self.keep_spin = QSpinBox()
        self.keep_spin.setRange(0, 32)
        self.keep_spin.setToolTip("keep_tokens: the first N tags stay in front when shuffling")
        self.keep_spin.valueChanged.connect(lambda _v: self._show_keep_tokens())
        self.keep_label = QLabel()
        self.keep_label.setWordWrap(True)
        self.token_label = QLabel()
        self.tag_list_button = QPushButton("Tag list…")
        self.tag_list_button.setToolTip("Complete tags from a booru tag list too (a CSV such "
                                        "as a1111-tagcomplete's danbooru.csv)")
        self.tag_list_button.clicked.connect(self.tag_list_requested)
        token_row = QHBoxLayout()
        token_row.addWidget(self.token_label, 1)
        token_row.addWidget(self.tag_list_button)
        keep_row = QHBoxLayout()
        keep_row.addWidget(QLabel("Keep tokens"))
        keep_row.addWidget(self.keep_spin)
        keep_row.addWidget(self.keep_label, 1)

        self.batch_tag = QLineEdit()
        self.batch_tag.setPlaceholderText("tag")
        self.batch_with = QLineEdit()
        self.batch_with.setPlaceholderText("replace with (for Replace)")
        self.batch_scope = QComboBox()
        self.batch_scope.addItems(SCOPES)
        self.tag_completer = QCompleter([], self)
        self.tag_completer.setCaseSensitivity(Qt.CaseSensitivity.CaseInsensitive)
        self.tag_completer.setFilterMode(Qt.MatchFlag.MatchContains)
        self.batch_tag.setCompleter(self.tag_completer)
        self.batch_with.setCompleter(self.tag_completer)
        self.add_button = QPushButton("Add")
        self.add_button.clicked.connect(lambda: self.batch_requested.emit("add"))
        self.remove_button = QPushButton("Remove")
        self.remove_button.clicked.connect(lambda: self.batch_requested.emit("remove"))
        self.replace_button = QPushButton("Replace")
        self.replace_button.clicked.connect(lambda: self.batch_requested.emit("replace"))
        batch_row = QHBoxLayout()
        batch_row.addWidget(self.batch_tag, 1)
        batch_row.addWidget(self.batch_scope)
        with_row = QHBoxLayout()
        with_row.addWidget(self.batch_with, 1)
        for w in (self.add_button, self.remove_button, self.replace_button):
            with_row.addWidget(w)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.preview, 3)
        layout.addWidget(self.info)
        layout.addWidget(self.conflict_bar)
        layout.addWidget(QLabel("<b>Caption</b> (saved automatically)"))
        layout.addWidget(self.editor, 1)
        layout.addLayout(token_row)
        layout.addLayout(keep_row)
        layout.addWidget(QLabel("<b>Tag edit</b>"))
        layout.addLayout(batch_row)
        layout.addLayout(with_row)

    # -- what the browser shows ------------------------------------------------
    def show_image(self, path: Path | None, empty_text: str) -> None:
        if path is None:
            self.preview.show_text(empty_text)
        else:
            self.preview.show_image(path)

    def show_facts(self, facts: dict | None, resolution: int) -> None:
        self.info.setText(facts_html(facts, resolution) if facts else "")

    def show_caption(self, text: str | None) -> None:
        """Put a caption in the editor without counting it as typing; None: no image."""
        self._loading = True
        self.editor.setPlainText(text or "")
        self._loading = False
        self.editor.setEnabled(text is not None)
        self.show_keep_tokens(text)
        self._show_tokens()

    def show_keep_tokens(self, caption: str | None) -> None:
        self._caption = caption
        self._show_keep_tokens()

    def _show_keep_tokens(self) -> None:
        n = self.keep_spin.value()
        if self._caption is None or n == 0:
            self.keep_label.setText("" if n == 0 else "—")
            return
        kept, _rest = keep_tokens_split(self._caption, n)
        self.keep_label.setText("stay first: " + (", ".join(kept) if kept else "—"))

    def show_conflict(self, name: str | None, more: int = 0) -> None:
        """The caption file `name` changed on disk since it was opened (None: none did)."""
        self.conflict_bar.setVisible(name is not None)
        if name is not None:
            self.conflict_label.setText(
                f"<b>{name}</b> was changed by another program since it was opened; your edit "
                f"was not saved." + (f" ({more} more)" if more else ""))

    def set_tags(self, counts: Counter) -> None:
        """The dataset's tags, for completion in the editor and the batch fields."""
        self.editor.counts = counts
        self.tag_completer.model().setStringList(sorted(counts, key=lambda t: (-counts[t], t)))

    def set_token_counter(self, tokens: CaptionTokens | None) -> None:
        self.tokens = tokens
        self._show_tokens()

    def _show_tokens(self) -> None:
        """The caption's CLIP tokens against the 75 the text encoder reads."""
        if self.tokens is None or not self.editor.isEnabled():
            self.token_label.clear()
            return
        count = self.tokens.count(self.editor.toPlainText())
        tip = (f"Counted with the CLIP tokenizer of {self.tokens.source}." if count.exact else
               "Estimated from the words: the job's base model is not a local diffusers "
               "folder with a tokenizer.")
        if count.over:
            self.token_label.setText(f"<span style='color:#d32f2f'>{count.label}: training "
                                     f"cuts what comes after token {CLIP_WINDOW}</span>")
        else:
            self.token_label.setText(count.label)
        self.token_label.setToolTip(tip)

    def _editor_changed(self) -> None:
        self._show_tokens()
        if not self._loading:
            self.edited.emit()
