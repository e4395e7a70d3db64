"""The whole loop from the window with the real text engine on the bundled tiny
model: load the demo preset, break a field and see the message, fix it, train,
watch the plot grow, stop, resume, export."""
import re

from PySide6.QtCore import Qt

from lora_studio.runs.layout import RunDir
from ui_fixtures import window  # noqa: F401  (fixture)

ENGINE_S = 240_000  # ms; the engine process imports torch and transformers first


def _type(qtbot, editor_widget, text):
    editor_widget.selectAll()
    qtbot.keyClicks(editor_widget, text)


def test_demo_run_from_the_window(window, qtbot, tmp_path, monkeypatch):
    # A fresh token cache: records another test tokenised would skip the tokenising phase.
    monkeypatch.setenv("LORA_STUDIO_CACHE_DIR", str(tmp_path / "cache"))
    assert window.state.preset_name == "Demo: tiny text model (CPU)"
    window.tabs.setCurrentIndex(1)
    rows = window.panel.rows
    lr = rows["optimizer.learning_rate"].editor.edit
    _type(qtbot, lr, "0")
    qtbot.waitUntil(lambda: rows["optimizer.learning_rate"].level == "error")
    assert "out of range" in rows["optimizer.learning_rate"].message.text()
    assert not window.training.train_button.isEnabled()
    _type(qtbot, lr, "1e-3")
    qtbot.waitUntil(lambda: rows["optimizer.learning_rate"].level is None)

    rows["output.output_dir"].editor.edit.setText(str(tmp_path / "runs"))
    rows["output.output_dir"].editor.changed.emit()
    rows["training.max_steps"].editor.box.setValue(12)
    rows["output.save_every_n_steps"].editor.box.setValue(2)
    rows["output.sample_every_n_steps"].editor.box.setValue(6)
    window.panel.validate_now()
    assert window.state.can_train, [str(f) for f in window.state.findings]

    view = window.training
    qtbot.keyClick(window, Qt.Key.Key_Return, Qt.KeyboardModifier.ControlModifier)
    assert view.is_running and view.header.phases.current.name == "starting engine"
    assert view.samples.title.text() == "Text samples"  # the run's kind before any sample
    qtbot.waitUntil(lambda: view.series.n >= 3, timeout=ENGINE_S)
    log = view.log_view.toPlainText()
    assert "Loading the model…" in log and "Tokenising…" in log and "First step…" in log
    view.stop()
    qtbot.waitUntil(lambda: not view.is_running, timeout=ENGINE_S)
    run = view.run
    assert run.status() == "cancelled", view.log_view.toPlainText()
    stopped = int(view.series.view("steps")[-1])
    assert 3 <= stopped < 12 and run.latest_checkpoint() is not None
    assert view.resume_button.isEnabled() and not view.export_button.isEnabled()

    view.resume_button.click()
    qtbot.waitUntil(lambda: not view.is_running, timeout=ENGINE_S)
    assert RunDir(run.root).status() == "finished", view.log_view.toPlainText()
    steps = view.series.view("steps")
    assert steps[-1] == 12 and len(steps) == 12  # the resumed steps continue the curve
    assert "12 / 12" in view.progress_label.text()
    assert "What colour is a banana?" in view.text_samples.toPlainText()
    assert not view.banner.isVisible()

    with qtbot.waitSignal(view.run_ended, timeout=ENGINE_S):
        view.export_button.click()
    assert view.export_box.isVisible(), view.banner.text.text()
    label = view.export_label.text()
    assert "adapter_model.safetensors" in label
    assert re.search(r"SHA-256 [0-9a-f]{64}", label)
    assert view.export_folder.is_dir()
