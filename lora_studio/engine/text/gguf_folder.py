"""The GGUF exports of a text run as a folder: the .gguf file, an Ollama Modelfile
beside it (runs/modelfile.py) and verify.json (llama.cpp's answers against PEFT's, or why
not checked: verify.py), checked first against llama.cpp's and Ollama's limits
(runs/export_check.py), built in a temp folder and settled into place whole."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from ...config.schema import JobConfig
from ...fsutil import atomic_write_text, settle, temp_dir_beside
from ...runs.export_check import FORMAT_TARGETS, check_run, describe
from ...runs.exports import TEXT_ADAPTER, TEXT_ADAPTER_CONFIG
from ...runs.layout import RunDir
from ...runs.modelfile import (MODELFILE, PROMPT_MARK, RESPONSE_MARK, SYSTEM_MARK, Renders,
                               modelfile_text, template_from_renders)
from ...runs.roundtrip import VERIFY
from ..core.control import EngineError
from .gguf_export import GgufExportError, write_adapter_gguf, write_merged_gguf
from .verify import (gguf_not_checked, llama_cpp_or_none, peft_reference, temp_base_gguf,
                     verify_gguf, write_verify)

GGUF_FILES = {"gguf-adapter": "{name}-lora.gguf", "gguf-f16": "{name}-f16.gguf",
              "gguf-q8_0": "{name}-q8_0.gguf"}

# tokens.py's plain format (dataset.chat_template = 'none', or a model without a
# template) as a chat template, so llama.cpp and Ollama prompt the way training did.
PLAIN_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ 'System: ' + message['content'] + '\n' }}"
    "{% elif message['role'] == 'user' %}{{ 'User: ' + message['content'] + '\nAssistant: ' }}"
    "{% else %}{{ message['content'] + eos_token + '\n' }}{% endif %}{% endfor %}")


def refuse_blocking(run: RunDir, fmt: str) -> None:
    """EngineError listing what the format's targets cannot take, before anything is written."""
    findings = [f for target in FORMAT_TARGETS.get(fmt, ()) for f in check_run(run, target)
                if f.blocking]
    if findings:
        raise EngineError("config", f"The {fmt} export would not load:\n{describe(findings)}",
                          "Apply one of the fixes above, or choose another format.")


def _renders(tokenizer) -> Renders | None:
    """The chat template around the marks, or None when the tokenizer has none."""
    if not getattr(tokenizer, "chat_template", None):
        return None

    def render(messages, generation):
        return tokenizer.apply_chat_template(messages, tokenize=False,
                                             add_generation_prompt=generation)
    user = {"role": "user", "content": PROMPT_MARK}
    try:
        with_system = render([{"role": "system", "content": SYSTEM_MARK}, user], True)
    except Exception:  # noqa: BLE001 - templates that refuse a system turn raise their own errors
        with_system = None
    try:
        return Renders(with_system, render([user], True),
                       render([user, {"role": "assistant", "content": RESPONSE_MARK}], False))
    except Exception:  # noqa: BLE001 - no usable template: the Modelfile goes without one
        return None


def bos_first(tokenizer) -> bool:
    """Whether the chat template begins a conversation with the BOS token."""
    renders = _renders(tokenizer)
    return bool(renders and tokenizer.bos_token
                and renders.without_system.startswith(tokenizer.bos_token))


def training_system_prompt(job: JobConfig) -> str | None:
    """The system prompt every training record began with, or None (records without
    one, with different ones, or a dataset no longer readable)."""
    from ...data.text_records import TextDataError
    from ...data.text_sources import SourceError, load_mixed
    ds = job.dataset
    try:
        records = load_mixed(ds.path, ds.mix, ds.format, ds.columns, job.training.seed).records
    except (SourceError, TextDataError, OSError, ValueError):
        return None
    systems = {r.turns[0].content if r.turns and r.turns[0].role == "system" else ""
               for r in records}
    if len(systems) != 1:
        return None
    return systems.pop() or None


def modelfile_for(tokenizer, source: str, adapter: str | None, system: str | None) -> str:
    renders = _renders(tokenizer)
    template, stops = (template_from_renders(renders, tokenizer.bos_token) if renders
                       else (None, []))
    if tokenizer.eos_token:
        stops.append(tokenizer.eos_token)
    return modelfile_text(source, adapter, template, stops, system)


