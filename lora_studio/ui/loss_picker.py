"""'Loss from run': the runs that recorded per-item losses for the open dataset, and
whether to show the worst-learned items first."""
from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QCheckBox, QComboBox, QHBoxLayout, QWidget

from ..runs.item_loss import runs_with_item_losses

NO_RUN = "Loss: no run"


class LossPicker(QWidget):
    run_chosen = Signal(str)       # the run folder, "" for none
    sort_changed = Signal(bool)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.runs_folder = Path("runs")   # the job's (ui/app.py sets it)
        self.combo = QComboBox()
        # run names are long ("name-20260101-120000"): the list shows them whole
        self.combo.setSizeAdjustPolicy(
            QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.combo.setMinimumContentsLength(14)
        self.combo.setToolTip("Show each item's training loss from a run of this dataset "
                              "(the mean over the times it was seen)")
        self.combo.activated.connect(lambda _i: self.run_chosen.emit(self.current_run()))
        self.worst_first = QCheckBox("Worst first")
        self.worst_first.setToolTip("Sort by that loss, highest first: where captions most "
                                    "often need a look")
        self.worst_first.toggled.connect(self.sort_changed)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.combo)
        layout.addWidget(self.worst_first)
        self.refresh(None)

    def refresh(self, dataset: str | Path | None) -> None:
        """List the runs of ``dataset``; the run shown before stays chosen if listed."""
        keep = self.current_run()
        self.combo.clear()
        self.combo.addItem(NO_RUN, "")
        runs = runs_with_item_losses(self.runs_folder, dataset) if dataset else []
        for run in runs:
            self.combo.addItem(f"Loss: {run.name} · step {run.step}", str(run.root))
        self.combo.setCurrentIndex(max(0, self.combo.findData(keep)))
        self.setEnabled(bool(runs))

    def current_run(self) -> str:
        return self.combo.currentData() or ""

    def choose(self, run: str | Path, step: int) -> None:
        """Show ``run`` as chosen, listing it when it lies outside the runs folder (one
        opened from the Runs tab's own folder)."""
        at = self.combo.findData(str(run))
        if at < 0:
            self.combo.addItem(f"Loss: {Path(run).name} · step {step}", str(run))
            at = self.combo.count() - 1
        self.combo.setCurrentIndex(at)
        self.setEnabled(True)
