"""Round trips of text exports on the tiny Llama: the merged model is loaded back by
transformers and compared with PEFT's base + adapter (verify.json beside it, shown by the
CLI); a merge that lost the adapter, or an adapter that changes nothing, is an error that
writes nothing; the GGUFs are loaded back by llama.cpp where llama-cpp-python is
installed, and say how to get it where it is not."""
import json
from pathlib import Path

import pytest
import torch

from lora_studio.cli import main
from lora_studio.config.jobfile import write_job_toml
from lora_studio.config.parse import parse_job
from lora_studio.engine.text.export import write_peft_adapter
from lora_studio.runs.layout import new_run_dir
from lora_studio.runs.roundtrip import LLAMACPP_MISSING, VERIFY, verify_lines

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "resources" / "tiny-text-model"
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def finished_run(root: Path, b_std: float):
    """A run of the tiny Llama whose adapter's B matrices are drawn with ``b_std`` (0: an
    adapter that changes nothing)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM
    torch.manual_seed(0)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(MODEL),
                           LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(std=b_std) if b_std else p.zero_()
    data = root / "chat.jsonl"
    data.write_text(json.dumps({"prompt": "Hi?", "response": "Arr."}) + "\n", encoding="utf-8")
    job, _ = parse_job({"model": {"path": str(MODEL), "family": "text"},
                        "dataset": {"path": str(data)}, "output": {"output_name": "tiny"}})
    run = new_run_dir(root / "runs", "roundtrip")
    write_job_toml(job, run.job_toml)
    write_peft_adapter(model, run.final, {}, str(MODEL))
    return run


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return finished_run(tmp_path_factory.mktemp("trained"), 0.2)


def test_merged_export_is_loaded_back_and_matches_peft(run, capsys):
    assert main(["export", str(run.root), "--format", "merged", "--name", "m"]) == 0
    out = capsys.readouterr().out
    check = json.loads((run.exports / "m" / VERIFY).read_text(encoding="utf-8"))
    assert check["checked"] and check["passed"] and check["differs_from_base"]
    assert check["relative_diff"] <= check["tolerance"] == 1e-4
    assert check["base_diff"] > 10 * check["max_abs_diff"]
    assert len(check["prompts"]) == 3
    assert all(p["same_tokens"] == p["tokens"] == 8 for p in check["prompts"])
    assert check["runtime"].startswith("transformers ")
    assert f"{run.exports / 'm' / VERIFY}  (merged, SHA-256" in out
    assert "Round trip passed: transformers" in out and "3/3 prompts" in out
    assert f"  'Hello!': PEFT {check['prompts'][0]['peft']!r}" in out


def test_a_merge_that_lost_the_adapter_is_an_error_and_writes_nothing(run, capsys,
                                                                      monkeypatch):
    from peft.tuners.lora import LoraModel
    monkeypatch.setattr(LoraModel, "merge_and_unload", LoraModel.unload)  # drops the adapter
    assert main(["export", str(run.root), "--format", "merged", "--name", "lost"]) == 1
    err = capsys.readouterr().err
    assert "computes what the base model computes: merging lost the adapter" in err
    assert "nothing was written" in err
    assert not (run.exports / "lost").exists()
    assert not [p for p in run.exports.iterdir() if p.name.startswith(".")]


def test_an_adapter_that_changes_nothing_cannot_be_merged(tmp_path, capsys):
    untrained = finished_run(tmp_path, 0.0)
    assert main(["export", str(untrained.root), "--format", "merged"]) == 1
    assert "the adapter itself does not change the model's logits" in capsys.readouterr().err
    assert not (untrained.exports / "tiny-merged").exists()


def test_gguf_without_llama_cpp_says_how_to_check_it(run, capsys, monkeypatch):
    pytest.importorskip("gguf")
    from lora_studio.engine.text import gguf_folder
    monkeypatch.setattr(gguf_folder, "llama_cpp_or_none", lambda: None)
    assert main(["export", str(run.root), "--format", "gguf-adapter", "--name", "g"]) == 0
    check = json.loads((run.exports / "g" / VERIFY).read_text(encoding="utf-8"))
    assert check == {"checked": False, "reason": LLAMACPP_MISSING}
    assert f"Round trip {LLAMACPP_MISSING}." in capsys.readouterr().out
    assert "llamacpp" in LLAMACPP_MISSING


@pytest.mark.parametrize("fmt, export", [("gguf-adapter", "adapter GGUF"),
                                         ("gguf-f16", "gguf-f16 model")])
def test_llama_cpp_loads_the_gguf_back_and_continues_like_peft(run, capsys, fmt, export):
    pytest.importorskip("gguf")
    pytest.importorskip("llama_cpp")
    assert main(["export", str(run.root), "--format", fmt, "--name", f"cpp {fmt}"]) == 0
    out = capsys.readouterr().out
    print(out)
    check = json.loads((run.exports / f"cpp {fmt}" / VERIFY).read_text(encoding="utf-8"))
    assert check["checked"] and check["export"] == export
    assert check["runtime"].startswith("llama.cpp (llama-cpp-python ")
    assert check["passed"], check["prompts"]
    # The tiny model answers every prompt with newlines, base or adapter: the next token's
    # logits are what show llama.cpp applied the adapter.
    assert check["adapter_applied"]
    assert check["first_token_max_abs_diff"] < 0.05 * check["largest_logit"]
    assert check["first_token_base_diff"] > 5 * check["first_token_max_abs_diff"]
    assert "Round trip passed: llama.cpp" in out and "from the base model's" in out


def test_verify_lines_read_a_check_and_skip_what_they_cannot_read(tmp_path):
    path = tmp_path / VERIFY
    path.write_text(json.dumps({
        "checked": True, "export": "gguf-q8_0 model", "runtime": "llama.cpp (x 0.3)",
        "passed": False, "prompts": [
            {"prompt": "Hi", "peft": "Arr", "export": "Arr!", "tokens": 2, "same_tokens": 1},
            {"prompt": "Yo", "peft": "Ho", "export": "Ho", "tokens": 2, "same_tokens": 2}]}))
    assert verify_lines(path) == [
        "Round trip found differences: llama.cpp (x 0.3) loads the gguf-q8_0 model back; "
        "greedy answers the same as PEFT (base + adapter) on 1/2 prompts.",
        "  'Hi': PEFT 'Arr', export 'Arr!'", "  'Yo': PEFT 'Ho', export 'Ho'"]
    path.write_text("{not json")
    assert verify_lines(path) == []


def test_llama_cpp_answering_without_the_adapter_does_not_pass(run, tmp_path):
    """The check itself: the base GGUF alone (the adapter left out) is caught by its
    next-token logits, though the tiny model's greedy newlines are the same."""
    pytest.importorskip("gguf")
    llama_cpp = pytest.importorskip("llama_cpp")
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lora_studio.engine.text.gguf_export import write_merged_gguf
    from lora_studio.engine.text.verify import peft_reference, verify_gguf, write_verify
    tokenizer = AutoTokenizer.from_pretrained(MODEL)
    base = AutoModelForCausalLM.from_pretrained(MODEL)
    config = json.loads((MODEL / "config.json").read_text())
    write_merged_gguf(tmp_path / "base.gguf", base.state_dict(), config, MODEL, "f16", "base")
    reference = peft_reference(PeftModel.from_pretrained(base, str(run.final)), tokenizer, True)
    check = verify_gguf(llama_cpp, tmp_path / "base.gguf", reference, tokenizer, "adapter GGUF")
    assert not check["adapter_applied"] and not check["passed"]
    write_verify(tmp_path, check)
    assert "(the adapter is not in effect)" in verify_lines(tmp_path / VERIFY)[0]
    assert verify_lines(tmp_path / VERIFY)[0].startswith("Round trip found differences")
