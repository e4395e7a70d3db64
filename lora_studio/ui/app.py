"""The main window and ``main()``, the entry point of ``lora-studio`` without arguments.

Nothing here imports torch, transformers, diffusers or peft: they load only in the
engine's child process, so the window is on screen in a fraction of their import
time (benchmarks/ui_start.py measures it).
"""
from __future__ import annotations

import gc
import sys
from pathlib import Path

from PySide6.QtCore import QSettings, Qt, QTimer
from PySide6.QtGui import QKeySequence, QShortcut
from PySide6.QtWidgets import (QApplication, QFileDialog, QHBoxLayout, QLabel, QMainWindow,
                               QMessageBox, QPushButton, QTabWidget, QVBoxLayout, QWidget)

from ..config.fields import SPECS
from ..config.findings import has_errors
from ..config.jobfile import write_job_toml
from ..config.model_info import find_in_hf_cache, looks_like_hub_id
from ..config.parse import parse_job
from ..config.validate import check
from ..config.paths import resolve_local_path
from ..config.preset_match import matching_preset
from ..config.presets import list_presets
from ..data.dataset_kind import dataset_kind
from ..hardware.monitor import gpu_facts
from ..runs.item_loss import dataset_of_run
from ..runs.layout import RunDir, new_run_dir
from .dataset_browser import DatasetBrowser
from .fit_box import FitBox
from .panel_state import PanelState
from .param_panel import ParamPanel
from .playground_view import PlaygroundView
from .preset_bar import PresetBar
from .runs_view import RunsView
from .status_line import StatusLine
from .training_view import TrainingView

ORGANISATION = "LoRA Studio"
APPLICATION = "LoRA Studio"
MAX_RECENT_RUNS = 10
PRESET_SUFFIXES = (".toml", ".json")
DATASET_PATH_DEBOUNCE_MS = 700  # typing a path opens it once the typing stops


def runs_folder(output_dir: str) -> Path:
    """The runs folder the job writes to; relative paths count from the current
    folder, as with ``lora-studio train``."""
    path = resolve_local_path(output_dir) or Path(output_dir or "runs")
    return path if path.is_absolute() else Path.cwd() / path


def job_for_run(state: PanelState, base_dir: Path | None):
    """The validated job with its local paths made absolute, so the engine (in a
    run folder, maybe started from elsewhere) reads the same files the panel checked."""
    data = state.to_data()
    for path, spec in SPECS.items():
        if spec.local_path and state.values.get(path):
            found = resolve_local_path(str(state.values[path]), base_dir)
            if found is not None:
                section, name = path.split(".", 1)
                data[section][name] = str(found.resolve())
    job, findings = parse_job(data)
    return job, findings


