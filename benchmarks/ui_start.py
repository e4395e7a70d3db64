"""Start-up time of the window against the import time of the ML libraries.

Both are measured from the parent process, from spawning a fresh Python to (a) the
first paint event of the main window (offscreen platform) and (b) the end of
`import torch, diffusers, peft` (the baseline). Each round runs both, one after the
other (which goes first alternates); the headline is the median of the per-round
ratios window / imports, with their min-max as the spread. Target: <= 0.2.

    python benchmarks/ui_start.py [--rounds 5]
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._stats import summarize, verdict  # noqa: E402

WINDOW = r"""
import os, sys
from PySide6.QtCore import QEvent, QObject, QSettings
from PySide6.QtWidgets import QApplication
app = QApplication([])
from lora_studio.ui.app import MainWindow

class FirstPaint(QObject):
    def eventFilter(self, obj, event):
        if event.type() == QEvent.Type.Paint:
            print("PAINTED", [m for m in ("torch", "diffusers", "peft", "transformers")
                              if m in sys.modules], flush=True)
            os._exit(0)
        return False

settings = QSettings(os.path.join(sys.argv[1], "s.ini"), QSettings.Format.IniFormat)
window = MainWindow(settings=settings)
watcher = FirstPaint()
window.installEventFilter(watcher)
window.show()
app.exec()
"""

IMPORTS = "import torch, diffusers, peft"


def timed(args: list[str], env: dict) -> tuple[float, str]:
    start = time.perf_counter()
    out = subprocess.run(args, capture_output=True, text=True, env=env, timeout=600)
    elapsed = time.perf_counter() - start
    if out.returncode != 0:
        raise SystemExit(f"{args[:3]} failed:\n{out.stderr[-2000:]}")
    return elapsed, out.stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", "--repeats", dest="rounds", type=int, default=5,
                        help="rounds, each timing both (--repeats: the old name)")
    args = parser.parse_args()
    tmp = tempfile.mkdtemp()
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "LORA_STUDIO_CONFIG_DIR": tmp}
    window_times, import_times = [], []
    for i in range(args.rounds):
        # Alternating which goes first keeps a slow start of a round (or a warm disk
        # cache left by the one before) from always landing on the same one.
        for which in ("window", "imports") if i % 2 == 0 else ("imports", "window"):
            if which == "window":
                seconds, line = timed([sys.executable, "-c", WINDOW, tmp], env)
                if not line.startswith("PAINTED []"):
                    raise SystemExit(f"the window loaded an ML library before its first paint: {line}")
                window_times.append(seconds)
            else:
                import_times.append(timed([sys.executable, "-c", IMPORTS], env)[0])
    s = summarize("window first paint", window_times, import_times,
                  baseline=f"`{IMPORTS}`", unit="s")
    verdict("ratio window / imports (median of rounds)", s.ratio, 0.2)


if __name__ == "__main__":
    main()
