"""The image Playground tab: its logic without a window (ui/image_state.py, saved
sessions), then the view drawing through the real playground process on the tiny SD
model: one image, an XY grid whose strength-0 column is the base, a saved grid that
reopens as it was, and Try it from the Runs tab."""
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from PySide6.QtCore import Qt

from lora_studio.errors import HintedError
from lora_studio.runs.playground_protocol import reply
from lora_studio.runs.playground_sessions import read_session, save_session
from lora_studio.ui.image_state import GridProblem, ImageSession, base_kind

ROOT = Path(__file__).resolve().parents[1]
SD = ROOT / "resources" / "tiny-sd"
PROMPTS = ["a red plum", "a green pear"]


def image_session(*adapters):
    s = ImageSession()
    s.set_base(str(SD))
    names = [s.add_adapter(a, f"/loras/{a}") for a in adapters]
    s.set_active(names)
    return s, names


def test_generate_loads_the_ticked_loras_once_and_draws_at_the_strength():
    s, names = image_session("step-2", "final")
    s.settings.update(prompt="plum", strength=0.6, steps=3, width=64, height=64)
    reqs = s.generate()
    assert [r["type"] for r in reqs] == ["load_adapter", "load_adapter", "generate"]
    gen = reqs[-1]
    assert gen["adapters"] == names and gen["weights"] == [0.6, 0.6] and gen["prompt"] == "plum"
    assert s.generate() == []  # one drawing at a time
    s.on_event(reply("image", id=gen["id"], path="/tmp/x.png", parameters="plum", seconds=1))
    assert s.pending is None and s.image_path == "/tmp/x.png"
    assert [r["type"] for r in s.generate()] == ["generate"]


def test_a_lora_that_fails_to_load_says_why_and_loads_again_next_time():
    s, _ = image_session("bad")
    gen = s.generate()[-1]
    s.on_event(reply("error", id="iload:bad", kind="config", message="bad.safetensors is not "
                     "a LoRA of this model.", hint="Load the base it was trained on."))
    s.on_event(reply("error", id=gen["id"], kind="request", message="No adapter named 'bad'",
                     hint=""))
    assert s.error == "bad.safetensors is not a LoRA of this model. Load the base it was trained on."
    assert s.pending is None
    assert [r["type"] for r in s.generate()] == ["load_adapter", "generate"]
    s.on_event(reply("error", id=s.pending, kind="internal", message="generate failed: boom",
                     hint="Traceback (most recent call last): ..."))
    assert s.error == "generate failed: boom"


def test_stop_and_a_process_that_ends_release_the_drawing():
    s, _ = image_session("final")
    gen = s.grid()[-1]
    assert s.stop() == [{"type": "stop"}]
    s.on_event(reply("done", id=gen["id"], text="", reason="stopped", tokens=0, seconds=0,
                     first_token_s=None))
    assert s.pending is None and s.error == "Stopped." and s.stop() == []
    s.generate()
    s.on_event({"type": "exited", "code": -9, "reason": "crashed", "hint": ""})
    assert s.pending is None and "ended while drawing" in s.error


def test_a_strengths_grid_has_a_row_per_ticked_checkpoint_and_the_base_at_zero():
    s, names = image_session("run · step-2", "run · final")
    s.grid_spec.strengths = "0, 0.5; 1"
    reqs = s.grid()
    grid = reqs[-1]
    assert grid["type"] == "grid" and grid["row_labels"] == ["step-2", "final"]
    assert grid["cells"][1][2] == {"adapters": [names[1]], "weights": [1.0]}
    assert grid["col_labels"] == ["base (0)", "strength 0.5", "strength 1"]
    assert grid["cells"][1][0] == {"adapters": [], "weights": []}
    assert s.progress == (0, 6)
    s.on_event(reply("cell", id=grid["id"], done=2, total=6))
    assert s.progress == (2, 6)


