"""The playground process on the tiny text model: adapters hot-swapped on one loaded
base, answers equal to PEFT applied directly, errors as events, the launcher."""
import json
import os
import signal
import time
from pathlib import Path

import pytest
import torch

from lora_studio.errors import HintedError
from lora_studio.runs.adapter_sources import adapter_source, run_adapters
from lora_studio.runs.playground_launch import PlaygroundProcess, remember
from lora_studio.runs.playground_protocol import decode_event, request

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "resources" / "tiny-text-model"


def make_adapter(folder: Path, targets: list[str], seed: int, scale: float = 3.0) -> Path:
    """A PEFT adapter folder with random A and a large nonzero B, so it changes the answers."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM
    torch.manual_seed(seed)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(str(MODEL)),
                           LoraConfig(r=4, lora_alpha=8, target_modules=targets))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, scale)
    model.save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="module")
def adapters(tmp_path_factory):
    root = tmp_path_factory.mktemp("adapters")
    return {"a": make_adapter(root / "a one", ["q_proj", "v_proj"], 1),
            "b": make_adapter(root / "b-ü", ["o_proj", "down_proj"], 2)}


class Events(list):
    def __call__(self, ev):
        self.append(ev)

    def of(self, kind):
        return [e for e in self if e["type"] == kind]


@pytest.fixture(scope="module")
def server(adapters):
    from lora_studio.playground.server import Server
    events = Events()
    srv = Server(events)
    srv.handle(1, request("load_base", kind="text", path=str(MODEL)))
    srv.handle(2, request("load_adapter", name="a", path=str(adapters["a"])))
    srv.handle(3, request("load_adapter", name="b.two", path=str(adapters["b"])))
    assert not events.of("error"), events.of("error")
    return srv, events


def chat(text="What colour is a plum?"):
    return [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": text}]


def generate(srv, events, seq, **fields):
    events.clear()
    srv.handle(seq, request("generate", id=seq, messages=chat(), max_new_tokens=12,
                            temperature=0, **fields))
    assert not events.of("error"), events.of("error")
    done = events.of("done")[-1]
    assert "".join(e["text"] for e in events.of("token")) == done["text"]
    return done


def reference_ids(adapter: Path | None, prompt_ids: list[int]) -> list[int]:
    """Greedy answer of a fresh base with PEFT applied directly."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(str(MODEL))
    if adapter is not None:
        model = PeftModel.from_pretrained(model, str(adapter))
    ids = torch.tensor([prompt_ids])
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=12,
                             do_sample=False, pad_token_id=2, eos_token_id=1)
    return out[0, ids.shape[1]:].tolist()


def answer_ids(srv, text: str) -> list[int]:
    return srv.backend.tokenizer(text, add_special_tokens=False)["input_ids"]


def test_adapters_answer_as_peft_does_and_differ_from_the_base(server, adapters):
    from lora_studio.data.text_records import Turn
    from lora_studio.engine.text.tokens import chat_prompt_ids
    srv, events = server
    prompt = chat_prompt_ids(srv.backend.tokenizer, [Turn(m["role"], m["content"]) for m in chat()],
                             srv.backend.use_template)
    answers = {}
    for seq, (key, names) in enumerate((("base", []), ("a", ["a"]), ("b", ["b.two"]),
                                        ("base again", [])), start=10):
        answers[key] = generate(srv, events, seq, adapters=names)
    assert answers["base"]["text"] == answers["base again"]["text"]
    assert len({answers[k]["text"] for k in ("base", "a", "b")}) == 3
    tok = srv.backend.tokenizer
    for key, folder in (("base", None), ("a", adapters["a"]), ("b", adapters["b"])):
        expected = reference_ids(folder, prompt)
        assert answers[key]["text"] == tok.decode(expected, skip_special_tokens=True)


