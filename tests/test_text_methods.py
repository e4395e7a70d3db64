"""The LoRA methods a text job can choose (issue 16, point 1): DoRA, rsLoRA, PiSSA /
OLoRA / Gaussian initialisation, LoRA+, modules trained in full and target presets.
Each trains on the tiny model, exports, and reloads in PEFT with the trained logits."""
import json

import pytest
import torch

from lora_studio.engine import text
from lora_studio.engine.core import trainer
from lora_studio.engine.core.control import StopRequest
from lora_studio.engine.core.safetensors_io import read_metadata
from lora_studio.engine.text import model as text_model
from lora_studio.engine.text.export import ADAPTER_WEIGHTS
from lora_studio.runs.layout import new_run_dir
from test_engine_text import MODEL, Recorder, _logits, make_job

METHODS = {
    "dora": {"use_dora": True},
    "rslora": {"use_rslora": True},
    "pissa": {"init_lora_weights": "pissa"},
    "olora": {"init_lora_weights": "olora"},
    "gaussian": {"init_lora_weights": "gaussian"},
    "loraplus": {"loraplus_lr_ratio": 16.0},
    "lm_head in full": {"modules_to_save": ["lm_head"]},
    "attention only": {"target_preset": "attention"},
    "all linear": {"target_preset": "all_linear"},
}


@pytest.fixture(scope="module")
def tokenizer():
    return text_model.load_tokenizer(MODEL)


@pytest.fixture(scope="module")
def base_logits(tokenizer):
    from transformers import AutoModelForCausalLM
    return _logits(AutoModelForCausalLM.from_pretrained(MODEL).eval(), tokenizer)


def _train(tmp_path, network: dict):
    job = make_job(network=network, training={"max_steps": 3})
    folder = new_run_dir(tmp_path, "method")
    result = trainer.train(job, folder, Recorder(), StopRequest(), text.prepare)
    return folder, result


@pytest.mark.parametrize("name", list(METHODS))
def test_each_method_trains_exports_and_reloads_in_peft(tmp_path, tokenizer, base_logits, name):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    folder, result = _train(tmp_path, METHODS[name])
    trained = _logits(result.trainee.model.eval(), tokenizer)
    loaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(MODEL),
                                       folder.final).eval()
    assert torch.allclose(_logits(loaded, tokenizer), trained, atol=1e-4)
    assert not torch.allclose(base_logits, trained, atol=1e-3)


def _saved(folder):
    from safetensors.torch import load_file
    config = json.loads((folder.final / "adapter_config.json").read_text(encoding="utf-8"))
    return config, load_file(folder.final / ADAPTER_WEIGHTS)


def test_dora_and_rslora_are_peft_s_own(tmp_path):
    config, tensors = _saved(_train(tmp_path / "dora", {"use_dora": True})[0])
    assert config["use_dora"] and any("lora_magnitude_vector" in k for k in tensors)
    config, _ = _saved(_train(tmp_path / "rs", {"use_rslora": True})[0])
    assert config["use_rslora"] and not config["use_dora"]


@pytest.mark.parametrize("init", ["pissa", "olora"])
def test_pissa_and_olora_export_a_plain_lora_for_the_original_base(tmp_path, init):
    folder, result = _train(tmp_path, {"init_lora_weights": init})
    config, tensors = _saved(folder)
    assert (config["r"], config["lora_alpha"], config["init_lora_weights"]) == (8, 16.0, True)
    a = next(v for k, v in tensors.items() if "q_proj.lora_A" in k)
    assert a.shape[0] == 8  # [A ; A0]
    assert result.trainee.initial is not None
    # The checkpoint keeps the adapter as trained (rank 4) for resume on the residual base.
    from safetensors.torch import load_file
    checkpoint = folder.latest_checkpoint()
    kept = load_file(next(checkpoint.glob("*.safetensors")))
    assert next(v for k, v in kept.items() if "q_proj.lora_A" in k).shape[0] == 4


def test_target_presets_choose_the_layers(tmp_path):
    _, attention = _saved(_train(tmp_path / "a", {"target_preset": "attention"})[0])
    _, linear = _saved(_train(tmp_path / "l", {"target_preset": "all_linear"})[0])
    layers = lambda tensors: {k.split(".")[-3] for k in tensors if ".lora_A." in k}  # noqa: E731
    assert layers(attention) == {"q_proj", "k_proj", "v_proj", "o_proj"}
    assert layers(linear) == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                              "down_proj"}


def test_modules_to_save_are_in_the_adapter_whole(tmp_path):
    folder, _ = _train(tmp_path, {"modules_to_save": ["lm_head"]})
    config, tensors = _saved(folder)
    assert config["modules_to_save"] == ["lm_head"]
    assert any("lm_head" in k and v.shape == (384, 64) for k, v in tensors.items())
    assert read_metadata(folder.final / ADAPTER_WEIGHTS)["format"] == "pt"


def test_loraplus_groups_are_peft_s(tmp_path):
    from peft.optimizers import create_loraplus_optimizer
    job = make_job(network={"loraplus_lr_ratio": 16.0},
                   optimizer={"learning_rate": 1e-3, "lr_scheduler": "linear"},
                   training={"max_steps": 3})
    folder = new_run_dir(tmp_path, "plus")
    result = trainer.train(job, folder, Recorder(), StopRequest(), text.prepare)
    model = result.trainee.model
    theirs = create_loraplus_optimizer(model, torch.optim.AdamW, lr=1e-3, loraplus_lr_ratio=16.0)
    # The schedule has run ours down to 0; where each group started is its initial_lr.
    lr_of = lambda groups: {id(p): g.get("initial_lr", g["lr"])  # noqa: E731
                            for g in groups for p in g["params"]}
    ours = lr_of(result.trainee.param_groups)
    assert ours == lr_of(g for g in theirs.param_groups if g["params"])
    names = {id(p): n for n, p in model.named_parameters()}
    assert all(lr == 16e-3 for pid, lr in ours.items() if "lora_B" in names[pid])
    assert all(lr == 1e-3 for pid, lr in ours.items() if "lora_A" in names[pid])
