import shutil
from pathlib import Path

from PySide6.QtCore import QSettings, Qt

from lora_studio.data.dataset_kind import dataset_kind
from lora_studio.ui.app import MainWindow
from ui_fixtures import fake_engine, no_gpu, window  # noqa: F401  (fixture)

ROOT = Path(__file__).resolve().parents[1]
CHAT = ROOT / "resources" / "demo-text" / "chat.jsonl"
IMAGES = ROOT / "resources" / "demo-images"
ENDED = 20_000


def _use_runs_folder(win, folder):
    editor = win.panel.rows["output.output_dir"].editor
    editor.edit.setText(str(folder))
    editor.changed.emit()
    win.panel.validate_now()


def test_settings_remember_geometry_preset_dataset_and_runs(window, qtbot, tmp_path):
    assert window.preset_bar.save_as("Mine")
    assert window.open_dataset(str(CHAT))
    assert window.tabs.currentWidget() is window.browser
    assert window.state.values["dataset.path"] == str(CHAT)
    window.training.engine_command = fake_engine("--steps", "3")
    _use_runs_folder(window, tmp_path / "runs")
    window.resize(1111, 777)
    window.train()
    qtbot.waitUntil(lambda: not window.training.is_running, timeout=ENDED)
    run = window.recent_runs()[0]
    window.shutdown()
    settings = QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)
    assert settings.value("geometry") == window.saveGeometry()

    again = MainWindow(settings=QSettings(str(tmp_path / "settings.ini"),
                                          QSettings.Format.IniFormat), gpu_read=no_gpu)
    qtbot.addWidget(again)
    try:
        assert again.state.preset_name == "Mine"
        # Restored, not the first-start default (the offscreen screen clamps the size).
        assert (again.width(), again.height()) != (1360, 880)
        assert again.recent_runs() == [run]
        again._fill_recent_menu()
        action = again.recent_menu.actions()[0]
        assert action.text() == Path(run).name
        action.trigger()
        assert again.training.run.root == Path(run) and again.training.series.n == 3
        assert again.browser.text_view.table.path == CHAT
    finally:
        again.shutdown()


def test_keyboard_shortcuts_train_and_stop(window, qtbot, tmp_path):
    window.training.engine_command = fake_engine("--steps", "2000", "--rate", "50")
    _use_runs_folder(window, tmp_path / "runs")
    window.activateWindow()
    qtbot.keyClick(window, Qt.Key.Key_Return, Qt.KeyboardModifier.ControlModifier)
    assert window.training.is_running
    qtbot.waitUntil(lambda: window.training.series.n >= 2, timeout=ENDED)
    qtbot.keyClick(window, Qt.Key.Key_Period, Qt.KeyboardModifier.ControlModifier)
    qtbot.waitUntil(lambda: not window.training.is_running, timeout=ENDED)
    assert "Finished: cancelled" in window.training.log_view.toPlainText()


def test_ctrl_s_saves_the_preset_on_the_parameters_tab(window, qtbot):
    assert window.preset_bar.save_as("Mine")
    window.tabs.setCurrentIndex(1)
    rank = window.panel.rows["network.rank"].editor.box
    rank.setValue(9)
    rank.setFocus()
    qtbot.keyClick(rank, Qt.Key.Key_S, Qt.KeyboardModifier.ControlModifier)
    assert not window.state.dirty
    assert "rank = 9" in window.preset_bar.path.read_text(encoding="utf-8")


def test_dataset_kind_is_told_from_the_path(tmp_path):
    assert dataset_kind(CHAT, "unknown") == "text"
    assert dataset_kind(IMAGES, "image") == "image"
    assert dataset_kind(IMAGES, "text") == "image"  # no .jsonl inside: a folder of images
    (tmp_path / "a.jsonl").write_text("{}\n", encoding="utf-8")
    # Only records: text, whatever the job (the window then offers a text preset).
    assert dataset_kind(tmp_path, "text") == dataset_kind(tmp_path, "image") == "text"
    shutil.copy(next(IMAGES.rglob("*.png")), tmp_path / "1_x.png")  # both: the job decides
    assert dataset_kind(tmp_path, "text") == "text" and dataset_kind(tmp_path, "image") == "image"


def test_dataset_browser_follows_the_jobs_bucket_and_keep_tokens(window):
    window.panel.apply_values({"dataset.resolution": 768, "dataset.min_bucket_reso": 320,
                               "dataset.max_bucket_reso": 1536, "dataset.bucket_reso_steps": 32,
                               "dataset.keep_tokens": 2})
    window.panel.validate_now()
    browser = window.browser
    assert (browser.buckets.resolution, browser.buckets.min_side, browser.buckets.max_side,
            browser.buckets.step) == (768, 320, 1536, 32)
    assert browser.caption_pane.keep_spin.value() == 2
