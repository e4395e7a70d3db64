"""An ONNX export of a text run: the base model with the adapter merged in, exported
with torch.onnx (the TorchScript exporter), in fp32 or fp16, with the tokenizer,
config.json and generation_config.json beside it. Without the KV cache the graph is
input_ids and attention_mask in, logits out, any batch and length; with it
(onnx_kv.py) it also takes past_key_values.{i}.key/value and position_ids and returns
present.{i}.key/value, the layout Optimum, onnxruntime-genai and transformers.js read.

Hugging Face Optimum's exporter is not used: every optimum-onnx release (0.0.1 to
0.1.0) requires transformers < 4.58 (optimum 1.27's own exporter < 4.54) and this
project runs on transformers 5; installed anyway, optimum-onnx 0.1.0 fails on import
(transformers 5 has no modeling_utils.get_parameter_dtype). The export is checked
before it is kept: onnxruntime runs it on fixed prompts (one padded batch among them;
with the cache, a prefill and one decoding step fed its own present tensors) and its
logits must match the merged PyTorch model's within TOLERANCE; the figures are written
beside the model (runs/onnx_check.py). A model family not in EXPORTABLE is refused
before anything is loaded or written."""
from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import torch

from ...config.schema import JobConfig
from ...fsutil import atomic_write_text, settle, temp_dir_beside
from ...runs.layout import RunDir
from ...runs.onnx_check import ONNX_CHECK
from ..core.control import EngineError
from .onnx_kv import compare_with_past, export_graph_with_past

# --format -> (dtype, with the KV-cache graph)
ONNX_FORMATS = {"onnx": ("float32", False), "onnx-fp16": ("float16", False),
                "onnx-kv": ("float32", True), "onnx-kv-fp16": ("float16", True)}
MODEL_FILE = "model.onnx"
OPSET = 17
# Decoder families whose export tests/test_onnx_export.py runs through onnxruntime.
EXPORTABLE = {"llama", "mistral", "qwen2"}
# Largest |onnxruntime logit - merged PyTorch fp32 logit|, as a share of the largest
# |logit|: fp32 differs only by the order of sums; fp16 by its 11-bit mantissa.
TOLERANCE = {"float32": 1e-4, "float16": 2e-2}
CHECK_PROMPTS = ("Hello!", "What colour is a banana?",
                 "Write one sentence about the sea, please.")


def _model_type(path: str) -> str:
    try:
        return str(json.loads((Path(path) / "config.json").read_text(encoding="utf-8"))
                   .get("model_type", ""))
    except (OSError, ValueError):
        return ""


def _runtime():
    try:
        import onnx  # noqa: F401  (the exporter writes through it)
        import onnxruntime
    except ImportError as exc:
        raise EngineError("config", f"The ONNX export needs {exc.name}, which is not installed.",
                          'pip install "lora-studio[onnx]"') from None
    return onnxruntime


