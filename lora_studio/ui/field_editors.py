"""One editor widget per field kind, chosen from its FieldSpec.

Every editor has ``value()``, ``set_value(v)`` (without emitting) and a ``changed``
signal. Editors hand over what the user typed even when it is invalid (a learning
rate of 'abc', letters in a spin box); validation turns it into a finding on that
field, shown under it. A spin box goes back to its last number when it loses the
focus, and the finding with it.
"""
from __future__ import annotations

from typing import Any

from PySide6.QtCore import QSignalBlocker, Signal, SignalInstance
from PySide6.QtGui import QValidator
from PySide6.QtWidgets import (QCheckBox, QComboBox, QDoubleSpinBox, QFileDialog, QHBoxLayout,
                               QLineEdit, QMenu, QPlainTextEdit, QSpinBox, QToolButton, QWidget)

from ..config.fields import FieldSpec

INT_LIMIT = 2**31 - 1  # QSpinBox is 32-bit


def _low(spec: FieldSpec) -> float | None:
    return spec.minimum if spec.minimum is not None else spec.exclusive_minimum


def _high(spec: FieldSpec) -> float | None:
    return spec.maximum if spec.maximum is not None else spec.exclusive_maximum


def wants_text_float(spec: FieldSpec) -> bool:
    """Learning rates are written 1e-4 / 5e-5: a spin box with fixed decimals would
    round them away, so they get a line edit."""
    name = spec.path.rsplit(".", 1)[1]
    return name == "learning_rate" or name.endswith("_lr") or spec.optional


class FieldEditor(QWidget):
    changed = Signal()

    def __init__(self, spec: FieldSpec, parent: QWidget | None = None):
        super().__init__(parent)
        self.spec = spec
        self.layout_ = QHBoxLayout(self)
        self.layout_.setContentsMargins(0, 0, 0, 0)
        self._input: QWidget = self

    def _hold(self, widget: QWidget, edited: SignalInstance, stretch: int = 1) -> None:
        """Put the input widget in the row: its ``edited`` signal is the editor's
        ``changed``, and it takes the focus (label buddy, jump to a finding)."""
        self.layout_.addWidget(widget, stretch)
        edited.connect(self.changed)
        self._input = widget

    def value(self) -> Any:
        raise NotImplementedError

    def set_value(self, value: Any) -> None:
        raise NotImplementedError

    def focus_widget(self) -> QWidget:
        return self._input


class CheckEditor(FieldEditor):
    def __init__(self, spec, parent=None):
        super().__init__(spec, parent)
        self.box = QCheckBox()
        self._hold(self.box, self.box.toggled, stretch=0)
        self.layout_.addStretch(1)

    def value(self):
        return self.box.isChecked()

    def set_value(self, value):
        with QSignalBlocker(self.box):
            self.box.setChecked(bool(value))

class ChoiceEditor(FieldEditor):
    def __init__(self, spec, parent=None):
        super().__init__(spec, parent)
        self.box = QComboBox()
        self.box.addItems(list(spec.choices))
        self._hold(self.box, self.box.currentTextChanged)

    def value(self):
        return self.box.currentText()

    def set_value(self, value):
        with QSignalBlocker(self.box):
            text = str(value)
            if self.box.findText(text) < 0:  # an invalid value from a file stays visible
                self.box.addItem(text)
            self.box.setCurrentText(text)

class _KeepsTyping:
    """A spin box that keeps what is typed instead of swallowing the keys that do not
    make a number, so the editor can hand it over for validation to name."""

    def validate(self, text: str, pos: int):
        state, text, pos = super().validate(text, pos)
        return (QValidator.State.Intermediate if state == QValidator.State.Invalid else state,
                text, pos)

    def typed(self):
        """The number in the box, or the text typed when it is not one."""
        state = super().validate(self.text(), 0)[0]
        return self.value() if state == QValidator.State.Acceptable else self.cleanText()

    def watch(self, changed: SignalInstance) -> None:
        self.lineEdit().textEdited.connect(changed)
        self.editingFinished.connect(changed)  # back to the last number: clear the finding


class TypedSpinBox(_KeepsTyping, QSpinBox):
    pass


class TypedDoubleSpinBox(_KeepsTyping, QDoubleSpinBox):
    pass


