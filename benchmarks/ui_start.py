"""Start-up time of the window against the import time of the ML libraries.

Both are measured from the parent process, from spawning a fresh Python to (a) the
first paint event of the main window (offscreen platform) and (b) the end of
`import torch, diffusers, peft`. Each is run several times, interleaved, and the
medians compared. Target: window / imports <= 0.2.

    python benchmarks/ui_start.py [--repeats 3]
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

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
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    tmp = tempfile.mkdtemp()
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "LORA_STUDIO_CONFIG_DIR": tmp}
    window_times, import_times = [], []
    for _ in range(args.repeats):
        seconds, line = timed([sys.executable, "-c", WINDOW, tmp], env)
        if not line.startswith("PAINTED []"):
            raise SystemExit(f"the window loaded an ML library before its first paint: {line}")
        window_times.append(seconds)
        import_times.append(timed([sys.executable, "-c", IMPORTS], env)[0])
    window_s, imports_s = statistics.median(window_times), statistics.median(import_times)
    print(f"window first paint : {window_s:6.2f} s  (runs: {', '.join(f'{t:.2f}' for t in window_times)})")
    print(f"import torch, diffusers, peft: {imports_s:6.2f} s  "
          f"(runs: {', '.join(f'{t:.2f}' for t in import_times)})")
    ratio = window_s / imports_s
    print(f"ratio {ratio:.3f} (target <= 0.2): {'OK' if ratio <= 0.2 else 'MISSED'}")


if __name__ == "__main__":
    main()
