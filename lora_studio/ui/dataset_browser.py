"""The dataset browser: tags and health on the left, the thumbnail grid, the
current image with its caption editor on the right, and a text-dataset table.
Each pane is its own widget; this one opens folders, holds the CaptionSession
(lora_studio.data) and wires the panes to it: autosave, undo across images,
batch edits, find and replace, filters and the background health check."""
from __future__ import annotations

import time
from pathlib import Path

from PySide6.QtCore import QCoreApplication, QModelIndex, Qt, QTimer, Signal
from PySide6.QtGui import QKeySequence, QShortcut
from PySide6.QtWidgets import (QComboBox, QFileDialog, QHBoxLayout, QLabel, QLineEdit,
                               QMessageBox, QPushButton, QSplitter, QStackedWidget, QToolButton,
                               QVBoxLayout, QWidget)

from ..data.booru_tags import BooruListError, load_booru_tags
from ..data.caption_scope import caption_scopes
from ..data.clip_tokens import CaptionTokens
from ..data.folder_levels import folder_level_slip
from ..data.health import passed_over_groups
from ..data.browse_scan import browse_scan
from ..data.image_facts import (BucketSettings, filter_summary, folder_choices, image_facts,
                                in_group, opened_message)
from ..data.leftovers import remove_stale_temp_files
from ..data.scan import DatasetError, scan_text_files
from ..data.session import CaptionSession, SaveReport, load_caption
from ..data.tags import add_tag, batch_preview, remove_tag, replace_tag
from ..runs.item_loss import ItemLossError, read_item_losses
from .banner import Banner
from .caption_dialog import CaptionDialog
from .caption_pane import CaptionPane
from .find_replace import FindReplaceDialog
from .health_runner import HealthRunner
from .image_grid import ImageGrid, ImageGridModel
from .loss_picker import LossPicker
from .loss_state import LossOverlay
from .tag_health_panel import TagHealthPanel
from .text_dataset_view import TextDatasetView
from .thumbnails import ThumbnailLoader

AUTOSAVE_IDLE_MS = 1500
CAPTION_SLICE = 500  # captions read per event-loop turn while a folder opens