def export_gguf(job: JobConfig, run: RunDir, fmt: str, wanted: Path, name: str) -> list[Path]:
    """``wanted/`` (or beside it): the GGUF file ``fmt`` names, its Modelfile and
    verify.json: llama.cpp's answers against PEFT's where llama-cpp-python is installed."""
    from .model import load_tokenizer, resolve_model
    from .tokens import template_in_use
    try:
        import gguf  # noqa: F401 - an optional extra
    except ImportError:
        raise EngineError("config", f"The {fmt} export needs the gguf package, which is not "
                                    "installed.",
                          'Install it: pip install "lora-studio[gguf]" (or pip install gguf).'
                          ) from None
    refuse_blocking(run, fmt)
    info = resolve_model(job)
    model_config = json.loads((info.path / "config.json").read_text(encoding="utf-8"))
    tokenizer = load_tokenizer(info.path)
    use_template = template_in_use(tokenizer, job.dataset.chat_template)
    if not use_template:
        tokenizer.chat_template = PLAIN_CHAT_TEMPLATE
    file_name = GGUF_FILES[fmt].format(name=name)
    system = training_system_prompt(job)
    llama_cpp = llama_cpp_or_none()
    tmp = temp_dir_beside(wanted)
    try:
        try:
            if fmt == "gguf-adapter":
                _write_adapter(run, tmp / file_name, model_config, name)
                text = modelfile_for(tokenizer, str(info.path), f"./{file_name}", system)
                check = (_check_adapter(llama_cpp, job, run, info.path, tmp / file_name,
                                        model_config, name, tokenizer, use_template)
                         if llama_cpp else gguf_not_checked())
            else:
                reference = _write_merged(job, run, info.path, tmp / file_name, model_config,
                                          fmt.removeprefix("gguf-"), name, tokenizer,
                                          use_template if llama_cpp else None)
                text = modelfile_for(tokenizer, f"./{file_name}", None, system)
                check = (verify_gguf(llama_cpp, tmp / file_name, reference, tokenizer,
                                     f"{fmt} model") if llama_cpp else gguf_not_checked())
        except GgufExportError as exc:
            raise EngineError("config", str(exc), "Choose another format.") from None
        atomic_write_text(tmp / MODELFILE, text)
        write_verify(tmp, check)
        folder = settle(tmp, wanted)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return [folder / file_name, folder / MODELFILE, folder / VERIFY]


def _write_adapter(run: RunDir, path: Path, model_config: dict, name: str) -> None:
    from safetensors.torch import load_file

    adapter_config = json.loads((run.final / TEXT_ADAPTER_CONFIG).read_text(encoding="utf-8"))
    write_adapter_gguf(path, load_file(run.final / TEXT_ADAPTER), adapter_config,
                       model_config, name)


def _check_adapter(llama_cpp, job: JobConfig, run: RunDir, base_path: Path, adapter: Path,
                   model_config: dict, name: str, tokenizer, use_template: bool) -> dict:
    """llama.cpp applies the adapter GGUF to a scratch f16 GGUF of the base model."""
    from peft import PeftModel

    from .model import load_base_model
    base = load_base_model(job, base_path, quantize=False)

    def write(path: Path, state_dict: dict) -> None:
        write_merged_gguf(path, state_dict, model_config, base_path, "f16", name,
                          bos_first(tokenizer), tokenizer.chat_template)
    scratch, base_gguf = temp_base_gguf(write, base.state_dict())
    try:
        reference = peft_reference(PeftModel.from_pretrained(base, str(run.final)), tokenizer,
                                   use_template)
        return verify_gguf(llama_cpp, base_gguf, reference, tokenizer, "adapter GGUF",
                           lora_path=adapter)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _write_merged(job: JobConfig, run: RunDir, base_path: Path, path: Path, model_config: dict,
                  precision: str, name: str, tokenizer, use_template: bool | None):
    """The base model (its folder also holds the tokenizer) merged with the run's adapter,
    with the chat template training used. ``use_template`` not None: PEFT's answers to the
    check's prompts are taken before merging and returned."""
    from peft import PeftModel

    from .model import load_base_model
    base = load_base_model(job, base_path, quantize=False)
    model = PeftModel.from_pretrained(base, str(run.final))
    reference = None if use_template is None else peft_reference(model, tokenizer, use_template)
    merged = model.merge_and_unload()
    write_merged_gguf(path, merged.state_dict(), model_config, base_path, precision, name,
                      bos_first(tokenizer), tokenizer.chat_template)
    return reference