class MainWindow(QMainWindow):
    def __init__(self, settings: QSettings | None = None, gpu_read=None):
        super().__init__()
        self.settings = settings or QSettings(ORGANISATION, APPLICATION)
        self.setWindowTitle("LoRA Studio")
        self.setAcceptDrops(True)
        self.training = TrainingView(gpu_read)
        self.gpu = gpu_facts(self.training.gpu_panel.snapshot)
        self.state = PanelState(checker=self._checker)
        self.preset_bar = PresetBar(self.state)  # before the panel: validation asks its base_dir
        self.panel = ParamPanel(self.state)
        self.browser = DatasetBrowser()
        self.dataset_path_timer = QTimer(self)
        self.dataset_path_timer.setSingleShot(True)
        self.dataset_path_timer.setInterval(DATASET_PATH_DEBOUNCE_MS)
        self.dataset_path_timer.timeout.connect(self._open_job_dataset)
        self._dataset_value = None  # dataset.path as last seen: other edits open nothing

        params_page = self.params_page = QWidget()
        params_layout = QVBoxLayout(params_page)
        params_layout.addWidget(self.preset_bar)
        params_layout.addWidget(self.panel, 1)
        train_row = QHBoxLayout()
        self.fit_box = FitBox(lambda: self.training.gpu_panel.snapshot)
        train_row.addWidget(self.fit_box, 1)
        self.params_train_button = QPushButton("Train ▶")
        self.params_train_button.setToolTip("Start a run with these parameters (Ctrl+Enter)")
        self.params_train_button.clicked.connect(self.train)
        train_row.addWidget(self.params_train_button, 0, Qt.AlignmentFlag.AlignBottom)
        params_layout.addLayout(train_row)

        self.runs = RunsView(runs_folder(self.state.values["output.output_dir"]))
        self.tabs = QTabWidget()
        self.tabs.addTab(self.browser, "Dataset")
        self.tabs.addTab(params_page, "Parameters")
        self.tabs.addTab(self.training, "Training")
        self.tabs.addTab(self.runs, "Runs")
        self.playground = PlaygroundView()
        self.tabs.addTab(self.playground, "Playground")
        self.setCentralWidget(self.tabs)

        self.status_line = StatusLine()
        self.statusBar().addWidget(self.status_line, 1)
        self.findings_label = QLabel()
        self.statusBar().addPermanentWidget(self.findings_label)

        self.panel.edited.connect(self.preset_bar.update_title)
        self.panel.edited.connect(self._dataset_path_edited)
        self.preset_bar.loaded.connect(self._dataset_path_seen)
        self.preset_bar.loaded.connect(self._open_job_dataset)
        self.browser.dataset_opened.connect(self._dataset_opened)
        self.browser.tag_list_changed.connect(lambda path: self.settings.setValue("tag_list", path))
        self.panel.validated.connect(self._on_validated)
        self.fit_box.apply_values.connect(self._apply_fit)
        self.preset_bar.loaded.connect(self.panel.refresh)
        self.preset_bar.loaded.connect(self._remember_preset)
        self.preset_bar.message.connect(self._status)
        self.training.train_clicked.connect(self.train)
        self.training.status.connect(self._status)
        self.training.run_ended.connect(self.runs.refresh)
        self.training.run_ended.connect(self._sync_train_button)
        self.training.run_started.connect(self._sync_train_button)
        self.training.run_started.connect(self.playground.release_gpu)
        self.playground.status.connect(self._status)
        self.runs.open_run.connect(self.open_run)
        self.runs.resume_run.connect(self.resume_run)
        self.runs.try_run.connect(self.try_run)
        self.runs.losses_run.connect(self.show_run_losses)
        self.training.try_run.connect(self.try_run)
        self.runs.in_use = lambda: self.training.run.root if self.training.run is not None and (
            self.training.is_running or self.training.exporter is not None) else None
        self._build_menu()
        self._build_shortcuts()
        self._restore()

    # -- set-up --------------------------------------------------------------
    def _checker(self, data: dict):
        return check(data, gpu=self.gpu, base_dir=self.preset_bar.base_dir)

    def _build_menu(self) -> None:
        file_menu = self.menuBar().addMenu("&File")
        file_menu.addAction("Open dataset…", QKeySequence("Ctrl+O"), self.open_dataset_dialog)
        self.recent_menu = file_menu.addMenu("Recent runs")
        self.recent_menu.aboutToShow.connect(self._fill_recent_menu)
        file_menu.addAction("Import preset…", self.preset_bar.import_dialog)
        file_menu.addAction("Export preset for sharing…", self.preset_bar.export_dialog)
        file_menu.addSeparator()
        file_menu.addAction("Quit", QKeySequence("Ctrl+Q"), self.close)
        run_menu = self.menuBar().addMenu("&Run")
        run_menu.addAction("Train (Ctrl+Enter)", self.train)
        run_menu.addAction("Stop (Esc)", self.training.stop)
        run_menu.addAction("Resume", self.training.resume)

    def _build_shortcuts(self) -> None:
        # Ctrl+S saves the preset on the Parameters tab (the dataset browser saves its
        # captions with it); Esc stops only on the Training tab, where it cannot be
        # meant for an editor.
        window, page = Qt.ShortcutContext.WindowShortcut, Qt.ShortcutContext.WidgetWithChildrenShortcut
        for keys, slot, owner, context in (
                ("Ctrl+Return", self.train, self, window), ("Ctrl+Enter", self.train, self, window),
                ("Ctrl+.", self.training.stop, self, window),
                ("Escape", self.training.stop, self.training, page),
                ("Ctrl+S", self.preset_bar.save, self.params_page, page)):
            shortcut = QShortcut(QKeySequence(keys), owner)
            shortcut.setContext(context)
            shortcut.activated.connect(slot)

    def _restore(self) -> None:
        geometry = self.settings.value("geometry")
        if geometry is not None:
            self.restoreGeometry(geometry)
        else:
            self.resize(1360, 880)
        preset = self.settings.value("last_preset")
        if not (preset and self.preset_bar.select(str(preset))):
            self.preset_bar.select_default()
        # The preset's own dataset (opened on loading it) wins over the last one opened.
        dataset = self.settings.value("last_dataset")
        if self.browser.opened_path is None and dataset and Path(str(dataset)).exists():
            self._open_in_browser(str(dataset))
        tag_list = self.settings.value("tag_list")
        if tag_list and Path(str(tag_list)).is_file():
            self.browser.set_tag_list(str(tag_list))

    def recent_runs(self) -> list[str]:
        value = self.settings.value("recent_runs") or []
        return [value] if isinstance(value, str) else list(value)

    def _fill_recent_menu(self) -> None:
        self.recent_menu.clear()
        for run in self.recent_runs():
            if Path(run).is_dir():
                self.recent_menu.addAction(Path(run).name, lambda r=run: self.open_run(r))
        if self.recent_menu.isEmpty():
            self.recent_menu.addAction("(none yet)").setEnabled(False)

    def _remember_run(self, run: Path) -> None:
        recent = [str(run)] + [r for r in self.recent_runs() if r != str(run)]
        self.settings.setValue("recent_runs", recent[:MAX_RECENT_RUNS])

    def _remember_preset(self) -> None:
        if self.state.preset_name:
            self.settings.setValue("last_preset", self.state.preset_name)

    # -- actions -------------------------------------------------------------
    def _status(self, text: str) -> None:
        self.status_line.show_message(text)

    def _on_validated(self) -> None:
        findings = self.state.findings
        errors = sum(f.level == "error" for f in findings)
        warnings = sum(f.level == "warning" for f in findings)
        self.findings_label.setText(f"{errors} error(s), {warnings} warning(s)" if findings
                                    else "Parameters OK")
        self.findings_label.setStyleSheet("color: #d32f2f;" if errors else "")
        self.training.set_can_train(self.state.can_train)
        self._sync_train_button()
        self.preset_bar.update_title()
        self.browser.text_view.set_responses_only(
            self.state.values["dataset.train_on_responses_only"] is True)
        self.browser.text_view.set_job(self.state.job, self.preset_bar.base_dir)
        folder = runs_folder(self.state.values["output.output_dir"] or "runs")
        self.browser.set_runs_folder(folder)
        if folder != self.runs.folder:
            self.runs.set_folder(folder)
        self.fit_box.update_fit(self.state.job, self.preset_bar.base_dir)
        # The browser shows each image's bucket and the kept tags for this job's settings.
        ds = self.state.job.dataset
        self.browser.set_keep_tokens(ds.keep_tokens)
        self.browser.caption_extension, self.browser.default_repeats = (
            ds.caption_extension, ds.repeats)
        if self.state.kind in (self.browser.opened_kind, "unknown"):
            self.browser.kind_banner.clear()  # the job now fits the dataset
        self.browser.set_bucket_params(ds.resolution, ds.min_bucket_reso, ds.max_bucket_reso,
                                       ds.bucket_reso_steps, ds.enable_bucket,
                                       ds.bucket_no_upscale)
        reg = resolve_local_path(ds.reg_path, self.preset_bar.base_dir) \
            if ds.reg_path.strip() else None
        self.browser.set_job_folders(str(reg) if reg is not None else ds.reg_path, ds.subsets)
        self.browser.set_clip_model(self._local_model() if self.state.kind != "text" else None)

    def _local_model(self) -> Path | None:
        """The job's base model on this computer: a folder, or a Hub id's snapshot in the
        Hugging Face cache (nothing is downloaded)."""
        value = str(self.state.values["model.path"] or "")
        local = resolve_local_path(value, self.preset_bar.base_dir) if value else None
        if local is None and looks_like_hub_id(value):
            local = find_in_hf_cache(value)
        return local

    def _apply_fit(self, values: dict) -> None:
        self.panel.apply_values(values)
        self._status("Auto-fit changed: " + ", ".join(SPECS[p].title for p in values)
                     + ". Revert undoes it.")

    def _sync_train_button(self) -> None:
        self.params_train_button.setEnabled(self.state.can_train and not self.training.is_running)

    def train(self) -> None:
        if self.training.is_running:
            return
        self.panel.validate_now()
        if not self.state.can_train:
            self.tabs.setCurrentIndex(1)
            first = next(f for f in self.state.findings if f.level == "error")
            self.panel.focus_field(first.path)
            self._status("Fix the errors in the parameters before training.")
            return
        job, findings = job_for_run(self.state, self.preset_bar.base_dir)
        if has_errors(findings):
            self._status(str(next(f for f in findings if f.level == "error")))
            return
        try:
            run = new_run_dir(runs_folder(job.output.output_dir), job.output.output_name)
            write_job_toml(job, run.job_toml)
        except OSError as exc:
            QMessageBox.warning(self, "Cannot create the run folder",
                                f"{exc}\n\nChoose another Runs folder in the Output group.")
            return
        self._remember_run(run.root)
        self.runs.set_folder(run.root.parent)
        self.training.start(run.root)
        self.tabs.setCurrentWidget(self.training)

    def open_run(self, run_dir: str) -> None:
        self.tabs.setCurrentWidget(self.training)  # first: a hidden plot is not drawn
        self.training.show_run(run_dir)

    def resume_run(self, run_dir: str) -> None:
        if self.training.is_running:
            self._status("A run is already in progress.")
            return
        checkpoint = RunDir(Path(run_dir)).latest_checkpoint()
        if checkpoint is None:
            self._status("That run has no complete checkpoint to resume from.")
            return
        self._remember_run(Path(run_dir))
        self.training.start(run_dir, resume=checkpoint)
        self.tabs.setCurrentWidget(self.training)

    def try_run(self, run_dir: str) -> None:
        """Try it: the run's adapters in the Playground, its sample prompts filled in."""
        self.tabs.setCurrentWidget(self.playground)
        if self.playground.open_run(run_dir) and self.training.is_running:
            self._status("Training is running: the Playground shares the GPU with it.")

    def show_run_losses(self, run_dir: str) -> bool:
        """Losses in Dataset: the run's dataset in the Dataset tab, each item with its
        training loss in that run, the worst-learned first."""
        dataset = dataset_of_run(run_dir)
        if dataset is None:
            self._status(f"The dataset of {Path(run_dir).name} is not on this computer any "
                         "more.")
            return False
        opened = self.browser.opened_path
        if (opened is None or opened.resolve() != dataset.resolve()) and \
                not self._open_in_browser(str(dataset)):
            return False
        self.tabs.setCurrentWidget(self.browser)
        self.browser.loss_picker.worst_first.setChecked(True)
        return self.browser.show_losses(run_dir)

    def open_dataset_dialog(self) -> None:
        """Ctrl+O: a folder of images, or a .jsonl / .json file for a text job."""
        start = self.state.values["dataset.path"] or str(self.settings.value("last_dataset") or "")
        if self.state.kind == "text":
            chosen, _ = QFileDialog.getOpenFileName(self, "Open text dataset", start,
                                                    "Text datasets (*.jsonl *.json)")
        else:
            chosen = QFileDialog.getExistingDirectory(self, "Open dataset folder", start)
        if chosen:
            self.open_dataset(chosen)

    def open_dataset(self, path: str) -> bool:
        """Show the dataset in the Dataset tab; the browser's dataset_opened makes
        it the job's dataset."""
        if not self._open_in_browser(path):
            return False
        self.tabs.setCurrentWidget(self.browser)
        return True

    def _open_in_browser(self, path: str) -> bool:
        if dataset_kind(path, self.state.kind) == "text":
            return self.browser.open_text_dataset(path)
        return self.browser.open_folder(path, self.state.values["dataset.caption_extension"] or ".txt",
                                        self.state.values["dataset.repeats"] or 1)

    def _job_dataset(self) -> Path | None:
        value = self.state.values["dataset.path"]
        return resolve_local_path(str(value), self.preset_bar.base_dir) if value else None

    def _dataset_path_seen(self) -> None:
        self._dataset_value = self.state.values["dataset.path"]

    def _dataset_path_edited(self) -> None:
        if self.state.values["dataset.path"] != self._dataset_value:
            self._dataset_path_seen()
            self.dataset_path_timer.start()

    def _open_job_dataset(self) -> None:
        """The dataset typed or picked in the Parameters tab, opened in the browser
        (which asks before unsaved captions are lost) once it names something."""
        path = self._job_dataset()
        opened = self.browser.opened_path
        if path is not None and (opened is None or opened.absolute() != path):
            self._open_in_browser(str(path))

    def _dataset_opened(self, path: str, kind: str) -> None:
        """Whatever opened the dataset (the browser, Ctrl+O, the Parameters tab), it is
        the job's dataset; a preset of the other kind gets a banner offering one that fits."""
        self.settings.setValue("last_dataset", path)
        if self._job_dataset() != Path(path).absolute():
            self.state.set("dataset.path", path)
            self.panel.refresh()
            self.preset_bar.update_title()
        self._dataset_path_seen()
        self._status(f"Dataset: {path}")
        self._offer_matching_preset(kind)

    def _offer_matching_preset(self, kind: str) -> None:
        preset = matching_preset(kind, self.state.kind, self.state.preset_meta.get("vram_class", ""),
                                 list_presets())
        if preset is None:
            self.browser.kind_banner.clear()
            return
        self.browser.kind_banner.show_message(
            f"This is {'a text' if kind == 'text' else 'an image'} dataset, but the preset "
            f"'{self.state.preset_name}' trains {self.state.kind} models.",
            f"Use '{preset.meta.name}'", lambda: self.use_preset_for_dataset(preset.path))

    def use_preset_for_dataset(self, preset: Path) -> bool:
        """Load the preset and keep the open dataset as its dataset."""
        dataset = self.browser.opened_path
        if any(p != "dataset.path" for p in self.state.dirty_paths()) and \
                QMessageBox.question(self, "Unsaved changes",
                                     f"Discard the changes to '{self.state.preset_name}'?") \
                != QMessageBox.StandardButton.Yes:
            return False
        if not self.preset_bar.load(preset):
            return False
        if dataset is not None:
            self.state.set("dataset.path", str(dataset))
            self.panel.refresh()
            self.preset_bar.update_title()
            self._dataset_path_seen()
        return True

    # -- drag and drop of presets --------------------------------------------
    @staticmethod
    def _dropped_preset(mime) -> str | None:
        for url in mime.urls() if mime.hasUrls() else []:
            path = url.toLocalFile()
            if path.lower().endswith(PRESET_SUFFIXES):
                return path
        return None

    def dragEnterEvent(self, event) -> None:
        if self._dropped_preset(event.mimeData()):
            event.acceptProposedAction()

    def dropEvent(self, event) -> None:
        path = self._dropped_preset(event.mimeData())
        if path:
            event.acceptProposedAction()
            self.tabs.setCurrentIndex(1)
            self.preset_bar.import_file(path)

    # -- closing -------------------------------------------------------------
    def closeEvent(self, event) -> None:
        if not self.may_close():
            event.ignore()
            return
        self.shutdown()
        super().closeEvent(event)

    def may_close(self) -> bool:
        """Ask before quitting stops a run or loses caption edits; False: stay open.
        The run is asked about first because answering it changes nothing yet,
        while saving the captions does."""
        if self.training.is_running and not self.ask_stop_run():
            return False
        return self.browser.may_close()

    def ask_stop_run(self) -> bool:
        """True: stop the run and quit."""
        buttons = QMessageBox.StandardButton
        box = QMessageBox(QMessageBox.Icon.Question, "Training is running",
                          "A run is in progress. Stop it and quit?\n\n"
                          "The engine finishes its current step and saves a checkpoint: "
                          "resume the run later from the Runs tab.", buttons.Cancel, self)
        stop = box.addButton("Stop and quit", QMessageBox.ButtonRole.AcceptRole)
        box.setDefaultButton(buttons.Cancel)
        box.exec()
        return box.clickedButton() is stop

    def shutdown(self) -> None:
        """Remember the geometry, stop a run, save pending captions, stop the timers."""
        self.settings.setValue("geometry", self.saveGeometry())
        self.training.shutdown()
        self.playground.shutdown()
        self.browser.shutdown()
        self.fit_box.shutdown()
        self.runs.shutdown()


def settle_gc() -> None:
    """Move everything built so far (modules, widgets, the plot) out of the cyclic
    garbage collector's reach: its full collections otherwise re-scan them all and
    stall the UI thread for about 50 ms (benchmarks/ui_stall.py)."""
    gc.collect()
    gc.freeze()


def main(argv: list[str] | None = None) -> int:
    app = QApplication.instance() or QApplication(sys.argv if argv is None else argv)
    app.setOrganizationName(ORGANISATION)
    app.setApplicationName(APPLICATION)
    window = MainWindow()
    window.show()
    settle_gc()
    # The first paint happens in the event loop; nothing heavy is queued before it.
    QTimer.singleShot(0, lambda: window.status_line.show_message("Ready", 3000))
    return app.exec()


if __name__ == "__main__":
    sys.exit(main())
