"""The Tokens tab of a text dataset: the job's tokenizer run over every record of the
open file in a child process (ui/token_runner.py), shown as a histogram of lengths in
tokens against max_seq_length with the share that will be truncated, the records
training will cut or drop, and the selected record token by token as training
encodes it: the tokens the loss is on highlighted, special tokens marked, the cut
at max_seq_length drawn. When the file is the job's dataset.path, the sources of
dataset.mix are scanned with it, weighted as training takes them, each record named by
its source. The scan starts when the tab is first shown, and again when the file or a
setting it depends on changes: a setting edit waits DEBOUNCE_MS for the next, so a value
being typed restarts the tokenizer process once."""
from __future__ import annotations

import html
import os
from pathlib import Path

from PySide6.QtCore import QCoreApplication, Qt, QTimer, Signal
from PySide6.QtWidgets import (QLabel, QListWidget, QListWidgetItem, QProgressBar, QSplitter,
                               QTextBrowser, QVBoxLayout, QWidget)

from ..config.model_info import ModelInfoError, inspect_model
from ..config.paths import resolve_local_path
from ..config.schema import JobConfig
from ..data.text_sources import SourceError, parse_mix
from ..data.token_lengths import TokenLengths
from .token_histogram import TokenHistogram
from .token_runner import TokenViewRunner

# Token backgrounds, alternating so that neighbouring tokens can be told apart.
LOSS = ("#b9e4bb", "#8fd193")
CONTEXT = ("#ececec", "#dcdcdc")
SPECIAL = "#6a1b9a"
BEYOND = "#9e9e9e"
VISIBLE = {"\n": "↵\n", "\t": "→\t", "\r": "␍"}
LIST_EVERY = 10  # refresh the list of cut records every this many batches while scanning
DEBOUNCE_MS = 400  # a setting edit restarts the scan this long after the last one
LEGEND = (f'<span style="background:{LOSS[0]}">&nbsp;loss&nbsp;</span> the tokens training '
          f'learns from &nbsp; <span style="background:{CONTEXT[0]}">&nbsp;prompt&nbsp;</span> '
          f'read, not learned &nbsp; <b style="color:{SPECIAL}">special</b> tokens &nbsp; '
          f'<s style="color:{BEYOND}">cut</s> beyond max_seq_length')


def scan_request(job: JobConfig, base_dir, path: Path) -> dict | str:
    """What the token view's child needs to scan the file at `path` as `job` would
    train on it, or a sentence saying why it cannot. It holds only what the scan depends
    on, so that an unchanged request means no new scan: the mix (and the seed, which
    only picks a fractional weight's share) only for the job's own dataset file."""
    try:
        info = inspect_model(job.model.path, base_dir, allow_pickle=job.model.allow_pickle)
    except ModelInfoError as exc:
        return f"The token view needs the job's tokenizer. {exc.message} {exc.hint}"
    if info.family != "text":
        return ("The token view needs a text model's tokenizer; the job's base model is not a "
                "text model. Choose one in Parameters (model.path).")
    ds = job.dataset
    request = {"tokenizer": str(info.path if info.path.is_dir() else info.path.parent),
               "path": str(path), "format": "auto" if ds.format == "images" else ds.format,
               "columns": list(ds.columns), "chat_template": ds.chat_template,
               "max_seq_length": ds.max_seq_length,
               "responses_only": ds.train_on_responses_only}
    dataset = resolve_local_path(ds.path, base_dir)
    if not ds.mix or dataset is None or dataset.resolve() != Path(path).resolve():
        return request
    try:
        sources = parse_mix(ds.mix)
    except SourceError as exc:
        return f"The token view cannot read the mix: {exc}"
    request.update(mix=list(ds.mix), base_dir=str(base_dir) if base_dir else None)
    if any(s.weight != int(s.weight) for s in sources):
        request["seed"] = job.training.seed
    return request


