"""lora-studio serve without a model: OpenAI request bodies read and refused, stop
strings, which base and adapters a command line serves, and the HTTP server in front
of a stand-in playground process (tests/test_serve.py runs the real one)."""
import json
import queue
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from lora_studio.cli import build_parser
from lora_studio.config.jobfile import write_job_toml
from lora_studio.config.parse import parse_job
from lora_studio.errors import HintedError
from lora_studio.serve.catalog import Catalog, Served, build_catalog
from lora_studio.serve.gateway import Gateway
from lora_studio.serve.http_server import DEFAULT_HOST, OpenAIServer, is_loopback
from lora_studio.serve.openai_api import ApiError, StopText, parse_chat

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "resources" / "tiny-text-model"
MODELS = ["base", "a", "b"]


def body(**fields) -> bytes:
    data = {"model": "a", "messages": [{"role": "user", "content": "Hi"}], **fields}
    return json.dumps(data).encode()


@pytest.mark.parametrize("raw, status, words", [
    (b"{not json", 400, "not JSON"),
    (b"[1, 2]", 400, "JSON object"),
    (body(model="nope"), 404, "'nope' does not exist here; served: base, a, b"),
    (body(model=None), 400, "'model' is missing"),
    (body(messages=[]), 400, "non-empty list"),
    (body(messages=[{"role": "tool", "content": "x"}, {"role": "user", "content": "y"}]), 400,
     "role 'tool'"),
    (body(messages=[{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]),
     400, "last message must be the user's"),
    (body(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]), 400,
     "read text only"),
    (body(temperature=3), 400, "temperature must be between"),
    (body(max_tokens=0), 400, "max_tokens must be between"),
    (body(max_tokens=2.5), 400, "max_tokens must be an integer"),
    (body(n=2), 400, "n must be 1"),
    (body(stop=["a", "b", "c", "d", "e"]), 400, "up to 4 strings"),
    (body(stream="yes"), 400, "stream must be true or false"),
])
def test_bad_requests_are_refused_with_openai_errors(raw, status, words):
    with pytest.raises(ApiError) as caught:
        parse_chat(raw, MODELS)
    assert caught.value.status == status
    assert words in caught.value.message
    assert set(caught.value.body()["error"]) == {"message", "type", "param", "code"}


def test_a_request_becomes_the_playground_generate_fields():
    req = parse_chat(body(messages=[
        {"role": "developer", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "Hi "}, {"type": "text", "text": "you"}]}],
        max_completion_tokens=7, temperature=0, top_p=0.5, seed=3, stop="END", stream=True,
        stream_options={"include_usage": True}, presence_penalty=0.1), MODELS)
    assert req.generate_fields() == {
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi you"}],
        "max_new_tokens": 7, "temperature": 0.0, "top_p": 0.5, "seed": 3,
        "repetition_penalty": 1.0}
    assert req.stop == ["END"] and req.stream and req.include_usage
    greedy = parse_chat(body(temperature=0.8, top_p=0), MODELS).generate_fields()
    assert greedy["temperature"] == 0.0   # top_p 0: only the likeliest token
    assert parse_chat(body(), MODELS).generate_fields()["temperature"] == 1.0   # OpenAI's default


@pytest.mark.parametrize("pieces, stops, sent, hit", [
    (["Hello", " wor", "ld"], ["\n"], "Hello world", False),
    (["Hello ST", "OP there"], ["STOP"], "Hello ", True),
    (["ab", "c"], ["abd"], "abc", False),          # held back, then let go
    (["x<|", "eot|>y"], ["<|eot|>", "zz"], "x", True),
    (["one two", " three"], ["two", "one"], "", True),  # the earliest stop wins
])
def test_stop_strings_cut_the_answer_before_them(pieces, stops, sent, hit):
    stopper = StopText(stops)
    out = "".join(stopper.feed(p) for p in pieces) + stopper.flush()
    assert out == sent and stopper.hit == hit


# -- what is served -----------------------------------------------------------

def peft_folder(folder: Path, base: str = str(MODEL)) -> Path:
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": base}))
    (folder / "adapter_model.safetensors").write_bytes(b"")
    return folder


def run_folder(root: Path, name: str, chat_template: str = "auto") -> Path:
    job, _ = parse_job({"model": {"path": str(MODEL), "family": "text"},
                        "dataset": {"path": str(ROOT / "resources" / "demo-text" / "chat.jsonl"),
                                    "chat_template": chat_template},
                        "output": {"output_name": name}})
    run = root / f"{name}-20260101-120000"
    run.mkdir()
    write_job_toml(job, run / "job.toml")
    peft_folder(run / "final")
    return run