class IntEditor(FieldEditor):
    def __init__(self, spec, parent=None):
        super().__init__(spec, parent)
        self.box = TypedSpinBox()
        low, high = _low(spec), _high(spec)
        self.box.setRange(int(max(low, -INT_LIMIT)) if low is not None else -INT_LIMIT,
                          int(min(high, INT_LIMIT)) if high is not None else INT_LIMIT)
        self.box.setAccelerated(True)
        self._hold(self.box, self.box.valueChanged)
        self.box.watch(self.changed)

    def value(self):
        return self.box.typed()

    def set_value(self, value):
        with QSignalBlocker(self.box):
            self.box.setValue(int(value))

class FloatEditor(FieldEditor):
    def __init__(self, spec, parent=None):
        super().__init__(spec, parent)
        self.box = TypedDoubleSpinBox()
        low, high = _low(spec), _high(spec)
        self.box.setDecimals(3 if high is not None and high <= 1 else 2)
        # An exclusive bound is allowed in the box on purpose: validation explains it.
        self.box.setRange(low if low is not None else -1e9, high if high is not None else 1e9)
        self.box.setSingleStep(0.01 if (high or 10) <= 1 else 1.0)
        self._hold(self.box, self.box.valueChanged)
        self.box.watch(self.changed)

    def value(self):
        return self.box.typed()

    def set_value(self, value):
        with QSignalBlocker(self.box):
            self.box.setValue(float(value))

class TextFloatEditor(FieldEditor):
    """A float typed as text (1e-4); empty means 'unset' for optional fields."""

    def __init__(self, spec, parent=None):
        super().__init__(spec, parent)
        self.edit = QLineEdit()
        if spec.optional:
            self.edit.setPlaceholderText(spec.unset or "not set")
        self._hold(self.edit, self.edit.textEdited)

    def value(self):
        text = self.edit.text().strip()
        if not text:
            return None if self.spec.optional else ""
        try:
            return float(text)
        except ValueError:
            return text

    def set_value(self, value):
        with QSignalBlocker(self.edit):
            self.edit.setText("" if value is None else (f"{value:g}" if isinstance(value, float)
                                                        else str(value)))

class TextEditor(FieldEditor):
    def __init__(self, spec, parent=None):
        super().__init__(spec, parent)
        self.edit = QLineEdit()
        self._hold(self.edit, self.edit.textEdited)
        if spec.widget in ("dir", "file", "path"):
            self._add_picker(spec.widget)

    def _add_picker(self, widget: str) -> None:
        button = QToolButton()
        button.setText("…")
        button.setToolTip("Browse")
        self.layout_.addWidget(button)
        if widget == "path":
            menu = QMenu(button)
            menu.addAction("Folder…", lambda: self._pick("dir"))
            menu.addAction("File…", lambda: self._pick("file"))
            button.setMenu(menu)
            button.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        else:
            button.clicked.connect(lambda: self._pick(widget))

    def _pick(self, what: str) -> None:
        start = self.edit.text()
        if what == "dir":
            chosen = QFileDialog.getExistingDirectory(self, self.spec.title, start)
        else:
            chosen = QFileDialog.getOpenFileName(self, self.spec.title, start)[0]
        if chosen:
            self.edit.setText(chosen)
            self.changed.emit()

    def value(self):
        return self.edit.text()

    def set_value(self, value):
        with QSignalBlocker(self.edit):
            self.edit.setText("" if value is None else str(value))

class LinesEditor(FieldEditor):
    """A list of strings, one a line."""

    def __init__(self, spec, parent=None):
        super().__init__(spec, parent)
        self.edit = QPlainTextEdit()
        self.edit.setTabChangesFocus(True)
        self.edit.setFixedHeight(self.edit.fontMetrics().lineSpacing() * 4 + 12)
        self._hold(self.edit, self.edit.textChanged)

    def value(self):
        return [line.strip() for line in self.edit.toPlainText().splitlines() if line.strip()]

    def set_value(self, value):
        with QSignalBlocker(self.edit):
            items = value if isinstance(value, list) else [str(value)]
            self.edit.setPlainText("\n".join(str(v) for v in items))

def make_editor(spec: FieldSpec, parent: QWidget | None = None) -> FieldEditor:
    if spec.kind == "bool":
        return CheckEditor(spec, parent)
    if spec.kind == "choice":
        return ChoiceEditor(spec, parent)
    if spec.kind == "int":
        return IntEditor(spec, parent)
    if spec.kind == "float":
        return TextFloatEditor(spec, parent) if wants_text_float(spec) else FloatEditor(spec, parent)
    if spec.kind == "list":
        return LinesEditor(spec, parent)
    return TextEditor(spec, parent)
