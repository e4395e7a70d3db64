"""The "Will it fit?" box: its Qt-free state, and the box in the Parameters tab."""
from pathlib import Path

import pytest
from PySide6.QtCore import QSettings, Qt

from lora_studio.config import JobConfig
from lora_studio.config.presets import find_preset, read_preset
from lora_studio.config.validate import check
from lora_studio.hardware.estimate import estimate
from lora_studio.hardware.monitor import GpuInfo, HardwareSnapshot, RamInfo
from lora_studio.ui import fit_state
from lora_studio.ui.fit_state import Budget, FitState, budget_for
from ui_fixtures import GIB, no_gpu, window  # noqa: F401  (fixture)

ROOT = Path(__file__).resolve().parents[1]
DEMO_TEXT = ROOT / "presets" / "demo-text-tiny.toml"


def demo_job(**training) -> tuple[JobConfig, Path]:
    preset = read_preset(find_preset(str(DEMO_TEXT)))
    data = dict(preset.data)
    data["training"] = {**data.get("training", {}), **training}
    job, findings = check(data, base_dir=preset.base_dir)
    assert not [f for f in findings if f.level == "error"], findings
    return job, preset.base_dir


def card(free: int, total: int = 12 * GIB, index: int = 0, name: str = "Small card") -> GpuInfo:
    return GpuInfo(index=index, name=name, vram_used=total - free, vram_total=total, vram_free=free,
                   util=5, temperature=40, power_w=30.0, compute_capability=(8, 6), bf16=True)


def snapshot(*gpus: GpuInfo) -> HardwareSnapshot:
    return HardwareSnapshot(gpus=gpus, ram=RamInfo(used=GIB, total=16 * GIB), message="")


def needs_with_checkpointing() -> int:
    """Free VRAM on which the demo job fits with gradient checkpointing and not without."""
    job, base_dir = demo_job(gradient_checkpointing=True)
    state = FitState()
    return state.report(job, base_dir, Budget(64 * GIB, "x", True)).estimate.total


# -- Qt-free ---------------------------------------------------------------------

