"""`lora-studio` on a box without a screen: no DISPLAY, no Qt platform plugin. The
command-line paths must never import Qt (importing PySide6 there would need the
plugin and a display, or at least pull ~100 MB of libraries into a training run)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from lora_studio.runs.events import read_events

ROOT = Path(__file__).resolve().parents[1]
QT_MODULES = ("PySide6", "shiboken6", "pyqtgraph")

# Runs the CLI in-process with every Qt import refused and recorded, then reports
# the exit code and which heavy modules got imported.
PROBE = r"""
import importlib.abc, json, sys
tried = []
class RefuseQt(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in %(qt)r:
            tried.append(name)
            raise ImportError(f"{name} imported on a headless path")
        return None
sys.meta_path.insert(0, RefuseQt())
from lora_studio.cli import main
code = main(sys.argv[1:])
print("PROBE " + json.dumps({"code": code, "tried_qt": tried,
      "loaded": sorted({m.split(".")[0] for m in sys.modules})}))
"""


def headless_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM", "QT_PLUGIN_PATH")}
    env["PYTHONPATH"] = str(ROOT)
    return env


def run_headless(*args: str, cwd: Path | None = None, timeout: float = 600) -> tuple[dict, str]:
    proc = subprocess.run([sys.executable, "-c", PROBE % {"qt": QT_MODULES}, *args],
                          env=headless_env(), cwd=cwd, capture_output=True, text=True,
                          encoding="utf-8", timeout=timeout)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("PROBE ")]
    assert lines, f"the CLI did not finish:\n{proc.stdout}\n{proc.stderr}"
    return json.loads(lines[-1][len("PROBE "):]), proc.stdout + proc.stderr


def test_check_runs_headless_without_qt_or_torch():
    report, output = run_headless("check", str(ROOT / "presets" / "demo-text-tiny.toml"))
    assert report["code"] == 0, output
    assert report["tried_qt"] == []
    assert not set(report["loaded"]) & {*QT_MODULES, "torch", "transformers", "diffusers"}


def test_gui_without_a_display_says_what_to_do_instead_of_aborting():
    """Qt aborts the process (core dump) when it finds no display; the CLI checks first."""
    report, output = run_headless()
    assert report["code"] == 2 and report["tried_qt"] == []
    assert "no display" in output and "lora-studio train" in output


def test_train_runs_headless_without_qt(tmp_path):
    runs = tmp_path / "runs sans écran"
    report, output = run_headless(
        "train", str(ROOT / "presets" / "demo-text-tiny.toml"), "--set", "training.max_steps=2", "--set", "training.batch_size=2",
        "--set", "output.sample_every_n_steps=0", "--set", "output.save_every_n_steps=0",
        "--set", f"output.output_dir={runs}", cwd=tmp_path)
    assert report["code"] == 0, output
    assert report["tried_qt"] == [] and not set(report["loaded"]) & set(QT_MODULES)
    assert "torch" in report["loaded"]  # it did train, in this process
    (run,) = list(runs.iterdir())
    assert (run / "final").is_dir() and any((run / "exports").iterdir())
    batch = [e for e in read_events(run / "events.jsonl") if e.get("effective_batch")]
    assert [e["effective_batch"] for e in batch] == [2]  # batch_size 2 x 1 process x 1 step
