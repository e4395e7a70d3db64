"""Serve from the Playground tab: the window's own playground process (base loaded once)
answers the openai client, each adapter as its own model, while the tab keeps chatting."""
import socket
import threading

import pytest

from test_playground import MODEL, make_adapter, reference_ids
from test_playground_ui import view  # noqa: F401  (the fixture: the tab on a real process)

openai = pytest.importorskip("openai")

QUESTION = [{"role": "user", "content": "What colour is a plum?"}]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def in_thread(qtbot, call):
    """``call()`` run in a thread while the window's event loop drains the process."""
    result = {}

    def run():
        try:
            result["value"] = call()
        except Exception as exc:  # raised again below, in the test
            result["error"] = exc
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    qtbot.waitUntil(lambda: not thread.is_alive(), timeout=120_000)
    if "error" in result:
        raise result["error"]
    return result["value"]


def expected(adapter):
    from lora_studio.data.text_records import Turn
    from lora_studio.engine.text.model import load_tokenizer
    from lora_studio.engine.text.tokens import chat_prompt_ids
    tok = load_tokenizer(MODEL)
    prompt = chat_prompt_ids(tok, [Turn(m["role"], m["content"]) for m in QUESTION], True)
    return tok.decode(reference_ids(adapter, prompt), skip_special_tokens=True)


def test_the_tab_serves_its_base_and_adapters_on_its_own_process(view, qtbot, tmp_path):
    adapter = make_adapter(tmp_path / "pirate voice", ["q_proj", "v_proj"], 1)
    view.open_base(str(MODEL))
    assert view.add_adapter(str(adapter))
    box = view.serve_box
    assert box.button.isEnabled()
    port = free_port()
    box.port.setValue(port)
    box.key.setText("k1")
    box.button.click()
    qtbot.waitUntil(lambda: "Serving at" in box.label.text(), timeout=120_000)
    assert f"http://127.0.0.1:{port}/v1" in box.label.text()
    view.resize(1200, 800)  # room for the Serve box under the chat
    view.grab().save(str(tmp_path / "serving.png"))

    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="k1", timeout=120,
                           max_retries=0)
    assert [m.id for m in in_thread(qtbot, client.models.list)] == [MODEL.name, "pirate voice"]

    def ask(model):
        stream = client.chat.completions.create(model=model, messages=QUESTION, max_tokens=12,
                                                temperature=0, stream=True)
        return "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert in_thread(qtbot, lambda: ask("pirate voice")) == expected(adapter)
    assert in_thread(qtbot, lambda: ask(MODEL.name)) == expected(None)
    assert view.process.starts == 1   # one process, its base loaded once

    # the tab's own chat goes on beside the server
    view.settings.boxes["temperature"].setValue(0.0)
    view.settings.boxes["max_new_tokens"].setValue(4)
    view.input.setPlainText("Hi")
    view.send()
    qtbot.waitUntil(lambda: not view.session.busy, timeout=120_000)
    assert all(c.messages[-1]["role"] == "assistant" for c in view.session.columns)
    # and its Stop, which names its own answers, still stops them
    view.settings.boxes["max_new_tokens"].setValue(400)
    view.input.setPlainText("And a lemon?")
    view.send()
    qtbot.waitUntil(lambda: bool(view.session.columns[0].partial), timeout=120_000)
    view.stop()
    qtbot.waitUntil(lambda: not view.session.busy, timeout=120_000)
    assert view.session.columns[0].last_reason == "stopped"

    view.open_base(str(MODEL))   # another base: serving stops, the port is free again
    assert "another base model was loaded" in box.label.text()
    assert not box.button.isChecked()
    with pytest.raises(openai.APIConnectionError):
        client.models.list()


def test_a_taken_port_is_said_and_nothing_serves(view, qtbot):
    assert not view.serve_box.button.isEnabled()   # no base yet
    view.open_base(str(MODEL))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        view.serve_box.port.setValue(taken.getsockname()[1])
        view.serve_box.button.click()
    assert "Cannot listen on 127.0.0.1" in view.serve_box.label.text()
    assert not view.serve_box.button.isChecked() and view.serving is None
