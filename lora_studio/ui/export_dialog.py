"""What an export wrote (path, SHA-256, "Open folder"), and the "Export as…" dialog
that offers the run family's formats with a line on each, runs the chosen one and
shows the same result as the one-click export."""
from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, QUrl
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import (QButtonGroup, QDialog, QDialogButtonBox, QFrame, QHBoxLayout, QLabel,
                               QPushButton, QRadioButton, QVBoxLayout, QWidget)

from ..runs.exports import FORMATS


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
        self.setWindowTitle("Export as")
        layout = QVBoxLayout(self)
        layout.addWidget(QLabel(f"Format for this {family} LoRA:"))
        self.choices = QButtonGroup(self)
        self.radios: dict[str, QRadioButton] = {}
        for i, fmt in enumerate(FORMATS[family]):
            radio = QRadioButton(f"{fmt.label}  ({fmt.name})")
            radio.setChecked(i == 0)
            note = QLabel(fmt.explanation)
            note.setWordWrap(True)
            note.setStyleSheet("color: #555; margin-left: 22px;")
            self.choices.addButton(radio)
            self.radios[fmt.name] = radio
            layout.addWidget(radio)
            layout.addWidget(note)
        self.status = QLabel()
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.status.hide()
        layout.addWidget(self.status)
        self.result = ExportResult()
        layout.addWidget(self.result)
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        self.export_button = self.buttons.addButton("Export",
                                                    QDialogButtonBox.ButtonRole.ApplyRole)
        self.export_button.setDefault(True)
        self.export_button.clicked.connect(self.start_export)
        self.buttons.rejected.connect(self.reject)
        layout.addWidget(self.buttons)
        self._waiting = False  # for the end of an export this dialog started
        view.export_ended.connect(self._export_ended)
        self.setMinimumWidth(720)  # a SHA-256 on one line beside "Open folder"

    def chosen(self) -> str:
        return next(name for name, radio in self.radios.items() if radio.isChecked())

    def start_export(self) -> None:
        self.result.hide()
        self.status.show()
        if not self.view.export(self.chosen()):
            self.status.setText("An export or a run is in progress; try again when it ends.")
            return
        self._waiting = True
        self.status.setText(f"Exporting ({self.chosen()})…")
        self.export_button.setEnabled(False)

    def _export_ended(self) -> None:
        if not self._waiting:
            return  # an export this dialog did not start
        self._waiting = False
        self.export_button.setEnabled(True)
        if self.view.last_export_files:
            self.status.hide()
            self.result.show_files(self.view.last_export_files)
        else:
            self.status.setText(self.view.last_export_error)
