"""The loss and learning-rate plot of the training view, with the smoothing slider and
a readout of step / loss / lr at the mouse."""
from __future__ import annotations

import pyqtgraph as pg
from PySide6.QtCore import QPointF, Qt
from PySide6.QtWidgets import QHBoxLayout, QLabel, QSlider, QVBoxLayout, QWidget

from .series import MAX_SMOOTHING, TrainingSeries

SLIDER_STEPS = 1000  # the slider's integer positions per unit of smoothing
HOVER_RATE = 30      # readout updates per second at most
HOVER_HINT = "Move the mouse over the plot to read step, loss and learning rate."


class LossPlot(QWidget):
    def __init__(self, series: TrainingSeries, parent: QWidget | None = None):
        super().__init__(parent)
        self.series = series
        self._drawn: object = -1
        pg.setConfigOptions(background="w", foreground="k", antialias=False)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.graph = pg.GraphicsLayoutWidget()
        self.loss_plot = self.graph.addPlot(row=0, col=0)
        self.lr_plot = self.graph.addPlot(row=1, col=0)
        self.graph.ci.layout.setRowStretchFactor(0, 3)
        self.graph.ci.layout.setRowStretchFactor(1, 1)
        # No grid: in a software-rendered window it costs more than the curves
        # (benchmarks/ui_stall.py).
        for plot, label in ((self.loss_plot, "loss"), (self.lr_plot, "learning rate")):
            plot.setLabel("left", label)
            plot.setDownsampling(auto=True, mode="peak")
            plot.setClipToView(True)
            # A fixed axis width: tick labels that change width as the range moves
            # would otherwise re-layout the whole plot on every redraw. Equal widths
            # also line the two plots up.
            plot.getAxis("left").setWidth(78)  # room for a rate such as 0.00015
            # Plain numbers: an SI prefix turns a loss of 0.15 into "150" with "(x0.001)"
            # in the axis title, which reads as a loss of 150.
            plot.getAxis("left").enableAutoSIPrefix(False)
        self.lr_plot.setLabel("bottom", "step")
        self.lr_plot.setXLink(self.loss_plot)
        self.loss_plot.addLegend(offset=(-10, 10))
        self.raw_curve = self.loss_plot.plot(pen=pg.mkPen((100, 150, 220, 120), width=1),
                                             name="loss", connect="finite")
        self.smooth_curve = self.loss_plot.plot(pen=pg.mkPen("#0d47a1", width=2),
                                                name="smoothed", connect="finite")
        self.eval_curve = self.loss_plot.plot(pen=pg.mkPen("#2e7d32", width=1), symbol="o",
                                              symbolSize=7, symbolBrush="#2e7d32",
                                              symbolPen=None, name="eval")
        self.lr_curve = self.lr_plot.plot(pen=pg.mkPen("#e65100", width=1), connect="finite")
        for curve in (self.raw_curve, self.smooth_curve, self.lr_curve):
            # Two points per pixel column (min and max) instead of pyqtgraph's ten:
            # the same picture, a fifth of the drawing at 100,000 steps.
            curve.opts["autoDownsampleFactor"] = 1.0
        self.hover_lines = [pg.InfiniteLine(angle=90, pen=pg.mkPen((120, 120, 120), width=1,
                                                                   style=Qt.PenStyle.DashLine))
                            for _ in (self.loss_plot, self.lr_plot)]
        for plot, line in zip((self.loss_plot, self.lr_plot), self.hover_lines):
            line.hide()
            plot.addItem(line, ignoreBounds=True)
        layout.addWidget(self.graph, 1)

        below = QHBoxLayout()
        self.readout = QLabel(HOVER_HINT)
        self.readout.setStyleSheet("color: #444;")
        self.readout.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.smoothing_slider = QSlider(Qt.Orientation.Horizontal)
        self.smoothing_slider.setRange(0, round(MAX_SMOOTHING * SLIDER_STEPS))
        self.smoothing_slider.setValue(round(series.smoothing * SLIDER_STEPS))
        self.smoothing_slider.setFixedWidth(160)
        self.smoothing_slider.setToolTip("Weight of the past in the smoothed curve (a debiased "
                                         "exponential moving average, as in TensorBoard); "
                                         "0 draws the raw loss")
        self.smoothing_label = QLabel()
        self.smoothing_label.setMinimumWidth(40)
        below.addWidget(self.readout, 1)
        below.addWidget(QLabel("Smoothing"))
        below.addWidget(self.smoothing_slider)
        below.addWidget(self.smoothing_label)
        layout.addLayout(below)
        self.smoothing_slider.valueChanged.connect(self._smoothing_moved)
        self._show_smoothing()
        self._hover = pg.SignalProxy(self.graph.scene().sigMouseMoved, rateLimit=HOVER_RATE,
                                     slot=self._mouse_moved)

    def _show_smoothing(self) -> None:
        self.smoothing_label.setText(f"{self.series.smoothing:.3g}")

    def _smoothing_moved(self, value: int) -> None:
        self.series.set_smoothing(value / SLIDER_STEPS)
        self._show_smoothing()
        self._drawn = -1
        self.redraw()

    def _mouse_moved(self, args: tuple) -> None:
        pos: QPointF = args[0]
        for plot in (self.loss_plot, self.lr_plot):
            if plot.sceneBoundingRect().contains(pos):
                self.show_readout(plot.vb.mapSceneToView(pos).x())
                return
        self.show_readout(None)

    def show_readout(self, step: float | None) -> None:
        """The values at the point closest to ``step`` and a line through it; None
        hides them."""
        i = None if step is None else self.series.nearest(step)
        if i is None:
            self.readout.setText(HOVER_HINT)
            for line in self.hover_lines:
                line.hide()
            return
        self.readout.setText(self.series.readout(step))
        for line in self.hover_lines:
            line.setValue(float(self.series.steps[i]))
            line.show()

    def clear(self) -> None:
        self._drawn = -1
        self.show_readout(None)

    def redraw(self) -> None:
        """Draw what arrived since the last call; nothing while hidden."""
        drawn = (self.series.n, len(self.series.eval_steps))
        if drawn == self._drawn or not self.graph.isVisible():
            return
        self._drawn = drawn
        self.eval_curve.setData(self.series.eval_steps, self.series.eval_loss)
        steps = self.series.view("steps")
        self.raw_curve.setData(steps, self.series.view("loss"))
        self.smooth_curve.setData(steps, self.series.view("smooth"))
        self.lr_curve.setData(steps, self.series.view("lr"))
        if self.series.lr_max > 0:
            # From 0, fixed: autorange makes a constant rate a flat line in a void.
            self.lr_plot.setYRange(0, self.series.lr_max * 1.1, padding=0)