def test_switching_never_loads_the_base_again(server):
    srv, events = server
    base = srv.backend.base
    events.clear()
    for seq, names in enumerate((["a"], ["b.two"], [], ["a"]), start=20):
        srv.handle(seq, request("set_adapters", names=names))
    for ev in events.of("adapters_set"):
        assert ev["loads"] == 1 and ev["model_id"] == id(base)
    assert srv.backend.base is base and srv.loads == 1
    assert srv.backend.model.base_model.model is base


def test_strength_zero_is_the_base(server):
    srv, events = server
    base = generate(srv, events, 30, adapters=[])
    zero = generate(srv, events, 31, adapters=["a"], weights=[0.0])
    full = generate(srv, events, 32, adapters=["a"], weights=[1.0])
    assert zero["text"] == base["text"] != full["text"]


def test_the_prompt_is_formatted_as_training_formatted_it(server):
    """A conversation asked in the playground is the start of the same conversation as
    training encoded it, up to the answer."""
    from lora_studio.data.text_records import TextRecord, Turn
    from lora_studio.engine.text.tokens import chat_prompt_ids, encode_record
    tok = server[0].backend.tokenizer
    turns = [Turn("system", "Be brief."), Turn("user", "Hi"), Turn("assistant", "Hello."),
             Turn("user", "A plum?")]
    for use_template in (True, False):
        asked = chat_prompt_ids(tok, turns, use_template)
        record = TextRecord(tuple(turns + [Turn("assistant", "Purple.")]), Path("t"), 1, "messages")
        trained, _ = encode_record(record, tok, use_template=use_template, responses_only=False,
                                   max_length=4096)
        assert trained.input_ids[:len(asked)] == asked
        assert tok.decode(trained.input_ids[len(asked):]).startswith("Purple.")


@pytest.mark.parametrize("req, words", [
    (request("load_adapter", name="x", path="/no/such/folder"), "no such file"),
    (request("load_adapter", name="x", path=str(MODEL)), "holds no adapter"),
    (request("set_adapters", names=["nope"]), "No adapter named 'nope'"),
    (request("load_base", kind="text", path="/no/such/model"), "not a text model folder"),
])
def test_bad_requests_are_error_events_and_the_process_goes_on(server, req, words):
    srv, events = server
    events.clear()
    srv.handle(40, {**req, "id": "r"})
    (err,) = events.of("error")
    assert words in err["message"] and err["hint"] and err["id"] == "r"
    assert srv.backend is not None and srv.loads == 1
    generate(srv, events, 41, adapters=["a"])


def test_a_damaged_adapter_file_is_named(server, tmp_path):
    (tmp_path / "adapter_config.json").write_text(json.dumps({"r": 4}))
    (tmp_path / "adapter_model.safetensors").write_bytes(b"\x08")   # cut off after one byte
    srv, events = server
    events.clear()
    srv.handle(45, request("load_adapter", id="r", name="cut", path=str(tmp_path)))
    (err,) = events.of("error")
    assert err["kind"] == "config" and "cannot be read as safetensors" in err["message"]
    assert "adapter_model.safetensors" in err["message"] and "Traceback" not in err["hint"]
    generate(srv, events, 46, adapters=["a"])


def test_an_adapter_for_another_base_is_refused(server, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM
    other = LlamaForCausalLM(LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=2, num_key_value_heads=2,
                                         vocab_size=100))
    get_peft_model(other, LoraConfig(r=4, target_modules=["q_proj"])).save_pretrained(tmp_path)
    srv, events = server
    events.clear()
    srv.handle(50, request("load_adapter", name="wrong", path=str(tmp_path)))
    (err,) = events.of("error")
    assert "does not fit this base model" in err["message"]
    assert "wrong" not in srv.backend.adapters
    generate(srv, events, 51, adapters=["a"])


def test_stop_ends_a_generation(server):
    srv, events = server
    events.clear()
    srv.stop(60)  # a stop that arrived (sequence 60) after the generation was sent (59)
    srv.handle(59, request("generate", id=59, messages=chat(), max_new_tokens=50, temperature=0))
    assert events.of("done")[-1]["reason"] == "stopped"


