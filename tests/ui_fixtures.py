"""Shared pieces of the UI tests: a main window on temporary settings and preset
folders, a fake GPU reading, and the fake engine's command line."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from lora_studio.hardware.monitor import GpuInfo, HardwareSnapshot, RamInfo

FAKE_ENGINE = Path(__file__).with_name("fake_engine.py")
GIB = 1024 ** 3


def no_gpu() -> HardwareSnapshot:
    return HardwareSnapshot(gpus=(), ram=RamInfo(used=3 * GIB, total=16 * GIB),
                            message="no NVIDIA GPU: the nvidia-ml-py package is not installed")


def one_gpu() -> HardwareSnapshot:
    gpu = GpuInfo(index=0, name="NVIDIA GeForce RTX 3060", vram_used=6 * GIB, vram_total=12 * GIB,
                  vram_free=6 * GIB, util=87, temperature=66, power_w=150.0,
                  compute_capability=(8, 6), bf16=True)
    return HardwareSnapshot(gpus=(gpu,), ram=RamInfo(used=3 * GIB, total=16 * GIB), message="")


def fake_engine(*extra: str):
    """An engine_command for TrainingView that runs tests/fake_engine.py."""
    def command(run_dir: Path, resume: Path | None) -> list[str]:
        cmd = [sys.executable, str(FAKE_ENGINE), str(run_dir), *extra]
        return cmd + (["--resume", str(resume)] if resume else [])
    return command


@pytest.fixture
def window(qtbot, tmp_path, monkeypatch):
    from PySide6.QtCore import QSettings

    from lora_studio.ui.app import MainWindow

    monkeypatch.setenv("LORA_STUDIO_CONFIG_DIR", str(tmp_path / "config"))
    settings = QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)
    win = MainWindow(settings=settings, gpu_read=no_gpu)
    qtbot.addWidget(win, before_close_func=_close_without_asking)
    win.show()
    yield win
    if win.training.is_running:
        win.training.worker.stop_grace_s = 0.5
    win.shutdown()


def _close_without_asking(win) -> None:
    """pytest-qt closes the window before the fixture's own teardown: a test that failed
    with a run going or captions unsaved must not leave a question nobody answers."""
    win.ask_stop_run = lambda: True
    win.browser.ask_unsaved = lambda summary, action: "discard"
    if win.training.is_running:
        win.training.worker.stop_grace_s = 0.5


def answer_questions(monkeypatch, button):
    """Answer every QMessageBox.question with ``button``; the texts asked are collected."""
    from PySide6.QtWidgets import QMessageBox
    asked = []

    def question(parent, title, text, *args):
        asked.append(text)
        return button
    monkeypatch.setattr(QMessageBox, "question", staticmethod(question))
    return asked
