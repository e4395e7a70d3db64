"""The text side of the playground: one causal language model loaded once, LoRA
adapters added to it by name and switched with PEFT's adapter API (``set_adapter``,
``disable_adapter``), never by loading the base again. Prompts are formatted exactly
as training formatted them (engine/text/tokens.py)."""
from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

import torch
from transformers import StoppingCriteria

from ..config.jobfile import JobFileError, read_job_toml
from ..data.text_records import Turn
from ..engine.core.safetensors_io import read_metadata
from ..engine.text import tokens
from ..engine.text.model import load_tokenizer
from ..runs.adapter_sources import AdapterSource
from .errors import PlaygroundError
from .slots import AdapterSlots

ROLES = ("system", "user", "assistant")
META_ALPHA = ("lora_studio.alpha", "ss_network_alpha")


class TokenStream:
    """transformers' streamer interface: emits each new piece of text once it decodes
    to whole characters (a multi-byte character may span tokens)."""

    def __init__(self, tokenizer, on_text: Callable[[str], None]):
        self.tokenizer = tokenizer
        self.on_text = on_text
        self.ids: list[int] = []
        self.sent = ""
        self.prompt_seen = False
        self.first_token_at: float | None = None

    def put(self, value) -> None:
        if not self.prompt_seen:  # generate() passes the prompt first
            self.prompt_seen = True
            return
        if self.first_token_at is None:
            self.first_token_at = time.perf_counter()
        self.ids += value.reshape(-1).tolist()
        self._flush(final=False)

    def end(self) -> None:
        self._flush(final=True)

    def _flush(self, final: bool) -> None:
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        if not final and text.endswith("\ufffd"):
            return
        if text.startswith(self.sent) and len(text) > len(self.sent):
            self.on_text(text[len(self.sent):])
            self.sent = text

    @property
    def text(self) -> str:
        return self.tokenizer.decode(self.ids, skip_special_tokens=True)


class _StopWhen(StoppingCriteria):
    """Generation ends after the token in progress."""

    def __init__(self, should_stop: Callable[[], bool]):
        super().__init__()
        self.should_stop = should_stop

    def __call__(self, input_ids, scores, **kwargs) -> torch.BoolTensor:
        return torch.full((input_ids.shape[0],), self.should_stop(), dtype=torch.bool,
                          device=input_ids.device)


def _device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _dtype(device: torch.device) -> torch.dtype:
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def _target_modules(tensors: dict[str, torch.Tensor]) -> list[str]:
    """The module paths a PEFT state dict adapts, as full names PEFT matches exactly."""
    prefix = "base_model.model."
    found = set()
    for key in tensors:
        if ".lora_A." in key:
            module = key.split(".lora_A.")[0]
            found.add(module[len(prefix):] if module.startswith(prefix) else module)
    return sorted(found)


def end_token_ids(tokenizer, use_template: bool, generation_config) -> list[int]:
    """The tokens an answer ends with: EOS, the model's generation_config EOS ids (Llama 3
    lists several), and the token the chat template puts after an assistant turn when it
    is one token (``<|im_end|>``, ``<|eot_id|>``, ``<end_of_turn>``), so an answer stops
    where training taught it to, not at the next invented turn."""
    ends = [tokenizer.eos_token_id]
    configured = getattr(generation_config, "eos_token_id", None)
    ends += configured if isinstance(configured, list) else [configured]
    if use_template:
        mark = "LSRESPONSEMARK"
        try:  # through the engine's renderer: a preset's own template runs within budget
            text = tokens._render(tokenizer, [Turn("user", "hi"), Turn("assistant", mark)], False)
        except Exception:  # a template that refuses this shape: EOS alone
            text = ""
        after = text[text.index(mark) + len(mark):].strip() if mark in text else ""
        ids = tokenizer(after, add_special_tokens=False)["input_ids"] if after else []
        if len(ids) == 1:
            ends.append(ids[0])
    return list(dict.fromkeys(i for i in ends if isinstance(i, int)))


def _rank(tensors: dict[str, torch.Tensor]) -> int:
    return next(v.shape[0] for k, v in tensors.items() if ".lora_A." in k)


