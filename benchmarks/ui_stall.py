"""Does the UI thread stall while the engine streams events?

The main window (Training tab, 1360x880, offscreen) starts from a plot already
holding 100,000 steps; the fake engine (tests/fake_engine.py) then streams
progress events at 200 per second (plus a log line and a text sample every ten
steps) through the real TrainingWorker. A 5 ms QTimer on the UI thread records
the gaps between its ticks; the longest gap is the worst stall a user would feel.
Target: longest gap <= 50 ms. The baseline is the same timer over the same window
left idle, which shows the gaps the machine itself causes (other processes on a busy
CPU): idle and streaming windows alternate over --rounds rounds (--seconds of
streaming in all, split evenly, each stream preceded by an idle window as long), and
the headline is each round's p99 gap while streaming against its idle window's p99,
as the median over rounds with the min-max spread. The UI thread's own CPU time
while streaming is printed too.

    python benchmarks/ui_stall.py [--seconds 10] [--rate 200] [--rounds 5] [--profile]
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

from benchmarks._stats import summarize, verdict  # noqa: E402

PREFILLED = 100_000
SETTLE_MS = 200  # after a run ends, before the next idle window: its exit handling counts in neither


def p99(gaps: list[float]) -> float:
    gaps = sorted(gaps)
    return gaps[int(len(gaps) * 0.99)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0,
                        help="seconds of streaming in all, split over the rounds")
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--rounds", type=int, default=5,
                        help="idle window + streaming window pairs")
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
    for step in range(1, PREFILLED + 1):
        view.series.append(step, 2.0 / (1 + step / 5000) + 0.05 * (step % 7), 1e-4)
    window_s = args.seconds / args.rounds
    per_round = max(1, int(window_s * args.rate))
    fake = ROOT / "tests" / "fake_engine.py"
    # Each round's run resumes where the last one ended, so the plot keeps growing.
    state = {"last": None, "phase": "settle", "round": 0, "first": PREFILLED}
    view.engine_command = lambda run_dir, resume: [
        sys.executable, str(fake), str(run_dir), "--steps", str(state["first"] + per_round),
        "--rate", str(args.rate), "--resume", str(run_dir / "checkpoints" / f"step-{state['first']:06d}")]
    view._reset_display = lambda: None  # keep the prefilled 100,000 points
    settle_gc()  # as lora_studio.ui.app.main does once the window is up

    idle_gaps: list[list[float]] = [[] for _ in range(args.rounds)]
    stream_gaps: list[list[float]] = [[] for _ in range(args.rounds)]

    def tick() -> None:
        now = time.perf_counter()
        if state["last"] is not None:
            if state["phase"] == "idle":
                idle_gaps[state["round"]].append(now - state["last"])
            elif state["phase"] == "stream" and view.series.n > state["first"]:  # while events flow
                stream_gaps[state["round"]].append(now - state["last"])
        state["last"] = now

    cpu = {"thread": 0.0, "wall": 0.0}

    def start_idle() -> None:
        state["phase"] = "idle"
        QTimer.singleShot(int(window_s * 1000), start_stream)

    def start_stream() -> None:
        state["phase"] = "stream"
        state["first"] = view.series.n
        cpu["start"] = (time.thread_time(), time.perf_counter())
        run = new_run_dir(tmp / "runs", f"stall-{state['round'] + 1}")
        write_job_toml(JobConfig(), run.job_toml)
        view.start(run.root)

    def stop_stream() -> None:
        if state["phase"] != "stream":
            return
        cpu["thread"] += time.thread_time() - cpu["start"][0]
        cpu["wall"] += time.perf_counter() - cpu["start"][1]
        state["phase"] = "settle"
        state["round"] += 1
        if state["round"] == args.rounds:
            app.quit()
        else:
            QTimer.singleShot(SETTLE_MS, start_idle)

    view.run_ended.connect(stop_stream)
    timer = QTimer()
    timer.setInterval(5)
    timer.timeout.connect(tick)
    timer.start()
    QTimer.singleShot(SETTLE_MS, start_idle)
    QTimer.singleShot(int(args.seconds * 4000) + args.rounds * SETTLE_MS + 30_000, app.quit)  # a safety net
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
    done = [i for i in range(args.rounds) if stream_gaps[i] and idle_gaps[i]]
    if not done:
        raise SystemExit("no events arrived: is tests/fake_engine.py there?")

    def describe(gaps: list[float]) -> str:
        gaps = sorted(gaps)
        return (f"median {gaps[len(gaps) // 2] * 1000:.1f} ms, p99 {p99(gaps) * 1000:.1f}"
                f" ms, longest {gaps[-1] * 1000:.1f} ms")

    all_idle = [g for i in done for g in idle_gaps[i]]
    all_stream = [g for i in done for g in stream_gaps[i]]
    print(f"events received: {received} progress steps at {args.rate:g}/s on top of {PREFILLED} "
          f"plotted points, over {len(done)} rounds of {window_s:g} s idle + {window_s:g} s "
          f"streaming; CPU load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"5 ms timer, idle windows, all rounds    : {describe(all_idle)}")
    print(f"5 ms timer, events streaming, all rounds: {describe(all_stream)}")
    print(f"UI thread CPU while streaming: {cpu['thread'] / cpu['wall']:.0%} of one core "
          f"(events, plot, paint)")
    summarize("p99 timer gap, events streaming", [p99(stream_gaps[i]) * 1000 for i in done],
              [p99(idle_gaps[i]) * 1000 for i in done], baseline="idle window", unit="ms")
    verdict("longest gap while streaming", max(all_stream) * 1000, 50, "ms")


if __name__ == "__main__":
    main()
