"""What an export wrote (path, SHA-256, "Open folder"), and the "Export as…" dialog
that offers the run family's formats with a line on each, a destination folder and
name, the save precision of an image LoRA, says what the chosen format's runtimes
(llama.cpp, Ollama, vLLM) cannot take from a text adapter, runs the chosen export and
shows the same result as the one-click export, with the `ollama create` command when
a Modelfile was written, onnxruntime's check of an ONNX export and the round trip of a
merged or GGUF export (verify.json)."""
from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, QUrl
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import (QButtonGroup, QComboBox, QDialog, QDialogButtonBox, QFileDialog,
                               QFormLayout, QFrame, QHBoxLayout, QLabel, QLineEdit, QPushButton,
                               QRadioButton, QVBoxLayout, QWidget)

from ..config.jobfile import JobFileError, read_job_toml
from ..config.network import NO_DIFFUSERS
from ..runs.export_check import FORMAT_TARGETS, check_run, describe
from ..runs.exports import FORMATS, PRECISIONS, default_name, find_format
from ..runs.layout import RunDir
from ..runs.modelfile import MODELFILE, ollama_command
from ..runs.onnx_check import ONNX_CHECK, check_line
from ..runs.roundtrip import VERIFY, verify_lines
from ..runs.names import name_problem
from .worker import export_options

PRECISION_LABELS = {"fp32": "fp32 (as trained)", "fp16": "fp16 (half the size; what most "
                    "shared LoRAs use)", "bf16": "bf16 (half the size)"}


