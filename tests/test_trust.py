"""A shared preset cannot turn on pickle loading, bring its own chat template or write
outside the runs folder without the user saying so: on import (CLI --trust, the
window asks) and in check."""
import tomllib
from pathlib import Path

import pytest

from lora_studio import cli
from lora_studio.config.presets import CONFIG_DIR_ENV, import_preset, read_import, user_dir
from lora_studio.config.trust import output_name_problem, risks
from ui_fixtures import window  # noqa: F401  (fixture)

TEMPLATE = "{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}"
HOSTILE = f'''[meta]
name = "Free style"
[model]
allow_pickle = true
[dataset]
chat_template = """{TEMPLATE}"""
[network]
rank = 8
[output]
output_dir = "~/../../etc"
output_name = "CON"
'''
RISKY = ["model.allow_pickle", "dataset.chat_template", "output.output_dir", "output.output_name"]


@pytest.fixture(autouse=True)
def config_dir(tmp_path, monkeypatch):
    folder = tmp_path / "config dir ü"
    monkeypatch.setenv(CONFIG_DIR_ENV, str(folder))
    return folder


@pytest.fixture
def hostile(tmp_path):
    path = tmp_path / "partagé" / "free style.toml"
    path.parent.mkdir()
    path.write_text(HOSTILE, encoding="utf-8")
    return path


def test_each_risky_setting_is_named_and_plain_ones_are_not():
    data = tomllib.loads(HOSTILE)
    assert [r.path for r in risks(data)] == RISKY
    for out_dir in ("runs", "my runs/sub dir", "runs/..x", "Läufe"):
        assert risks({"output": {"output_dir": out_dir}}) == [], out_dir
    for name in ("my_lora", "console", "con_art", "lpt10", "a.b", "Nul-style"):
        assert output_name_problem(name) is None, name
    assert risks({"model": {"allow_pickle": False}, "dataset": {"chat_template": "none"}}) == []


def _saved(path: Path) -> dict:
    return tomllib.loads(path.read_text(encoding="utf-8"))


def test_import_leaves_risky_settings_out_unless_trusted(hostile):
    result = import_preset(hostile)
    saved = _saved(result.path)
    assert result.left_out == RISKY
    assert saved["network"] == {"rank": 8} and "model" not in saved and "dataset" not in saved
    assert "output" not in saved
    left = {f.path: f for f in result.findings if f.message.startswith("Left out")}
    assert set(left) == set(RISKY) and all("--trust" in f.hint for f in left.values())

    trusted = import_preset(hostile, name="kept", trust=True)
    saved = _saved(trusted.path)
    assert trusted.left_out == []
    assert saved["model"]["allow_pickle"] is True and saved["dataset"]["chat_template"] == TEMPLATE
    assert saved["output"] == {"output_dir": "~/../../etc", "output_name": "CON"}
    assert {f.path for f in trusted.findings if f.message.startswith("Kept")} == set(RISKY)


def test_cli_import_needs_trust_to_keep_them(hostile, capsys):
    # Written all the same; exit 1 as check would: it names no model or dataset yet.
    assert cli.main(["presets", "import", str(hostile), "--name", "plain"]) == 1
    out = capsys.readouterr().out
    assert "Left out: It turns on 'Allow pickle checkpoints'" in out and "--trust" in out
    assert cli.main(["presets", "import", str(hostile), "--name", "trusted", "--trust"]) == 1
    assert "Kept because you trust the file" in capsys.readouterr().out


@pytest.mark.parametrize("answer,kept", [(True, True), (False, False), (None, None)])
def test_window_asks_before_keeping_them(window, hostile, monkeypatch, answer, kept):  # noqa: F811
    asked = []
    monkeypatch.setattr(window.preset_bar, "ask_trust",
                        lambda pending: asked.append([r.path for r in pending.risks]) or answer)
    assert window.preset_bar.import_file(hostile) is (answer is not None)
    assert asked == [RISKY]
    if kept is None:
        assert not list(user_dir().glob("*.toml"))
        return
    assert window.state.values["model.allow_pickle"] is kept
    assert window.state.values["output.output_dir"] == ("~/../../etc" if kept else "runs")


def test_the_question_lists_every_setting(window, hostile, monkeypatch, qtbot):  # noqa: F811
    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication, QMessageBox
    seen = []

    def answer():
        box = next(w for w in QApplication.topLevelWidgets() if isinstance(w, QMessageBox)
                   and w.isVisible())
        seen.append(box.informativeText())
        next(b for b in box.buttons() if b.text() == "Leave them out").click()
    QTimer.singleShot(200, answer)
    assert window.preset_bar.ask_trust(read_import(hostile)) is False
    assert all(path in seen[0] for path in RISKY)
