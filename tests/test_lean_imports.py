"""A process that runs one job keeps out the libraries it does not use
(engine/lean_imports.py): hub kernels and onnxruntime always, bitsandbytes unless a
quantised base, an 8-bit optimizer or a pre-quantised model folder need it; the CLI
as a command hides them, a caller in Python does not."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lora_studio.config.parse import parse_job
from lora_studio.engine.lean_imports import needs_bitsandbytes, quantised_model

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "resources" / "tiny-text-model"


def job(model: Path = TINY, **sections):
    data = {"model": {"path": str(model), "family": "text"},
            "dataset": {"path": str(ROOT / "resources" / "demo-text" / "chat.jsonl")}}
    for name, values in sections.items():
        data.setdefault(name, {}).update(values)
    parsed, _ = parse_job(data)
    return parsed


@pytest.mark.parametrize("sections", [{"model": {"load_in_4bit": True}},
                                      {"model": {"load_in_8bit": True}},
                                      {"optimizer": {"optimizer": "PagedAdamW8bit"}}])
def test_quantising_or_8bit_optimizer_needs_bitsandbytes(sections):
    assert needs_bitsandbytes(job(**sections))


def test_plain_lora_on_a_plain_model_does_not():
    assert not needs_bitsandbytes(job())


def test_a_pre_quantised_model_folder_needs_it(tmp_path):
    folder = tmp_path / "model ü"
    folder.mkdir()
    config = json.loads((TINY / "config.json").read_text(encoding="utf-8"))
    (folder / "config.json").write_text(json.dumps(
        {**config, "quantization_config": {"quant_method": "bitsandbytes", "load_in_4bit": True}}),
        encoding="utf-8")
    assert quantised_model(str(folder))
    sd = tmp_path / "sd"
    (sd / "unet").mkdir(parents=True)
    (sd / "unet" / "config.json").write_text('{"quantization_config": {}}', encoding="utf-8")
    assert quantised_model(str(sd))
    assert not quantised_model(str(TINY))
    assert quantised_model("someone/some-model")  # a Hub id: cannot tell cheaply, keep it


PROBE = r"""
import sys
from pathlib import Path
from lora_studio.config.parse import parse_job
from lora_studio.engine.lean_imports import skip_unneeded
job, _ = parse_job({"model": {"path": sys.argv[1], "family": "text",
                              "load_in_4bit": sys.argv[2] == "4bit"},
                    "dataset": {"path": sys.argv[3]}})
if sys.argv[4] == "imported":
    import transformers
hidden = skip_unneeded(job)
import peft, transformers.utils
from transformers import AutoModelForCausalLM
AutoModelForCausalLM.from_pretrained(sys.argv[1])  # loads without the hidden modules
from transformers.utils.import_utils import is_kernels_available
try:
    import onnxruntime
    onnx = "importable"
except ImportError:
    onnx = "hidden"
print(",".join(sorted(hidden)) or "-", transformers.utils.is_bitsandbytes_available(),
      is_kernels_available(), onnx)
"""


def probe(load: str, before: str, env: dict | None = None) -> str:
    environ = {k: v for k, v in os.environ.items() if k != "USE_HUB_KERNELS"}
    out = subprocess.run([sys.executable, "-c", PROBE, str(TINY), load,
                          str(ROOT / "resources" / "demo-text" / "chat.jsonl"), before],
                         capture_output=True, text=True, timeout=300, cwd=ROOT,
                         env={**environ, **(env or {})})
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.strip().splitlines()[-1]


def test_a_fresh_process_hides_them_from_the_libraries_bitsandbytes_only_when_unneeded():
    assert probe("full", "fresh") == "bitsandbytes,kernels,onnxruntime False False hidden"
    assert probe("4bit", "fresh").split()[0] == "kernels,onnxruntime"


def test_hub_kernels_asked_for_by_the_user_are_left_in():
    assert probe("full", "fresh", {"USE_HUB_KERNELS": "YES"}).split()[0] == \
        "bitsandbytes,onnxruntime"


def test_a_process_that_imported_the_libraries_already_is_left_alone():
    hidden, _, _, onnx = probe("full", "imported").split()
    assert (hidden, onnx) == ("-", "importable")


def test_only_the_command_itself_owns_its_process(monkeypatch, tmp_path):
    from lora_studio import cli, commands
    seen = []
    monkeypatch.setattr(commands, "train", lambda *a, **k: seen.append(a[-1] if len(a) > 4 else
                                                                         k.get("own_process")) or 0)
    preset = ROOT / "presets" / "demo-text-tiny.toml"
    assert cli.main(["train", str(preset)]) == 0
    monkeypatch.setattr(sys, "argv", ["lora-studio", "train", str(preset)])
    assert cli.main() == 0
    assert seen == [False, True]
