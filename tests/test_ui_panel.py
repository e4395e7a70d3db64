import json

from PySide6.QtCore import QMimeData, QPointF, Qt, QUrl
from PySide6.QtGui import QDropEvent
from PySide6.QtWidgets import QCheckBox, QComboBox, QLineEdit, QPlainTextEdit, QSpinBox, QToolButton

from lora_studio.config.fields import SPECS
from lora_studio.config.parse import parse_job
from lora_studio.ui.panel_state import PanelState
from lora_studio.ui.param_panel import ParamPanel
from ui_fixtures import window  # noqa: F401  (fixture)


def test_panel_state_tracks_changes_without_qt():
    state = PanelState(checker=parse_job)
    state.load({"network": {"rank": 8}}, name="mine")
    assert state.title() == "mine" and not state.dirty
    state.set("network.rank", 32)
    assert state.dirty_paths() == ["network.rank"] and state.title() == "mine *"
    assert state.to_data()["network"]["rank"] == 32
    state.set("optimizer.learning_rate", 0.0)
    state.validate()
    assert [f.path for f in state.findings if f.level == "error"] == ["optimizer.learning_rate"]
    assert not state.can_train
    state.revert()
    assert state.values["network.rank"] == 8 and not state.dirty
    assert state.validate() == [] and state.can_train


def test_panel_state_hides_fields_of_the_other_kind():
    state = PanelState(checker=parse_job)
    assert state.applies(SPECS["dataset.resolution"])  # family 'auto': everything applies
    state.set("model.family", "text")
    assert not state.applies(SPECS["dataset.resolution"])
    assert state.applies(SPECS["dataset.max_seq_length"])
    state.set("model.family", "sdxl")
    assert state.kind == "image" and not state.applies(SPECS["model.load_in_4bit"])


def test_panel_is_generated_from_the_specs(qtbot):
    panel = ParamPanel(PanelState(checker=parse_job))
    qtbot.addWidget(panel)
    panel.show()
    assert set(panel.rows) == set(SPECS)
    assert {box.title() for box in panel.groups.values()} == {s.group for s in SPECS.values()}
    rank = panel.rows["network.rank"].editor.focus_widget()
    assert isinstance(rank, QSpinBox) and (rank.minimum(), rank.maximum()) == (1, 1024)
    optimizer = panel.rows["optimizer.optimizer"].editor.focus_widget()
    assert isinstance(optimizer, QComboBox)
    assert [optimizer.itemText(i) for i in range(optimizer.count())] == \
        list(SPECS["optimizer.optimizer"].choices)
    assert isinstance(panel.rows["optimizer.learning_rate"].editor.focus_widget(), QLineEdit)
    assert isinstance(panel.rows["training.gradient_checkpointing"].editor.focus_widget(), QCheckBox)
    assert isinstance(panel.rows["network.target_modules"].editor.focus_widget(), QPlainTextEdit)
    assert panel.rows["dataset.path"].editor.findChild(QToolButton) is not None
    # Advanced fields appear only on request.
    assert not panel.rows["training.seed"].isVisible()
    panel.advanced_box.setChecked(True)
    assert panel.rows["training.seed"].isVisible()
    # A text job hides the image-only fields.
    family = panel.rows["model.family"].editor.focus_widget()
    family.setCurrentText("text")
    assert not panel.rows["dataset.resolution"].isVisible()
    assert panel.rows["dataset.max_seq_length"].isVisible()


def test_lines_and_optional_float_editors_give_schema_values(qtbot):
    state = PanelState(checker=parse_job)
    panel = ParamPanel(state)
    qtbot.addWidget(panel)
    modules = panel.rows["network.target_modules"].editor.focus_widget()
    modules.setPlainText("q_proj\n\n  v_proj \r\n")
    assert state.values["network.target_modules"] == ["q_proj", "v_proj"]
    unet_lr = panel.rows["optimizer.unet_lr"].editor.focus_widget()
    # an empty optional field says what it means
    assert unet_lr.placeholderText() == "same as learning rate"
    assert panel.rows["optimizer.beta2"].editor.focus_widget().placeholderText() == \
        "the optimizer's own"
    qtbot.keyClicks(unet_lr, "5e-5")
    assert state.values["optimizer.unet_lr"] == 5e-5
    unet_lr.selectAll()
    qtbot.keyClick(unet_lr, Qt.Key.Key_Backspace)
    assert state.values["optimizer.unet_lr"] is None


def _row(win, path):
    return win.panel.rows[path]


def test_break_a_field_then_fix_it(window, qtbot):
    assert window.state.preset_name.startswith("Demo: tiny text")
    assert window.state.can_train and window.training.train_button.isEnabled()
    window.tabs.setCurrentIndex(1)
    lr = _row(window, "optimizer.learning_rate").editor.focus_widget()
    lr.clear()
    qtbot.keyClicks(lr, "0")
    assert window.panel.pending()  # debounced, not validated on every key press
    qtbot.waitUntil(lambda: _row(window, "optimizer.learning_rate").level == "error")
    row = _row(window, "optimizer.learning_rate")
    assert row.message.isVisible() and "Learning rate" in row.message.text()
    assert "between" in row.message.text()  # the hint travels with the message
    assert not window.training.train_button.isEnabled()
    assert not window.params_train_button.isEnabled()
    assert "1 error" in window.findings_label.text()
    summary = window.panel.summary.item(0)
    assert summary.data(Qt.ItemDataRole.UserRole) == "optimizer.learning_rate"
    window.panel._focus_item(summary)
    assert lr.hasFocus()
    window.train()  # refused, focus goes to the first error
    assert window.training.run is None
    lr.clear()
    qtbot.keyClicks(lr, "2e-4")
    qtbot.waitUntil(lambda: _row(window, "optimizer.learning_rate").level is None)
    assert not row.message.isVisible()
    assert window.training.train_button.isEnabled()
    assert window.state.values["optimizer.learning_rate"] == 2e-4