class _Logits(torch.nn.Module):
    """The model as a function of (input_ids, attention_mask) -> logits, without a cache."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask):
        return self.model(input_ids=input_ids, attention_mask=attention_mask,
                          use_cache=False).logits


def check_batches(tokenizer) -> list[dict[str, torch.Tensor]]:
    """Each fixed prompt alone, then all of them in one left-padded batch."""
    ids = [tokenizer(p)["input_ids"] for p in CHECK_PROMPTS]
    batches = [{"input_ids": torch.tensor([i]), "attention_mask": torch.ones(1, len(i),
                                                                             dtype=torch.long)}
               for i in ids]
    width = max(len(i) for i in ids)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    batches.append({
        "input_ids": torch.tensor([[pad] * (width - len(i)) + i for i in ids]),
        "attention_mask": torch.tensor([[0] * (width - len(i)) + [1] * len(i) for i in ids])})
    return batches


def compare(session, reference, batches) -> dict:
    """onnxruntime's logits against ``reference`` (the merged fp32 model) on the real
    (unpadded) positions of every batch."""
    worst, scale, same, total = 0.0, 0.0, 0, 0
    with torch.no_grad():
        for batch in batches:
            want = reference(**batch, use_cache=False).logits.float()
            got = torch.from_numpy(session.run(None, {k: v.numpy() for k, v in batch.items()})[0])
            real = batch["attention_mask"].bool()
            want, got = want[real], got.float()[real]
            worst = max(worst, float((got - want).abs().max()))
            scale = max(scale, float(want.abs().max()))
            same += int((got.argmax(-1) == want.argmax(-1)).sum())
            total += int(real.sum())
    return {"max_abs_diff": worst, "largest_logit": scale,
            "relative_diff": worst / max(scale, 1e-12), "same_next_token": same / max(total, 1)}


def export_onnx(job: JobConfig, run: RunDir, fmt: str, wanted: Path) -> Path:
    """The merged model as ``<wanted>/model.onnx`` (+ tokenizer, config, generation config,
    onnx_check.json), or beside it with -2 when ``wanted`` holds something else (settle);
    returns the folder."""
    from peft import PeftModel

    from .model import load_base_model, load_tokenizer, resolve_model
    info = resolve_model(job)
    family = _model_type(info.path)
    if family not in EXPORTABLE:
        raise EngineError("config", f"The ONNX export does not support this model's family "
                                    f"('{family or 'unknown'}'); it supports "
                                    f"{', '.join(sorted(EXPORTABLE))}.",
                          "Export it as a merged model (--format merged) and convert that with "
                          "a tool that knows the family.")
    runtime = _runtime()
    dtype, kv_cache = ONNX_FORMATS[fmt]
    tokenizer = load_tokenizer(info.path)
    merged = PeftModel.from_pretrained(load_base_model(job, info.path, quantize=False),
                                       str(run.final)).merge_and_unload().float().eval()
    tmp = temp_dir_beside(wanted)
    try:
        exported = merged if dtype == "float32" else _half_copy(merged)
        batches = check_batches(tokenizer)
        if kv_cache:
            export_graph_with_past(exported, batches[-1], tmp / MODEL_FILE, OPSET)
        else:
            _export_graph(exported, batches[0], tmp / MODEL_FILE)
        session = runtime.InferenceSession(str(tmp / MODEL_FILE),
                                           providers=["CPUExecutionProvider"])
        found = (compare_with_past(session, merged, batches, getattr(torch, dtype)) if kv_cache
                 else compare(session, merged, batches))
        check = {**found, "dtype": dtype, "prompts": len(CHECK_PROMPTS),
                 "tolerance": TOLERANCE[dtype],
                 "passed": found["relative_diff"] <= TOLERANCE[dtype],
                 "onnxruntime": runtime.__version__,
                 "exporter": f"torch.onnx (TorchScript), opset {OPSET}", "kv_cache": kv_cache}
        del session
        if not check["passed"]:
            raise EngineError("internal", f"The ONNX graph's logits differ from the merged "
                                          f"model's by {check['relative_diff']:.3g} of the "
                                          f"largest logit (tolerance {check['tolerance']:g}); "
                                          "nothing was written.",
                              "Try the fp32 export, or export the merged model instead.")
        tokenizer.save_pretrained(tmp)
        merged.config.save_pretrained(tmp)
        merged.generation_config.save_pretrained(tmp)
        atomic_write_text(tmp / ONNX_CHECK, json.dumps(check, indent=1) + "\n")
        return settle(tmp, wanted)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _half_copy(model):
    import copy
    return copy.deepcopy(model).half()


def _export_graph(model, example: dict[str, torch.Tensor], path: Path) -> None:
    axes = {"batch": 0, "sequence": 1}
    # The tracer warns of every Python branch on a shape; the check against the merged
    # model on other lengths and a padded batch is what shows the graph is right.
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(_Logits(model), (example["input_ids"], example["attention_mask"]),
                          str(path), dynamo=False, opset_version=OPSET,
                          input_names=["input_ids", "attention_mask"], output_names=["logits"],
                          dynamic_axes={name: {i: a for a, i in axes.items()}
                                        for name in ("input_ids", "attention_mask", "logits")})
