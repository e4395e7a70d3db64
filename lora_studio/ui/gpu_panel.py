"""The VRAM panel: each GPU's memory, utilisation and temperature once a second,
read with NVML on the UI thread (a read takes well under a millisecond), or a plain
"no NVIDIA GPU found" with the system RAM where there is none."""
from __future__ import annotations

from collections.abc import Callable

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QGroupBox, QLabel, QProgressBar, QVBoxLayout, QWidget

from ..hardware.monitor import GpuMonitor, HardwareSnapshot

GIB = 1024 ** 3
POLL_MS = 1000
PEAK_HELP = ("The most VRAM in use on the card while the engine trained, read by the engine "
             "every few seconds; in brackets the peak PyTorch itself allocated, the figure the "
             "VRAM estimate predicts without the CUDA context.")


def describe_gpu(gpu) -> str:
    parts = [f"{gpu.vram_used / GIB:.1f} / {gpu.vram_total / GIB:.1f} GiB"]
    if gpu.util is not None:
        parts.append(f"GPU {gpu.util}%")
    if gpu.temperature is not None:
        parts.append(f"{gpu.temperature} °C")
    if gpu.power_w is not None:
        parts.append(f"{gpu.power_w:.0f} W")
    return "  ·  ".join(parts)


def describe_ram(snap: HardwareSnapshot) -> str:
    if snap.ram is None:
        return "System RAM: unknown"
    return f"System RAM: {snap.ram.used / GIB:.1f} / {snap.ram.total / GIB:.1f} GiB"


def no_gpu_text(snap: HardwareSnapshot) -> str:
    reason = snap.message.split(":", 1)[1].strip() if ":" in snap.message else ""
    return "No NVIDIA GPU found" + (f" ({reason})." if reason else ".") + \
        " Training runs on the CPU and is slow."


def run_peak_text(vram_peak: int | None, allocated_peak: int | None) -> str:
    """The line about the current run, from the engine's hardware events (short: the
    panel is narrow)."""
    if vram_peak is None:
        return "This run: no NVIDIA GPU seen by the engine"
    text = f"This run: peak {vram_peak / GIB:.1f} GiB"
    return text + (f" (PyTorch {allocated_peak / GIB:.1f} GiB)" if allocated_peak else "")


class GpuPanel(QGroupBox):
    def __init__(self, read: Callable[[], HardwareSnapshot] | None = None,
                 parent: QWidget | None = None):
        super().__init__("GPU", parent)
        self._monitor = GpuMonitor() if read is None else None
        self._read = read or self._monitor.read
        self.layout_ = QVBoxLayout(self)
        self.headline = QLabel()
        self.headline.setWordWrap(True)
        self.layout_.addWidget(self.headline)
        self.bars: list[QProgressBar] = []
        self.details: list[QLabel] = []
        self.ram = QLabel()
        self.layout_.addWidget(self.ram)
        self.run_peak = QLabel()
        self.run_peak.setToolTip(PEAK_HELP)
        self.layout_.addWidget(self.run_peak)
        self.layout_.addStretch(1)
        self._vram_peak: int | None = None
        self._allocated_peak: int | None = None
        self.snapshot: HardwareSnapshot | None = None
        self.timer = QTimer(self)
        self.timer.setInterval(POLL_MS)
        self.timer.timeout.connect(self.refresh)
        self.refresh()
        self.timer.start()

    def _ensure_rows(self, count: int) -> None:
        while len(self.bars) < count:
            bar, label = QProgressBar(), QLabel()
            bar.setRange(0, 1000)
            bar.setTextVisible(True)
            index = self.layout_.indexOf(self.ram)
            self.layout_.insertWidget(index, bar)
            self.layout_.insertWidget(index + 1, label)
            self.bars.append(bar)
            self.details.append(label)
        for i, (bar, label) in enumerate(zip(self.bars, self.details)):
            bar.setVisible(i < count)
            label.setVisible(i < count)

    def refresh(self) -> None:
        snap = self._read()
        self.snapshot = snap
        self._ensure_rows(len(snap.gpus))
        if not snap.gpus:
            self.headline.setText(no_gpu_text(snap))
            self.headline.setStyleSheet("color: #8a5a00;")
        else:
            names = ", ".join(dict.fromkeys(g.name for g in snap.gpus))
            self.headline.setText(names)
            self.headline.setStyleSheet("")
        for gpu, bar, label in zip(snap.gpus, self.bars, self.details):
            share = gpu.vram_used / gpu.vram_total if gpu.vram_total else 0.0
            bar.setValue(int(share * 1000))
            bar.setFormat(f"GPU {gpu.index} VRAM {share:.0%}")
            label.setText(describe_gpu(gpu))
        self.ram.setText(describe_ram(snap))

    def show_engine_reading(self, ev: dict) -> None:
        """A ``hardware`` event of the run being shown: keep its peak."""
        used, allocated = ev.get("vram_used"), ev.get("peak_allocated")
        if isinstance(used, int):
            self._vram_peak = max(self._vram_peak or 0, used)
        if isinstance(allocated, int):
            self._allocated_peak = max(self._allocated_peak or 0, allocated)
        self.run_peak.setText(run_peak_text(self._vram_peak, self._allocated_peak))
        self.run_peak.setToolTip(str(ev.get("message") or PEAK_HELP))

    def clear_run(self) -> None:
        self._vram_peak = self._allocated_peak = None
        self.run_peak.clear()

    def shutdown(self) -> None:
        self.timer.stop()
        if self._monitor is not None:
            self._monitor.close()
