"""The parameter panel, generated from the schema's FieldSpecs: a group box per
group, basic and advanced fields, fields of the other job kind hidden, and inline
validation (debounced) with a summary of every finding."""
from __future__ import annotations

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QBrush, QColor
from PySide6.QtWidgets import (QCheckBox, QFormLayout, QFrame, QGroupBox, QHBoxLayout, QLabel,
                               QListWidget, QListWidgetItem, QScrollArea, QSplitter, QVBoxLayout,
                               QWidget)

from ..config.fields import SPECS, FieldSpec
from ..config.findings import Finding
from .field_editors import FieldEditor, make_editor
from .panel_state import PanelState

DEBOUNCE_MS = 150
LEVEL_COLOURS = {"error": "#d32f2f", "warning": "#f0a000", "info": "#1976d2"}
LEVEL_TEXT = {"error": "#b71c1c", "warning": "#7a4f00", "info": "#0d47a1"}  # readable on the tints
LEVEL_BACKGROUNDS = {"error": "#fdecea", "warning": "#fff4d6", "info": "#e8f1fb"}


class FieldRow(QFrame):
    """A field's editor with its message and hint under it; the frame takes the
    colour of the worst finding on the field."""

    def __init__(self, spec: FieldSpec, parent: QWidget | None = None):
        super().__init__(parent)
        self.spec = spec
        self.level: str | None = None
        self.setObjectName("fieldRow")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 2, 4, 2)
        layout.setSpacing(2)
        self.editor: FieldEditor = make_editor(spec, self)
        self.editor.setToolTip(spec.help)
        layout.addWidget(self.editor)
        self.message = QLabel()
        self.message.setWordWrap(True)
        self.message.setTextFormat(Qt.TextFormat.PlainText)
        self.message.hide()
        layout.addWidget(self.message)
        self.show_findings([])

    def show_findings(self, findings: list[Finding]) -> None:
        self.level = findings[0].level if findings else None
        if self.level is None:
            self.setStyleSheet("#fieldRow { border: 1px solid transparent; border-radius: 4px; }")
            self.message.hide()
            return
        colour = LEVEL_COLOURS.get(self.level, "#777")
        self.setStyleSheet(f"#fieldRow {{ border: 2px solid {colour}; border-radius: 4px; "
                           f"background: {LEVEL_BACKGROUNDS.get(self.level, 'transparent')}; }}")
        self.message.setStyleSheet(f"color: {LEVEL_TEXT.get(self.level, '#333')};")
        self.message.setText("\n".join(f"{f.message} {f.hint}".strip() for f in findings))
        self.message.show()