def test_a_seeds_grid_draws_every_prompt_with_the_ticked_loras():
    s, names = image_session("final")
    s.settings["strength"] = 0.8
    s.grid_spec.mode, s.grid_spec.prompts, s.grid_spec.seeds = "seeds", "a\n\n b \n", "1 2 3"
    grid = s.grid()[-1]
    assert grid["row_labels"] == ["a", "b"] and grid["col_labels"] == ["seed 1", "seed 2", "seed 3"]
    assert grid["cells"][1][2] == {"prompt": "b", "seed": 3, "adapters": names, "weights": [0.8]}


@pytest.mark.parametrize("change, words", [
    ({"strengths": "0, half"}, "'half' is not a number"),
    ({"strengths": " "}, "at least one"),
    ({"mode": "seeds", "prompts": "a", "seeds": "1.5"}, "not a whole number"),
    ({"mode": "seeds", "prompts": "", "seeds": "1"}, "one prompt a line"),
    ({"mode": "seeds", "prompts": "a\nb", "seeds": " ".join(map(str, range(40)))}, "more than 64"),
])
def test_a_grid_that_cannot_be_drawn_says_what_to_change(change, words):
    s, _ = image_session("final")
    for key, value in change.items():
        setattr(s.grid_spec, key, value)
    with pytest.raises(GridProblem, match=words):
        s.grid()
    assert s.pending is None and s.loaded == set()


def test_sizes_off_the_vae_grid_and_strength_grids_without_checkpoints_are_refused():
    s, _ = image_session()
    with pytest.raises(GridProblem, match="Tick the checkpoints"):
        s.grid()
    s.settings["width"] = 100
    with pytest.raises(GridProblem, match="multiple of 8"):
        s.generate()


def test_base_kind(tmp_path):
    assert base_kind(SD) == "image" and base_kind(ROOT / "resources" / "tiny-text-model") == "text"
    assert base_kind(tmp_path / "model.safetensors") == "image"


def test_a_saved_session_is_refused_with_the_file_named(tmp_path):
    bad = tmp_path / "chat-1.json"
    bad.write_text("{not json", encoding="utf-8")
    with pytest.raises(HintedError, match="chat-1.json is not a saved session"):
        read_session(bad)
    bad.write_text('{"kind": "grid", "version": 1, "png": "gone.png"}', encoding="utf-8")
    with pytest.raises(HintedError, match="gone.png"):
        read_session(bad)
    png = tmp_path / "p.png"
    Image.new("RGB", (8, 8)).save(png)
    first = save_session(tmp_path / "pg ü", {"kind": "grid", "x": 1}, png, now=0)
    second = save_session(tmp_path / "pg ü", {"kind": "grid", "x": 2}, png, now=0)
    assert first != second and read_session(second)["x"] == 2
    assert Path(read_session(first)["png"]).read_bytes() == png.read_bytes()


# --- the view, with the real playground process ------------------------------------

@pytest.fixture(scope="module")
def image_run(tmp_path_factory):
    """A finished image run of the tiny SD model: a checkpoint and a final LoRA."""
    import torch
    from safetensors.torch import save_file
    from lora_studio.config.jobfile import write_job_toml
    from lora_studio.config.parse import parse_job
    from lora_studio.engine.image.lora import add_lora, lora_state
    from lora_studio.engine.image.model import load_sd
    from lora_studio.runs.layout import new_run_dir
    job, _ = parse_job({"model": {"path": str(SD)}, "network": {"rank": 4, "alpha": 8.0},
                        "dataset": {"resolution": 64},
                        "training": {"seed": 5},
                        "output": {"sample_prompts": PROMPTS, "sample_steps": 3}})
    run = new_run_dir(tmp_path_factory.mktemp("runs ü"), "plum")
    write_job_toml(job, run.job_toml)
    torch.manual_seed(0)
    adapted = add_lora(load_sd(job), job)
    for folder, scale in ((run.checkpoints / "step-000002", 0.2), (run.final, 0.5)):
        with torch.no_grad():
            for name, p in adapted["unet"].named_parameters():
                if "lora_B" in name:
                    p.normal_(0, scale)
        folder.mkdir(parents=True, exist_ok=True)
        save_file(lora_state(adapted), str(folder / "adapter.safetensors"))
    (run.checkpoints / "step-000002" / "COMPLETE").write_text("")
    return run.root