def test_budget_is_the_tightest_card_the_run_uses_or_an_assumed_one(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    snap = snapshot(card(10 * GIB, name="A"), card(3 * GIB, index=1, name="B"))
    assert budget_for(snap, processes=1) == Budget(10 * GIB, "A", True)
    assert budget_for(snap, processes=2) == Budget(3 * GIB, "B", True)
    assumed = budget_for(no_gpu(), assumed_gb=12)
    assert assumed == Budget(12 * GIB, "", False) and assumed.card == "a 12 GB card"
    assert budget_for(no_gpu(), assumed_gb=8).card == "an 8 GB card"


def test_report_for_the_demo_preset_matches_the_estimate():
    job, base_dir = demo_job()
    report = FitState().report(job, base_dir, Budget(8 * GIB, "", False))
    assert report.fits and report.estimate.total == estimate(
        job, fit_state.GpuFacts(total_vram_bytes=8 * GIB, cuda_available=True),
        fit_state.model_spec(job, str(base_dir))).total
    assert report.headline().endswith("fits an 8 GB card.")
    rows = dict(report.breakdown())
    assert rows["total"] == fit_state.gb(report.estimate.total)
    assert any(name.startswith("LoRA weights") for name in rows)
    assert 0 < report.share < 1


def test_spec_is_read_once_per_model(monkeypatch):
    calls = []
    real = fit_state.model_spec
    monkeypatch.setattr(fit_state, "model_spec", lambda *a: calls.append(a) or real(*a))
    state = FitState()
    job, base_dir = demo_job()
    for batch in (1, 2, 3):
        state.report(job.model_copy(update={"training": job.training.model_copy(
            update={"batch_size": batch})}), base_dir, Budget(8 * GIB, "", False))
    assert len(calls) == 1


def test_no_model_gives_a_message_not_an_error():
    report = FitState().report(JobConfig(), None, Budget(8 * GIB, "", False))
    assert report.estimate is None and report.fits is None and report.breakdown() == []
    assert report.headline().startswith("No estimate: ") and "model" in report.headline()


def test_proposal_on_a_small_card_turns_on_checkpointing():
    job, base_dir = demo_job()
    proposal = FitState().propose(job, base_dir, Budget(needs_with_checkpointing(), "Small", True))
    assert proposal.fits and proposal.values() == {"training.gradient_checkpointing": True}
    assert proposal.lines()[0].startswith("Gradient checkpointing: off → on  (saves ")
    huge = FitState().propose(job, base_dir, Budget(GIB // 10, "Tiny", True))
    assert not huge.fits and huge.changes and "Even with every change" in huge.message


# -- the box in the window ---------------------------------------------------------

def test_box_shows_the_demo_estimate_without_a_gpu(window):
    window.preset_bar.select(str(DEMO_TEXT))
    box = window.fit_box
    assert not box.no_gpu_label.isHidden() and not box.card_combo.isHidden()
    assert box.no_gpu_label.text().startswith("No NVIDIA GPU found")
    assert box.headline.text().startswith("Needs about ") and "8 GB card" in box.headline.text()
    assert not box.autofit_button.isEnabled() and 0 < box.bar.value() < 1000
    assert "LoRA weights" in box.bar.toolTip()
    box.card_combo.setCurrentIndex(box.card_combo.findData(24))
    assert "a 24 GB card" in box.headline.text()
    box.details_button.click()
    assert not box.details.isHidden() and "total" in box.details.text()


@pytest.fixture
def small_card_window(qtbot, tmp_path, monkeypatch):
    from lora_studio.ui.app import MainWindow

    monkeypatch.setenv("LORA_STUDIO_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    free = needs_with_checkpointing()
    settings = QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)
    win = MainWindow(settings=settings, gpu_read=lambda: snapshot(card(free)))
    qtbot.addWidget(win)
    win.show()
    win.preset_bar.select(str(DEMO_TEXT))
    yield win
    win.shutdown()


def test_autofit_proposes_and_one_click_applies_to_the_panel(small_card_window, qtbot):
    win = small_card_window
    box = win.fit_box
    assert box.card_combo.isHidden() and "will not fit" in box.headline.text()
    assert box.autofit_button.isEnabled()
    qtbot.mouseClick(box.autofit_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: box.proposal is not None, timeout=10_000)
    assert not box.proposal_box.isHidden()
    assert "Gradient checkpointing: off → on" in box.proposal_label.text()
    assert not win.state.dirty
    qtbot.mouseClick(box.apply_button, Qt.MouseButton.LeftButton)
    assert win.state.values["training.gradient_checkpointing"] is True
    assert win.panel.rows["training.gradient_checkpointing"].editor.value() is True
    assert win.state.dirty and win.preset_bar.title.text().endswith("*")
    assert box.proposal_box.isHidden() and box.headline.text().endswith("it fits.")
    win.preset_bar.revert()
    assert win.state.values["training.gradient_checkpointing"] is False
    assert "will not fit" in box.headline.text()


def test_an_edit_while_autofit_runs_drops_its_proposal(small_card_window, qtbot):
    box = small_card_window.fit_box
    box.start_autofit()
    rank = small_card_window.panel.rows["network.rank"].editor
    rank.set_value(5)
    rank.changed.emit()
    small_card_window.panel.validate_now()
    box.pool.waitForDone()
    qtbot.waitUntil(lambda: box.autofit_button.text() == "Auto-fit", timeout=10_000)
    assert box.proposal is None and box.proposal_box.isHidden()



def test_box_follows_the_cards_free_vram(qtbot, monkeypatch):
    from lora_studio.ui.fit_box import FitBox

    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    reading = {"snap": snapshot(card(6 * GIB, name="RTX 3060"))}
    box = FitBox(lambda: reading["snap"])
    qtbot.addWidget(box)
    job, base_dir = demo_job()
    box.update_fit(job, base_dir)
    assert "6.0 GiB free on RTX 3060: it fits." in box.headline.text()
    reading["snap"] = snapshot(card(6 * GIB + 1024 ** 2, name="RTX 3060"))
    box._recheck_card()  # a megabyte's difference: not worth a new estimate
    assert box.budget.bytes == 6 * GIB
    reading["snap"] = snapshot(card(GIB // 4, name="RTX 3060"))  # another program took the rest
    box._recheck_card()
    assert "will not fit" in box.headline.text() and box.autofit_button.isEnabled()
    box.shutdown()


def test_training_view_shows_the_peak_of_the_engines_hardware_events(qtbot, monkeypatch):
    from lora_studio.hardware.monitor import hardware_event

    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    from lora_studio.ui.training_view import TrainingView

    view = TrainingView(no_gpu)
    qtbot.addWidget(view)
    panel = view.gpu_panel
    for used, peak in ((3 * GIB, GIB), (9 * GIB, 7 * GIB), (5 * GIB, 7 * GIB)):
        view.handle_event(hardware_event(snapshot(card(12 * GIB - used)), peak_allocated=peak))
    assert panel.run_peak.text() == "This run: peak 9.0 GiB (PyTorch 7.0 GiB)"
    view._reset_display()
    assert panel.run_peak.text() == ""
    view.handle_event(hardware_event(no_gpu()))
    assert panel.run_peak.text().startswith("This run: no NVIDIA GPU")
    assert "nvidia-ml-py" in panel.run_peak.toolTip()  # why, from the engine's message
    view.shutdown()


def test_a_proposal_for_an_assumed_card_says_when_it_needs_an_nvidia_gpu():
    job, base_dir = demo_job()
    squeezed, _ = demo_job(gradient_checkpointing=True, batch_size=1, gradient_accumulation_steps=4)
    squeezed = squeezed.model_copy(update={"model": squeezed.model.model_copy(update={"load_in_4bit": True})})
    need = FitState().report(squeezed, base_dir, Budget(64 * GIB, "x", True)).estimate.total
    tight = FitState().propose(job, base_dir, Budget(need, "", False))
    assert tight.fits and tight.values()["model.load_in_4bit"] is True
    assert "needs an NVIDIA GPU" in tight.message
    on_a_real_card = FitState().propose(job, base_dir, Budget(need, "RTX 3050", True))
    assert on_a_real_card.values() == tight.values() and on_a_real_card.message == ""
