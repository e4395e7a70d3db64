"""ONNX export of a merged text model (issue 20): onnxruntime runs the graph and its
logits match the merged PyTorch model's, with and without the KV-cache graph; fp16; the
check written and shown; an unsupported family or a failed check writes nothing."""
import json
import shutil

import numpy as np
import pytest
import torch

from lora_studio.cli import main
from lora_studio.config.jobfile import write_job_toml
from lora_studio.engine import text
from lora_studio.engine.core import trainer
from lora_studio.engine.core.control import EngineError, StopRequest
from lora_studio.engine.exports import export_run
from lora_studio.runs.layout import new_run_dir
from lora_studio.runs.onnx_check import ONNX_CHECK
from test_engine_text import MODEL, Recorder, make_job

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")


def _train(folder, **model):
    job = make_job(model=model, training={"max_steps": 2}) if model else \
        make_job(training={"max_steps": 2})
    run = new_run_dir(folder, "onnx")
    write_job_toml(job, run.job_toml)
    trainer.train(job, run, Recorder(), StopRequest(), text.prepare)
    return run


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return _train(tmp_path_factory.mktemp("runs"))


def _merged(run):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM
    base = AutoModelForCausalLM.from_pretrained(str(json.loads(
        (run.final / "adapter_config.json").read_text())["base_model_name_or_path"]))
    return PeftModel.from_pretrained(base, str(run.final)).merge_and_unload().eval()


def test_onnx_export_runs_in_onnxruntime_and_matches_the_merged_model(trained, capsys):
    from transformers import AutoTokenizer
    assert main(["export", str(trained.root), "--format", "onnx"]) == 0
    out = capsys.readouterr().out
    folder = trained.exports / "t-onnx"
    assert {"model.onnx", "config.json", "generation_config.json", ONNX_CHECK} <= \
        {p.name for p in folder.iterdir()}
    check = json.loads((folder / ONNX_CHECK).read_text())
    assert check["passed"] and check["dtype"] == "float32" and check["kv_cache"] is False
    assert "onnxruntime" in out and "matches the merged PyTorch model" in out
    # Independently of the check: a prompt the check did not use, from the exported
    # tokenizer, through onnxruntime against the merged model built here.
    tokenizer = AutoTokenizer.from_pretrained(folder)
    ids = tokenizer("Ahoy, what be the colour of a plum?", return_tensors="pt")["input_ids"]
    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(None, {"input_ids": ids.numpy(),
                             "attention_mask": np.ones_like(ids.numpy())})[0]
    with torch.no_grad():
        want = _merged(trained)(input_ids=ids).logits.numpy()
    assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max()


def test_fp16_export_is_checked_with_its_own_tolerance(trained):
    [*_, check] = [d for d in export_run(trained.root, "onnx-fp16") if d.path.name == ONNX_CHECK]
    data = json.loads(check.path.read_text())
    assert data["dtype"] == "float16" and data["passed"] and data["tolerance"] == 2e-2
    import onnx
    graph = onnx.load(str(check.path.parent / "model.onnx"), load_external_data=False).graph
    assert graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT16


def _greedy_with_cache(session, config, ids, steps, dtype=np.float32):
    """Greedy tokens as a generator drives the KV-cache graph: one prefill from an empty
    cache, then one token per call fed the last call's present tensors."""
    names = [i.name for i in session.get_inputs()][3:]
    heads = config.num_key_value_heads
    head_dim = config.hidden_size // config.num_attention_heads
    past = [np.zeros((1, heads, 0, head_dim), dtype) for _ in names]
    tokens, step = [], ids
    for _ in range(steps):
        length = (past[0].shape[2] + step.shape[1])
        logits, *past = session.run(None, {
            "input_ids": step, "attention_mask": np.ones((1, length), np.int64),
            "position_ids": np.arange(length - step.shape[1], length)[None],
            **dict(zip(names, past))})
        tokens.append(int(logits[0, -1].argmax()))
        step = np.array([[tokens[-1]]])
    return tokens, logits