@pytest.fixture
def view(qtbot, tmp_path):
    from lora_studio.runs.playground_launch import PlaygroundProcess
    from lora_studio.ui.playground_view import PlaygroundView
    widget = PlaygroundView(PlaygroundProcess(stderr_path=tmp_path / "err.log"))
    qtbot.addWidget(widget)
    widget.resize(1200, 800)
    widget.show()
    yield widget
    widget.shutdown()


def drawn(view):
    return view.image_session.pending is None


def pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def test_an_image_run_opens_with_its_prompts_and_draws_one_image(view, qtbot, image_run):
    assert view.open_run(str(image_run))
    assert view.pages.currentWidget() is view.image_page
    page, settings = view.image_page, view.image_settings
    assert settings.prompt.toPlainText() == PROMPTS[0]
    assert page.grid_pane.prompts.toPlainText().splitlines() == PROMPTS
    assert settings.boxes["steps"].value() == 3 and settings.boxes["seed"].value() == 5
    assert settings.boxes["width"].value() == 64
    assert view.models.compared() == [f"{image_run.name} · final"]
    settings.sampler.setCurrentText("DPM++ 2M Karras")
    settings.negative.setPlainText("blurry")
    page.generate_button.click()
    assert page.stop_button.isEnabled() and not page.generate_button.isEnabled()
    qtbot.waitUntil(lambda: drawn(view), timeout=120_000)
    assert view.image_session.error == ""
    png = Image.open(view.image_session.image_path)
    assert png.size == (64, 64)
    assert png.text["parameters"].startswith(f"{PROMPTS[0]} <lora:{image_run.name} · final:1>\n"
                                             "Negative prompt: blurry\n")
    assert "Sampler: DPM++ 2M Karras" in png.text["parameters"]
    assert page.result.path == Path(view.image_session.image_path)
    assert not page.result.image.pixmap().isNull()
    dialog = page.result.enlarge()
    assert dialog.image.pixmap().size().width() == 64
    dialog.close()


def test_an_xy_grid_of_checkpoints_by_strengths_saves_and_reopens_as_it_was(view, qtbot,
                                                                          image_run, tmp_path):
    view.open_run(str(image_run))
    for i in range(view.models.list.count()):  # both checkpoints are the rows
        view.models.list.item(i).setCheckState(Qt.CheckState.Checked)
    page = view.image_page
    page.grid_pane.strengths.setText("0, 1")
    view.image_settings.boxes["strength"].setValue(0.0)  # one image at 0: the base
    page.generate()
    qtbot.waitUntil(lambda: drawn(view), timeout=120_000)
    base = pixels(view.image_session.image_path)
    page.grid_pane.draw_button.click()
    assert "Drawing the grid" in page.state_label.text()
    qtbot.waitUntil(lambda: drawn(view), timeout=240_000)
    assert view.image_session.error == ""
    grid_png = Image.open(view.image_session.image_path)
    assert "XY grid: 2 rows" in grid_png.text["parameters"]
    grid = pixels(view.image_session.image_path)
    left, top = grid.shape[1] - 2 * 64, grid.shape[0] - 2 * 64
    cells = [[grid[top + r * 64:top + r * 64 + 64, left + c * 64:left + c * 64 + 64]
              for c in range(2)] for r in range(2)]
    for r in range(2):
        assert np.array_equal(cells[r][0], base)
        assert not np.array_equal(cells[r][1], base)
    assert not np.array_equal(cells[0][1], cells[1][1])  # the checkpoint and the final differ

    saved = view.save_session()
    assert saved.parent == image_run / "playground" and saved.name.startswith("grid-")
    before = view.image_session.to_record()
    shown = page.result.image.pixmap().toImage()
    view.open_base(str(ROOT / "resources" / "tiny-text-model"))  # something else in between
    assert view.pages.currentIndex() == 0
    assert view.open_saved(saved)
    after = view.image_session.to_record()
    assert after == before
    assert after["drawn"]["grid"]["row_labels"] == before["drawn"]["grid"]["row_labels"]
    assert pixels(view.image_session.image_path).tolist() == grid.tolist()
    assert page.result.image.pixmap().toImage() == shown
    assert page.grid_pane.strengths.text() == "0, 1"
    assert view.models.compared() == before["active"]
    assert view.run_dir == image_run