class DatasetBrowser(QWidget):
    """Embed as a tab; open_folder(path) / open_text_dataset(path) load data.
    captions_dirty(bool) tells whether anything is unsaved; dataset_opened(path,
    kind) follows every successful open ('image' or 'text')."""
    captions_dirty = Signal(bool)
    dataset_opened = Signal(str, str)
    tag_list_changed = Signal(str)  # the booru tag list picked (ui/app.py remembers it)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.session: CaptionSession | None = None
        self.root: Path | None = None
        self.folders = ()
        self.items = ()
        self.autosave = True
        self.opened_path: Path | None = None  # as given to the last open that succeeded
        self.opened_kind = ""  # "image" or "text"
        self.caption_extension, self.default_repeats = ".txt", 1  # the job's, for Open folder…
        self.reg_path = ""  # the job's regularisation folder, shown as a group of its own
        self.subsets: list[str] = []  # the job's concept folder lines: shown instead
        self.buckets = BucketSettings()
        self._current = -1
        self._filter_tag: str | None = None
        self._filter_problem: str | None = None
        self.passed_over = []  # what the scan did not use (the health list's last rows)
        self.health = HealthRunner(self._health_checked, self._health_duplicates,
                                   self._health_progress, self)
        self._health_text = ""
        self.tokens = CaptionTokens()  # the estimate until the job names a local model
        self._clip_model = ""

        self.loader = ThumbnailLoader(None, self)
        self.grid_model = ImageGridModel(self.loader, self)
        self._build()
        self._shortcuts()
        self.idle_timer = QTimer(self)
        self.idle_timer.setSingleShot(True)
        self.idle_timer.setInterval(AUTOSAVE_IDLE_MS)
        self.idle_timer.timeout.connect(self._idle_save)
        self.caption_timer = QTimer(self)
        self.caption_timer.setInterval(0)
        self.caption_timer.timeout.connect(self._load_caption_slice)
        app = QCoreApplication.instance()
        if app is not None:
            app.aboutToQuit.connect(self.shutdown)

    # -- layout ----------------------------------------------------------------
    def _build(self) -> None:
        self.open_button = QPushButton("Open folder…")
        self.open_button.clicked.connect(self._choose_folder)
        self.open_text_button = QPushButton("Open text dataset…")
        self.open_text_button.clicked.connect(self._choose_text)
        self.folder_combo = QComboBox()
        self.folder_combo.setToolTip("Show one kohya 'N_name' folder (N = repeats per epoch)")
        self.folder_combo.currentIndexChanged.connect(self._apply_filters)
        self.search = QLineEdit()
        self.search.setPlaceholderText("Filter captions…")
        self.search.setClearButtonEnabled(True)
        self.search.setMinimumWidth(110)
        self.search.textChanged.connect(self._apply_filters)
        self.save_button = QPushButton("Save all")
        self.save_button.setToolTip("Ctrl+S")
        self.save_button.clicked.connect(self.save_all)
        self.undo_button = QToolButton(text="Undo")
        self.undo_button.clicked.connect(self.undo)
        self.redo_button = QToolButton(text="Redo")
        self.redo_button.clicked.connect(self.redo)
        self.find_button = QPushButton("Find / replace…")
        self.find_button.setToolTip("Ctrl+F")
        self.find_button.clicked.connect(self.show_find)
        self.caption_button = QPushButton("Auto-caption…")
        self.caption_button.setToolTip("Tag or describe images with a local model (WD14, BLIP, Florence-2)")
        self.caption_button.clicked.connect(self.show_auto_caption)
        top = QHBoxLayout()
        for w in (self.open_button, self.open_text_button, self.folder_combo):
            top.addWidget(w)
        top.addWidget(self.search, 100)
        self.loss_picker = LossPicker()
        self.loss_picker.run_chosen.connect(self.show_losses)
        self.loss_picker.sort_changed.connect(self._sort_by_loss)
        top.addWidget(self.loss_picker)
        top.addStretch(1)
        for w in (self.undo_button, self.redo_button, self.find_button, self.caption_button,
                  self.save_button):
            top.addWidget(w)
        self._image_controls = (self.folder_combo, self.search, self.undo_button,
                                self.redo_button, self.find_button, self.caption_button)
        self.folder_combo.hide()

        self.side = TagHealthPanel()
        self.side.tag_clicked.connect(self._tag_clicked)
        self.side.problem_clicked.connect(self._problem_clicked)
        self.side.clear_clicked.connect(self.clear_filters)
        self.health_list, self.health_status = self.side.health_list, self.side.health_status
        self.grid = ImageGrid(self.grid_model)
        self.grid.selectionModel().currentChanged.connect(self._current_changed)
        self.caption_pane = CaptionPane()
        self.editor = self.caption_pane.editor
        self.caption_pane.edited.connect(self._editor_changed)
        self.caption_pane.batch_requested.connect(self.batch_edit)
        self.caption_pane.keep_mine.connect(self._keep_mine)
        self.caption_pane.take_disk.connect(self._take_disk)
        self.caption_pane.tag_list_requested.connect(self._choose_tag_list)
        self.caption_pane.set_token_counter(self.tokens)
        self.editor.undo_requested.connect(self.undo)
        self.editor.redo_requested.connect(self.redo)
        self.editor.page_requested.connect(self.step)

        split = QSplitter()
        split.addWidget(self.side)
        split.addWidget(self.grid)
        split.addWidget(self.caption_pane)
        split.setStretchFactor(0, 0)
        split.setStretchFactor(1, 3)
        split.setStretchFactor(2, 2)
        split.setSizes([220, 600, 420])

        self.text_view = TextDatasetView()
        self.text_view.dirty_changed.connect(lambda _d: self._emit_dirty())
        self.text_view.message.connect(self.show_message)
        self.text_files = QComboBox()
        self.text_files.activated.connect(lambda i: self._open_text_file(self.text_files.itemData(i)))
        text_page = QWidget()
        tl = QVBoxLayout(text_page)
        tl.setContentsMargins(0, 0, 0, 0)
        tl.addWidget(self.text_files)
        tl.addWidget(self.text_view, 1)

        self.pages = QStackedWidget()
        self.pages.addWidget(split)
        self.pages.addWidget(text_page)
        self.status = QLabel()
        self.status.setWordWrap(True)
        self.level_banner = Banner()  # a kohya repeat folder opened one level off
        self.kind_banner = Banner()   # a dataset of the other kind than the job (ui/app.py)
        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(self.level_banner)
        layout.addWidget(self.kind_banner)
        layout.addWidget(self.pages, 1)
        layout.addWidget(self.status)
        self._update_actions()

    def _shortcuts(self) -> None:
        ctx = Qt.ShortcutContext.WidgetWithChildrenShortcut
        for keys, slot in ((QKeySequence.StandardKey.Save, self.save_all),
                           (QKeySequence.StandardKey.Find, self.show_find),
                           (QKeySequence.StandardKey.Undo, self.undo),
                           ("Ctrl+Shift+Z", self.redo), ("Ctrl+Y", self.redo)):
            sc = QShortcut(QKeySequence(keys), self)
            sc.setContext(ctx)
            sc.activated.connect(slot)

    # -- opening ---------------------------------------------------------------
    def _choose_folder(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Open dataset folder")
        if path:
            self.open_folder(path)

    def _choose_text(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open text dataset", "",
                                              "Text datasets (*.jsonl *.json)")
        if path:
            self.open_text_dataset(path)

    def open_folder(self, path, caption_extension: str | None = None,
                    default_repeats: int | None = None) -> bool:
        """Scan a folder (kohya N_name sub-folders included) and show it at once;
        thumbnails and the health check fill in from background workers. The
        caption extension and default repeats are the job's unless given."""
        self.flush()
        caption_extension = caption_extension or self.caption_extension
        default_repeats = default_repeats or self.default_repeats
        try:
            found = browse_scan(path, caption_extension, default_repeats, self.subsets,
                                self.reg_path)
        except DatasetError as exc:
            self.show_message(f"{exc.message} {exc.hint}")
            return False
        dataset, reg = found.train, found.reg
        if not self._may_leave("opening another folder") \
                or not self._may_leave_text("opening an image folder"):
            return False
        self.health.stop()
        self.root = dataset.root
        self.items = found.items
        self.passed_over = passed_over_groups(dataset.problems)
        self.folders = dataset.folders
        self.session = None
        self._current = -1
        self._filter_tag = self._filter_problem = None
        self.folder_combo.blockSignals(True)
        self.folder_combo.clear()
        for label, group in folder_choices(dataset, reg, found.folder_notes()):
            self.folder_combo.addItem(label, group)
        self.folder_combo.setCurrentIndex(0)
        self.folder_combo.blockSignals(False)
        self.grid_model.set_images([it.image_path for it in self.items],
                                   [("reg · " if it.is_reg else "") + it.image_path.name
                                    for it in self.items])
        self._set_page(0)
        self._show_current(-1)
        self.side.tag_model.set_counts({})
        self.side.health_list.clear()
        self._update_filter_label()
        self._caption_paths = found.caption_paths()
        self._stand_ins = found.stand_in_captions()
        removed = remove_stale_temp_files({p.parent for p in self._caption_paths})
        self._opened_message = opened_message(
            dataset, sum(len(g.paths) for g in self.passed_over), len(removed), reg, found.note)
        self.show_message(f"{self._opened_message} Reading captions…")
        self._loaded_captions = []
        self.caption_timer.start()  # the grid paints first; captions follow in slices
        if not found.subsets:  # concept folders are named one by one: no level to slip
            self._show_folder_level(dataset, caption_extension, default_repeats)
        else:
            self.level_banner.clear()
        self._opened(path, "image")
        return True

    def _show_folder_level(self, dataset, caption_extension: str, default_repeats: int) -> None:
        slip = folder_level_slip(dataset)
        if slip is None:
            self.level_banner.clear()
            return
        self.level_banner.show_message(
            slip.message, slip.fix_label,
            lambda: self.open_folder(slip.fix, caption_extension, default_repeats))

    def _opened(self, path, kind: str) -> None:
        self.opened_path, self.opened_kind = Path(path), kind
        self.kind_banner.clear()
        self.loss_picker.refresh(path)
        self.show_losses(self.loss_picker.current_run())
        self.dataset_opened.emit(str(path), kind)

    def _may_leave(self, action: str) -> bool:
        """Before the open captions are replaced or the application quits (after
        flush()): ask what to do with edits that are still not on disk (changed on
        disk meanwhile, autosave off, a write that failed). False: keep this folder open."""
        if self.session is None or not self.session.dirty:
            return True
        choice = self.ask_unsaved(self.session.unsaved_summary(), action)
        may, report = self.session.leave(choice)
        self._after_save(report)
        if not may and choice == "cancel":
            self.show_message(f"Kept {self.root} open; its unsaved edits are still there.")
        return may

    def _may_leave_text(self, action: str) -> bool:
        """_may_leave for the open text dataset: its edits that flush() could not
        write. Asked last, because Discard closes the table at once."""
        view = self.text_view
        if not view.dirty:
            return True
        path = view.table.path
        choice = self.ask_unsaved(" ".join(filter(None, (view.table.unsaved_summary(),
                                                          view.save_error))), action)
        may = view.leave(choice)
        if not may and choice == "cancel":
            self.show_message(f"Kept {path} open; its unsaved edits are still there.")
        return may

    def ask_unsaved(self, summary: str, action: str) -> str:
        """"save", "discard" or "cancel"; `action` ends the question ("quitting")."""
        buttons = QMessageBox.StandardButton
        answer = QMessageBox.question(
            self, "Unsaved edits", f"{summary}\n\nSave them before {action}?",
            buttons.Save | buttons.Discard | buttons.Cancel, buttons.Cancel)
        return {buttons.Save: "save", buttons.Discard: "discard"}.get(answer, "cancel")

    def _load_caption_slice(self) -> None:
        done = len(self._loaded_captions)
        self._loaded_captions.extend(load_caption(p) for p in
                                     self._caption_paths[done:done + CAPTION_SLICE])
        if len(self._loaded_captions) < len(self._caption_paths):
            return
        self.caption_timer.stop()
        self.session = CaptionSession(self.grid_model.image_paths, self._caption_paths,
                                      loaded=self._loaded_captions,
                                      stand_ins=self._stand_ins)
        self.session.tokens = self.tokens
        self.tokens.prefill(self.session.texts)
        self._loaded_captions = []
        self.grid_model.set_session(self.session)
        if self.grid_model.losses is not None:
            self._apply_filters()  # worst first, now that there are captions to filter
        self._update_filter_label()
        self._refresh_tags()
        self._refresh_health()
        self._update_actions()
        current = self.grid.currentIndex()
        if current.isValid():  # clicked while captions were read
            self._show_current(self.grid_model.keys[current.row()])
        elif self.items:
            self.grid.setCurrentIndex(self.grid_model.index(0))
        self.show_message(self._opened_message)
        self._start_health()
        self._emit_dirty()

    def wait_for_captions(self, msecs: int = 30000) -> bool:
        """Block (processing events) until the captions of the open folder are read."""
        deadline = time.monotonic() + msecs / 1000
        while self.caption_timer.isActive() and time.monotonic() < deadline:
            self._load_caption_slice()
        QCoreApplication.processEvents()
        return self.session is not None

    def open_text_dataset(self, path) -> bool:
        """Open a .jsonl / .json file (or a folder of them) as a table of records."""
        self.flush()
        try:
            found = scan_text_files(path)
        except DatasetError as exc:
            self.show_message(f"{exc.message} {exc.hint}")
            return False
        if not self._may_leave_text("opening another text dataset"):
            return False
        files = found.files
        self.text_files.clear()
        for f in files:
            self.text_files.addItem(str(f), f)
        self.text_files.setVisible(len(files) > 1)
        self._set_page(1)
        opened = self._open_text_file(files[0])
        if opened and found.problems:
            self.show_message(f"Not used: {len(found.problems)} file(s) or folder(s). "
                              f"First: {found.problems[0]}")
        if opened:
            self.level_banner.clear()
            self._opened(path, "text")
        return opened

    def _set_page(self, page: int) -> None:
        """0: images, 1: text records. Image-only controls hide on the text page."""
        self.pages.setCurrentIndex(page)
        for w in self._image_controls:
            w.setVisible(page == 0)
        if page == 0:
            self.folder_combo.setVisible(len(self.folders) > 1 or any(f.name for f in self.folders))

    def _open_text_file(self, path) -> bool:
        self.text_view.save()
        if not self._may_leave_text("opening another file"):
            shown = self.text_view.table.path
            self.text_files.setCurrentIndex(next(
                i for i in range(self.text_files.count()) if self.text_files.itemData(i) == shown))
            return False
        return self.text_view.open(path)

    # -- health ----------------------------------------------------------------
    def _start_health(self) -> None:
        paths = dict(enumerate(self.session.image_paths))
        self._health_text = f"Checking images… 0/{len(paths)}" if paths else ""
        self.health.start(paths)

    def _health_checked(self, checks: dict) -> None:
        self.session.set_image_checks(checks)
        if self._current in checks:
            self._show_info()

    def _health_duplicates(self, groups: list) -> None:
        self.session.set_duplicate_groups(groups)
        self._refresh_health()

    def _health_progress(self, done: int, total: int, error: str) -> None:
        self._health_text = error or ("" if done >= total else f"Checking images… {done}/{total}")
        self._refresh_health()
        if done >= total and self._filter_problem:
            self._apply_filters()

    def wait_for_health(self, msecs: int = 60000) -> bool:
        """Block (processing events) until the health check has finished."""
        deadline = time.monotonic() + msecs / 1000
        while self.health.running and time.monotonic() < deadline:
            QCoreApplication.processEvents()
            time.sleep(0.01)
            self.health.poll()
        return not self.health.running

    def _refresh_health(self) -> None:
        if not self.session:
            self.side.health_list.clear()
            return
        self.side.show_health(self.session.problem_counts(), self.passed_over,
                              self._filter_problem, self._health_text)

    def _problem_clicked(self, key: str) -> None:
        self.set_filter(problem=None if key == self._filter_problem else key, tag=self._filter_tag)

    # -- filters ---------------------------------------------------------------
    def _tag_clicked(self, tag: str) -> None:
        self.set_filter(tag=None if tag == self._filter_tag else tag, problem=self._filter_problem)

    def set_filter(self, tag: str | None = None, problem: str | None = None) -> None:
        self._filter_tag, self._filter_problem = tag, problem
        self._apply_filters()

    def clear_filters(self) -> None:
        self.search.blockSignals(True)
        self.search.clear()
        self.search.blockSignals(False)
        self.folder_combo.setCurrentIndex(0)
        self.set_filter()

    def _apply_filters(self, *_args) -> None:
        if not self.session:
            return
        self._commit_editor()
        keys = self.session.filter(tag=self._filter_tag, problem=self._filter_problem,
                                   text=self.search.text() or None)
        group = self.folder_combo.currentData()
        if group is not None:
            keys = [k for k in keys if in_group(self.items[k], group)]
        if self.grid_model.losses is not None and self.loss_picker.worst_first.isChecked():
            keys = self.grid_model.losses.worst_first(keys)
        current = self._current
        self.grid_model.set_keys(keys)
        if not self.grid.show_key(current) and not (keys and self.grid.show_key(keys[0])):
            self._show_current(-1)
        self._update_filter_label()

    def _update_filter_label(self) -> None:
        self.side.filter_label.setText(filter_summary(
            len(self.grid_model.keys), len(self.grid_model.image_paths),
            self._filter_tag, self._filter_problem))

    def shown_keys(self) -> list[int]:
        return list(self.grid_model.keys)

    def selected_keys(self) -> list[int]:
        return self.grid.selected_keys() or ([self._current] if self._current >= 0 else [])

    def _keys_for_scope(self, scope: str) -> list[int]:
        if scope.startswith("Selected"):
            return self.selected_keys()
        if scope.startswith("Shown"):
            return self.shown_keys()
        return list(range(len(self.session)))

    # -- current image and caption ---------------------------------------------
    def _current_changed(self, current: QModelIndex, _previous: QModelIndex) -> None:
        self.idle_timer.stop()
        previous = self._current
        self._commit_editor()
        if previous >= 0 and self.autosave and self.session is not None:
            self._save([previous])
        self._show_current(self.grid_model.keys[current.row()] if current.isValid() else -1)

    def _show_current(self, key: int) -> None:
        self._current = key
        ready = key >= 0 and self.session is not None
        if ready and self.session.reload_if_changed(key):
            self._after_change([key], refresh_editor=False)
        self.caption_pane.show_caption(self.session.texts[key] if ready else None)
        self.caption_pane.show_image(self.grid_model.image_paths[key] if key >= 0 else None,
                                     "No image" if self.root else "Open a folder of images.")
        self._show_info()
        self._show_conflict()

    def image_facts(self, key: int) -> dict:
        """What the info panel says about an image (also used by tests)."""
        return image_facts(self.session, self.items[key], key, self.buckets)

    def _show_info(self) -> None:
        ready = self._current >= 0 and self.session is not None
        self.caption_pane.show_facts(self.image_facts(self._current) if ready else None,
                                     self.buckets.resolution)

    def _show_keep_tokens(self) -> None:
        ready = self._current >= 0 and self.session is not None
        self.caption_pane.show_keep_tokens(self.session.texts[self._current] if ready else None)

    def set_keep_tokens(self, n: int) -> None:
        self.caption_pane.keep_spin.setValue(n)

    def set_job_folders(self, reg_path: str, subsets: list[str]) -> None:
        """The job's regularisation folder and concept folder lines; an open image
        folder is shown again with them."""
        if (reg_path, list(subsets)) != (self.reg_path, self.subsets):
            self.reg_path, self.subsets = reg_path, list(subsets)
            if self.opened_kind == "image" and self.opened_path is not None:
                self.open_folder(self.opened_path)

    def set_bucket_params(self, resolution: int, min_side: int, max_side: int, step: int,
                          enable: bool = True, no_upscale: bool = False) -> None:
        self.buckets = BucketSettings(resolution, min_side, max_side, step, enable, no_upscale)
        self._show_info()

    def _editor_changed(self) -> None:
        if self._current >= 0:
            self.idle_timer.start()

    def _commit_editor(self) -> bool:
        """Turn what was typed into an undoable edit; True if it changed the caption."""
        if self.session is None or self._current < 0:
            return False
        text = self.editor.toPlainText()
        if text == self.session.texts[self._current]:
            return False
        self.session.set_text(self._current, text)
        self._after_change([self._current], refresh_editor=False)
        return True

    def _idle_save(self) -> None:
        self._commit_editor()
        if self.autosave and self._current >= 0:
            self._save([self._current])

    def step(self, delta: int) -> None:
        """Move to the previous / next shown image."""
        row = self.grid.currentIndex().row() + delta
        if 0 <= row < self.grid_model.rowCount():
            self.grid.setCurrentIndex(self.grid_model.index(row))

    # -- edits, undo, save -----------------------------------------------------
    def _after_change(self, keys: list[int], refresh_editor: bool = True) -> None:
        self.grid_model.refresh_keys(keys)
        self._refresh_tags()
        self._refresh_health()
        if refresh_editor and self._current in keys:
            self.caption_pane.show_caption(self.session.texts[self._current])
        self._show_keep_tokens()
        self._show_info()
        self._update_actions()
        self._emit_dirty()

    def apply_changes(self, changes, label: str) -> int:
        """Apply previewed changes as one undoable command and autosave them."""
        self._commit_editor()
        changes = list(changes)
        if not self.session.apply(changes, label):
            return 0
        keys = [c.key for c in changes]
        self._after_change(keys)
        report = self._save(keys) if self.autosave else SaveReport()
        unsaved = len(report.conflicts) + len(report.errors)
        self.show_message(f"{label}: {len(keys)} caption(s) changed. Ctrl+Z undoes it." +
                          (f" {unsaved} could not be saved: see the bar above the caption."
                           if unsaved else ""))
        return len(keys)

    def batch_edit(self, op: str) -> int:
        if not self.session:
            return 0
        self._commit_editor()
        pane = self.caption_pane
        tag = pane.batch_tag.text().strip()
        if not tag:
            self.show_message("Type a tag first.")
            return 0
        keys = self._keys_for_scope(pane.batch_scope.currentText())
        items = self.session.items(keys)
        if op == "add":
            changes, label = batch_preview(items, add_tag, tag), f"Add tag “{tag}”"
        elif op == "remove":
            changes, label = batch_preview(items, remove_tag, tag), f"Remove tag “{tag}”"
        else:
            new = pane.batch_with.text().strip()
            changes, label = batch_preview(items, replace_tag, tag, new), f"Replace “{tag}” with “{new}”"
        if not changes:
            self.show_message(f"{label}: no caption changes.")
            return 0
        return self.apply_changes(changes, label)

    def _jump_to(self, keys: list[int]) -> None:
        if self._current in keys or not keys:
            return
        if self.grid_model.row_of(keys[0]) >= 0:
            self.idle_timer.stop()
            self._current = -1  # already committed; nothing to save on the way
            self.grid.show_key(keys[0])

    def undo(self) -> None:
        if not self.session:
            return
        self._commit_editor()
        label = self.session.undo_stack.undo_label()
        keys = self.session.undo()
        if keys:
            self._after_change(keys)
            if self.autosave:
                self._save(keys)
            self._jump_to(keys)
            self.show_message(f"Undid: {label}")

    def redo(self) -> None:
        if not self.session:
            return
        self._commit_editor()
        label = self.session.undo_stack.redo_label()
        keys = self.session.redo()
        if keys:
            self._after_change(keys)
            if self.autosave:
                self._save(keys)
            self._jump_to(keys)
            self.show_message(f"Redid: {label}")

    def _save(self, keys=None, force: bool = False) -> SaveReport:
        if self.session is None:
            return SaveReport()
        report = self.session.save(keys, force=force)
        self._after_save(report)
        return report

    def _after_save(self, report: SaveReport) -> None:
        self.grid_model.refresh_keys(report.saved)
        if report.errors:
            self.show_message(next(iter(report.errors.values())))
        elif report.conflicts:
            self.show_message(f"{len(self.session.conflicts)} caption(s) changed on disk by another "
                              f"program and were not overwritten.")
        self._show_conflict()
        self._update_actions()
        self._emit_dirty()

    def save_all(self) -> SaveReport | None:
        """Ctrl+S: save every unsaved caption (and the open text dataset)."""
        if self.pages.currentIndex() == 1:
            self.text_view.save()
            return None
        if not self.session:
            return None
        self._commit_editor()
        report = self._save()
        if report.ok:
            self.show_message(f"Saved {len(report.saved)} caption(s).")
        return report

    def flush(self) -> None:
        """Save whatever is pending; called on leaving the tab, opening another
        dataset and when the application quits."""
        self.idle_timer.stop()
        if self.session is not None:
            self._commit_editor()
            if self.autosave and self.session.dirty:
                self._save()
        if self.text_view.dirty:
            self.text_view.save()

    def may_close(self) -> bool:
        """Before the application quits: save what autosave may, then ask about the
        edits that would still be lost. False: the user chose to stay."""
        self.flush()
        return self._may_leave("quitting") and self._may_leave_text("quitting")

    def shutdown(self) -> None:
        """Save, then stop the background workers (the health check stops after
        the image it is on)."""
        self.flush()
        self.health.shutdown()
        self.loader.reset()
        self.loader.wait(10000)

    def closeEvent(self, event) -> None:
        self.shutdown()
        super().closeEvent(event)

    def _show_conflict(self) -> None:
        if not self.session or not self.session.conflicts:
            self.caption_pane.show_conflict(None)
            return
        conflicts = self.session.conflicts
        key = self._current if self._current in conflicts else next(iter(conflicts))
        self._conflict_key = key
        self.caption_pane.show_conflict(self.session.files[key].path.name, len(conflicts) - 1)

    def _keep_mine(self) -> None:
        self._save([self._conflict_key], force=True)

    def _take_disk(self) -> None:
        key = self._conflict_key
        self.session.take_disk(key)
        self._after_change([key])
        self._show_conflict()

    def _refresh_tags(self) -> None:
        if not self.session:
            return
        self.side.tag_model.set_counts(self.session.counts)
        self.caption_pane.set_tags(self.session.counts)

    def _update_actions(self) -> None:
        stack = self.session.undo_stack if self.session else None
        self.undo_button.setEnabled(bool(stack and stack.can_undo()))
        self.redo_button.setEnabled(bool(stack and stack.can_redo()))
        self.undo_button.setToolTip(f"Undo {stack.undo_label()} (Ctrl+Z)" if stack else "Undo")
        self.redo_button.setToolTip(f"Redo {stack.redo_label()} (Ctrl+Shift+Z)" if stack else "Redo")
        self._update_status()

    def _update_status(self) -> None:
        if self.session is None:
            return
        dirty = len(self.session.dirty)
        self.save_button.setText(f"Save all ({dirty})" if dirty else "Save all")

    @property
    def dirty(self) -> bool:
        return bool(self.session and self.session.dirty) or self.text_view.dirty

    def _emit_dirty(self) -> None:
        self.captions_dirty.emit(self.dirty)

    def show_message(self, text: str) -> None:
        self.status.setText(text)

    # -- tag hygiene -------------------------------------------------------------
    def set_clip_model(self, model: str | Path | None) -> None:
        """The job's base model, whose CLIP tokenizer counts each caption's tokens (an
        estimate when it has none here)."""
        source = str(model or "")
        if source == self._clip_model:
            return
        self._clip_model = source
        self.tokens = CaptionTokens.for_model(model)
        self.caption_pane.set_token_counter(self.tokens)
        if self.session is not None:
            self.session.tokens = self.tokens
            self.tokens.prefill(self.session.texts)
            self._refresh_health()

    def _choose_tag_list(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Booru tag list", "",
                                              "Tag lists (*.csv);;All files (*)")
        if path and self.set_tag_list(path):
            self.tag_list_changed.emit(path)

    def set_tag_list(self, path: str | Path) -> bool:
        """Complete tags from a booru tag list too; False with a message when it cannot
        be read."""
        try:
            tags = load_booru_tags(path)
        except BooruListError as exc:
            self.show_message(f"{exc.message} {exc.hint}")
            return False
        self.caption_pane.editor.booru = tags
        skipped = f" ({tags.skipped} row(s) not read)" if tags.skipped else ""
        said = f"Completing tags from {Path(path).name} too: {len(tags)} tags{skipped}."
        self.caption_pane.tag_list_button.setToolTip(f"{said} Click to pick another list.")
        self.show_message(said)
        return True

    # -- per-item loss of a run ------------------------------------------------
    def show_losses(self, run) -> bool:
        """Show each image's (or record's) loss in ``run`` (a run folder, "" for none);
        False with a message when the run has none to show."""
        losses = None
        if run:
            try:
                losses = read_item_losses(run)
                if losses is None:
                    self.show_message(f"The run '{Path(run).name}' recorded no per-item losses "
                                      "(a streamed text dataset, or a run from before they "
                                      "were recorded).")
            except ItemLossError as exc:
                self.show_message(f"{exc.message} {exc.hint}")
        if losses is not None:
            self.loss_picker.choose(run, losses.step)
        overlay = None
        if losses is not None and losses.kind == "image" and self.opened_kind == "image":
            overlay = LossOverlay.for_images(losses, [it.image_path for it in self.items])
            self.show_message(overlay.summary())
        self.grid_model.set_losses(overlay)
        self.text_view.set_losses(losses if losses is not None and losses.kind == "text"
                                  else None)
        if self.opened_kind == "text" and losses is not None:
            self.show_message(self.text_view.loss_summary())
        self._sort_by_loss(self.loss_picker.worst_first.isChecked())
        return losses is not None

    def set_runs_folder(self, folder: Path) -> None:
        """Where 'Loss from run' looks for runs of the open dataset (the job's)."""
        if folder != self.loss_picker.runs_folder:
            self.loss_picker.runs_folder = folder
            self.loss_picker.refresh(self.opened_path)

    def _sort_by_loss(self, worst_first: bool) -> None:
        self.text_view.sort_by_loss(worst_first)
        self._apply_filters()

    # -- find and replace ------------------------------------------------------
    def show_find(self) -> FindReplaceDialog | None:
        if not self.session:
            return None
        self._commit_editor()
        dialog = getattr(self, "find_dialog", None)
        if dialog is None:
            dialog = self.find_dialog = FindReplaceDialog(
                lambda scope: self.session.items(self._keys_for_scope(
                    {"All images": "All", "Shown images": "Shown", "Selected images": "Selected"}[scope])),
                lambda key: str(self.session.image_paths[key].relative_to(self.root)),
                lambda changes: self.apply_changes(changes, "Find and replace"), self)
        dialog.show()
        dialog.raise_()
        dialog.find_edit.setFocus()
        return dialog

    # -- auto-captioning ---------------------------------------------------------
    def show_auto_caption(self) -> CaptionDialog | None:
        """The Auto-caption dialog, over the selection, the shown images, a folder or all."""
        if not self.session:
            return None
        self._commit_editor()
        folders = [(f.name, [k for k, it in enumerate(self.items) if it.folder == f.name])
                   for f in self.folders]
        scopes = caption_scopes(self.grid.selected_keys(), self.shown_keys(), folders,
                                len(self.session))
        dialog = getattr(self, "caption_dialog", None)
        if dialog is None:  # kept, so that the next run starts from the same options
            dialog = self.caption_dialog = CaptionDialog(scopes, self._prepare_captioning,
                                                         self._captioned, self)
        else:
            dialog.set_scopes(scopes)
        dialog.open()
        return dialog

    def _prepare_captioning(self, keys: list[int]) -> tuple[list, list] | str:
        """The images and caption files of ``keys``, their unsaved edits saved first:
        the captioner reads the captions on disk. A message when that cannot be done."""
        if not keys:
            return "There are no images to caption in this choice."
        self._commit_editor()
        report = self._save(keys)
        if not report.ok:
            return (f"{len(report.conflicts) + len(report.errors)} of these captions have edits "
                    "that could not be saved (see the bar above the caption); settle them "
                    "first, or choose other images.")
        return ([self.session.image_paths[k] for k in keys],
                [self.session.files[k].path for k in keys])

    def _captioned(self, tally) -> None:
        """The run's captions, already on disk, become one undoable edit."""
        keys = [self.caption_dialog.keys[i] for i in tally.written]
        changed = self.session.adopt_written(keys, "Auto-caption")
        if changed:
            self._after_change(changed)
        self.show_message(tally.summary() + (" Ctrl+Z undoes it." if changed else ""))