class ExportResult(QFrame):
    """The files of one export, each with its SHA-256, and a button that opens their folder."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("exportBox")
        self.setStyleSheet("#exportBox { background: #e8f5e9; border: 1px solid #2e7d32;"
                           " border-radius: 4px; }")
        layout = QHBoxLayout(self)
        self.label = QLabel()
        self.label.setTextFormat(Qt.TextFormat.PlainText)  # a path may hold '<' or '&'
        self.label.setWordWrap(True)
        self.label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.open_folder_button = QPushButton("Open folder")
        self.open_folder_button.clicked.connect(self.open_folder)
        layout.addWidget(self.label, 1)
        layout.addWidget(self.open_folder_button, 0, Qt.AlignmentFlag.AlignTop)
        self.folder: Path | None = None
        self.hide()

    def show_files(self, files: list[tuple[str, str]]) -> None:
        """``files``: [(path, sha256), ...], as ExportWorker reports them."""
        self.label.setText("Exported:\n" + "\n".join(f"{path}\nSHA-256 {digest}"
                                                     for path, digest in files))
        self.folder = Path(files[0][0]).parent
        self.show()

    def open_folder(self) -> None:
        if self.folder is not None:
            QDesktopServices.openUrl(QUrl.fromLocalFile(str(self.folder)))


class ExportDialog(QDialog):
    """Pick a format of ``family`` ('text' or 'image'); Export hands it to ``view.export``
    (a TrainingView) and shows what that wrote, or why it failed, when its export ends."""

    def __init__(self, view, family: str, parent: QWidget | None = None):
        super().__init__(parent)
        self.view = view
        self.family = family
        self.setWindowTitle("Export as")
        layout = QVBoxLayout(self)
        layout.addWidget(QLabel(f"Format for this {family} LoRA:"))
        self.choices = QButtonGroup(self)
        self.radios: dict[str, QRadioButton] = {}
        for i, fmt in enumerate(FORMATS[family]):
            radio = QRadioButton(f"{fmt.label}  ({fmt.name})")
            radio.setChecked(i == 0)
            radio.toggled.connect(self._format_changed)
            note = QLabel(fmt.explanation)
            note.setWordWrap(True)
            note.setStyleSheet("color: #555; margin-left: 22px;")
            self.choices.addButton(radio)
            self.radios[fmt.name] = radio
            layout.addWidget(radio)
            layout.addWidget(note)

        run = view.run.root if view.run is not None else Path.cwd()
        self.run_dir = RunDir(run)
        self.run_exports = run / "exports"
        self.output_name, self.job_precision, algo = _job_output(run)
        if family == "image" and algo in NO_DIFFUSERS and "diffusers" in self.radios:
            self.radios["diffusers"].setEnabled(False)
            self.radios["diffusers"].setToolTip(f"{NO_DIFFUSERS[algo]}: use the kohya format.")
        form = QFormLayout()
        self.folder = QLineEdit(str(self.run_exports))
        self.folder.textChanged.connect(self._check)
        choose = QPushButton("Choose…")
        choose.clicked.connect(self._choose_folder)
        folder_row = QHBoxLayout()
        folder_row.addWidget(self.folder, 1)
        folder_row.addWidget(choose)
        form.addRow("Save in:", folder_row)
        self.name = QLineEdit()
        self.name.textChanged.connect(self._check)
        form.addRow("Name:", self.name)
        self.precision = QComboBox()
        for precision in PRECISIONS:
            self.precision.addItem(PRECISION_LABELS[precision], precision)
        self.precision.setCurrentIndex(max(0, self.precision.findData(self.job_precision)))
        form.addRow("Precision:", self.precision)
        self.precision.setVisible(family == "image")
        form.labelForField(self.precision).setVisible(family == "image")
        layout.addLayout(form)
        self.target = QLabel()
        self.target.setWordWrap(True)
        self.target.setTextFormat(Qt.TextFormat.PlainText)
        self.target.setStyleSheet("color: #555;")
        layout.addWidget(self.target)
        self.findings = QLabel()   # what the format's runtimes cannot take, and the fix
        self.findings.setWordWrap(True)
        self.findings.setTextFormat(Qt.TextFormat.PlainText)
        self.findings.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        layout.addWidget(self.findings)

        self.status = QLabel()
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.status.hide()
        layout.addWidget(self.status)
        self.result = ExportResult()
        layout.addWidget(self.result)
        self.ollama = QLabel()   # the command that builds an Ollama model from the Modelfile
        self.ollama.setWordWrap(True)
        self.ollama.setTextFormat(Qt.TextFormat.PlainText)
        self.ollama.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.ollama.hide()
        layout.addWidget(self.ollama)
        self.onnx_check = QLabel()   # how onnxruntime's logits matched the merged model's
        self.onnx_check.setWordWrap(True)
        self.onnx_check.setTextFormat(Qt.TextFormat.PlainText)
        self.onnx_check.hide()
        layout.addWidget(self.onnx_check)
        self.roundtrip = QLabel()   # the export loaded back by its runtime, against PEFT
        self.roundtrip.setWordWrap(True)
        self.roundtrip.setTextFormat(Qt.TextFormat.PlainText)
        self.roundtrip.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.roundtrip.hide()
        layout.addWidget(self.roundtrip)
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        self.export_button = self.buttons.addButton("Export",
                                                    QDialogButtonBox.ButtonRole.ApplyRole)
        self.export_button.setDefault(True)
        self.export_button.clicked.connect(self.start_export)
        self.buttons.rejected.connect(self.reject)
        layout.addWidget(self.buttons)
        self._waiting = False  # for the end of an export this dialog started
        self.blocked = False   # the chosen format's runtime cannot load this adapter
        view.export_ended.connect(self._export_ended)
        self.setMinimumWidth(720)  # a SHA-256 on one line beside "Open folder"
        self._format_changed()

    def chosen(self) -> str:
        return next(name for name, radio in self.radios.items() if radio.isChecked())

    def _format_changed(self, *_) -> None:
        """A name the user did not type follows the format's default."""
        if not self.name.isModified():
            self.name.setText(default_name(self.chosen(), self.output_name))
        self._check_targets()
        self._check()

    def _choose_folder(self) -> None:
        chosen = QFileDialog.getExistingDirectory(self, "Export into", self.folder.text())
        if chosen:
            self.folder.setText(chosen)

    def _check(self, *_) -> None:
        """Say where the export goes, or why it cannot; Export only when it can."""
        problem = name_problem(self.name.text().strip()) if self.name.text().strip() else \
            "The name is empty."
        folder = Path(self.folder.text().strip())
        if not self.folder.text().strip():
            problem = "Choose a folder to save in."
        elif folder.exists() and not folder.is_dir():
            problem = f"{folder} is a file, not a folder."
        if problem:
            self.target.setText(problem)
            self.target.setStyleSheet("color: #b00020;")
        else:
            path = folder / find_format(self.chosen()).file_name(self.name.text().strip())
            self.target.setText(f"Writes {path}" + (
                "\nSomething of that name is there already: it is kept, and a different "
                "export is written beside it with -2 added to the name." if path.exists() else ""))
            self.target.setStyleSheet("color: #555;")
        self.export_button.setEnabled(not problem and not self._waiting and not self.blocked)

    def _check_targets(self) -> None:
        """Say what the chosen format's runtimes cannot take from this adapter; a
        finding that would keep the export from loading disables Export."""
        found = [f for target in FORMAT_TARGETS.get(self.chosen(), ())
                 for f in check_run(self.run_dir, target)] if self.family == "text" else []
        self.blocked = any(f.blocking for f in found)
        self.findings.setText(describe(found))
        self.findings.setStyleSheet("color: #b00020;" if self.blocked else "color: #8a5a00;")
        self.findings.setVisible(bool(found))
        self._fit_height()

    def _fit_height(self) -> None:
        """Grow to show every wrapped line: a label's new lines do not resize the dialog."""
        self.layout().activate()
        needed = self.layout().totalHeightForWidth(self.width())
        if needed > self.height():
            self.resize(self.width(), needed)

    def options(self) -> list[str]:
        """`lora-studio export` options for the choices that differ from the defaults."""
        folder = Path(self.folder.text().strip())
        name = self.name.text().strip()
        precision = self.precision.currentData() if self.family == "image" else None
        return export_options(
            output=None if folder == self.run_exports else folder,
            name=None if name == default_name(self.chosen(), self.output_name) else name,
            # Without --precision the export uses the job's save_precision.
            precision=None if precision == self.job_precision else precision)

    def start_export(self) -> None:
        self.result.hide()
        self.ollama.hide()
        self.onnx_check.hide()
        self.roundtrip.hide()
        self.status.show()
        if not self.view.export(self.chosen(), self.options()):
            self.status.setText("An export or a run is in progress; try again when it ends.")
            return
        self._waiting = True
        self.status.setText(f"Exporting ({self.chosen()})…")
        self.export_button.setEnabled(False)

    def _export_ended(self) -> None:
        if not self._waiting:
            return  # an export this dialog did not start
        self._waiting = False
        self._check()
        if self.view.last_export_files:
            self.status.hide()
            self.result.show_files(self.view.last_export_files)
            modelfiles = [Path(path) for path, _ in self.view.last_export_files
                          if Path(path).name == MODELFILE]
            if modelfiles:
                name = self.name.text().strip()
                name = self.output_name if name == default_name(self.chosen(),
                                                                self.output_name) else name
                self.ollama.setText("Ollama: " + ollama_command(name, modelfiles[0]))
                self.ollama.show()
            checks = [check_line(path) for path, _ in self.view.last_export_files
                      if Path(path).name == ONNX_CHECK]
            if checks and checks[0]:
                self.onnx_check.setText(checks[0])
                self.onnx_check.show()
            verified = [verify_lines(path) for path, _ in self.view.last_export_files
                        if Path(path).name == VERIFY]
            if verified and verified[0]:
                self.roundtrip.setText("\n".join(verified[0]))
                self.roundtrip.show()
            self._fit_height()
        else:
            self.status.setText(self.view.last_export_error)


def _job_output(run: Path) -> tuple[str, str, str]:
    """The job's output name, which the exports are named after, its save precision,
    which an export uses unless told otherwise, and its network type."""
    try:
        job = read_job_toml(run / "job.toml")[0]
    except JobFileError:
        return run.name, "fp32", "lora"
    return job.output.output_name, job.output.save_precision, job.network.algo