class TextBackend(AdapterSlots):
    kind = "text"

    def __init__(self, path: str, chat_template: str = "auto"):
        super().__init__()
        from transformers import AutoModelForCausalLM
        folder = Path(path)
        self.device = _device()
        try:
            self.tokenizer = load_tokenizer(folder)
            base = AutoModelForCausalLM.from_pretrained(str(folder), dtype=_dtype(self.device),
                                                        use_safetensors=True)
        except (OSError, ValueError) as exc:
            raise PlaygroundError("config", f"Cannot load the text model from {folder}: {exc}",
                                  "Check that the folder holds a causal language model with "
                                  ".safetensors weights.") from exc
        try:
            self.use_template = tokens.template_in_use(self.tokenizer, chat_template)
        except Exception as exc:  # EngineError from a custom template that fails its checks
            raise PlaygroundError("config", getattr(exc, "message", str(exc)),
                                  getattr(exc, "hint", "")) from exc
        self.base = base.to(self.device).eval()
        self.end_ids = end_token_ids(self.tokenizer, self.use_template, base.generation_config)
        self.model = None            # the PeftModel around self.base, once an adapter is loaded

    # -- adapters ------------------------------------------------------------

    def _lora_config(self, source: AdapterSource, tensors: dict[str, torch.Tensor]):
        from peft import LoraConfig
        if source.kind == "peft":
            return LoraConfig.from_pretrained(str(source.weights.parent))
        alpha = None
        if source.job_toml is not None:
            try:
                alpha = read_job_toml(source.job_toml)[0].network.alpha
            except JobFileError as exc:
                raise PlaygroundError("config", str(exc),
                                      "The run's job.toml gives the adapter's alpha; fix it or "
                                      "pick the run's final/ folder.") from exc
        if alpha is None:
            metadata = read_metadata(source.weights)
            alpha = next((float(metadata[k]) for k in META_ALPHA if k in metadata), None)
        rank = _rank(tensors)
        # Without a recorded alpha the update is taken at scale 1 (alpha = rank).
        return LoraConfig(r=rank, lora_alpha=alpha if alpha is not None else rank,
                          target_modules=_target_modules(tensors), task_type="CAUSAL_LM")

    def load_adapter(self, name: str, source: AdapterSource) -> None:
        from peft import get_peft_model, set_peft_model_state_dict
        from safetensors.torch import load_file
        try:
            tensors = load_file(str(source.weights))
        except Exception as exc:  # safetensors' own error type: a damaged or cut-off file
            raise PlaygroundError("config", f"{source.weights} cannot be read as safetensors: "
                                            f"{exc}",
                                  "The file is damaged or was cut off while it was written; "
                                  "export the adapter again or pick another one.") from exc
        if not any(".lora_A." in k for k in tensors):
            raise PlaygroundError("config", f"{source.weights} holds no PEFT LoRA tensors "
                                            "(no lora_A keys).",
                                  "A text adapter is a PEFT folder or the checkpoint of a text run.")
        config = self._lora_config(source, tensors)
        config.inference_mode = True
        peft_name = self._new_slot(name)
        try:
            if self.model is None:
                self.model = get_peft_model(self.base, config, adapter_name=peft_name)
            else:
                self.model.add_adapter(peft_name, config)
            result = set_peft_model_state_dict(self.model, tensors, adapter_name=peft_name)
        except (ValueError, RuntimeError, KeyError) as exc:
            self._forget(name)
            raise PlaygroundError("config", f"{source.weights} does not fit this base model: "
                                            f"{str(exc).splitlines()[0]}",
                                  "Load the base model the adapter was trained on.") from exc
        if getattr(result, "unexpected_keys", None):
            self._forget(name)
            raise PlaygroundError("config", f"{source.weights} has {len(result.unexpected_keys)} "
                                            "tensors this base model has no place for.",
                                  "Load the base model the adapter was trained on.")
        self.model.to(self.device).eval()
        self.set_active(self.active, self.weights)

    def _forget(self, name: str) -> None:
        peft_name = self.peft_names.get(name)
        if self.model is not None and peft_name in self.model.peft_config:
            self.model.delete_adapter(peft_name)
        super()._forget(name)

    def set_active(self, names: list[str], weights: list[float]) -> None:
        if len(names) > 1:
            raise PlaygroundError("request", "A text model answers with one adapter at a time.",
                                  "Compare adapters side by side instead.")
        self._choose(names, weights)
        if self.active:
            from peft.tuners.lora import LoraLayer
            peft_name = self.peft_names[self.active[0]]
            self.model.set_adapter(peft_name)
            for module in self.model.modules():
                if isinstance(module, LoraLayer):
                    module.set_scale(peft_name, self.weights[0])

    # -- generation ----------------------------------------------------------
    def generate(self, req: dict, on_text: Callable[[str], None],
                 should_stop: Callable[[], bool]) -> dict:
        turns = [Turn(m["role"], str(m["content"])) for m in req.get("messages", [])
                 if isinstance(m, dict) and m.get("role") in ROLES]
        if not turns or turns[-1].role != "user":
            raise PlaygroundError("request", "A chat generation needs the user's message last.",
                                  "Type a message and send it.")
        if "adapters" in req:
            self.set_active(list(req["adapters"]), [float(w) for w in req.get("weights", [])])
        ids = torch.tensor([tokens.chat_prompt_ids(self.tokenizer, turns, self.use_template)],
                           device=self.device)
        temperature = float(req.get("temperature", 0.7))
        sample = temperature > 0
        if req.get("seed") is not None:
            torch.manual_seed(int(req["seed"]))
        stream = TokenStream(self.tokenizer, on_text)
        model = self.model if self.model is not None else self.base
        # With no adapter active the base answers alone: the LoRA layers are switched off.
        bare = self.model is not None and not self.active
        started = time.perf_counter()
        with torch.inference_mode(), (self.model.disable_adapter() if bare else nullcontext()):
            out = model.generate(
                input_ids=ids, attention_mask=torch.ones_like(ids),
                max_new_tokens=int(req.get("max_new_tokens", 256)), do_sample=sample,
                temperature=temperature if sample else None,
                top_p=float(req.get("top_p", 1.0)) if sample else None, top_k=None,
                repetition_penalty=float(req.get("repetition_penalty", 1.0)),
                pad_token_id=self.tokenizer.pad_token_id, eos_token_id=self.end_ids,
                streamer=stream, stopping_criteria=[_StopWhen(should_stop)])
        new = out[0, ids.shape[1]:].tolist()
        if should_stop():
            reason = "stopped"
        elif new and new[-1] in self.end_ids:
            reason = "eos"
        else:
            reason = "length"
        first = stream.first_token_at
        return {"text": stream.text, "reason": reason, "tokens": len(new),
                "prompt_tokens": ids.shape[1],
                "seconds": round(time.perf_counter() - started, 4),
                "first_token_s": None if first is None else round(first - started, 4)}