def test_runs_and_adapter_folders_become_model_ids(tmp_path):
    run = run_folder(tmp_path, "pirate")
    catalog = build_catalog([str(run), str(peft_folder(tmp_path / "ä folder")),
                             f"mine={peft_folder(tmp_path / 'x')}", str(run / "final")])
    assert catalog.base == MODEL
    assert catalog.ids == ["tiny-text-model", run.name, "ä folder", "mine", f"{run.name}-2"]
    assert catalog.models[0].path is None and catalog.models[3].path == tmp_path / "x"


def test_the_base_comes_from_the_runs_or_from_base(tmp_path):
    other = tmp_path / "other-model"
    other.mkdir()
    (other / "config.json").write_text("{}")
    a, b = peft_folder(tmp_path / "a"), peft_folder(tmp_path / "b", str(other))
    with pytest.raises(HintedError, match="different base models"):
        build_catalog([str(a), str(b)])
    assert build_catalog([str(a), str(b)], base=str(other)).base == other
    alone = build_catalog([], base=str(MODEL))   # the base model by itself
    assert alone.ids == [MODEL.name] and alone.chat_template == "auto"
    with pytest.raises(HintedError, match="No adapter names its base model"):
        build_catalog([str(peft_folder(tmp_path / "c", ""))])
    with pytest.raises(HintedError, match="not a model folder"):
        build_catalog([str(peft_folder(tmp_path / "d", str(tmp_path / "gone")))])
    with pytest.raises(HintedError, match="no such file"):
        build_catalog([str(tmp_path / "missing")])


def test_runs_with_different_prompt_formats_are_not_served_together(tmp_path):
    with pytest.raises(HintedError, match="different chat templates"):
        build_catalog([str(run_folder(tmp_path, "a")), str(run_folder(tmp_path, "b", "none"))])
    assert build_catalog([str(run_folder(tmp_path, "c", "none"))]).chat_template == "none"


# -- the HTTP server in front of a stand-in playground process -----------------

class FakeProcess:
    """Answers ``generate`` with the adapter's name repeated token by token from a
    thread of its own, as the playground does; ``stop`` ends the answer."""

    pid = 4242

    def __init__(self, tokens: int = 40):
        self.events = queue.SimpleQueue()
        self.sent, self.tokens = [], tokens
        self.busy, self.overlaps = threading.Event(), 0
        self._stop = threading.Event()

    def send(self, req):
        self.sent.append(req)
        if req["type"] == "stop":
            self._stop.set()
        elif req["type"] == "load_base":
            self.events.put({"type": "base_loaded", "id": req["id"], "loads": 1})
        elif req["type"] == "load_adapter":
            if req["path"] == "broken":
                self.events.put({"type": "error", "id": req["id"], "kind": "config",
                                 "message": "broken is damaged.", "hint": "Export it again."})
            else:
                self.events.put({"type": "adapter_loaded", "id": req["id"], "name": req["name"]})
        elif req["type"] == "generate":
            if self.busy.is_set():
                self.overlaps += 1
            self.busy.set()
            self._stop.clear()
            threading.Thread(target=self._answer, args=(req,), daemon=True).start()

    def _answer(self, req):
        if req["messages"][-1]["content"] == "boom":
            self.busy.clear()
            self.events.put({"type": "error", "id": req["id"], "kind": "internal",
                             "message": "generate failed: KeyError: 'x'",
                             "hint": "Traceback (most recent call last): ..."})
            return
        word = (req["adapters"] or ["base"])[0].removeprefix("serve:")
        n = 0
        for n in range(1, self.tokens + 1):
            if self._stop.is_set():
                break
            self.events.put({"type": "token", "id": req["id"], "text": f"{word}{n} "})
            time.sleep(0.002)
        self.busy.clear()
        self.events.put({"type": "done", "id": req["id"], "reason": "stopped" if self._stop.is_set()
                         else "length", "tokens": n, "prompt_tokens": 5})

    def stop(self, reason="shutdown", grace_s=5.0):
        pass


@pytest.fixture
def fake_server():
    catalog = Catalog(MODEL, "auto", (Served("base", None), Served("a", Path("a")),
                                      Served("b", Path("b"))))
    process = FakeProcess()
    server = OpenAIServer(Gateway(catalog, process), port=0, api_key="k",
                          allow_origins=("http://front.end",))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    yield server, process
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


def post(url, data: dict, key="k", headers=None):
    req = urllib.request.Request(url + "/chat/completions", json.dumps(data).encode(),
                                 {"Authorization": f"Bearer {key}", **(headers or {})})
    return urllib.request.urlopen(req, timeout=30)


def sse_events(response) -> list:
    lines = [line.decode() for line in response.read().splitlines() if line.strip()]
    assert all(line.startswith("data: ") for line in lines)
    return [line[6:] if line == "data: [DONE]" else json.loads(line[6:]) for line in lines]


