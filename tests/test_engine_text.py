"""The text engine on the tiny model shipped in resources/: a few steps per run."""
import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lora_studio.config.jobfile import write_job_toml
from lora_studio.config.parse import parse_job
from lora_studio.data.text_records import TextRecord, Turn
from lora_studio.engine import text
from lora_studio.engine.core import loop, trainer
from lora_studio.engine.core.checkpoint import COMPLETE
from lora_studio.engine.core.control import StopRequest
from lora_studio.engine.core.safetensors_io import read_metadata
from lora_studio.engine.text import data as text_data, model as text_model, tokens
from lora_studio.engine.text import train as text_train
from lora_studio.engine.text.export import ADAPTER_WEIGHTS
from lora_studio.engine.run import run
from lora_studio.runs.events import decode, read_events
from lora_studio.runs.layout import RunDir, new_run_dir
from exact import Grads, assert_same_checkpoint

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "resources" / "tiny-text-model"
DATA = ROOT / "resources" / "demo-text" / "chat.jsonl"


def make_job(**sections):
    data = {"model": {"path": str(MODEL), "family": "text"},
            "dataset": {"path": str(DATA), "max_seq_length": 64},
            "network": {"rank": 4, "alpha": 8.0, "dropout": 0.1},
            "optimizer": {"learning_rate": 3e-3, "lr_scheduler": "linear", "lr_warmup_steps": 1},
            "training": {"max_steps": 6, "batch_size": 4, "gradient_accumulation_steps": 2},
            "output": {"output_name": "t"}}
    for section, values in sections.items():
        data.setdefault(section, {}).update(values)
    job, findings = parse_job(data)
    assert not [f for f in findings if f.level == "error"], findings
    return job


class Recorder(list):
    def __call__(self, ev):
        self.append(ev)

    def of(self, kind):
        return [e for e in self if e["type"] == kind]


def losses(events):
    return [e["loss"] for e in events.of("progress")]


@pytest.fixture(scope="module")
def tokenizer():
    return text_model.load_tokenizer(MODEL)


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """Six steps with no interruption; the reference for resume and export."""
    job = make_job(output={"output_name": "t", "save_every_n_steps": 4, "sample_every_n_steps": 3,
                           "sample_prompts": ["What colour is a plum?"], "sample_max_new_tokens": 6})
    folder = new_run_dir(tmp_path_factory.mktemp("runs"), "straight")
    events = Recorder()
    result = trainer.train(job, folder, events, StopRequest(), text.prepare)
    return job, folder, events, result


# --- tokenisation --------------------------------------------------------------------

def chat(*turns):
    return TextRecord(tuple(Turn(r, c) for r, c in turns), Path("x.jsonl"), 1, "messages")


def test_template_masks_exactly_the_prompt(tokenizer):
    record = chat(("system", "Be a pirate."), ("user", "Hi?"), ("assistant", "Arr."),
                  ("user", "Again?"), ("assistant", "Arr arr."))
    item, cut = tokens.encode_record(record, tokenizer, use_template=True, responses_only=True,
                                   max_length=512)
    rendered = tokenizer.apply_chat_template(
        [{"role": t.role, "content": t.content} for t in record.turns], tokenize=False)
    assert not cut and tokenizer.decode(item.input_ids) == rendered
    trained = [i for i, label in enumerate(item.labels) if label != tokens.IGNORE]
    assert all(item.labels[i] == item.input_ids[i] for i in trained)
    spans = tokenizer.decode([item.input_ids[i] for i in trained])
    assert spans == "Arr.<|end|>\nArr arr.<|end|>\n"
    everything, _ = tokens.encode_record(record, tokenizer, use_template=True, responses_only=False,
                                       max_length=512)
    assert everything.labels == everything.input_ids == item.input_ids


