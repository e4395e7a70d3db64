"""The token view's histogram: records per length in tokens, the bars at and beyond
max_seq_length in red (they will be truncated), a line at the limit."""
from __future__ import annotations

import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QVBoxLayout, QWidget

from ..data.token_lengths import Histogram

KEPT = "#1976d2"
CUT = "#d32f2f"


class TokenHistogram(QWidget):
    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        pg.setConfigOptions(background="w", foreground="k", antialias=False)
        self.plot = pg.PlotWidget()
        self.plot.setMenuEnabled(False)
        self.plot.setMouseEnabled(x=False, y=False)
        self.plot.hideButtons()
        self.plot.setLabel("bottom", "length in tokens")
        self.plot.setLabel("left", "records")
        self.plot.getAxis("left").enableAutoSIPrefix(False)
        self.plot.getAxis("bottom").enableAutoSIPrefix(False)
        self.bars = pg.BarGraphItem(x0=[], x1=[], height=[], pen=pg.mkPen("w", width=0.5))
        self.plot.addItem(self.bars)
        self.limit = pg.InfiniteLine(angle=90, pen=pg.mkPen(CUT, width=2, style=Qt.PenStyle.DashLine),
                                     label="max_seq_length",
                                     labelOpts={"position": 0.9, "color": CUT, "anchors": [(1, 0), (1, 0)]})
        self.plot.addItem(self.limit, ignoreBounds=True)
        self.overflow = pg.TextItem(color=CUT, anchor=(0.5, 1))
        self.plot.addItem(self.overflow, ignoreBounds=True)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.plot)
        self.drawn: Histogram | None = None

    def show_histogram(self, hist: Histogram | None, max_length: int) -> None:
        self.drawn = hist
        if hist is None or not hist.counts.sum():
            self.bars.setOpts(x0=[], x1=[], height=[], brushes=[])
            self.overflow.setText("")
            self.limit.setValue(max_length)
            return
        left, right = hist.edges[:-1], hist.edges[1:]
        self.bars.setOpts(x0=left, x1=right, height=hist.counts,
                          brushes=[pg.mkBrush(CUT if x >= max_length else KEPT) for x in left])
        self.limit.setValue(max_length)
        if hist.overflow:  # the last bar holds every longer record
            self.overflow.setText(f"≥{int(left[-1]):,}")
            self.overflow.setPos((left[-1] + right[-1]) / 2, hist.counts[-1])
        else:
            self.overflow.setText("")
        self.plot.setXRange(0, float(right[-1]), padding=0.02)
        self.plot.setYRange(0, float(hist.counts.max()) * 1.15, padding=0)
