"""Auto-captioning from the Dataset tab: the choices of images, the dialog's request, a
run through the captioning process landing as one undoable edit, Cancel, and a
missing model's download command shown before anything runs."""
import os
from pathlib import Path

import pytest

pytest.importorskip("pytestqt")

from lora_studio.data.caption_scope import caption_scopes  # noqa: E402
from tests.shown_browser import shown_browser  # noqa: E402
from tests.tiny_captioners import BLUE_TAGS, RED_TAGS, tiny_tagger, write_image  # noqa: E402

SHOTS = Path(os.environ.get("LORA_STUDIO_SHOTS", "/tmp"))


@pytest.fixture(scope="module")
def tagger_dir(tmp_path_factory):
    return tiny_tagger(tmp_path_factory.mktemp("models") / "wd tagger")


def test_scopes_offer_the_selection_shown_folders_and_all():
    scopes = caption_scopes([2], [0, 2], [("", [0, 1]), ("3_cat", [2])], 3)
    assert scopes == [("Selected images (1)", [2]), ("Shown images (2)", [0, 2]),
                      ("Folder (top folder) (2)", [0, 1]), ("Folder 3_cat (1)", [2]),
                      ("All images (3)", [0, 1, 2])]
    assert caption_scopes([], [0, 1], [("", [0, 1])], 2) == [("All images (2)", [0, 1])]


def test_a_run_lands_as_one_undoable_edit(qtbot, tmp_path, tagger_dir):
    root = tmp_path / "my dataset ü"
    for name, colour in (("a red.png", (255, 0, 0)), ("b blue.png", (0, 0, 255)),
                         ("c red.png", (250, 10, 0))):
        write_image(root / name, colour)
    (root / "a red.txt").write_bytes(b"mine, red background\r\n")
    b = shown_browser(qtbot, root)
    dialog = b.show_auto_caption()
    assert [dialog.scope.itemText(i) for i in range(dialog.scope.count())][-1] == "All images (3)"
    dialog.model.setEditText(str(tagger_dir))
    assert "Found in" in dialog.model_status.text()
    dialog.trigger.setText("ohwx")
    dialog.mode.setCurrentIndex(dialog.mode.findData("append"))
    dialog.exclude.setText("watermark")
    dialog.scope.setCurrentIndex(dialog.scope.count() - 1)
    assert dialog.start()
    assert not dialog.run_button.isEnabled() and dialog.cancel_button.isEnabled()
    dialog.grab().save(str(SHOTS / "caption_dialog_running.png"))
    assert dialog.wait()
    assert dialog.tally.status == "completed", dialog.status.text()
    assert dialog.status.text().startswith("Captioning done: 3 caption(s) written")
    dialog.grab().save(str(SHOTS / "caption_dialog_done.png"))

    texts = dict(zip((p.name for p in b.session.image_paths), b.session.texts))
    assert texts == {"a red.png": "ohwx, mine, red background, ^_^, simple background",
                     "b blue.png": "ohwx, " + BLUE_TAGS.replace(", watermark", ""),
                     "c red.png": "ohwx, " + RED_TAGS.replace(", watermark", "")}
    assert not b.session.dirty and "Ctrl+Z undoes it" in b.status.text()
    assert (root / "a red.txt").read_bytes() == \
        b"ohwx, mine, red background, ^_^, simple background\r\n"
    b.grab().save(str(SHOTS / "caption_browser_after.png"))

    dialog.close()
    again = b.show_auto_caption()  # the same options for the next run
    assert again is dialog and dialog.trigger.text() == "ohwx"
    assert dialog.last.text().startswith("c red.txt: ohwx")
    dialog.close()
    b.undo()  # the whole run, in one step, saved back (autosave)
    assert b.session.texts == ["mine, red background", "", ""] and not b.session.dirty
    assert (root / "a red.txt").read_bytes() == b"mine, red background\r\n"
    assert not (root / "b blue.txt").exists() and not (root / "c red.txt").exists()  # as before
    assert not b.session.undo_stack.can_undo()
    b.redo()
    assert (root / "c red.txt").read_text() == b.session.texts[2] != ""
    b.shutdown()


