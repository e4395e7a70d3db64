"""The loss curves of the runs ticked in the Runs tab, overlaid on one plot with a
legend, each in its own colour."""
from __future__ import annotations

import pyqtgraph as pg
from PySide6.QtWidgets import QLabel, QVBoxLayout, QWidget

# Distinct on white and for the common colour-vision deficiencies (Okabe-Ito).
COLOURS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000",
           "#F0E442")


class LossCompare(QWidget):
    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.hint = QLabel("Tick two or more runs to compare their loss curves.")
        self.hint.setWordWrap(True)
        self.hint.setStyleSheet("color: #555;")
        layout.addWidget(self.hint)
        self.plot = pg.PlotWidget(background="w")
        self.plot.setLabel("bottom", "step")
        self.plot.setLabel("left", "loss")
        self.plot.showGrid(x=True, y=True, alpha=0.2)
        self.legend = self.plot.addLegend(offset=(-10, 10))
        layout.addWidget(self.plot, 1)

    def show_curves(self, curves: list[tuple[str, list[int], list[float]]]) -> None:
        """``curves``: (run name, steps, losses) a run."""
        self.plot.clear()  # also empties the legend
        for i, (name, steps, losses) in enumerate(curves):
            self.plot.plot(steps, losses, name=name,
                           pen=pg.mkPen(COLOURS[i % len(COLOURS)], width=2))
        empty = [name for name, steps, _ in curves if not steps]
        if len(curves) < 2:
            self.hint.setText("Tick two or more runs to compare their loss curves.")
        elif empty:
            self.hint.setText("No steps logged yet: " + ", ".join(empty))
        else:
            self.hint.setText(f"Loss of {len(curves)} runs")
