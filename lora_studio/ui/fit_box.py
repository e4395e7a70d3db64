"""The "Will it fit?" box of the Parameters tab: the estimate against the card as a
bar and a line, the breakdown on demand, and Auto-fit, whose proposal the user applies
with one click (the window turns it into ordinary panel edits). The figures come from
fit_state.FitState; this widget only shows them."""
from __future__ import annotations

import html
import os
from collections.abc import Callable

from PySide6.QtCore import QObject, QRunnable, Qt, QThreadPool, QTimer, Signal
from PySide6.QtWidgets import (QComboBox, QFrame, QGroupBox, QHBoxLayout, QLabel, QProgressBar,
                               QPushButton, QSizePolicy, QToolButton, QVBoxLayout, QWidget)

from ..config.gpu import GIB
from ..config.model_info import ModelInfoError
from ..config.schema import JobConfig
from ..hardware.monitor import HardwareSnapshot
from .fit_state import (CARD_SIZES_GB, DEFAULT_CARD_GB, Budget, FitReport, FitState, Proposal, budget_for,
                        gb, propose)

RECHECK_MS = 5000          # how often a change of the card's free VRAM is looked for
RECHECK_BYTES = 256 * 1024 ** 2  # a smaller change in free VRAM does not redo the estimate
BAR_COLOURS = {True: "#2e7d32", False: "#c62828", None: "#9e9e9e"}


class _Relay(QObject):
    """Carries a worker's result to the GUI thread (a queued signal)."""
    done = Signal(object, int)


class _AutofitTask(QRunnable):
    def __init__(self, call: Callable[[], Proposal], generation: int, relay: _Relay):
        super().__init__()
        self.call, self.generation, self.relay = call, generation, relay

    def run(self) -> None:
        self.relay.done.emit(self.call(), self.generation)


def _same_card(a: Budget | None, b: Budget | None) -> bool:
    """The same card with about the same free VRAM (it moves by megabytes all the time)."""
    if a is None or b is None:
        return a is b
    return a.real == b.real and a.name == b.name and abs(a.bytes - b.bytes) < RECHECK_BYTES


def breakdown_html(report: FitReport) -> str:
    rows = []
    for name, size in report.breakdown():
        name, size = html.escape(name), html.escape(size)
        if name == "total":
            name, size = f"<b>{name}</b>", f"<b>{size}</b>"
        rows.append(f"<tr><td>{name}</td><td align='right'>&nbsp;&nbsp;{size}</td></tr>")
    return f"<table cellspacing='0'>{''.join(rows)}</table>" if rows else ""


