"""``lora-studio serve`` as a user runs it, on the tiny Llama with two adapters: the
``openai`` client streams chats, each adapter's answer is the one PEFT gives it, the
base is loaded once, and the key, unknown models and the bind address are enforced."""
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path

import psutil
import pytest

from test_playground import MODEL, make_adapter, reference_ids
from test_serve_api import run_folder

openai = pytest.importorskip("openai")

ROOT = Path(__file__).resolve().parents[1]
KEY = "test-key"
START_TIMEOUT_S = 240
QUESTION = [{"role": "system", "content": "Answer briefly."},
            {"role": "user", "content": "What colour is a plum?"}]


def _lines(stream, into: queue.SimpleQueue) -> None:
    for line in stream:
        into.put(line)
    into.put(None)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """``lora-studio serve`` in a subprocess on a free port: a run folder (adapter a)
    and a PEFT folder served as "b two"; stopped, with its playground child, at the end."""
    root = tmp_path_factory.mktemp("serve")
    run = run_folder(root, "pirate")
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        (run / "final" / name).unlink()
    make_adapter(run / "final", ["q_proj", "v_proj"], 1)
    b = make_adapter(root / "b-ü folder", ["o_proj", "down_proj"], 2)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get(
        "PYTHONPATH")])), "LORA_STUDIO_API_KEY": KEY}
    proc = subprocess.Popen([sys.executable, "-m", "lora_studio", "serve", str(run),
                             f"b two={b}", "--port", "0"], cwd=ROOT, env=env, text=True,
                            encoding="utf-8", stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    out: queue.SimpleQueue = queue.SimpleQueue()
    threading.Thread(target=_lines, args=(proc.stdout, out), daemon=True).start()
    said, url = [], None
    try:
        while url is None:
            line = out.get(timeout=START_TIMEOUT_S)
            if line is None:
                pytest.fail("serve ended before serving:\n" + "".join(said) + proc.stderr.read())
            said.append(line)
            if line.startswith("Serving at "):
                url = line.split()[2]
        children = psutil.Process(proc.pid).children(recursive=True)
        yield {"url": url, "run": run, "b": b, "proc": proc, "children": children,
               "adapters": {"pirate-20260101-120000": run / "final", "b two": b}}
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()   # its playground child sees its stdin close and exits too
            proc.wait(timeout=30)


@pytest.fixture(scope="module")
def client(served):
    return openai.OpenAI(base_url=served["url"], api_key=KEY, timeout=120, max_retries=0)


@pytest.fixture(scope="module")
def expected():
    """What PEFT answers greedily for each adapter (None: the base), as text."""
    from lora_studio.data.text_records import Turn
    from lora_studio.engine.text.model import load_tokenizer
    from lora_studio.engine.text.tokens import chat_prompt_ids, template_in_use
    tok = load_tokenizer(MODEL)
    prompt = chat_prompt_ids(tok, [Turn(m["role"], m["content"]) for m in QUESTION],
                             template_in_use(tok, "auto"))
    answers = {}

    def answer(adapter):
        if adapter not in answers:
            answers[adapter] = tok.decode(reference_ids(adapter, prompt), skip_special_tokens=True)
        return answers[adapter]
    return answer


def stream_text(client, model: str) -> str:
    stream = client.chat.completions.create(model=model, messages=QUESTION, max_tokens=12,
                                            temperature=0, stream=True)
    return "".join(c.choices[0].delta.content or "" for c in stream if c.choices)


def test_the_openai_client_streams_each_adapter_as_peft_answers(served, client, expected):
    base = MODEL.name
    order = [base, "pirate-20260101-120000", "b two", base, "b two", "pirate-20260101-120000"]
    answers = [stream_text(client, model) for model in order]
    want = {base: expected(None)} | {m: expected(p) for m, p in served["adapters"].items()}
    assert answers == [want[m] for m in order]
    assert len(set(want.values())) == 3   # the adapters change the answer
    whole = client.chat.completions.create(model="b two", messages=QUESTION, max_tokens=12,
                                           temperature=0)
    assert whole.choices[0].message.content == want["b two"]
    assert whole.usage.completion_tokens == 12 and whole.usage.prompt_tokens > 0


def test_switching_adapters_never_starts_another_model_process(served, client):
    stream_text(client, "b two")
    stream_text(client, "pirate-20260101-120000")
    now = psutil.Process(served["proc"].pid).children(recursive=True)
    assert [p.pid for p in now] == [p.pid for p in served["children"]] and len(now) == 1


def test_models_lists_the_base_and_each_adapter(client):
    assert [m.id for m in client.models.list()] == [MODEL.name, "pirate-20260101-120000",
                                                    "b two"]


def test_answers_asked_at_once_are_each_their_own_adapters(client, expected, served):
    models = ["pirate-20260101-120000", "b two", MODEL.name, "b two"]
    results = [None] * len(models)

    def ask(i):
        results[i] = stream_text(client, models[i])
    threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(models))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    adapters = served["adapters"]
    assert results == [expected(adapters.get(m)) for m in models]


def test_stop_strings_cut_the_answer(client, expected, served):
    full = expected(served["adapters"]["b two"])
    cut = full[3:6]
    answer = client.chat.completions.create(model="b two", messages=QUESTION, max_tokens=12,
                                            temperature=0, stop=[cut])
    assert answer.choices[0].message.content == full[:full.index(cut)]
    assert answer.choices[0].finish_reason == "stop"


def test_the_key_is_required(served):
    wrong = openai.OpenAI(base_url=served["url"], api_key="wrong", timeout=60, max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        wrong.models.list()
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(served["url"] + "/models", timeout=60)
    assert caught.value.code == 401
    assert json.load(caught.value)["error"]["code"] == "invalid_api_key"


def test_unknown_models_and_bad_bodies_are_openai_errors(served, client):
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="nope", messages=QUESTION)
    assert "nope" in caught.value.message
    req = urllib.request.Request(served["url"] + "/chat/completions", b"{oops",
                                 {"Authorization": f"Bearer {KEY}"})
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(req, timeout=60)
    assert caught.value.code == 400
    assert json.load(caught.value)["error"]["type"] == "invalid_request_error"


def test_it_listens_on_loopback_only(served):
    assert served["url"].startswith("http://127.0.0.1:")
    listening = [c.laddr for c in psutil.Process(served["proc"].pid).net_connections("tcp")
                 if c.status == psutil.CONN_LISTEN]
    assert [a.ip for a in listening] == ["127.0.0.1"]


def test_a_model_process_that_died_is_started_again_with_the_adapters(served, client, expected):
    (child,) = psutil.Process(served["proc"].pid).children()
    child.kill()
    child.wait(timeout=30)
    assert stream_text(client, "b two") == expected(served["adapters"]["b two"])
    (again,) = psutil.Process(served["proc"].pid).children()
    assert again.pid != child.pid
    served["children"] = [again]


@pytest.mark.skipif(os.name == "nt", reason="SIGTERM is TerminateProcess on Windows")
def test_stopping_serve_ends_its_model_process(tmp_path, served):
    """Last in this file: it stops the server the others used."""
    proc = served["proc"]
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0
    psutil.wait_procs(served["children"], timeout=30)
    assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE
                   for p in served["children"])
