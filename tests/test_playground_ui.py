"""The Playground tab: the chat logic without a window, then the view on the tiny text
model with the real playground process (streamed answers, side by side, a killed
process)."""
import os
import signal
from pathlib import Path

import pytest

from lora_studio.config.jobfile import JobFileError
from lora_studio.runs.playground_protocol import reply
from lora_studio.ui.chat_state import BASE, ChatSession, read_run

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "resources" / "tiny-text-model"


def session_with(*adapters):
    s = ChatSession()
    s.set_base(str(MODEL))
    names = [s.add_adapter(a, f"/adapters/{a}") for a in adapters]
    s.set_compared(names, with_base=True)
    return s, names


def test_send_asks_every_column_with_its_own_adapter_and_the_same_settings():
    s, names = session_with("step-2", "final")
    s.system = "Be brief."
    s.settings.update(temperature=0.0, seed=7)
    reqs = s.send("  Hi  ")
    loads = [r for r in reqs if r["type"] == "load_adapter"]
    gens = [r for r in reqs if r["type"] == "generate"]
    assert [r["name"] for r in loads] == names
    assert [g["adapters"] for g in gens] == [[], ["step-2"], ["final"]]
    assert all(g["messages"] == [{"role": "system", "content": "Be brief."},
                                 {"role": "user", "content": "Hi"}] for g in gens)
    assert {(g["temperature"], g["seed"]) for g in gens} == {(0.0, 7)}
    assert s.busy and s.send("again") == []  # one turn at a time
    # the adapters are loaded once; a second turn only generates
    for g in gens:
        s.on_event(reply("done", id=g["id"], text="ok", reason="eos"))
    assert not s.busy
    assert [r["type"] for r in s.send("More")] == ["generate"] * 3
    assert s.columns[1].messages[:3] == [{"role": "user", "content": "Hi"},
                                         {"role": "assistant", "content": "ok"},
                                         {"role": "user", "content": "More"}]


def test_stop_names_the_answers_of_this_chat_only():
    s, _ = session_with("a")
    assert s.stop() == []
    gens = [r for r in s.send("Hi") if r["type"] == "generate"]
    assert s.stop() == [{"type": "stop", "target": g["id"]} for g in gens]


def test_tokens_stream_into_their_own_column():
    s, _ = session_with("a")
    gens = [r for r in s.send("Hi") if r["type"] == "generate"]
    assert s.on_event(reply("token", id=gens[1]["id"], text="Hel")) is s.columns[1]
    s.on_event(reply("token", id=gens[1]["id"], text="lo"))
    assert s.columns[1].partial == "Hello" and s.columns[0].partial == ""
    assert s.on_event(reply("token", id="unknown", text="x")) is None


def test_a_failed_adapter_load_is_shown_in_its_column_and_the_question_can_be_asked_again():
    s, _ = session_with("bad")
    gens = [r for r in s.send("Hi") if r["type"] == "generate"]
    s.on_event(reply("error", id="load:bad", kind="config", message="bad: no such file.", hint="h"))
    s.on_event(reply("error", id=gens[1]["id"], kind="request", message="No adapter named 'bad'",
                     hint=""))
    bad = s.columns[1]
    assert bad.error == "bad: no such file." and bad.messages == [] and bad.pending is None
    assert "bad" not in s.loaded  # the next Send tries to load it again


def test_a_process_that_ends_releases_every_pending_column():
    s, _ = session_with("a")
    s.send("Hi")
    s.on_event({"type": "exited", "code": -9, "reason": "crashed", "hint": ""})
    assert not s.busy and all("ended while answering" in c.error for c in s.columns)


def test_compared_columns_keep_their_conversations():
    s, names = session_with("a", "b")
    s.columns[1].messages.append({"role": "user", "content": "kept"})
    s.set_compared(["a"], with_base=False)
    assert [c.adapter for c in s.columns] == ["a"] and s.columns[0].messages
    s.set_compared(["b", "a"], with_base=True)
    assert [c.adapter for c in s.columns] == [BASE, "b", "a"]


def test_read_run_names_a_folder_that_is_not_a_run(tmp_path):
    with pytest.raises(JobFileError, match="no such file"):
        read_run(tmp_path)


# --- the view, with the real playground process ------------------------------------

@pytest.fixture
def view(qtbot, tmp_path):
    from lora_studio.runs.playground_launch import PlaygroundProcess
    from lora_studio.ui.playground_view import PlaygroundView
    widget = PlaygroundView(PlaygroundProcess(stderr_path=tmp_path / "err.log"))
    qtbot.addWidget(widget)
    widget.resize(1200, 700)
    yield widget
    widget.shutdown()


@pytest.fixture(scope="module")
def adapter_dir(tmp_path_factory):
    from test_playground import make_adapter
    return make_adapter(tmp_path_factory.mktemp("ad") / "my adapter", ["q_proj", "v_proj"], 1)


def answered(view):
    return not view.session.busy and all(c.messages and c.messages[-1]["role"] == "assistant"
                                         for c in view.session.columns)


def test_the_view_answers_side_by_side_and_survives_a_killed_process(view, qtbot, adapter_dir):
    view.open_base(str(MODEL))
    assert view.add_adapter(str(adapter_dir))
    assert [c.title.text() for c in view.columns] == ["Base model", "my adapter"]
    view.settings.boxes["temperature"].setValue(0.0)
    view.settings.boxes["max_new_tokens"].setValue(8)
    view.input.setPlainText("What colour is a plum?")
    view.send()
    assert view.stop_button.isEnabled() and not view.send_button.isEnabled()
    qtbot.waitUntil(lambda: answered(view), timeout=120_000)
    base, adapted = (c.messages[-1]["content"] for c in view.session.columns)
    assert base != adapted
    assert adapted.strip()[:3] in view.columns[1].view.toPlainText()

    pid = view.process.pid
    os.killpg(pid, signal.SIGKILL) if os.name != "nt" else os.kill(pid, 9)
    qtbot.waitUntil(lambda: "ended unexpectedly" in view.state_label.text(), timeout=30_000)
    assert view.send_button.isEnabled()
    view.input.setPlainText("And a lemon?")
    view.send()
    qtbot.waitUntil(lambda: answered(view), timeout=120_000)
    assert view.process.starts == 2
    assert all(len(c.messages) == 4 for c in view.session.columns)


def test_a_bad_adapter_path_is_a_message(view):
    view.open_base(str(MODEL))
    assert not view.add_adapter("/no/such/adapter")
    assert "no such file" in view.state_label.text()
    assert [c.title.text() for c in view.columns] == ["Base model"]


def test_the_window_has_the_tab_and_a_training_run_takes_the_gpu_back(qtbot, tmp_path, monkeypatch):
    from ui_fixtures import no_gpu
    from PySide6.QtCore import QSettings
    from lora_studio.ui.app import MainWindow
    monkeypatch.setenv("LORA_STUDIO_CONFIG_DIR", str(tmp_path / "config"))
    win = MainWindow(settings=QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat),
                     gpu_read=no_gpu)
    qtbot.addWidget(win)
    try:
        assert win.tabs.tabText(win.tabs.indexOf(win.playground)) == "Playground"
        assert not win.playground.process.running  # started on first use only
        win.playground.open_base(str(MODEL))
        assert win.playground.process.running
        win.training.run_started.emit()
        assert not win.playground.process.running
        qtbot.waitUntil(lambda: "leave the GPU" in win.playground.state_label.text(), timeout=10_000)
    finally:
        win.shutdown()
