"""The preset bar above the parameter panel: pick a built-in or user preset, save,
save as, revert, import (.toml or kohya_ss .json), export for sharing, and the
preset's name with '*' while the panel differs from it."""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from PySide6.QtCore import QSignalBlocker, Qt, Signal
from PySide6.QtWidgets import (QComboBox, QFileDialog, QHBoxLayout, QInputDialog, QLabel, QMenu,
                               QMessageBox, QPushButton, QToolButton, QWidget)

from ..config import presets
from ..config.fields import SPECS
from ..config.findings import has_errors
from ..config.paths import clean_path_text, resolve_local_path
from .panel_state import PanelState

DEFAULT_PRESET_HINTS = ("demo-text", "demo")


class PresetBar(QWidget):
    loaded = Signal()      # the state holds new values: the panel must show them
    message = Signal(str)  # a line for the status bar

    def __init__(self, state: PanelState, parent: QWidget | None = None):
        super().__init__(parent)
        self.state = state
        self.path: Path | None = None
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(QLabel("Preset:"))
        self.combo = QComboBox()
        self.combo.setMinimumWidth(280)
        self.combo.activated.connect(self._on_pick)
        layout.addWidget(self.combo, 1)
        self.title = QLabel()
        self.title.setMinimumWidth(160)
        layout.addWidget(self.title)
        self.save_button = QPushButton("Save")
        self.save_button.setToolTip("Save the changes into this preset (Ctrl+S)")
        self.save_as_button = QPushButton("Save as…")
        self.revert_button = QPushButton("Revert")
        self.revert_button.setToolTip("Drop the changes and go back to the saved preset")
        self.import_button = QPushButton("Import…")
        self.import_button.setToolTip("Import a preset (.toml) or a kohya_ss LoRA config (.json); "
                                      "you can also drop the file on the window")
        self.export_button = QPushButton("Export…")
        self.export_button.setToolTip("Write a copy to share; paths on this machine are left out")
        more = QToolButton()
        more.setText("More")
        menu = QMenu(more)
        menu.addAction("Rename…", self.rename_dialog)
        menu.addAction("Delete", self.delete_current)
        menu.addAction("Reload list", self.reload)
        more.setMenu(menu)
        more.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        for button in (self.save_button, self.save_as_button, self.revert_button,
                       self.import_button, self.export_button):
            layout.addWidget(button)
        layout.addWidget(more)
        self.save_button.clicked.connect(self.save)
        self.save_as_button.clicked.connect(self.save_as_dialog)
        self.revert_button.clicked.connect(self.revert)
        self.import_button.clicked.connect(self.import_dialog)
        self.export_button.clicked.connect(self.export_dialog)
        self.reload()

    # -- list ----------------------------------------------------------------
    @property
    def base_dir(self) -> Path | None:
        return self.path.parent if self.path is not None else None

    @property
    def is_builtin(self) -> bool:
        return self.path is not None and presets.is_builtin(self.path)

    def reload(self) -> None:
        with QSignalBlocker(self.combo):
            self.combo.clear()
            for info in presets.list_presets():
                label = f"{info.meta.name}  ({info.origin}"
                label += f", {info.meta.vram_class})" if info.meta.vram_class else ")"
                if info.error:
                    label += "  — unreadable"
                self.combo.addItem(label, str(info.path))
                self.combo.setItemData(self.combo.count() - 1,
                                       info.error or info.meta.description,
                                       Qt.ItemDataRole.ToolTipRole)
            self._select_in_combo()
        self.update_title()

    def _select_in_combo(self) -> None:
        index = self.combo.findData(str(self.path)) if self.path is not None else -1
        self.combo.setCurrentIndex(index)

    def select(self, ref: str) -> bool:
        """Load a preset by path, file stem or name; False when there is none."""
        try:
            path = presets.find_preset(ref)
        except presets.PresetError:
            return False
        return self.load(path)

    def select_default(self) -> bool:
        for hint in DEFAULT_PRESET_HINTS:
            for i in range(self.combo.count()):
                if Path(self.combo.itemData(i)).stem.startswith(hint) and self.load(
                        Path(self.combo.itemData(i))):
                    return True
        return self.combo.count() > 0 and self.load(Path(self.combo.itemData(0)))

    def _on_pick(self, index: int) -> None:
        path = Path(self.combo.itemData(index))
        if self.path is not None and path == self.path:
            return
        if self.state.dirty and not self._confirm_discard():
            self._select_in_combo()
            return
        self.load(path)

    def _confirm_discard(self) -> bool:
        answer = QMessageBox.question(self, "Unsaved changes",
                                      f"Discard the changes to '{self.state.preset_name}'?")
        return answer == QMessageBox.StandardButton.Yes

    def load(self, path: Path) -> bool:
        try:
            preset = presets.load_preset(path)
        except presets.PresetError as exc:
            self.message.emit(str(exc))
            self._select_in_combo()
            return False
        self.path = Path(preset.path)
        self.state.load(preset.data, name=preset.meta.name, meta=asdict(preset.meta),
                        notes=preset.findings)
        self._select_in_combo()
        self.update_title()
        self.loaded.emit()
        self.message.emit(f"Loaded preset '{preset.meta.name}' from {self.path}")
        return True

    def update_title(self) -> None:
        self.title.setText(self.state.title())
        self.title.setStyleSheet("font-weight: bold;" + (" color: #b26a00;" if self.state.dirty
                                                         else ""))
        dirty = self.state.dirty
        self.save_button.setEnabled(dirty and not self.is_builtin and self.path is not None)
        self.revert_button.setEnabled(dirty)
        self.export_button.setEnabled(self.path is not None)

    # -- writing -------------------------------------------------------------
    def _meta(self, name: str) -> presets.PresetMeta:
        meta = dict(self.state.preset_meta)
        meta.update(name=name, model_family=self.state.values["model.family"])
        return presets.PresetMeta(**{k: v for k, v in meta.items()
                                     if k in presets.PresetMeta.__dataclass_fields__})

    def _can_write(self) -> bool:
        self.state.validate()
        if has_errors(self.state.findings):
            self.message.emit("Fix the errors in the parameters before saving: a preset holds "
                              "valid settings only.")
            return False
        return True

    def save(self) -> bool:
        """Save into the current user preset; a built-in one is saved as a copy."""
        if self.path is None or self.is_builtin:
            return self.save_as_dialog()
        if not self._can_write():
            return False
        try:
            presets.save_preset(self.state.job, self._meta(self.state.preset_name or "preset"),
                                self.path)
        except (presets.PresetError, OSError) as exc:
            self.message.emit(f"Could not save: {exc}")
            return False
        self.state.mark_saved()
        self.update_title()
        self.message.emit(f"Saved {self.path}")
        return True

    def _anchor_paths(self) -> None:
        """Relative model / dataset paths count from the preset's folder: a copy saved
        elsewhere gets them as absolute paths so they still point at the same files."""
        for path in presets.RELATIVE_TO_PRESET:
            value = self.state.values.get(path)
            if isinstance(value, str) and value and not Path(clean_path_text(value)).is_absolute():
                found = resolve_local_path(value, self.base_dir)
                if found is not None:
                    self.state.set(path, str(found.resolve()))

    def save_as(self, name: str) -> bool:
        if not name.strip():
            return False
        self._anchor_paths()
        if not self._can_write():
            return False
        path = presets.user_preset_path(name.strip())
        try:
            presets.save_preset(self.state.job, self._meta(name.strip()), path)
        except (presets.PresetError, OSError) as exc:
            self.message.emit(f"Could not save: {exc}")
            return False
        self.path = path
        self.state.mark_saved(name.strip())
        self.state.preset_meta["name"] = name.strip()
        self.reload()
        self.loaded.emit()  # the anchored paths
        self.message.emit(f"Saved as {path}")
        return True

    def save_as_dialog(self) -> bool:
        base = self.state.preset_name or "my preset"
        name, ok = QInputDialog.getText(self, "Save preset as", "Name:",
                                        text=base if not self.is_builtin else f"{base} (copy)")
        return bool(ok and self.save_as(name))

    def revert(self) -> None:
        self.state.revert()
        self.update_title()
        self.loaded.emit()
        self.message.emit("Reverted to the saved preset")

    def rename_dialog(self) -> None:
        if self.path is None or self.is_builtin:
            self.message.emit("Built-in presets cannot be renamed; use Save as.")
            return
        name, ok = QInputDialog.getText(self, "Rename preset", "New name:",
                                        text=self.state.preset_name or "")
        if ok and name.strip():
            try:
                self.path = presets.rename_preset(self.path, name.strip())
            except presets.PresetError as exc:
                self.message.emit(str(exc))
                return
            self.state.preset_name = name.strip()
            self.reload()

    def delete_current(self) -> None:
        if self.path is None or self.is_builtin:
            self.message.emit("Built-in presets cannot be deleted.")
            return
        answer = QMessageBox.question(self, "Delete preset", f"Delete {self.path}?")
        if answer == QMessageBox.StandardButton.Yes:
            try:
                presets.delete_preset(self.path)
            except presets.PresetError as exc:
                self.message.emit(str(exc))
                return
            self.path = None
            self.reload()
            self.select_default()

    # -- import and export ---------------------------------------------------
    def import_file(self, file: str | Path) -> bool:
        try:
            pending = presets.read_import(file)
            trust = self.ask_trust(pending) if pending.risks else False
            if trust is None:
                self.message.emit(f"Import of {Path(file).name} cancelled; nothing was written.")
                return False
            result = presets.write_import(pending, trust=trust)
        except (presets.PresetError, OSError) as exc:
            self.message.emit(f"Import failed: {exc}")
            return False
        self.reload()
        if not self.load(result.path):
            return False
        self.state.notes = [f for f in result.findings if f.path not in SPECS]
        self.state.validate()
        self.loaded.emit()
        skipped = len(result.unsupported)
        errors = sum(f.level == "error" for f in self.state.findings)
        self.message.emit(f"Imported {Path(file).name} as '{self.state.preset_name}'"
                          + (f"; {errors} error(s) to fix before training" if errors else "")
                          + (f"; {skipped} setting(s) had no equivalent (see the findings)"
                             if skipped else "")
                          + (f"; left out {', '.join(result.left_out)} (defaults used)"
                             if result.left_out else ""))
        return True

    def ask_trust(self, pending: presets.PendingImport) -> bool | None:
        """Whether to keep a shared preset's risky settings: True keeps them, False leaves
        them out, None cancels the import."""
        box = QMessageBox(QMessageBox.Icon.Warning, "Import preset",
                          f"{pending.file.name} has settings a shared preset should not bring in "
                          "unasked:", parent=self)
        box.setInformativeText("\n\n".join(f"{r.path}: {r.message}" for r in pending.risks)
                               + "\n\nKeep them only if you trust where the file came from.")
        keep = box.addButton("Keep them", QMessageBox.ButtonRole.AcceptRole)
        leave = box.addButton("Leave them out", QMessageBox.ButtonRole.RejectRole)
        box.addButton(QMessageBox.StandardButton.Cancel)
        box.setDefaultButton(leave)
        box.exec()
        clicked = box.clickedButton()
        return True if clicked is keep else False if clicked is leave else None

    def import_dialog(self) -> None:
        file, _ = QFileDialog.getOpenFileName(self, "Import preset", "",
                                              "Presets (*.toml *.json);;All files (*)")
        if file:
            self.import_file(file)

    def export_to(self, dest: str | Path, include_local_paths: bool = False) -> list[str] | None:
        if self.path is None:
            return None
        if self.state.dirty:
            self.message.emit("Save the preset first: export writes the saved preset.")
            return None
        try:
            left_out = presets.export_preset(self.path, dest, include_local_paths)
        except (presets.PresetError, OSError) as exc:
            self.message.emit(f"Export failed: {exc}")
            return None
        self.message.emit(f"Exported to {dest}" + (f" without {', '.join(left_out)}"
                                                     if left_out else ""))
        return left_out

    def export_dialog(self) -> None:
        if self.path is None:
            return
        if self.state.dirty and not self.save():
            return
        dest, _ = QFileDialog.getSaveFileName(self, "Export preset for sharing",
                                              f"{presets.slug(self.state.preset_name or 'preset')}"
                                              f".toml", "Presets (*.toml)")
        if not dest:
            return
        answer = QMessageBox.question(
            self, "Local paths", "Include the model and dataset paths of this machine?\n"
            "(Usually not: they mean nothing on someone else's computer.)",
            defaultButton=QMessageBox.StandardButton.No)
        self.export_to(dest, include_local_paths=answer == QMessageBox.StandardButton.Yes)