class ParamPanel(QWidget):
    """Emits ``edited`` after any change (for the preset marker) and ``validated``
    after the debounced validation (for the Train button and the status bar)."""

    edited = Signal()
    validated = Signal()

    def __init__(self, state: PanelState, parent: QWidget | None = None):
        super().__init__(parent)
        self.state = state
        self.rows: dict[str, FieldRow] = {}
        self.groups: dict[str, QGroupBox] = {}
        self.labels: dict[str, QLabel] = {}
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(DEBOUNCE_MS)
        self._timer.timeout.connect(self.validate_now)

        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        top = QHBoxLayout()
        self.advanced_box = QCheckBox("Show advanced settings")
        self.advanced_box.toggled.connect(self._update_visibility)
        self.kind_label = QLabel()
        self.kind_label.setStyleSheet("color: palette(mid);")
        top.addWidget(self.advanced_box)
        top.addStretch(1)
        top.addWidget(self.kind_label)
        outer.addLayout(top)

        splitter = QSplitter(Qt.Orientation.Vertical)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        body = QWidget()
        columns = QHBoxLayout(body)
        left, right = QVBoxLayout(), QVBoxLayout()
        columns.addLayout(left, 1)
        columns.addLayout(right, 1)
        for i, spec in enumerate(SPECS.values()):
            box = self.groups.get(spec.group)
            if box is None:
                box = QGroupBox(spec.group)
                box.setLayout(QFormLayout())
                box.layout().setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
                self.groups[spec.group] = box
                # Model, Network, Optimizer left; Dataset, Training, Output right.
                (left if len(self.groups) % 2 else right).addWidget(box)
            row = FieldRow(spec)
            row.editor.changed.connect(lambda p=spec.path: self._on_edit(p))
            label = QLabel(spec.title + ("" if not spec.advanced else " ⚙"))
            label.setToolTip(spec.help)
            label.setBuddy(row.editor.focus_widget())
            box.layout().addRow(label, row)
            self.rows[spec.path] = row
            self.labels[spec.path] = label
        left.addStretch(1)
        right.addStretch(1)
        scroll.setWidget(body)
        splitter.addWidget(scroll)

        self.summary = QListWidget()
        self.summary.setWordWrap(True)
        self.summary.itemActivated.connect(self._focus_item)
        self.summary.itemClicked.connect(self._focus_item)
        splitter.addWidget(self.summary)
        splitter.setStretchFactor(0, 5)
        splitter.setStretchFactor(1, 1)
        outer.addWidget(splitter, 1)
        self.refresh()

    # -- state -> widgets ----------------------------------------------------
    def refresh(self) -> None:
        """Show the state's values (after a preset load or revert) and validate."""
        for path, row in self.rows.items():
            try:
                row.editor.set_value(self.state.values[path])
            except (TypeError, ValueError):
                pass  # a wrong-typed value from a file: validation names it on this row
        self._update_visibility()
        self.validate_now()

    def _update_visibility(self) -> None:
        advanced = self.advanced_box.isChecked()
        for path, row in self.rows.items():
            spec = row.spec
            visible = self.state.applies(spec) and (advanced or not spec.advanced
                                                     or row.level is not None)
            row.setVisible(visible)
            self.labels[path].setVisible(visible)
        for box in self.groups.values():
            box.setVisible(any(self.rows[p].isVisibleTo(box) for p in self.rows
                               if self.rows[p].spec.group == box.title()))
        kind = self.state.kind
        self.kind_label.setText("Fields for: text and image jobs (family is auto)" if kind == "unknown"
                                else f"Fields for: {kind} jobs")

    # -- widgets -> state ----------------------------------------------------
    def _on_edit(self, path: str) -> None:
        self.state.set(path, self.rows[path].editor.value())
        if path == "model.family":
            self._update_visibility()
        self.edited.emit()
        self._timer.start()

    def apply_values(self, values: dict) -> None:
        """Set several fields at once, as if the user had edited them (auto-fit)."""
        for path, value in values.items():
            self.state.set(path, value)
            self.rows[path].editor.set_value(value)
        self.edited.emit()
        self.validate_now()

    def validate_now(self) -> None:
        self._timer.stop()
        self.state.validate()
        for path, row in self.rows.items():
            row.show_findings(self.state.findings_for(path))
        self.summary.clear()
        for finding in self.state.findings:
            title = SPECS[finding.path].title if finding.path in SPECS else finding.path or "Job"
            where = "" if finding.message.startswith(title) else f"{title}: "
            item = QListWidgetItem(f"{finding.level.upper()}  {where}{finding.message} "
                                   f"— {finding.hint}")
            item.setForeground(Qt.GlobalColor.black)
            item.setBackground(QBrush(QColor(LEVEL_BACKGROUNDS.get(finding.level, "#ffffff"))))
            item.setData(Qt.ItemDataRole.UserRole, finding.path)
            item.setToolTip(str(finding))
            self.summary.addItem(item)
        if not self.state.findings:
            self.summary.addItem(QListWidgetItem("No problems found."))
        self._update_visibility()
        self.validated.emit()

    def pending(self) -> bool:
        return self._timer.isActive()

    def focus_field(self, path: str) -> None:
        row = self.rows.get(path)
        if row is None:
            return
        if row.spec.advanced and not self.advanced_box.isChecked():
            self.advanced_box.setChecked(True)
        widget = row.editor.focus_widget()
        scroll = self.findChild(QScrollArea)
        scroll.ensureWidgetVisible(row)
        widget.setFocus(Qt.FocusReason.OtherFocusReason)

    def _focus_item(self, item: QListWidgetItem) -> None:
        path = item.data(Qt.ItemDataRole.UserRole)
        if path:
            self.focus_field(path)