def test_a_stop_with_a_target_ends_only_that_generation(server):
    srv, events = server
    events.clear()
    srv.stop(70, target="other")   # someone else's answer: this one goes on
    srv.handle(69, request("generate", id="mine", messages=chat(), max_new_tokens=5,
                           temperature=0))
    assert events.of("done")[-1]["reason"] == "length"
    srv.stop(72, target="mine")
    srv.handle(71, request("generate", id="mine", messages=chat(), max_new_tokens=5,
                           temperature=0))
    assert events.of("done")[-1]["reason"] == "stopped"
    srv.handle(73, request("generate", id="mine", messages=chat(), max_new_tokens=5,
                           temperature=0))
    assert events.of("done")[-1]["reason"] == "length"   # a stop ends one generation


def test_a_training_checkpoint_answers_like_the_final_adapter(server, tmp_path):
    """A checkpoint (trainable.safetensors, no adapter_config.json) becomes an adapter
    with the run's rank and alpha."""
    from test_engine_text import make_job
    from lora_studio.config.jobfile import write_job_toml
    from lora_studio.engine import text
    from lora_studio.engine.core import trainer
    from lora_studio.engine.core.control import StopRequest
    from lora_studio.runs.layout import new_run_dir
    job = make_job(training={"max_steps": 2, "batch_size": 2, "gradient_accumulation_steps": 1},
                   optimizer={"learning_rate": 5e-2}, output={"output_name": "t", "save_every_n_steps": 2})
    run = new_run_dir(tmp_path, "pg")
    write_job_toml(job, run.job_toml)
    trainer.train(job, run, Events(), StopRequest(), text.prepare)
    listed = run_adapters(run.root)
    assert [label.split(" · ")[1] for label, _ in listed] == ["step-000002", "final"]
    srv, events = server
    srv.handle(70, request("load_adapter", name="ckpt", path=str(listed[0][1])))
    srv.handle(71, request("load_adapter", name="final", path=str(run.root)))
    assert [e["source"] for e in events.of("adapter_loaded")[-2:]] == ["checkpoint", "peft"]
    ids = torch.tensor([[0, 5, 6, 7, 8, 9]])
    logits = {}
    for name in ("ckpt", "final"):
        srv.backend.set_active([name], [1.0])
        with torch.no_grad():
            logits[name] = srv.backend.model(input_ids=ids).logits
    srv.backend.set_active([], [])
    with torch.no_grad(), srv.backend.model.disable_adapter():
        base = srv.backend.model(input_ids=ids).logits
    torch.testing.assert_close(logits["ckpt"], logits["final"])
    assert not torch.allclose(logits["final"], base)


# --- adapter sources (no torch) -------------------------------------------------------

def test_adapter_sources_name_what_is_wrong(tmp_path, adapters):
    with pytest.raises(HintedError, match="no such file"):
        adapter_source(tmp_path / "missing")
    (tmp_path / "x.ckpt").write_bytes(b"")
    with pytest.raises(HintedError, match="not a .safetensors"):
        adapter_source(tmp_path / "x.ckpt")
    half = tmp_path / "checkpoints" / "step-000004"
    half.mkdir(parents=True)
    (half / "trainable.safetensors").write_bytes(b"")
    with pytest.raises(HintedError, match="incomplete checkpoint"):
        adapter_source(half)
    assert adapter_source(adapters["a"]).kind == "peft"
    assert adapter_source(adapters["a"] / "adapter_model.safetensors").kind == "file"


def test_remembered_state_keeps_one_base_and_the_last_of_each_adapter():
    state = []
    for req in (request("load_base", path="m1"), request("load_adapter", name="a", path="1"),
                request("load_adapter", name="b", path="2"), request("set_adapters", names=["a"]),
                request("load_adapter", name="a", path="3"), request("set_adapters", names=["b"])):
        state = remember(state, req)
    assert [(r["type"], r.get("name"), r.get("path")) for r in state] == [
        ("load_base", None, "m1"), ("load_adapter", "b", "2"), ("load_adapter", "a", "3"),
        ("set_adapters", None, None)]
    assert state[-1]["names"] == ["b"]
    assert remember(state, request("load_base", path="m2")) == [request("load_base", path="m2")]