class FitBox(QGroupBox):
    """``apply_values(dict)``: the user accepted auto-fit's proposal {field path: value}."""

    apply_values = Signal(dict)

    def __init__(self, snapshot: Callable[[], HardwareSnapshot | None],
                 state: FitState | None = None, parent: QWidget | None = None):
        super().__init__("Will it fit?", parent)
        self.fit = state or FitState()
        self._snapshot = snapshot
        self.job: JobConfig | None = None
        self.base_dir: str | os.PathLike | None = None
        self.budget: Budget | None = None
        self.report: FitReport | None = None
        self.proposal: Proposal | None = None
        self._generation = 0
        self._busy = False
        self.pool = QThreadPool(self)
        self.pool.setMaxThreadCount(1)
        self._relay = _Relay(self)
        self._relay.done.connect(self._proposal_ready)

        outer = QVBoxLayout(self)
        outer.setContentsMargins(8, 4, 8, 6)
        outer.setSpacing(4)
        row = QHBoxLayout()
        self.no_gpu_label = QLabel("No NVIDIA GPU found: estimate for a card of")
        self.no_gpu_label.setStyleSheet("color: #8a5a00;")
        self.card_combo = QComboBox()
        for size in CARD_SIZES_GB:
            self.card_combo.addItem(f"{size} GB", size)
        self.card_combo.setCurrentIndex(CARD_SIZES_GB.index(DEFAULT_CARD_GB))
        self.card_combo.setToolTip("The card size to estimate for: this computer has no NVIDIA GPU")
        self.card_combo.currentIndexChanged.connect(lambda _: self.recompute())
        self.bar = QProgressBar()
        self.bar.setRange(0, 1000)
        self.bar.setFixedWidth(170)
        self.bar.setTextVisible(True)
        self.headline = QLabel()
        self.headline.setWordWrap(True)
        self.headline.setTextFormat(Qt.TextFormat.PlainText)
        self.headline.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
        self.details_button = QToolButton()
        self.details_button.setText("Breakdown")
        self.details_button.setCheckable(True)
        self.details_button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.details_button.setArrowType(Qt.ArrowType.RightArrow)
        self.details_button.toggled.connect(self._toggle_details)
        self.autofit_button = QPushButton("Auto-fit")
        self.autofit_button.setToolTip("Find the fewest changes that make the job fit the card")
        self.autofit_button.clicked.connect(self.start_autofit)
        for widget in (self.no_gpu_label, self.card_combo, self.bar):
            row.addWidget(widget)
        row.addWidget(self.headline, 1)
        row.addWidget(self.details_button)
        row.addWidget(self.autofit_button)
        outer.addLayout(row)

        self.details = QLabel()
        self.details.setTextFormat(Qt.TextFormat.RichText)
        self.details.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.details.hide()
        outer.addWidget(self.details)

        self.proposal_box = QFrame()
        self.proposal_box.setObjectName("proposalBox")
        self.proposal_box.setStyleSheet("#proposalBox { background: #e8f1fb; border: 1px solid #1976d2;"
                                        " border-radius: 4px; } #proposalBox QLabel { color: #0d2b4f; }")
        proposal_layout = QHBoxLayout(self.proposal_box)
        proposal_layout.setContentsMargins(8, 4, 8, 4)
        self.proposal_label = QLabel()
        self.proposal_label.setWordWrap(True)
        self.proposal_label.setTextFormat(Qt.TextFormat.PlainText)
        self.apply_button = QPushButton("Apply")
        self.apply_button.setToolTip("Change these fields in the panel (Revert undoes it)")
        self.apply_button.clicked.connect(self.apply_proposal)
        self.dismiss_button = QPushButton("Dismiss")
        self.dismiss_button.clicked.connect(self._clear_proposal)
        proposal_layout.addWidget(self.proposal_label, 1)
        proposal_layout.addWidget(self.apply_button, 0, Qt.AlignmentFlag.AlignTop)
        proposal_layout.addWidget(self.dismiss_button, 0, Qt.AlignmentFlag.AlignTop)
        self.proposal_box.hide()
        outer.addWidget(self.proposal_box)

        self.timer = QTimer(self)
        self.timer.setInterval(RECHECK_MS)
        self.timer.timeout.connect(self._recheck_card)
        self.timer.start()
        self._show(None)

    # -- inputs ----------------------------------------------------------------
    def _current_budget(self) -> Budget:
        snap = self._snapshot()
        processes = self.job.training.processes if self.job is not None else 1
        if snap is None:
            return Budget(int(self.card_combo.currentData()) * GIB, "", False)
        return budget_for(snap, processes, int(self.card_combo.currentData()))

    def update_fit(self, job: JobConfig, base_dir: str | os.PathLike | None) -> None:
        """The panel's job changed (or was validated again): estimate it."""
        if job != self.job or base_dir != self.base_dir:
            self._clear_proposal()
        self.job, self.base_dir = job, base_dir
        self.recompute()

    def recompute(self) -> None:
        if self.job is None:
            return
        budget = self._current_budget()
        if not _same_card(budget, self.budget):
            self._clear_proposal()
        self.budget = budget
        self.report = self.fit.report(self.job, self.base_dir, budget)
        self._show(self.report)

    def _recheck_card(self) -> None:
        if self.job is None or self.budget is None or not self.budget.real:
            return
        if not _same_card(self._current_budget(), self.budget):
            self.recompute()

    # -- display ---------------------------------------------------------------
    def _show(self, report: FitReport | None) -> None:
        assumed = report is not None and not report.budget.real
        self.no_gpu_label.setVisible(assumed)
        self.card_combo.setVisible(assumed)
        if report is None:
            self.headline.setText("Set a base model to see how much VRAM the run needs.")
            self.bar.setValue(0)
            self.bar.setFormat("–")
            self.autofit_button.setEnabled(False)
            self.details_button.setEnabled(False)
            return
        fits = report.fits
        self.headline.setText(report.headline())
        self.headline.setStyleSheet("color: #b71c1c;" if fits is False else
                                    "color: palette(mid);" if fits is None else "")
        self.bar.setValue(int(min(report.share, 1.0) * 1000))
        self.bar.setFormat(f"{gb(report.estimate.total)} / {gb(report.budget.bytes)}"
                           if report.estimate is not None else "–")
        self.bar.setStyleSheet(f"QProgressBar::chunk {{ background: {BAR_COLOURS[fits]}; }}"
                               " QProgressBar { text-align: center; }")
        table = breakdown_html(report)
        self.details.setText(table)
        self.details.setVisible(self.details_button.isChecked() and bool(table))
        for widget in (self.bar, self.headline):
            widget.setToolTip(table or report.error)
        self.details_button.setEnabled(bool(table))
        self.autofit_button.setEnabled(fits is False and not self._busy)

    def _toggle_details(self, shown: bool) -> None:
        self.details_button.setArrowType(Qt.ArrowType.DownArrow if shown else Qt.ArrowType.RightArrow)
        self.details.setVisible(shown and bool(self.details.text()))

    # -- auto-fit --------------------------------------------------------------
    def start_autofit(self) -> None:
        if self.job is None or self.budget is None or self._busy:
            return
        try:
            spec = self.fit.spec(self.job, self.base_dir)  # cached by the estimate shown
        except ModelInfoError as exc:
            self._proposal_ready(Proposal((), False, exc.message), self._generation)
            return
        self._busy = True
        self.autofit_button.setEnabled(False)
        self.autofit_button.setText("Fitting…")
        job, budget, margin = self.job, self.budget, self.fit.margin
        self.pool.start(_AutofitTask(lambda: propose(job, spec, budget, margin), self._generation,
                                     self._relay))

    def _proposal_ready(self, proposal: Proposal, generation: int) -> None:
        self._busy = False
        self.autofit_button.setText("Auto-fit")
        if generation != self._generation:  # the job changed while auto-fit ran
            self._show(self.report)
            return
        self.proposal = proposal
        lines = proposal.lines()
        if proposal.fits and lines:
            text = "Auto-fit proposes:\n" + "\n".join("• " + line for line in lines)
            text += f"\n{proposal.message}" if proposal.message else ""
        elif lines:
            text = proposal.message + "\nThe closest it gets:\n" + "\n".join("• " + l for l in lines)
        else:
            text = proposal.message
        self.proposal_label.setText(text)
        self.apply_button.setVisible(bool(lines))
        self.apply_button.setText("Apply" if proposal.fits else "Apply anyway")
        self.proposal_box.show()
        self._show(self.report)

    def apply_proposal(self) -> None:
        if self.proposal is None or not self.proposal.changes:
            return
        values = self.proposal.values()
        self._clear_proposal()
        self.apply_values.emit(values)

    def _clear_proposal(self) -> None:
        self._generation += 1
        self.proposal = None
        self.proposal_box.hide()

    def shutdown(self) -> None:
        self.timer.stop()
        self.pool.waitForDone()
