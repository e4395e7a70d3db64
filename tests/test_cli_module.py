"""``python -m lora_studio.cli`` is the ``lora-studio`` command too."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_python_m_lora_studio_cli_runs_the_command():
    proc = subprocess.run([sys.executable, "-m", "lora_studio.cli", "check", "--list-keys"],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "network.rank" in proc.stdout