def test_cancel_keeps_what_was_written_as_one_edit(qtbot, tmp_path, tagger_dir):
    root = tmp_path / "many"
    for i in range(120):
        write_image(root / f"img {i:03d}.png", (0, 0, 255))
    b = shown_browser(qtbot, root)
    dialog = b.show_auto_caption()
    dialog.model.setEditText(str(tagger_dir))
    dialog.scope.setCurrentIndex(dialog.scope.count() - 1)
    seen = []

    def cancel_on_first(ev, original=dialog._event):
        original(ev)
        seen.append(ev["type"])
        if seen.count("captioned") == 1:
            dialog.grab().save(str(SHOTS / "caption_dialog_progress.png"))
            dialog.cancel()
    dialog.runner.on_event = cancel_on_first
    assert dialog.start()
    assert dialog.wait()
    assert dialog.tally.status == "cancelled"
    written = len(dialog.tally.written)
    assert 1 <= written < 120
    assert len([p for p in root.glob("*.txt")]) == written
    assert not [p for p in root.iterdir() if p.name.endswith(".tmp")]
    assert sum(1 for t in b.session.texts if t) == written
    b.undo()
    assert not any(b.session.texts) and not list(root.glob("*.txt"))
    b.shutdown()


def test_a_missing_model_shows_the_download_command_and_runs_nothing(qtbot, tmp_path,
                                                                     monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty cache"))
    import huggingface_hub.constants as hub_constants
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "empty cache"))
    write_image(tmp_path / "ds" / "x.png", (1, 2, 3))
    b = shown_browser(qtbot, tmp_path / "ds")
    dialog = b.show_auto_caption()
    dialog.kind.setCurrentIndex(dialog.kind.findData("captioner"))
    dialog.model.setEditText("Salesforce/blip-image-captioning-base")
    assert "hf download Salesforce/blip-image-captioning-base" in dialog.model_status.text()
    assert not dialog.start() and not dialog.runner.running
    assert dialog.status.text().startswith("Nothing was run")
    dialog.grab().save(str(SHOTS / "caption_dialog_missing.png"))
    b.shutdown()


def test_the_dialog_loads_no_ml_library_in_the_window(tmp_path):
    import subprocess
    import sys
    import textwrap
    write_image(tmp_path / "ds" / "x.png", (1, 2, 3))
    code = textwrap.dedent(f"""
        import os, sys
        os.environ["QT_QPA_PLATFORM"] = "offscreen"
        from PySide6.QtWidgets import QApplication
        app = QApplication([])
        from lora_studio.ui.dataset_browser import DatasetBrowser
        b = DatasetBrowser()
        b.open_folder({str(tmp_path / "ds")!r})
        b.wait_for_captions()
        dialog = b.show_auto_caption()
        dialog.kind.setCurrentIndex(1)
        dialog.model.setEditText("Salesforce/blip-image-captioning-base")
        print("HEAVY", [m for m in ("torch", "transformers", "onnxruntime", "diffusers")
                        if m in sys.modules])
        b.shutdown()
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, cwd=Path(__file__).resolve().parents[1])
    assert "HEAVY []" in out.stdout, out.stdout + out.stderr


def test_the_dialog_builds_the_request_from_its_options(qtbot, tmp_path):
    from lora_studio.ui.caption_dialog import CaptionDialog
    dialog = CaptionDialog([("All images (1)", [0])], lambda keys: ([], []), lambda t: None)
    qtbot.addWidget(dialog)
    dialog.exclude.setText(" watermark,, signature ")
    dialog.underscores.setChecked(False)
    dialog.trigger.setText(" ohwx ")
    dialog.mode.setCurrentIndex(dialog.mode.findData("overwrite"))
    req = dialog.request(["a.png"], ["a.txt"])
    assert (req.kind, req.exclude, req.underscores_to_spaces, req.trigger, req.mode) == \
        ("tagger", ["watermark", "signature"], False, "ohwx", "overwrite")
    dialog.kind.setCurrentIndex(dialog.kind.findData("captioner"))
    dialog.task.setCurrentIndex(dialog.task.findData(""))
    assert dialog.task.currentText() == "(no prompt)" and dialog.request([], []).task == ""
    dialog.task.setEditText("a watercolour of")
    assert dialog.request([], []).task == "a watercolour of"
    dialog.task.setCurrentIndex(dialog.task.findData("<CAPTION>"))
    assert dialog.request([], []).task == "<CAPTION>"
