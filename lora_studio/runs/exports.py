"""The export formats of a finished run, per model family, default first: what
``lora-studio export RUN_DIR --format`` accepts and what the window offers. Plain
data (no torch), so the window can read it."""
from __future__ import annotations

from dataclasses import dataclass

from ..config.jobfile import JobFileError, read_job_toml
from .layout import RunDir

# What a finished run keeps in final/, by family.
TEXT_ADAPTER = "adapter_model.safetensors"   # with adapter_config.json: a PEFT folder
TEXT_ADAPTER_CONFIG = "adapter_config.json"
IMAGE_ADAPTER = "adapter.safetensors"        # PEFT names per pipeline component


@dataclass(frozen=True)
class ExportFormat:
    name: str          # the --format value
    label: str
    explanation: str   # one line: what it is and what loads it
    target: str        # what it writes in the destination folder; {name}: the output name

    @property
    def single_file(self) -> bool:
        return self.target.endswith(".safetensors")

    def file_name(self, name: str) -> str:
        """The file or folder name of this export for a name the user typed (or the
        job's output name): a single-file format gets its .safetensors once."""
        if self.single_file:
            return name if name.lower().endswith(".safetensors") else f"{name}.safetensors"
        return name


FORMATS: dict[str, tuple[ExportFormat, ...]] = {
    "text": (
        ExportFormat("peft", "PEFT adapter",
                     "adapter_model.safetensors + adapter_config.json: PeftModel.from_pretrained, "
                     "transformers, vLLM.",
                     "{name}"),
        ExportFormat("merged", "Merged model",
                     "The base model with the adapter merged in: a full transformers folder, "
                     "as large as the base model; loaded back and checked against PEFT.",
                     "{name}-merged"),
        ExportFormat("gguf-adapter", "GGUF LoRA adapter (llama.cpp, Ollama)",
                     "A .gguf LoRA for llama.cpp's --lora and Ollama's ADAPTER, with a "
                     "Modelfile beside it; the base model stays separate.",
                     "{name}-gguf"),
        ExportFormat("gguf-f16", "GGUF merged model, f16 (llama.cpp, Ollama, LM Studio)",
                     "The base model with the adapter merged in, tokenizer and chat template "
                     "included, in 16-bit; with a Modelfile.",
                     "{name}-f16-gguf"),
        ExportFormat("gguf-q8_0", "GGUF merged model, q8_0 (llama.cpp, Ollama, LM Studio)",
                     "The same, quantised to 8 bits: about half the size of f16, nearly the "
                     "same answers; with a Modelfile.",
                     "{name}-q8_0-gguf"),
        ExportFormat("onnx", "ONNX merged model, fp32 (onnxruntime)",
                     "The merged model as model.onnx (no KV cache) with its tokenizer; "
                     "onnxruntime's logits are checked against PyTorch's on writing.",
                     "{name}-onnx"),
        ExportFormat("onnx-fp16", "ONNX merged model, fp16 (onnxruntime)",
                     "The same in 16-bit: half the size; checked the same way with a looser "
                     "tolerance.",
                     "{name}-onnx-fp16"),
        ExportFormat("onnx-kv", "ONNX merged model with KV cache, fp32 (onnxruntime, "
                     "transformers.js)",
                     "model.onnx taking and returning past_key_values, as Optimum lays it out: "
                     "each new token costs one step; checked on a prefill and a cached step.",
                     "{name}-onnx-kv"),
        ExportFormat("onnx-kv-fp16", "ONNX merged model with KV cache, fp16",
                     "The same in 16-bit: half the size; checked the same way with a looser "
                     "tolerance.",
                     "{name}-onnx-kv-fp16"),
    ),
    "image": (
        ExportFormat("kohya", "kohya / A1111 / ComfyUI",
                     "One .safetensors with lora_unet_ / lora_te_ keys and ss_* metadata: "
                     "A1111, Forge, ComfyUI, kohya tools.",
                     "{name}.safetensors"),
        ExportFormat("diffusers", "diffusers / PEFT",
                     "pytorch_lora_weights.safetensors for diffusers' pipeline.load_lora_weights. "
                     "For diffusers only: ComfyUI skips its attention layers; use the kohya "
                     "format in ComfyUI.",
                     "{name}-diffusers"),
    ),
}


# --kv-cache: the ONNX format with the KV-cache graph for each without it.
KV_CACHE_FORMAT = {"onnx": "onnx-kv", "onnx-fp16": "onnx-kv-fp16"}

# Said after a diffusers export: ComfyUI's loader maps diffusers' attention names only in
# the old `attn1.processor.to_q` spelling and silently skips `attn1.to_q`.
COMFYUI_NOTE = ("This file is for diffusers. ComfyUI would skip its attention layers: in "
                "ComfyUI, use the kohya export (--format kohya).")

# Save precisions of an image LoRA export; None keeps the trained tensors' own (fp32).
PRECISIONS = ("fp32", "fp16", "bf16")


def find_format(fmt: str) -> ExportFormat:
    return next(f for found in FORMATS.values() for f in found if f.name == fmt)


def default_name(fmt: str, output_name: str) -> str:
    """The file or folder an export in ``fmt`` writes unless told otherwise."""
    return find_format(fmt).target.format(name=output_name)


def run_family(run: RunDir) -> str | None:
    """'text' or 'image': what final/ holds, else the job's declared family; None when
    neither tells (a run not trained yet whose model family is 'auto')."""
    if (run.final / IMAGE_ADAPTER).exists():
        return "image"
    if (run.final / TEXT_ADAPTER).exists():
        return "text"
    try:
        kind = read_job_toml(run.job_toml)[0].kind
    except JobFileError:
        return None
    return None if kind == "unknown" else kind


def default_format(family: str) -> str:
    return FORMATS[family][0].name


def format_names(family: str) -> list[str]:
    return [f.name for f in FORMATS[family]]