def token_html(tokens: list) -> str:
    """A record's [text, ids, loss, special, cut] token groups as HTML, whitespace kept."""
    out, shade, cut_drawn = [], 0, False
    for text, _ids, loss, special, cut in tokens:
        if cut and not cut_drawn:
            out.append('<span style="background:#d32f2f; color:white">&nbsp;✂ max_seq_length&nbsp;</span>')
            cut_drawn = True
        shown = html.escape("".join(VISIBLE.get(c, c) for c in text)) or "∅"
        style = f"background:{(LOSS if loss else CONTEXT)[shade]}"
        if special:
            style += f"; color:{SPECIAL}; font-weight:bold"
        if cut:
            style = f"color:{BEYOND}; text-decoration:line-through"
        out.append(f'<span style="{style}">{shown}</span>')
        shade ^= 1
    return f'<div style="white-space:pre-wrap; font-family:monospace">{"".join(out)}</div>'


class TokenView(QWidget):
    line_activated = Signal(int)  # a listed record was chosen: select its line in the table

    def __init__(self, parent=None):
        super().__init__(parent)
        self.path: Path | None = None
        self.job: JobConfig | None = None
        self.base_dir = None
        self.request: dict | None = None  # what the running scan was asked
        self.found: TokenLengths | None = None
        self.line: int | None = None      # the record of the file shown token by token
        self.index: int | None = None     # or the mixed-in record shown, by its place in the scan
        self._stamp = None                # the file's size and time when the scan began
        self._batches = 0
        self._skipped = ""                # a note on the lines that are not records
        self.runner = TokenViewRunner(self._on_message, self)
        self._debounce = QTimer(self)
        self._debounce.setSingleShot(True)
        self._debounce.setInterval(DEBOUNCE_MS)
        self._debounce.timeout.connect(self._refresh)

        self.summary = QLabel()
        self.summary.setWordWrap(True)
        self.summary.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.progress = QProgressBar()
        self.progress.setTextVisible(True)
        self.progress.hide()
        self.histogram = TokenHistogram()
        self.histogram.setMinimumHeight(140)
        self.record = QTextBrowser()
        self.record.setOpenLinks(False)
        self.record_title = QLabel()
        legend = QLabel(LEGEND)
        legend.setWordWrap(True)
        self.cut_list = QListWidget()
        self.cut_list.setWordWrap(True)
        self.cut_list.itemActivated.connect(self._list_activated)
        self.cut_list.itemClicked.connect(self._list_activated)

        top = QWidget()
        tl = QVBoxLayout(top)
        tl.setContentsMargins(0, 0, 0, 0)
        tl.addWidget(self.summary)
        tl.addWidget(self.progress)
        tl.addWidget(self.histogram, 1)
        middle = QWidget()
        ml = QVBoxLayout(middle)
        ml.setContentsMargins(0, 0, 0, 0)
        ml.addWidget(self.record_title)
        ml.addWidget(self.record, 1)
        ml.addWidget(legend)
        bottom = QWidget()
        bl = QVBoxLayout(bottom)
        bl.setContentsMargins(0, 0, 0, 0)
        bl.addWidget(QLabel("<b>Records training will cut or drop</b>"))
        bl.addWidget(self.cut_list, 1)
        split = QSplitter(Qt.Orientation.Vertical)
        for part, stretch in ((top, 2), (middle, 3), (bottom, 1)):
            split.addWidget(part)
            split.setStretchFactor(split.count() - 1, stretch)
        layout = QVBoxLayout(self)
        layout.addWidget(split)
        app = QCoreApplication.instance()
        if app is not None:
            app.aboutToQuit.connect(self.runner.shutdown)

    # -- what to scan ----------------------------------------------------------
    def set_path(self, path: Path | None) -> None:
        """The open file, or None; a saved file is set again to scan what was written."""
        self.path = Path(path) if path is not None else None
        self.line = None
        self._stamp = None
        self._refresh()

    def set_job(self, job: JobConfig, base_dir) -> None:
        """Every settings edit comes here; the scan follows once the edits pause."""
        self.job, self.base_dir = job, base_dir
        self._debounce.start()

    def show_line(self, line: int | None) -> None:
        """The record under the table's cursor, shown token by token."""
        self.line, self.index = line, None
        self.record.clear()
        self.record_title.setText(f"Line {line}, as training tokenises it" if line else "")
        if line is not None and self.runner.running:
            self.runner.ask(line)

    def show_index(self, index: int) -> None:
        """A mixed-in record (it has no row in the table), shown token by token."""
        self.line, self.index = None, index
        self.record.clear()
        self.record_title.setText(f"{self.found.label(index)}, as training tokenises it")
        if self.runner.running:
            self.runner.ask_index(index)

    def showEvent(self, event) -> None:
        super().showEvent(event)
        self._refresh()

    def _file_stamp(self):
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return st.st_size, st.st_mtime_ns

    def _refresh(self) -> None:
        """Start a scan when the tab is seen and what it would show has changed."""
        if self.path is None or self.job is None:
            self._stop("")
            return
        request = scan_request(self.job, self.base_dir, self.path)
        if isinstance(request, str):
            self._stop(request)
            return
        if not self.isVisible():
            return
        if request == self.request and self._stamp == self._file_stamp() and self._stamp:
            return
        self.request, self._stamp, self._batches = request, self._file_stamp(), 0
        if self.index is not None:  # the new scan may place other records there
            self.index = None
            self.record_title.clear()
        self.found, self._skipped = None, ""
        self.cut_list.clear()
        self.record.clear()
        self.histogram.show_histogram(None, request["max_seq_length"])
        self.summary.setText("Loading the tokenizer…")
        self.summary.setStyleSheet("")
        self.summary.setToolTip("")
        self.progress.setRange(0, 0)
        self.progress.show()
        self.runner.start(request)
        if self.line is not None:
            self.runner.ask(self.line)

    def _stop(self, why: str) -> None:
        self.runner.stop()
        self.request, self.found, self._stamp = None, None, None
        self.progress.hide()
        self.cut_list.clear()
        self.record.clear()
        self.histogram.show_histogram(None, 0)
        self.summary.setText(why)
        self.summary.setStyleSheet("color: #d32f2f" if why else "")

    # -- what the child says ---------------------------------------------------
    def _on_message(self, msg: dict) -> None:
        kind = msg["type"]
        if kind == "loaded":
            self.found = TokenLengths(self.request["max_seq_length"], total=msg["records"],
                                      sources=msg.get("sources", []))
            self.progress.setRange(0, max(1, msg["records"]))
            self.progress.setValue(0)
            skipped = msg["skipped"]
            self._skipped = f" {skipped} line(s) are not records training reads." if skipped else ""
            self._show_found(final=not msg["records"])
        elif kind == "lengths" and self.found is not None:
            self.found.add(msg)
            self._batches += 1
            self.progress.setValue(self.found.done)
            self._show_found(final=False)
        elif kind == "done":
            self.progress.hide()
            self._show_found(final=True)
        elif kind == "record" and msg.get("index") == self.index and \
                (self.index is not None or msg.get("line") == self.line):
            self._show_record(msg)
        elif kind == "error":
            self.progress.hide()
            hint = msg.get("hint", "")
            self.summary.setText(msg["message"] + ("\n" + hint.splitlines()[0] if hint else ""))
            self.summary.setStyleSheet("color: #d32f2f")
            self.summary.setToolTip(hint)

    def _show_found(self, final: bool) -> None:
        found = self.found
        self.summary.setText(" ".join(filter(None, (found.summary(), found.sources_note())))
                             + self._skipped)
        self.histogram.show_histogram(found.histogram() if found.done else None, found.max_length)
        if final or self._batches % LIST_EVERY == 1:
            self.cut_list.clear()
            for index, text in found.listed():
                item = QListWidgetItem(text)
                item.setData(Qt.ItemDataRole.UserRole, index)
                self.cut_list.addItem(item)

    def _show_record(self, msg: dict) -> None:
        if "error" in msg:
            self.record.setPlainText(msg["error"])
            return
        state = ("dropped: no token to learn from before the cut" if msg["dropped"] else
                 "truncated" if msg["truncated"] else "kept whole")
        where = f"{msg['source']} line {msg['line']}" if "index" in msg else f"Line {msg['line']}"
        self.record_title.setText(f"{where}, as training tokenises it: "
                                  f"{msg['length']:,} tokens, {state}")
        page = token_html(msg["tokens"])
        if msg["hidden"]:
            page += f"<p><i>… and {msg['hidden']:,} more tokens beyond the cut.</i></p>"
        self.record.setHtml(page)

    def _list_activated(self, item: QListWidgetItem) -> None:
        """A record of the file: the table selects its line (and shows it here); a
        mixed-in record is shown here only."""
        index = item.data(Qt.ItemDataRole.UserRole)
        if self.found.source_of(index) == 0:
            self.line_activated.emit(self.found.lines[index])
        else:
            self.show_index(index)