def test_a_warning_is_amber_and_does_not_block(window, qtbot):
    window.tabs.setCurrentIndex(1)
    alpha = _row(window, "network.alpha").editor.focus_widget()
    alpha.setValue(64.0)  # rank 4: alpha 16x the rank
    qtbot.waitUntil(lambda: _row(window, "network.alpha").level == "warning")
    assert "#f0a000" in _row(window, "network.alpha").styleSheet()
    assert _row(window, "network.alpha").message.isVisible()
    assert window.state.can_train and window.training.train_button.isEnabled()


def test_unknown_keys_of_an_imported_preset_are_listed(window, tmp_path):
    (tmp_path / "p.toml").write_text('[meta]\nname = "odd"\n[network]\nrank = 8\nbogus = 1\n',
                                     encoding="utf-8")
    assert window.preset_bar.import_file(tmp_path / "p.toml")
    texts = [window.panel.summary.item(i).text() for i in range(window.panel.summary.count())]
    assert any("network.bogus" in t and t.startswith("WARNING") for t in texts)
    assert window.state.values["network.rank"] == 8


def test_preset_marker_revert_and_save_as(window, qtbot, tmp_path):
    bar = window.preset_bar
    name = window.state.preset_name
    assert bar.title.text() == name and not bar.revert_button.isEnabled()
    rank = _row(window, "network.rank").editor.focus_widget()
    original = rank.value()
    rank.setValue(original + 3)
    assert bar.title.text() == f"{name} *" and bar.revert_button.isEnabled()
    assert not bar.save_button.isEnabled()  # built-in presets are saved as a copy
    bar.revert()
    assert rank.value() == original and bar.title.text() == name
    rank.setValue(6)
    assert bar.save_as("My demo")
    assert bar.title.text() == "My demo" and bar.path.parent.name == "presets"
    assert "rank = 6" in bar.path.read_text(encoding="utf-8")
    rank.setValue(7)
    assert bar.save_button.isEnabled() and bar.save()
    assert "rank = 7" in bar.path.read_text(encoding="utf-8")
    left_out = bar.export_to(tmp_path / "shared.toml")
    assert "dataset.path" in left_out
    assert "dataset" not in (tmp_path / "shared.toml").read_text(encoding="utf-8").split("[meta]")[0]


def test_drop_a_kohya_json_on_the_window(window, qtbot, tmp_path):
    config = tmp_path / "kohya config.json"
    config.write_text(json.dumps({"network_dim": 24, "network_alpha": 12, "learning_rate": "0.0002",
                                  "output_name": "from_kohya", "sdxl": True,
                                  "some_unknown_flag": True}), encoding="utf-8")
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(config))])
    event = QDropEvent(QPointF(10, 10), Qt.DropAction.CopyAction, mime,
                       Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier)
    window.dropEvent(event)
    assert window.state.values["network.rank"] == 24
    assert window.state.values["optimizer.learning_rate"] == 2e-4
    assert _row(window, "network.rank").editor.value() == 24
    assert window.state.preset_name == "from_kohya"
    assert any("some_unknown_flag" in f.message for f in window.state.findings)


def test_a_broken_preset_file_is_a_message_not_a_crash(window, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[network\nrank = 4\n", encoding="utf-8")
    before = dict(window.state.values)
    assert not window.preset_bar.import_file(bad)
    assert "line 1" in window.status_line.full_text
    assert window.state.values == before


def test_letters_in_a_number_field_show_the_inline_message(qtbot):
    panel = ParamPanel(PanelState(checker=parse_job))
    qtbot.addWidget(panel)
    panel.show()
    for path, typed, kind in (("network.rank", "abc", "int"), ("network.alpha", "1x", "float"),
                              ("optimizer.learning_rate", "abc", "float")):
        row = panel.rows[path]
        box = row.editor.focus_widget()
        box.setFocus()
        (box.lineEdit() if hasattr(box, "lineEdit") else box).selectAll()
        qtbot.keyClicks(box, typed)
        assert box.text().endswith(typed)  # the letters stay where they were typed
        qtbot.waitUntil(lambda: row.level == "error")
        assert row.message.isVisible()
        assert f"'{typed}' is not a valid {kind}" in row.message.text()
    rank = panel.rows["network.rank"]  # left for the next box: back to its number, no finding
    assert rank.editor.focus_widget().text() == "16" and rank.level is None
    assert panel.state.values["network.rank"] == 16


def test_import_names_the_errors_check_finds(window, tmp_path):
    """No "Imported" as if ready, then errors: the message counts what the findings list."""
    from lora_studio.config.presets import read_preset
    from lora_studio.cli import preset_findings
    (tmp_path / "p.toml").write_text('[meta]\nname = "far away"\n[model]\nfamily = "text"\n'
                                     'path = "no such model"\n[dataset]\npath = "missing.jsonl"\n',
                                     encoding="utf-8")
    said = []
    window.preset_bar.message.connect(said.append)
    assert window.preset_bar.import_file(tmp_path / "p.toml")
    errors = {f.path for f in window.state.findings if f.level == "error"}
    assert {"model.path", "dataset.path"} <= errors
    assert said[-1].startswith("Imported p.toml as 'far away'")
    assert f"{len(errors)} error(s) to fix before training" in said[-1]
    checked = preset_findings(read_preset(window.preset_bar.path), [], window.gpu)
    assert {f.path for f in checked if f.level == "error"} == errors
