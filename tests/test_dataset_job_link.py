"""One dataset, wherever it is opened: the Dataset tab and the job's dataset.path
follow each other, a dataset of the other kind than the preset gets a banner that
offers a preset that fits, and a kohya repeat folder opened one level off gets a
banner that opens the right one."""
import shutil
from pathlib import Path

import pytest

pytest.importorskip("pytestqt")

from ui_fixtures import window  # noqa: E402,F401  (fixture)

ROOT = Path(__file__).resolve().parents[1]
CHAT = ROOT / "resources" / "demo-text" / "chat.jsonl"
DEMO_IMAGES = ROOT / "resources" / "demo-images"  # holds 4_demo/


@pytest.fixture
def project(tmp_path):
    """project/img/4_demo/ with the demo images: kohya's layout, img being the dataset folder."""
    img = tmp_path / "my project ü" / "img"
    shutil.copytree(DEMO_IMAGES, img)
    return img.parent


def _type_dataset_path(win, qtbot, text):
    editor = win.panel.rows["dataset.path"].editor
    editor.edit.setText(str(text))
    editor.changed.emit()
    assert win.dataset_path_timer.isActive()  # debounced: typing goes on
    qtbot.waitUntil(lambda: not win.dataset_path_timer.isActive())


def _panel_value(win) -> str:
    return win.panel.rows["dataset.path"].editor.value()


def test_a_folder_opened_in_the_browser_is_the_jobs_dataset(window, project):
    img = project / "img"
    assert window.browser.open_folder(img)
    assert window.state.values["dataset.path"] == str(img) == _panel_value(window)
    assert window.preset_bar.title.text().endswith("*")
    assert window.browser.open_text_dataset(CHAT)
    assert window.state.values["dataset.path"] == str(CHAT) == _panel_value(window)


def test_a_dataset_typed_in_the_parameters_opens_in_the_browser(window, qtbot, project):
    _type_dataset_path(window, qtbot, CHAT)
    assert window.browser.text_view.table.path == CHAT
    _type_dataset_path(window, qtbot, project / "img")
    assert window.browser.root == project / "img" and window.browser.wait_for_captions()
    _type_dataset_path(window, qtbot, project / "no such folder")  # half typed: nothing happens
    assert window.browser.root == project / "img"
    assert window.state.values["dataset.path"] == str(project / "no such folder")
    window.panel.rows["network.rank"].editor.box.setValue(9)  # another field: opens nothing
    assert not window.dataset_path_timer.isActive()


def test_a_typed_dataset_does_not_lose_unsaved_captions(window, qtbot, project, monkeypatch):
    b = window.browser
    b.autosave = False
    assert b.open_folder(project / "img") and b.wait_for_captions()
    b.editor.setPlainText("an edit not saved yet")
    asked = []
    monkeypatch.setattr(b, "ask_unsaved", lambda summary, action: asked.append(action) or "cancel")
    _type_dataset_path(window, qtbot, project / "img" / "4_demo")
    assert asked == ["opening another folder"] and b.root == project / "img"
    assert "an edit not saved yet" in b.session.texts and b.session.dirty


def test_images_under_a_text_preset_offer_an_image_preset(window, qtbot, project):
    assert window.state.kind == "text"  # the first-start default: the text demo
    img = project / "img"
    assert window.browser.open_folder(img)
    banner = window.browser.kind_banner
    assert not banner.isHidden()
    assert "an image dataset" in banner.label.text() and "trains text models" in banner.label.text()
    assert banner.button.text() == "Use 'Demo: tiny image model (CPU)'"
    banner.button.click()
    assert window.state.kind == "image" and window.state.preset_name == "Demo: tiny image model (CPU)"
    assert window.state.values["dataset.path"] == str(img) == _panel_value(window)
    assert banner.isHidden()
    assert window.browser.open_text_dataset(CHAT)  # and back: a .jsonl under the image preset
    assert not banner.isHidden() and banner.button.text() == "Use 'Demo: tiny text model (CPU)'"


def test_kind_that_fits_shows_no_banner(window, project):
    assert window.browser.open_text_dataset(CHAT)
    assert window.browser.kind_banner.isHidden()


@pytest.mark.parametrize("opened,fix", [("img/4_demo", "img"), (".", "img")],
                         ids=["concept-folder", "grandparent"])
def test_repeat_folder_opened_one_level_off_offers_the_right_one(window, qtbot, project, opened, fix):
    b = window.browser
    assert window.use_preset_for_dataset(ROOT / "presets" / "demo-image-tiny.toml")
    assert b.open_folder(project / opened) and b.wait_for_captions()
    banner = b.level_banner
    assert not banner.isHidden()
    assert "'4_demo', which means 4 repeats" in banner.label.text()
    images = len(b.session)
    assert banner.button.text() == f"Open 'img' ({4 * images} samples per epoch)"
    banner.button.click()
    assert b.root == project / fix and b.wait_for_captions()
    assert window.state.values["dataset.path"] == str(project / fix) == _panel_value(window)
    assert banner.isHidden() and b.items[0].repeats == 4
    assert f"{4 * images} samples per epoch" in b.status.text()


def test_the_right_folder_level_shows_no_banner(window, project):
    assert window.browser.open_folder(project / "img")
    assert window.browser.level_banner.isHidden()


def test_a_loaded_preset_opens_its_own_dataset_unchanged(window):
    from lora_studio.config.presets import builtin_dir
    assert window.preset_bar.load(builtin_dir() / "demo-text-tiny.toml")
    assert window.browser.text_view.table.path.resolve() == CHAT.resolve()
    assert window.state.values["dataset.path"] == "../resources/demo-text/chat.jsonl"
    assert not window.state.dirty_paths()  # opening the preset's own dataset changes nothing
    assert window.browser.open_folder(DEMO_IMAGES / "4_demo")  # another one: now it is changed
    assert window.state.dirty_paths() == ["dataset.path"]


def test_at_start_the_presets_dataset_wins_over_the_last_one_opened(qtbot, tmp_path, monkeypatch,
                                                                    project):
    from PySide6.QtCore import QSettings

    from lora_studio.ui.app import MainWindow
    from ui_fixtures import no_gpu
    monkeypatch.setenv("LORA_STUDIO_CONFIG_DIR", str(tmp_path / "config"))
    settings = QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)
    settings.setValue("last_preset", "demo-text-tiny")
    settings.setValue("last_dataset", str(project / "img"))
    win = MainWindow(settings=settings, gpu_read=no_gpu)
    qtbot.addWidget(win)
    try:
        assert win.browser.text_view.table.path.resolve() == CHAT.resolve()
        assert not win.state.dirty_paths()
    finally:
        win.shutdown()