def test_template_that_marks_the_last_turn(tokenizer):
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(MODEL)
    tok.chat_template = ("{% for m in messages %}<|{{ m['role'] }}|>\n"
                         "{% if loop.last %}[final] {% endif %}{{ m['content'] }}<|end|>\n"
                         "{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}")
    record = chat(("user", "Hi?"), ("assistant", "Arr."), ("user", "More?"), ("assistant", "Aye."))
    item, _ = tokens.encode_record(record, tok, use_template=True, responses_only=True,
                                 max_length=512)
    trained = [t for t, label in zip(item.input_ids, item.labels) if label != tokens.IGNORE]
    # " Aye" is one token that starts at the space the template put before the answer
    assert tok.decode(trained) == "Arr.<|end|> Aye.<|end|>"
    assert "[final]" in tok.decode(item.input_ids)


def test_fallback_format_and_plain_text(tokenizer):
    record = chat(("user", "Hi?"), ("assistant", "Arr."))
    item, _ = tokens.encode_record(record, tokenizer, use_template=False, responses_only=True,
                                 max_length=512)
    assert tokenizer.decode(item.input_ids) == "<s>User: Hi?\nAssistant: Arr.<|end|>\n"
    trained = [t for t, label in zip(item.input_ids, item.labels) if label != tokens.IGNORE]
    assert trained == tokenizer("Arr.", add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    plain = TextRecord((Turn("text", "Ahoy matey"),), Path("x.txt"), 1, "text")
    item, _ = tokens.encode_record(plain, tokenizer, use_template=True, responses_only=True,
                                 max_length=512)
    assert item.labels == item.input_ids and item.input_ids[-1] == tokenizer.eos_token_id
    assert tokens.template_in_use(tokenizer, "none") is False


def test_truncation_is_counted_and_logged(tokenizer, tmp_path):
    rows = [{"prompt": "short", "response": "ok"},
            {"prompt": "What colour is a banana?", "response": "Ahoy! " * 20},
            {"prompt": "What colour is a lemon? " * 10, "response": "yellow"}]
    path = tmp_path / "long.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    job = make_job(dataset={"path": str(path), "max_seq_length": 24})
    events = Recorder()
    data = text_data.load_dataset(job, tokenizer, events)
    assert len(data) == 2 and all(len(d.input_ids) <= 24 for d in data)
    logs = {e.get("truncated"): e for e in events.of("log")}
    assert 2 in logs  # the long answer is cut, the long question leaves nothing to learn
    assert any(e.get("no_target") == 1 for e in events.of("log"))


@pytest.mark.parametrize("use_template", [True, False])
def test_a_long_record_is_cut_before_tokenising_and_encodes_the_same(tokenizer, use_template):
    """What is cut could not reach the kept tokens: the ids are those of the whole
    record, and the tokenizer never sees more than the budget."""
    words = " ".join(f"word{i}" for i in range(30_000))  # ~250k characters
    record = chat(("user", "Tell me a long story."), ("assistant", words), ("user", "more"),
                  ("assistant", words))
    seen = []
    original = tokenizer.__class__.__call__

    def spy(self, text, *args, **kwargs):
        seen.append(len(text))
        return original(self, text, *args, **kwargs)

    whole, _ = tokens.encode_record(record, tokenizer, use_template=use_template,
                                    responses_only=True, max_length=10_000_000)
    tokenizer.__class__.__call__ = spy
    try:
        cut, truncated = tokens.encode_record(record, tokenizer, use_template=use_template,
                                              responses_only=True, max_length=64)
    finally:
        tokenizer.__class__.__call__ = original
    assert truncated and cut.input_ids == whole.input_ids[:64] and cut.labels == whole.labels[:64]
    assert max(seen) <= 64 * tokens.MAX_CHARS_PER_TOKEN + 1000  # the budget plus template text


def test_a_100_mb_record_needs_little_memory(tmp_path):
    """A child process reads a 100 MB record and encodes it at max_seq_length 128: its
    peak memory stays within a few hundred MB of what holding the file takes."""
    data = tmp_path / "huge.jsonl"
    data.write_text(json.dumps({"prompt": "Summarise:", "response": "blah " * 20_000_000}) + "\n",
                    encoding="utf-8")
    script = f"""
import resource, sys
from lora_studio.config.parse import parse_job
from lora_studio.engine.text import data, model
job, _ = parse_job({{"model": {{"path": {str(MODEL)!r}, "family": "text"}},
                    "dataset": {{"path": {str(data)!r}, "max_seq_length": 128}}}})
tokenizer = model.load_tokenizer(job.model.path)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
encoded = data.load_dataset(job, tokenizer, lambda ev: None)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(len(encoded), len(encoded[0].input_ids), (after - before) // 1024)
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    count, length, grown_mb = map(int, out.stdout.split())
    assert (count, length) == (1, 128)
    assert grown_mb < 400, f"encoding grew the process by {grown_mb} MB"  # ~110 MB here


# --- training, cancel, resume --------------------------------------------------------

def test_resume_gives_the_same_losses(straight, tmp_path):
    job, _, reference, _ = straight
    assert len(losses(reference)) == 6 and losses(reference)[-1] < losses(reference)[0]
    folder = new_run_dir(tmp_path, "cancelled")
    first = Recorder()
    run(job, folder.root, first, lambda: len(first.of("progress")) >= 2)
    finished = first.of("finished")[-1]
    assert finished["status"] == "cancelled" and finished["step"] == 2
    checkpoint = Path(finished["checkpoint"])
    assert (checkpoint / COMPLETE).exists() and folder.latest_checkpoint() == checkpoint
    second = Recorder()
    run(job, folder.root, second, None, resume=checkpoint)
    assert second.of("started")[0]["start_step"] == 2
    assert losses(first) + losses(second) == losses(reference)
    assert second.of("finished")[-1]["status"] == "completed"
    # the end state itself, not rounded losses: LoRA dropout draws from the restored RNG
    assert_same_checkpoint(folder.latest_checkpoint(), straight[1].latest_checkpoint())


def test_accumulation_splits_a_step_without_changing_it(tmp_path):
    """The records differ in length. Batch 4 x accumulation 1 and batch 2 x 2 train the
    same records per step, so the gradient (of the mean over label tokens), the update
    and the reported loss are the same."""
    runs = {}
    for name, (batch, accumulation) in {"whole": (4, 1), "split": (2, 2)}.items():
        job = make_job(network={"dropout": 0.0}, optimizer={"lr_warmup_steps": 0},
                       training={"max_steps": 2, "batch_size": batch,
                                 "gradient_accumulation_steps": accumulation})
        events = Recorder()
        with Grads() as grads:
            result = trainer.train(job, new_run_dir(tmp_path, name), events, StopRequest(),
                                   text.prepare)
        runs[name] = grads, result, events
    (whole, one, one_events), (split, two, two_events) = runs["whole"], runs["split"]
    data = one.trainee.data
    first_step = [text_train.label_count(data[i]) for i in one.trainee.epoch_batches(0)[0]]
    assert len(set(first_step)) > 1  # the test means something only with uneven records
    whole.assert_same_as(split, rtol=1e-4)
    state = two.trainee.trainable_state()
    for key, value in one.trainee.trainable_state().items():
        assert torch.allclose(value, state[key], rtol=1e-4, atol=1e-7), key
    assert losses(one_events) == pytest.approx(losses(two_events), rel=1e-5)


def test_the_loss_is_the_mean_over_label_tokens(tokenizer):
    """By hand: the first step's loss is the cross-entropy summed over the tokens whose
    label is not IGNORE, divided by their count (all tokens here: the first is a label
    nothing predicts)."""
    job = make_job(network={"dropout": 0.0}, dataset={"train_on_responses_only": False})
    info = text_model.resolve_model(job)
    data = text_data.load_dataset(job, tokenizer, Recorder())
    model = text_model.build_peft_model(job, info, text_model.load_base_model(job, info.path))
    items = data[:3]
    batch = tokens.collate(items, tokenizer.pad_token_id)
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    total, count = 0.0, 0
    for row, item in enumerate(items):
        for position in range(1, len(item.labels)):
            if item.labels[position] != tokens.IGNORE:
                log_probs = torch.log_softmax(logits[row, position - 1].double(), dim=-1)
                total -= log_probs[item.labels[position]].item()
                count += 1
    trainee = text_train.TextTrainee(job, None, model, tokenizer, data, False)
    assert trainee.batch_items([0, 1, 2]) == count
    with torch.no_grad():
        got = text_train.causal_lm_loss_sum(logits, batch["labels"]).item()
    assert got == pytest.approx(total, rel=1e-5)


def test_periodic_checkpoints_and_samples(straight):
    _, folder, events, _ = straight
    assert [e["step"] for e in events.of("checkpoint")] == [4, 6]
    assert all((Path(e["path"]) / COMPLETE).exists() for e in events.of("checkpoint"))
    samples = events.of("sample")
    assert [e["step"] for e in samples] == [3, 6]
    assert samples[0]["samples"][0]["prompt"] == "What colour is a plum?"
    assert Path(samples[1]["path"]).read_text(encoding="utf-8").startswith("### What colour")
    progress = events.of("progress")[-1]
    assert progress["total"] == 6 and progress["epoch"] == 2 and progress["eta_s"] == 0


def test_engine_main_without_job_creates_nothing(tmp_path, capsys):
    from lora_studio.engine.__main__ import main
    assert main([str(tmp_path / "no run")]) == 2
    assert decode(capsys.readouterr().out)["kind"] == "config"
    assert not (tmp_path / "no run").exists()


def test_stop_file_cancels(tmp_path):
    (tmp_path / "STOP").touch()
    assert StopRequest(lambda: False, tmp_path)()
    assert not StopRequest(lambda: False, tmp_path / "elsewhere")()


def test_nan_loss_stops_with_an_error_event(tmp_path, monkeypatch):
    original = text_train.build_peft_model

    def poisoned(job, info, base):
        model = original(job, info, base)
        layer = model.get_base_model().model.layers[0]
        layer.register_forward_hook(lambda mod, args, out: out * float("nan"))
        return model

    monkeypatch.setattr(text_train, "build_peft_model", poisoned)
    events = Recorder()
    run(make_job(), tmp_path, events)
    error = events.of("error")[-1]
    assert error["kind"] == "nan" and "step 1" in error["message"]
    assert "learning_rate" in error["hint"] and not events.of("progress")


def test_out_of_memory_becomes_an_error_with_a_hint(tmp_path, monkeypatch):
    def oom(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(loop, "optimizer_step", oom)
    events = Recorder()
    run(make_job(), tmp_path, events)
    error = events.of("error")[-1]
    assert error["kind"] == "oom" and "2.00 GiB" in error["message"]
    assert "batch_size" in error["hint"] and "gradient_checkpointing" in error["hint"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU path")
@pytest.mark.parametrize("section", [{"model": {"load_in_4bit": True}},
                                     {"optimizer": {"optimizer": "AdamW8bit"}}])
def test_gpu_only_options_are_config_errors_on_cpu(tmp_path, section):
    events = Recorder()
    run(make_job(**section), tmp_path, events)
    error = events.of("error")[-1]
    assert error["kind"] == "config" and "NVIDIA" in error["message"]


# --- export ---------------------------------------------------------------------------

def _logits(model, tokenizer):
    ids = torch.tensor([tokenizer("What colour is a plum?")["input_ids"]])
    with torch.no_grad():
        return model(input_ids=ids).logits


def test_export_round_trip_through_peft(straight, tokenizer):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM
    job, folder, events, result = straight
    exported = folder.exports / "t"
    assert events.of("finished")[-1]["files"] == [str(exported / ADAPTER_WEIGHTS),
                                                  str(exported / "adapter_config.json")]
    result.trainee.model.eval()
    expected = _logits(result.trainee.model, tokenizer)
    loaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(MODEL), exported).eval()
    assert torch.allclose(_logits(loaded, tokenizer), expected, atol=1e-5)
    base = _logits(AutoModelForCausalLM.from_pretrained(MODEL).eval(), tokenizer)
    assert not torch.allclose(base, expected, atol=1e-3)  # the adapter does something
    meta = read_metadata(exported / ADAPTER_WEIGHTS)
    assert meta["format"] == "pt" and meta["lora_studio.rank"] == "4"
    assert meta["lora_studio.alpha"] == "8" and meta["lora_studio.steps"] == "6"
    assert meta["lora_studio.dataset_size"] == "34" and meta["lora_studio.schema_version"] == "2"
    assert meta["lora_studio.base_model"] == MODEL.name  # no local folders in a shared file


def test_failed_safetensors_write_leaves_the_old_file(tmp_path):
    from safetensors.torch import load_file

    from lora_studio.engine.core.safetensors_io import atomic_save_safetensors
    path = tmp_path / "adapter model.safetensors"
    atomic_save_safetensors({"a": torch.ones(2)}, path, {"step": "1"})
    shared = torch.zeros(4)
    with pytest.raises(Exception):  # tensors sharing memory: save_file refuses mid-write
        atomic_save_safetensors({"a": shared, "b": shared}, path, {"step": "2"})
    assert [p.name for p in tmp_path.iterdir()] == [path.name]
    assert torch.equal(load_file(path)["a"], torch.ones(2)) and read_metadata(path)["step"] == "1"


def test_merged_export_and_cli(straight, tokenizer, capsys):
    from transformers import AutoModelForCausalLM

    from lora_studio.cli import main
    job, folder, _, result = straight
    write_job_toml(job, folder.job_toml)
    assert main(["export", str(folder.root), "--format", "merged"]) == 0
    merged_dir = folder.exports / "t-merged"
    shard = next(merged_dir.glob("*.safetensors"))
    digest = hashlib.sha256(shard.read_bytes()).hexdigest()
    assert f"{shard}  (merged, SHA-256 {digest})" in capsys.readouterr().out.splitlines()
    merged = AutoModelForCausalLM.from_pretrained(merged_dir).eval()
    result.trainee.model.eval()
    assert torch.allclose(_logits(merged, tokenizer), _logits(result.trainee.model, tokenizer), atol=1e-4)
    assert read_metadata(shard)["lora_studio.steps"] == "6"
    assert main(["export", str(folder.root), "--merged"]) == 0  # the old spelling; same bytes
    assert digest in capsys.readouterr().out
    assert hashlib.sha256(shard.read_bytes()).hexdigest() == digest
    assert not [p for p in folder.exports.iterdir() if p.name.startswith(".")]  # no temp left
    assert main(["export", str(folder.root.parent)]) == 1
    assert "not a run folder" in capsys.readouterr().err


def test_merged_export_never_replaces_files_it_did_not_write(straight, capsys):
    from lora_studio.cli import main
    job, folder, _, _ = straight
    write_job_toml(job, folder.job_toml)
    assert main(["export", str(folder.root), "--format", "merged"]) == 0
    own = folder.exports / "t-merged"
    notes = own / "my notes.txt"  # the user keeps a file of theirs in the export folder
    notes.write_text("keep me", encoding="utf-8")
    capsys.readouterr()
    assert main(["export", str(folder.root), "--format", "merged"]) == 0
    beside = folder.exports / "t-merged-2"
    assert str(beside) in capsys.readouterr().out
    assert notes.read_text(encoding="utf-8") == "keep me" and (own / "config.json").exists()
    assert (beside / "config.json").exists()
    assert main(["export", str(folder.root), "--format", "merged"]) == 0  # its own: replaced
    assert not (folder.exports / "t-merged-3").exists()


def test_cli_train_makes_a_run_folder(tmp_path, capsys):
    from lora_studio.cli import main
    out = tmp_path / "rüns with space"
    code = main(["train", str(ROOT / "presets" / "demo-text-tiny.toml"),
                 "--set", "training.max_steps=2", "--set", f"output.output_dir={out}",
                 "--set", "output.save_every_n_steps=0", "--set", "output.sample_every_n_steps=0"])
    assert code == 0, capsys.readouterr()
    (folder,) = [RunDir(p) for p in out.iterdir()]
    assert folder.status() == "finished" and (folder.final / ADAPTER_WEIGHTS).exists()
    assert "step 2/2" in capsys.readouterr().out
    assert main(["train", "--resume", str(folder.root)]) == 0
    assert "Resuming" in capsys.readouterr().out
    assert [e["type"] for e in read_events(folder.events)].count("started") == 2


# --- the engine process ----------------------------------------------------------------

def test_engine_process_streams_json_and_cancels_on_sigterm(tmp_path):
    folder = new_run_dir(tmp_path, "proc")
    write_job_toml(make_job(training={"max_steps": 10_000}), folder.job_toml)
    proc = subprocess.Popen([sys.executable, "-m", "lora_studio.engine", str(folder.root)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    lines = []
    try:
        for line in proc.stdout:
            lines.append(line)
            if '"type":"progress"' in line:
                proc.send_signal(signal.SIGTERM)
                break
        lines += proc.stdout.readlines()
        assert proc.wait(timeout=120) == 0
    finally:
        proc.kill()
    events = [decode(line) for line in lines]
    assert all(events), lines
    assert events[-1]["type"] == "finished" and events[-1]["status"] == "cancelled"
    assert (Path(events[-1]["checkpoint"]) / COMPLETE).exists()
    assert [e["type"] for e in read_events(folder.events)] == [e["type"] for e in events]


def test_terminal_progress_redraws_on_a_tty_and_prints_lines_into_a_log():
    import io
    from lora_studio.runs.terminal import TerminalProgress

    class Tty(io.StringIO):
        def isatty(self):
            return True

    events = [{"type": "progress", "step": s, "total": 40, "loss": 1.0, "it_s": 2.0, "eta_s": 3}
              for s in range(1, 41)]
    tty, log = Tty(), io.StringIO()
    for out in (tty, log):
        show = TerminalProgress(out)
        for ev in events:
            show(ev)
    assert tty.getvalue().count("\r") == 40 and "\n" not in tty.getvalue()
    lines = log.getvalue().splitlines()
    assert "\r" not in log.getvalue() and len(lines) == 20  # every 5 %: steps 2, 4, ... 40
    assert lines[-1].startswith("step 40/40")


def test_terminal_shows_phases_counted_on_one_line_or_at_their_ends():
    import io
    from lora_studio.runs.terminal import TerminalProgress

    class Tty(io.StringIO):
        def isatty(self):
            return True

    events = [{"type": "phase", "phase": "loading the model"}] + \
        [{"type": "phase", "phase": "tokenising", "done": d, "total": 50} for d in range(0, 51, 10)]
    tty, log = Tty(), io.StringIO()
    for out in (tty, log):
        show = TerminalProgress(out)
        for ev in events:
            show(ev)
    assert tty.getvalue().count("\rtokenising") == 6 and "tokenising 50/50" in tty.getvalue()
    assert log.getvalue().splitlines() == ["loading the model...", "tokenising 0/50",
                                           "tokenising 50/50"]


class _RunsCode:
    """A pickle payload that would create a folder when unpickled without the guard."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        import os
        return (os.mkdir, (self.marker,))


def test_a_pickle_model_that_carries_code_is_a_clear_error_not_internal(tmp_path):
    import shutil

    import torch
    from safetensors.torch import load_file

    model = tmp_path / "pickled model"
    shutil.copytree(MODEL, model)
    weights = load_file(model / "model.safetensors")
    (model / "model.safetensors").unlink()
    marker = tmp_path / "code ran"
    torch.save({**weights, "extra": _RunsCode(marker)}, model / "pytorch_model.bin")
    events = Recorder()
    run(make_job(model={"path": str(model), "allow_pickle": True}),
        new_run_dir(tmp_path, "pickle").root, events)
    [error] = events.of("error")
    assert error["kind"] == "config" and "holds more than weights" in error["message"]
    assert str(model) in error["message"] and not marker.exists()


def test_a_refused_pickle_deep_in_a_chain_is_a_config_error_event():
    import pickle

    from lora_studio.engine.core.control import error_event
    try:
        try:
            raise pickle.UnpicklingError("Weights only load failed")
        except pickle.UnpicklingError as inner:
            raise OSError("Unable to load weights from checkpoint file") from inner
    except OSError as exc:
        ev = error_event(exc)
    assert ev["kind"] == "config" and "holds more than weights" in ev["message"]
    assert error_event(ValueError("x"))["kind"] == "internal"