def test_the_server_listens_on_this_computer_only_by_default(fake_server):
    server, _ = fake_server
    assert server.server_address[0] == "127.0.0.1" == DEFAULT_HOST
    assert build_parser().parse_args(["serve", "x"]).host == DEFAULT_HOST
    assert server.url.startswith("http://127.0.0.1:")
    assert is_loopback("localhost") and is_loopback("::1") and not is_loopback("0.0.0.0")


def test_a_stream_is_chunks_ending_with_done(fake_server):
    server, _ = fake_server
    events = sse_events(post(server.url, {"model": "a", "stream": True, "max_tokens": 3,
                                          "messages": [{"role": "user", "content": "Hi"}],
                                          "stream_options": {"include_usage": True}}))
    assert events[-1] == "[DONE]"
    assert events[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    text = "".join(e["choices"][0]["delta"].get("content", "") for e in events[1:-1]
                   if e["choices"])
    assert text.startswith("a1 a2 a3 ")
    assert events[-3]["choices"][0]["finish_reason"] == "length"
    assert events[-2]["usage"]["prompt_tokens"] == 5 and events[-2]["choices"] == []


def test_a_stop_string_ends_the_generation_itself(fake_server):
    server, process = fake_server
    answer = json.load(post(server.url, {"model": "b", "stop": ["b3"],
                                         "messages": [{"role": "user", "content": "Hi"}]}))
    assert answer["choices"][0]["message"]["content"] == "b1 b2 "
    assert answer["choices"][0]["finish_reason"] == "stop"
    stops = [r for r in process.sent if r["type"] == "stop"]
    assert stops and all(r["target"].startswith("serve:chat-") for r in stops)  # only its own


def test_answers_for_different_adapters_take_turns(fake_server):
    server, process = fake_server
    results = {}

    def ask(model):
        answer = json.load(post(server.url, {"model": model, "messages": [
            {"role": "user", "content": "Hi"}]}))
        results[model] = answer["choices"][0]["message"]["content"]
    threads = [threading.Thread(target=ask, args=(m,)) for m in ("a", "b", "base", "a")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert process.overlaps == 0
    for model in ("a", "b", "base"):
        assert results[model].split() == [f"{model}{n}" for n in range(1, 41)]
    generated = [r["adapters"] for r in process.sent if r["type"] == "generate"]
    assert sorted(map(tuple, generated)) == [(), ("serve:a",), ("serve:a",), ("serve:b",)]
    assert {r["type"] for r in process.sent} == {"generate"}   # switching loads nothing


def test_a_client_that_leaves_stops_its_answer(fake_server):
    import socket
    server, process = fake_server
    process.tokens = 100000   # an answer that would run for minutes
    host, port = server.server_address[:2]
    data = json.dumps({"model": "a", "stream": True, "messages": [{"role": "user", "content": "x"}]})
    with socket.create_connection((host, port), timeout=30) as sock:
        sock.sendall(f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer k\r\n"
                     f"Content-Length: {len(data)}\r\n\r\n{data}".encode())
        got = b""
        while b"a1 " not in got:   # the answer has started; then this client leaves
            more = sock.recv(65536)
            assert more, got
            got += more
    process.tokens = 3
    answer = json.load(post(server.url, {"model": "b", "messages": [{"role": "user", "content": "x"}]}))
    assert answer["choices"][0]["message"]["content"] == "b1 b2 b3 "
    (stop,) = [r for r in process.sent if r["type"] == "stop"]
    assert stop["target"].startswith("serve:chat-")   # never the answers of a lending window


@pytest.mark.parametrize("method, path, key, status, code", [
    ("GET", "/v1/models", None, 401, "invalid_api_key"),
    ("GET", "/v1/models", "wrong", 401, "invalid_api_key"),
    ("GET", "/v1/nothing", "k", 404, "not_found"),
    ("GET", "/v1/models/zz", "k", 404, "model_not_found"),
    ("GET", "/v1/chat/completions", "k", 405, "method_not_allowed"),
])
def test_http_errors_are_openai_json(fake_server, method, path, key, status, code):
    server, _ = fake_server
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    req = urllib.request.Request(server.url[:-3] + path, method=method, headers=headers)
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(req, timeout=30)
    assert caught.value.code == status
    assert json.load(caught.value)["error"]["code"] == code


def test_models_and_cors_for_allowed_origins_only(fake_server):
    server, _ = fake_server
    req = urllib.request.Request(server.url + "/models", headers={
        "Authorization": "Bearer k", "Origin": "http://front.end"})
    with urllib.request.urlopen(req, timeout=30) as response:
        assert [m["id"] for m in json.load(response)["data"]] == ["base", "a", "b"]
        assert response.headers["Access-Control-Allow-Origin"] == "http://front.end"
    req = urllib.request.Request(server.url + "/models/a", headers={
        "Authorization": "Bearer k", "Origin": "http://elsewhere"})
    with urllib.request.urlopen(req, timeout=30) as response:
        assert json.load(response)["id"] == "a"
        assert "Access-Control-Allow-Origin" not in response.headers
    preflight = urllib.request.Request(server.url + "/chat/completions", method="OPTIONS", headers={
        "Origin": "http://front.end", "Access-Control-Request-Headers": "authorization"})
    with urllib.request.urlopen(preflight, timeout=30) as response:
        assert response.status == 204
        assert "POST" in response.headers["Access-Control-Allow-Methods"]


def test_another_host_is_warned_about_and_a_busy_port_named(tmp_path, monkeypatch, capsys):
    import socket

    from lora_studio.cli import main
    adapter = str(peft_folder(tmp_path / "a"))

    def fail(self):
        raise HintedError("config", "Could not load.", "Try again.")
    monkeypatch.setattr(Gateway, "start", fail)
    assert main(["serve", adapter, "--host", "0.0.0.0", "--port", "0"]) == 1
    err = capsys.readouterr().err
    assert "--host 0.0.0.0 lets other computers" in err and "set --api-key" in err
    assert "Could not load.\n  hint: Try again." in err
    assert main(["serve", adapter, "--port", "0"]) == 1
    assert "other computers" not in capsys.readouterr().err
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", adapter, "--port", str(port)]) == 1
    assert f"Cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err


def test_a_failure_in_the_model_process_is_a_500_without_its_traceback(fake_server, capsys):
    server, _ = fake_server
    with pytest.raises(urllib.error.HTTPError) as caught:
        post(server.url, {"model": "a", "messages": [{"role": "user", "content": "boom"}]})
    assert caught.value.code == 500
    error = json.load(caught.value)["error"]
    assert error["type"] == "server_error" and "KeyError" in error["message"]
    assert "Traceback" not in error["message"]
    assert "Traceback" in capsys.readouterr().err   # the server's own output keeps it
    answer = json.load(post(server.url, {"model": "a", "max_tokens": 1,
                                         "messages": [{"role": "user", "content": "x"}]}))
    assert answer["choices"][0]["message"]["content"].startswith("a1 ")


def test_only_the_end_of_the_answering_process_fails_an_answer(fake_server):
    """A process that ended before this answer was asked (its exited event still queued)
    is not this answer's failure; the answering one's end is a 503."""
    server, process = fake_server
    process.tokens = 3
    process.events.put({"type": "exited", "pid": 1, "code": -9, "reason": "crashed", "hint": ""})
    original = process._answer

    def old_end_then_answer(req):
        process.events.put({"type": "exited", "pid": 7, "code": -9, "reason": "crashed",
                            "hint": ""})
        original(req)
    process._answer = old_end_then_answer
    answer = json.load(post(server.url, {"model": "a", "messages": [{"role": "user", "content": "x"}]}))
    assert answer["choices"][0]["message"]["content"] == "a1 a2 a3 "

    def crash(req):
        process.events.put({"type": "token", "id": req["id"], "text": "a1 "})
        process.events.put({"type": "exited", "pid": process.pid, "code": -9,
                            "reason": "crashed", "hint": "Killed"})
        process.busy.clear()
    process._answer = crash
    with pytest.raises(urllib.error.HTTPError) as caught:
        post(server.url, {"model": "a", "messages": [{"role": "user", "content": "x"}]})
    assert caught.value.code == 503
    assert "starts again on the next request" in json.load(caught.value)["error"]["message"]


def test_starting_loads_the_base_once_and_every_adapter_or_says_what_failed():
    catalog = Catalog(MODEL, "none", (Served("base", None), Served("a", Path("a")),
                                      Served("b", Path("b"))))
    process = FakeProcess()
    Gateway(catalog, process).start()
    assert [(r["type"], r.get("name"), r.get("chat_template")) for r in process.sent] == [
        ("load_base", None, "none"), ("load_adapter", "serve:a", None),
        ("load_adapter", "serve:b", None)]
    lent = FakeProcess()
    Gateway(catalog, lent, load_base=False).start()   # the window's base is loaded already
    assert [r["type"] for r in lent.sent] == ["load_adapter", "load_adapter"]
    broken = Catalog(MODEL, "auto", (Served("base", None), Served("x", Path("broken"))))
    with pytest.raises(HintedError) as caught:
        Gateway(broken, FakeProcess()).start()
    assert caught.value.message == "broken is damaged." and caught.value.hint == "Export it again."