def test_kv_cache_export_generates_what_the_merged_model_generates(trained, capsys):
    from transformers import AutoConfig, AutoTokenizer
    assert main(["export", str(trained.root), "--format", "onnx", "--kv-cache"]) == 0
    assert "a prefill and one decoding step from its KV cache" in capsys.readouterr().out
    folder = trained.exports / "t-onnx-kv"
    check = json.loads((folder / ONNX_CHECK).read_text())
    assert check["passed"] and check["kv_cache"] is True and check["decode_steps"] == 1
    assert check["step_relative_diff"] <= check["tolerance"] == 1e-4
    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    config = AutoConfig.from_pretrained(folder)
    layers = config.num_hidden_layers
    assert [i.name for i in session.get_inputs()] == [
        "input_ids", "attention_mask", "position_ids",
        *[f"past_key_values.{i}.{p}" for i in range(layers) for p in ("key", "value")]]
    assert [o.name for o in session.get_outputs()] == [
        "logits", *[f"present.{i}.{p}" for i in range(layers) for p in ("key", "value")]]
    # A prompt the check did not use, six tokens through the cache against generate().
    tokenizer = AutoTokenizer.from_pretrained(folder)
    ids = tokenizer("Ahoy, what be the colour of a plum?", return_tensors="pt")["input_ids"]
    tokens, last = _greedy_with_cache(session, config, ids.numpy(), 6)
    merged = _merged(trained)
    with torch.no_grad():
        want = merged.generate(ids, max_new_tokens=6, min_new_tokens=6, do_sample=False)
        want_last = merged(input_ids=want[:, :-1]).logits[:, -1:].numpy()
    assert tokens == want[0, ids.shape[1]:].tolist()
    assert np.abs(last - want_last).max() <= 1e-4 * np.abs(want_last).max()


def test_kv_cache_fp16_export_runs_on_the_cpu_and_is_checked(trained):
    [check] = [d for d in export_run(trained.root, "onnx-kv-fp16") if d.path.name == ONNX_CHECK]
    data = json.loads(check.path.read_text())
    assert data["dtype"] == "float16" and data["kv_cache"] and data["passed"]
    session = ort.InferenceSession(str(check.path.parent / "model.onnx"),
                                   providers=["CPUExecutionProvider"])
    assert {i.type for i in session.get_inputs()[3:]} == {"tensor(float16)"}
    assert {o.type for o in session.get_outputs()} == {"tensor(float16)"}


def test_kv_cache_goes_only_with_an_onnx_format(trained, capsys):
    assert main(["export", str(trained.root), "--format", "merged", "--kv-cache"]) == 2
    assert "--kv-cache goes with --format onnx or onnx-fp16" in capsys.readouterr().err


def test_a_failed_check_writes_nothing(trained, monkeypatch):
    from lora_studio.engine.text import onnx_export
    monkeypatch.setitem(onnx_export.TOLERANCE, "float32", 0.0)
    with pytest.raises(EngineError, match="nothing was written"):
        export_run(trained.root, "onnx", name="strict")
    assert not [p for p in trained.exports.iterdir() if "strict" in p.name]


@pytest.mark.parametrize("fmt", ["onnx", "onnx-kv"])
def test_an_unsupported_family_is_refused_before_anything_is_written(trained, tmp_path, capsys,
                                                                    fmt):
    odd = tmp_path / "odd model"
    shutil.copytree(MODEL, odd)
    config = json.loads((odd / "config.json").read_text())
    (odd / "config.json").write_text(json.dumps({**config, "model_type": "rwkv"}))
    run_copy = tmp_path / "run"
    shutil.copytree(trained.root, run_copy)
    job = (run_copy / "job.toml").read_text(encoding="utf-8")
    (run_copy / "job.toml").write_text(job.replace(str(MODEL), str(odd).replace("\\", "/")),
                                       encoding="utf-8")
    before = sorted(p.name for p in (run_copy / "exports").iterdir())
    assert main(["export", str(run_copy), "--format", fmt]) == 1
    err = capsys.readouterr().err
    assert "does not support this model's family ('rwkv')" in err and "--format merged" in err
    assert sorted(p.name for p in (run_copy / "exports").iterdir()) == before


@pytest.mark.parametrize("family", ["qwen2", "mistral"])
def test_the_other_exportable_families(family, tmp_path):
    """Each family in EXPORTABLE goes through the same export and check."""
    from transformers import AutoConfig, AutoModelForCausalLM
    folder = tmp_path / family
    config = AutoConfig.for_model(family, vocab_size=384, hidden_size=32, intermediate_size=64,
                                  num_hidden_layers=2, num_attention_heads=4,
                                  num_key_value_heads=2, max_position_embeddings=128)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    for name in MODEL.iterdir():
        if "token" in name.name or name.name == "special_tokens_map.json":
            shutil.copy(name, folder / name.name)
    run = _train(tmp_path / "runs", path=str(folder))
    for fmt in ("onnx", "onnx-kv"):
        [check] = [d for d in export_run(run.root, fmt) if d.path.name == ONNX_CHECK]
        assert json.loads(check.path.read_text())["passed"]