def test_a_saved_chat_reopens_as_it_was(view, tmp_path):
    view.open_base(str(ROOT / "resources" / "tiny-text-model"))
    s = view.session
    name = s.add_adapter("final", "/loras/final")
    view.models.add(name, "/loras/final", checked=True)
    view._compared_changed()
    s.system = "Be brief."
    for column, answer in zip(s.columns, ("Purple.", "A plum is purple.")):
        column.messages += [{"role": "user", "content": "A plum?"},
                            {"role": "assistant", "content": answer}]
    view.settings.boxes["temperature"].setValue(0.3)
    s.settings.update(view.settings.values())
    assert view.save_session() is None  # no run opened and no folder given
    saved = view.save_session(tmp_path / "chats")
    before = s.to_record()
    view._refresh_all()
    texts = [c.view.toPlainText() for c in view.columns]
    assert "A plum is purple." in texts[1]
    view.open_base(str(SD))
    assert view.open_saved(saved)
    assert view.session.to_record() == before
    assert [c.view.toPlainText() for c in view.columns] == texts
    assert view.settings.boxes["temperature"].value() == pytest.approx(0.3)
    assert view.settings.system.toPlainText() == "Be brief."
    assert view.pages.currentIndex() == 0


def test_a_damaged_saved_session_is_a_message(view, tmp_path):
    bad = tmp_path / "chat-x.json"
    bad.write_text('{"kind": "chat", "version": 1, "columns": [{"messages": [{"x": 1}]}]}',
                   encoding="utf-8")
    assert not view.open_saved(bad)
    assert "chat-x.json is damaged" in view.state_label.text()


def test_try_it_from_the_runs_and_training_tabs_opens_the_run_with_its_prompts(
        qtbot, tmp_path, monkeypatch, image_run):
    from ui_fixtures import no_gpu
    from PySide6.QtCore import QSettings
    from lora_studio.ui.app import MainWindow
    monkeypatch.setenv("LORA_STUDIO_CONFIG_DIR", str(tmp_path / "config"))
    win = MainWindow(settings=QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat),
                     gpu_read=no_gpu)
    qtbot.addWidget(win)
    try:
        win.runs.set_folder(image_run.parent)
        assert not win.runs.try_button.isEnabled()  # nothing selected
        win.runs.select(image_run)
        win.runs.try_button.click()
        playground = win.playground
        assert win.tabs.currentWidget() is playground
        assert playground.run_dir == image_run and playground.kind == "image"
        assert playground.image_settings.prompt.toPlainText() == PROMPTS[0]
        assert playground.image_page.grid_pane.prompts.toPlainText().splitlines() == PROMPTS
        assert [playground.models.list.item(i).text() for i in range(2)] == \
            [f"{image_run.name} · step-000002", f"{image_run.name} · final"]

        playground.open_base(str(ROOT / "resources" / "tiny-text-model"))
        win.open_run(str(image_run))
        assert win.tabs.currentWidget() is win.training and win.training.try_button.isEnabled()
        win.training.try_button.click()
        assert win.tabs.currentWidget() is playground and playground.kind == "image"
        assert playground.image_settings.prompt.toPlainText() == PROMPTS[0]
    finally:
        win.shutdown()