# --- the process and its launcher -------------------------------------------------------

def wait_for(proc: PlaygroundProcess, kind: str, timeout: float = 120.0) -> list[dict]:
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            ev = proc.events.get(timeout=1.0)
        except Exception:
            continue
        seen.append(ev)
        if ev["type"] == kind:
            return seen
        assert ev["type"] != "error", ev
    raise AssertionError(f"no {kind} event; saw {[e['type'] for e in seen]}")


def test_the_process_streams_survives_a_kill_and_comes_back_with_its_adapters(adapters, tmp_path):
    proc = PlaygroundProcess(stderr_path=tmp_path / "err.log")
    try:
        proc.send(request("load_base", kind="text", path=str(MODEL)))
        proc.send(request("load_adapter", name="a", path=str(adapters["a"])))
        wait_for(proc, "adapter_loaded")
        proc.send(request("generate", id="g1", adapters=["a"], messages=chat(), max_new_tokens=6,
                          temperature=0))
        seen = wait_for(proc, "done")
        tokens = [e for e in seen if e["type"] == "token"]
        assert tokens and "".join(t["text"] for t in tokens) == seen[-1]["text"]
        first = seen[-1]["text"]
        os.killpg(proc.pid, signal.SIGKILL) if os.name != "nt" else os.kill(proc.pid, 9)
        exited = wait_for(proc, "exited")[-1]
        assert exited["reason"] == "crashed" and not proc.running
        proc.send(request("generate", id="g2", adapters=["a"], messages=chat(), max_new_tokens=6,
                          temperature=0))
        seen = wait_for(proc, "done")
        assert [e["type"] for e in seen if e["type"] in ("base_loaded", "adapter_loaded")] == \
            ["base_loaded", "adapter_loaded"]
        assert seen[-1]["text"] == first and proc.starts == 2
    finally:
        proc.stop()
    assert wait_for(proc, "exited")[-1]["reason"] == "shutdown"


def test_an_idle_process_is_stopped_and_a_request_starts_it_again(tmp_path):
    now = [0.0]
    proc = PlaygroundProcess(idle_s=60, stderr_path=tmp_path / "err.log", clock=lambda: now[0])
    try:
        proc.send(request("set_adapters", names=[]))
        assert "No base model" in wait_for(proc, "error")[-1]["message"]
        assert not proc.stop_if_idle()
        now[0] = 61.0
        assert proc.stop_if_idle() and not proc.running
        assert wait_for(proc, "exited")[-1]["reason"] == "idle"
        proc.send(request("set_adapters", names=[]))
        assert proc.running and proc.starts == 2
        assert "No base model" in wait_for(proc, "error")[-1]["message"]
    finally:
        proc.stop()


def test_events_decode_only_known_types():
    assert decode_event('{"type":"token","id":1,"text":"a"}') == {"type": "token", "id": 1, "text": "a"}
    assert decode_event("Loading weights: 100%") is None
    assert decode_event(json.dumps({"type": "progress"})) is None


def test_answers_end_at_the_chat_template_end_token_as_well_as_eos():
    """A template whose turns end with a token other than EOS (Llama 3's <|eot_id|>,
    Qwen's <|im_end|>) stops the answer there; without the template, EOS alone."""
    from types import SimpleNamespace

    from lora_studio.engine.text.model import load_tokenizer
    from lora_studio.playground.text import end_token_ids
    tok = load_tokenizer(MODEL)
    config = SimpleNamespace(eos_token_id=[1, 0])
    assert end_token_ids(tok, True, config) == [1, 0]          # <|end|> is EOS here
    tok.chat_template = "{% for m in messages %}{{ m['content'] }}<pad>\n{% endfor %}"
    assert end_token_ids(tok, True, SimpleNamespace(eos_token_id=1)) == [1, tok.pad_token_id]
    assert end_token_ids(tok, False, SimpleNamespace(eos_token_id=1)) == [1]
