"""The progress row of the training view: from Train on, the phase the run is in
(starting the engine, loading, scanning, caching latents n/N, tokenising n/N) with its
own bar, then the step progress once steps are counted, then how the run ended."""
from __future__ import annotations

from PySide6.QtWidgets import QHBoxLayout, QLabel, QProgressBar, QWidget

from ..runs.run_progress import SEP, PhaseTracker, number, phase_text, progress_text


class ProgressHeader(QWidget):
    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.bar = QProgressBar()
        self.label = QLabel()
        layout.addWidget(self.bar, 1)
        layout.addWidget(self.label, 2)
        self.phases = PhaseTracker()
        self._progress: dict | None = None  # the latest progress event, not drawn yet
        self._lead = ""  # the label without its time part, for the outcome
        self.reset()

    def reset(self) -> None:
        self.phases.current = None
        self._progress = None
        self.bar.setRange(0, 1)
        self.bar.setValue(0)
        self._lead = "Idle"
        self.label.setText("Idle")

    def begin(self, name: str, now: float) -> None:
        self.phases.begin(name, now)
        self._lead = phase_text(self.phases.current, now).split(SEP)[0]

    def feed(self, ev: dict, now: float) -> bool:
        """Take one event (drawn at the next tick); True when it began a new phase."""
        if ev.get("type") == "progress":
            self._progress = ev
        new = self.phases.feed(ev, now)
        if self.phases.current is not None:  # also when the run ends before the next tick
            self._lead = phase_text(self.phases.current, now).split(SEP)[0]
        return new

    def tick(self, now: float) -> None:
        """Draw the phase or the step progress (the view's redraw timer calls this)."""
        phase = self.phases.current
        if phase is not None:
            if phase.total:
                self.bar.setRange(0, phase.total)
                self.bar.setValue(min(phase.done or 0, phase.total))
            else:
                self.bar.setRange(0, 0)  # busy: no count to show
            self.label.setText(phase_text(phase, now))
        elif self._progress is not None:
            ev, self._progress = self._progress, None
            step, total = number(ev, "step") or 0, number(ev, "total", "total_steps")
            if total:
                self.bar.setRange(0, int(total))
                self.bar.setValue(min(int(step), int(total)))
            text = progress_text(ev)
            self._lead = text.split(SEP + "ETA")[0]
            self.label.setText(text)

    def settle(self, outcome: str = "") -> None:
        """After the run: no phase clock or busy bar any more, and how it ended (when
        known) after what it was doing last."""
        if self.phases.current is None and not outcome:
            return
        self.phases.current = None
        if self.bar.maximum() == 0:
            self.bar.setRange(0, 1)
            self.bar.setValue(0)
        if outcome:
            self._lead = f"{self._lead}{SEP}{outcome}"
        self.label.setText(self._lead)
