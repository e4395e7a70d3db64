"""Does the UI thread stall while the engine streams events?

The main window (Training tab, 1360x880, offscreen) starts from a plot already
holding 100,000 steps; the fake engine (tests/fake_engine.py) then streams
progress events at 200 per second (plus a log line and a text sample every ten
steps) through the real TrainingWorker. A 5 ms QTimer on the UI thread records
the gaps between its ticks; the longest gap is the worst stall a user would feel.
Target: longest gap <= 50 ms. The same timer over the idle window, and the UI
thread's own CPU time, tell the window's stalls from a busy machine's.

    python benchmarks/ui_stall.py [--seconds 10] [--rate 200] [--profile]
"""
from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PREFILLED = 100_000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--profile", action="store_true", help="print where the UI thread's time went")
    args = parser.parse_args()

    from PySide6.QtCore import QSettings, QTimer
    from PySide6.QtWidgets import QApplication

    app = QApplication([])
    tmp = Path(tempfile.mkdtemp())
    os.environ["LORA_STUDIO_CONFIG_DIR"] = str(tmp / "config")
    from lora_studio.config import JobConfig
    from lora_studio.config.jobfile import write_job_toml
    from lora_studio.runs.layout import new_run_dir
    from lora_studio.ui.app import MainWindow, settle_gc

    window = MainWindow(settings=QSettings(str(tmp / "s.ini"), QSettings.Format.IniFormat))
    window.resize(1360, 880)
    window.show()
    window.tabs.setCurrentWidget(window.training)
    view = window.training
    run = new_run_dir(tmp / "runs", "stall")
    write_job_toml(JobConfig(), run.job_toml)
    for step in range(1, PREFILLED + 1):
        view.series.append(step, 2.0 / (1 + step / 5000) + 0.05 * (step % 7), 1e-4)
    steps = PREFILLED + int(args.seconds * args.rate)
    fake = ROOT / "tests" / "fake_engine.py"
    view.engine_command = lambda run_dir, resume: [
        sys.executable, str(fake), str(run_dir), "--steps", str(steps), "--rate", str(args.rate),
        "--resume", str(run_dir / "checkpoints" / f"step-{PREFILLED:06d}")]
    view._reset_display = lambda: None  # keep the prefilled 100,000 points
    settle_gc()  # as lora_studio.ui.app.main does once the window is up

    idle_gaps: list[float] = []
    stream_gaps: list[float] = []
    state = {"last": None, "phase": "idle"}

    def tick() -> None:
        now = time.perf_counter()
        if state["last"] is not None:
            if state["phase"] == "idle":
                idle_gaps.append(now - state["last"])
            elif view.series.n > PREFILLED:  # while events flow
                stream_gaps.append(now - state["last"])
        state["last"] = now

    cpu = {}

    def start_stream() -> None:
        state["phase"] = "stream"
        cpu["start"] = (time.thread_time(), time.perf_counter())
        view.start(run.root)
        view.run_ended.connect(stop_stream)

    def stop_stream() -> None:
        cpu["end"] = (time.thread_time(), time.perf_counter())
        app.quit()

    timer = QTimer()
    timer.setInterval(5)
    timer.timeout.connect(tick)
    timer.start()
    # The same window with the same 100,000 points, first idle: the gaps the
    # machine itself causes (other processes on a busy CPU), for comparison.
    QTimer.singleShot(int(args.seconds * 1000 / 2), start_stream)
    QTimer.singleShot(int(args.seconds * 4000) + 30_000, app.quit)  # a safety net
    profiler = cProfile.Profile() if args.profile else None
    if profiler:
        profiler.enable()
    app.exec()
    if profiler:
        profiler.disable()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
    timer.stop()
    received = view.series.n - PREFILLED
    window.shutdown()
    if not stream_gaps:
        raise SystemExit("no events arrived: is tests/fake_engine.py there?")

    def describe(gaps: list[float]) -> str:
        gaps = sorted(gaps)
        return (f"median {gaps[len(gaps) // 2] * 1000:.1f} ms, p99 {gaps[int(len(gaps) * 0.99)] * 1000:.1f}"
                f" ms, longest {gaps[-1] * 1000:.1f} ms")

    worst = max(stream_gaps) * 1000
    print(f"events received: {received} progress steps at {args.rate:g}/s on top of {PREFILLED} "
          f"plotted points; CPU load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"5 ms timer, idle window     : {describe(idle_gaps)}")
    print(f"5 ms timer, events streaming: {describe(stream_gaps)}")
    busy = (cpu["end"][0] - cpu["start"][0]) / (cpu["end"][1] - cpu["start"][1])
    print(f"UI thread CPU while streaming: {busy:.0%} of one core (events, plot, paint)")
    print(f"longest gap {worst:.1f} ms (target <= 50 ms): {'OK' if worst <= 50 else 'MISSED'}")


if __name__ == "__main__":
    main()
