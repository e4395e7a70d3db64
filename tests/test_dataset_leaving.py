"""Opening another dataset folder: leftover temp files of a killed save are cleared,
and edits that are not on disk are never dropped without asking."""
import os
import time
from pathlib import Path

import pytest

from lora_studio.data.leftovers import STALE_AFTER_S, remove_stale_temp_files
from lora_studio.data.session import CaptionSession
from lora_studio.fsutil import _temp_name, atomic_write_text, is_temp_name

OLD = time.time() - STALE_AFTER_S - 60


def aged(path: Path, when: float = OLD) -> Path:
    os.utime(path, (when, when))
    return path


def test_temp_name_pattern_matches_what_the_atomic_writer_makes(tmp_path):
    for name in ("a.txt", "img 0.txt", "ünï çode.caption", ".hidden.txt"):
        assert is_temp_name(_temp_name(tmp_path / name).name)
    for name in (".a.txt.tmp", "a.txt.0123456789abcdef.tmp", ".a.txt.0123456789ABCDEF.tmp",
                 ".a.txt.0123456789abcdef.tmp.bak", ".a.txt.0123456789abcde.tmp", "a.txt"):
        assert not is_temp_name(name), name


def test_only_old_leftovers_of_the_exact_pattern_are_removed(tmp_path):
    atomic_write_text(tmp_path / "a.txt", "cat")
    stale = tmp_path / ".a.txt.0123456789abcdef.tmp"
    stale.write_text("half a capt")
    aged(stale)
    fresh = tmp_path / ".b.txt.fedcba9876543210.tmp"  # a save in progress right now
    fresh.write_text("being written")
    keep = [tmp_path / name for name in (".a.txt.tmp", "notes.0123456789abcdef.tmp",
                                         ".a.txt.0123456789abcdef.tmp.keep")]
    for path in keep:
        path.write_text("mine")
        aged(path)
    folder_like = tmp_path / ".c.txt.00000000000000aa.tmp"  # a folder, not a write's file
    folder_like.mkdir()
    aged(folder_like)
    sub = tmp_path / "10_sks dog"
    sub.mkdir()
    deep = sub / ".d.txt.1111111111111111.tmp"
    deep.write_text("x")
    aged(deep)
    removed = remove_stale_temp_files([tmp_path, sub, tmp_path / "missing"])
    assert sorted(removed) == sorted([stale, deep])
    assert not stale.exists() and not deep.exists()
    assert fresh.exists() and folder_like.is_dir() and all(p.exists() for p in keep)
    assert (tmp_path / "a.txt").read_text() == "cat"


def session_of(tmp_path, captions):
    images, caps = [], []
    for i, text in enumerate(captions):
        image = tmp_path / f"img {i}.png"
        image.write_bytes(b"x")
        caps.append(image.with_suffix(".txt"))
        caps[-1].write_text(text, encoding="utf-8")
        images.append(image)
    return CaptionSession(images, caps), caps


def test_leaving_with_a_conflict_saves_discards_or_stays(tmp_path):
    s, caps = session_of(tmp_path, ["a", "b"])
    assert s.unsaved_summary() == "" and s.leave("cancel")[0]
    s.set_text(0, "mine")
    caps[0].write_text("theirs")
    assert 0 in s.save().conflicts
    assert "changed on disk by another program" in s.unsaved_summary()
    assert s.leave("cancel")[0] is False and caps[0].read_text() == "theirs" and s.dirty == {0}
    assert s.leave("discard")[0] is True and caps[0].read_text() == "theirs"
    may, report = s.leave("save")
    assert may and report.saved == [0] and caps[0].read_text() == "mine" and not s.dirty


def test_leaving_cannot_save_over_an_unreadable_caption(tmp_path):
    image, caption = tmp_path / "img.png", tmp_path / "img.txt"
    image.write_bytes(b"x")
    caption.mkdir()  # reading it fails, as a locked file would on Windows
    s = CaptionSession([image], [caption])
    assert s.read_errors
    s.set_text(0, "mine")
    assert "could not be read" in s.unsaved_summary()
    may, report = s.leave("save")
    assert not may and 0 in report.errors and caption.is_dir()
    assert s.leave("discard")[0]


# --- the browser ---------------------------------------------------------------------

pytest.importorskip("pytestqt")
from PySide6.QtWidgets import QMessageBox  # noqa: E402

from test_dataset_browser import _make_dataset, _select, browser  # noqa: E402,F401
from ui_fixtures import answer_questions  # noqa: E402


@pytest.fixture
def conflicted(browser):
    b, root = browser
    key = _select(b, "img 0.jpg")
    (root / "img 0.txt").write_text("edited in another program")
    b.editor.setPlainText("mine")
    _select(b, "img 2.jpg")  # the autosave meets the change on disk
    assert set(b.session.conflicts) == {key}
    return b, root, key


@pytest.mark.parametrize("button, on_disk, opened", [
    (QMessageBox.StandardButton.Cancel, "edited in another program", False),
    (QMessageBox.StandardButton.Discard, "edited in another program", True),
    (QMessageBox.StandardButton.Save, "mine\n", True),
])
def test_opening_another_folder_asks_about_conflicts(conflicted, tmp_path, monkeypatch,
                                                     button, on_disk, opened):
    b, root, key = conflicted
    other = _make_dataset(tmp_path / "other")
    asked = answer_questions(monkeypatch, button)
    assert b.open_folder(other) is opened
    assert len(asked) == 1 and "changed on disk by another program" in asked[0]
    assert (root / "img 0.txt").read_text() == on_disk
    assert (b.root == other) is opened
    if not opened:
        assert b.session.texts[key] == "mine" and "Kept" in b.status.text()


def test_no_question_when_everything_is_saved(browser, tmp_path, monkeypatch):
    b, _root = browser
    asked = answer_questions(monkeypatch, QMessageBox.StandardButton.Cancel)
    _select(b, "img 0.jpg")
    b.editor.setPlainText("saved on leaving")
    assert b.open_folder(_make_dataset(tmp_path / "other")) and not asked


def test_opening_a_folder_clears_old_leftovers_and_says_so(browser, tmp_path):
    b, _root = browser
    other = _make_dataset(tmp_path / "other")
    leftovers = [other / ".img 0.txt.0123456789abcdef.tmp",
                 other / "3_sks cat" / ".img 4.txt.abcdefabcdefabcd.tmp"]
    kept = other / ".img 0.txt.tmp"
    for path in [*leftovers, kept]:
        path.write_text("half")
        aged(path)
    assert b.open_folder(other)
    assert not any(p.exists() for p in leftovers) and kept.exists()
    assert "Removed 2 leftover temp file(s)" in b.status.text()
