"""Text LoRA / QLoRA for causal language models (transformers + peft).

Tokenisation. With a chat template (the model's own, or dataset.chat_template set to a
Jinja template) each conversation is rendered turn by turn; the text an assistant turn
adds is the response, everything else the prompt. Without one (no template, or
dataset.chat_template = "none") the documented fallback is::

    System: {system}\\n                     (only when there is a system turn)
    User: {user}\\nAssistant: {assistant}<eos>\\n   (per exchange)

with the tokenizer's BOS token first when it has one. Plain-text records are BOS +
text + EOS, every token in the loss. With train_on_responses_only the labels of
prompt tokens are -100. Records longer than max_seq_length are cut (and counted).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..config.schema import JobConfig
from ..data.text_records import TextRecord, Turn, load_text_records, TextDataError
from ..fsutil import atomic_write_text
from ..runs.events import Emit, event
from ..runs.layout import RunDir
from .checkpoint import load_checkpoint, restore_rng, save_checkpoint_in_step
from .control import EngineError
from .export import copy_adapter, training_metadata, write_peft_adapter
from .loop import (LoopHooks, LoopOutcome, LoopSpec, chunks, epoch_order, make_accelerator,
                   steps_per_epoch, total_steps, train_loop)
from .optim import build_optimizer, build_scheduler

IGNORE = -100
_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


# --- model ------------------------------------------------------------------------------

def resolve_model(job: JobConfig):
    """The ModelInfo of job.model.path (a local folder or a cached Hub id)."""
    from ..config.model_info import ModelInfoError, inspect_model
    try:
        return inspect_model(job.model.path, allow_pickle=job.model.allow_pickle)
    except ModelInfoError as exc:
        raise EngineError("config", exc.message, exc.hint) from exc


def weights_dtype(job: JobConfig, on_cuda: bool) -> torch.dtype:
    if job.model.dtype != "auto":
        return _DTYPES[job.model.dtype]
    if on_cuda and job.training.mixed_precision in ("fp16", "bf16"):
        return torch.float16 if job.training.mixed_precision == "fp16" else torch.bfloat16
    return torch.float32


def load_tokenizer(path: Path):
    from transformers import AutoTokenizer
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_base_model(job: JobConfig, path: Path, quantize: bool = True):
    from transformers import AutoModelForCausalLM
    on_cuda = torch.cuda.is_available()
    kwargs: dict[str, Any] = {"dtype": weights_dtype(job, on_cuda)}
    if not job.model.allow_pickle:  # never unpickle .bin weights unless the user opted in
        kwargs["use_safetensors"] = True
    if quantize and (job.model.load_in_4bit or job.model.load_in_8bit):
        if not on_cuda:
            raise EngineError("config", "Loading the base in 4-bit or 8-bit (QLoRA) needs an NVIDIA "
                                        "GPU with CUDA; none was found.",
                              "Set model.load_in_4bit and model.load_in_8bit to false to train on "
                              "this machine.")
        from transformers import BitsAndBytesConfig
        compute = torch.bfloat16 if job.training.mixed_precision == "bf16" else torch.float16
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=job.model.load_in_4bit, load_in_8bit=job.model.load_in_8bit and
            not job.model.load_in_4bit, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=compute)
        kwargs["device_map"] = {"": torch.cuda.current_device()}
    try:
        return AutoModelForCausalLM.from_pretrained(str(path), **kwargs)
    except (OSError, ValueError) as exc:
        raise EngineError("config", f"Cannot load the text model from {path}: {exc}",
                          "Check that the folder holds a causal language model (config.json and "
                          "safetensors weights).") from exc


def target_modules(job: JobConfig, info) -> list[str] | str:
    from ..config.model_info import target_candidates
    return job.network.target_modules or target_candidates(info) or "all-linear"


def build_peft_model(job: JobConfig, info, base):
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    gc = job.training.gradient_checkpointing
    if job.model.load_in_4bit or job.model.load_in_8bit:
        base = prepare_model_for_kbit_training(
            base, use_gradient_checkpointing=gc,
            gradient_checkpointing_kwargs={"use_reentrant": False})
    elif gc:
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if gc:
        base.config.use_cache = False
    config = LoraConfig(r=job.network.rank, lora_alpha=job.network.alpha,
                        lora_dropout=job.network.dropout, target_modules=target_modules(job, info),
                        task_type="CAUSAL_LM")
    return get_peft_model(base, config)


# --- tokenisation -----------------------------------------------------------------------

@dataclass
class Encoded:
    input_ids: list[int]
    labels: list[int]


@dataclass
class EncodeStats:
    truncated: int = 0
    no_target: int = 0                       # nothing left to learn after truncation
    template_errors: list[str] = field(default_factory=list)


def template_in_use(tokenizer, setting: str) -> bool:
    """Applies dataset.chat_template: 'auto', 'none', or a Jinja template of its own."""
    if setting not in ("auto", "none"):
        tokenizer.chat_template = setting
    return setting != "none" and bool(getattr(tokenizer, "chat_template", None))


def _render(tokenizer, turns: list[Turn], generation_prompt: bool) -> str:
    messages = [{"role": t.role, "content": t.content} for t in turns]
    return tokenizer.apply_chat_template(messages, tokenize=False,
                                         add_generation_prompt=generation_prompt)


def _ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"] if text else []


def _bos(tokenizer) -> list[int]:
    return [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []


def _template_segments(tokenizer, turns: tuple[Turn, ...]) -> list[tuple[list[int], bool]]:
    """(token ids, is_response) pieces whose concatenation is the rendered chat."""
    segments, done = [], ""
    for i, turn in enumerate(turns):
        if turn.role != "assistant":
            continue
        head = _render(tokenizer, list(turns[:i]), True) if i else ""
        full = _render(tokenizer, list(turns[: i + 1]), False)
        if not (head.startswith(done) and full.startswith(head)):
            raise _NotIncremental
        segments += [(_ids(tokenizer, head[len(done):]), False),
                     (_ids(tokenizer, full[len(head):]), True)]
        done = full
    rest = _render(tokenizer, list(turns), False)
    if len(rest) > len(done):
        segments.append((_ids(tokenizer, rest[len(done):]), False))
    return segments


class _NotIncremental(ValueError):
    """The template renders a turn differently once more turns follow (some put
    reasoning tags on the last turn only)."""


def _located_segments(tokenizer, turns: tuple[Turn, ...]) -> list[tuple[list[int], bool]]:
    """For templates that do not render turn by turn: each assistant text (and the EOS
    token right after it) is found in the full rendering, and the tokens that overlap
    it are the response. Needs a fast tokenizer (character offsets)."""
    full = _render(tokenizer, list(turns), False)
    eos = tokenizer.eos_token or ""
    spans, pos = [], 0
    for turn in turns:
        if turn.role != "assistant":
            continue
        start = full.find(turn.content, pos)
        if start < 0:
            raise ValueError("the chat template changes the assistant's text, so the response "
                             "cannot be found; set dataset.chat_template = 'none' or "
                             "train_on_responses_only = false")
        end = start + len(turn.content)
        end += len(eos) if eos and full.startswith(eos, end) else 0
        spans.append((start, end))
        pos = end
    encoded = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
    segments = []
    for token, (begin, end) in zip(encoded["input_ids"], encoded["offset_mapping"]):
        segments.append(([token], any(begin < b and end > a for a, b in spans)))
    return segments


def _fallback_segments(tokenizer, turns: tuple[Turn, ...]) -> list[tuple[list[int], bool]]:
    segments: list[tuple[list[int], bool]] = [(_bos(tokenizer), False)]
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    for turn in turns:
        if turn.role == "system":
            segments.append((_ids(tokenizer, f"System: {turn.content}\n"), False))
        elif turn.role == "user":
            segments.append((_ids(tokenizer, f"User: {turn.content}\nAssistant: "), False))
        else:
            segments += [(_ids(tokenizer, turn.content) + eos, True), (_ids(tokenizer, "\n"), False)]
    return segments


def fallback_prompt(text: str) -> str:
    return f"User: {text}\nAssistant: "


def encode_record(record: TextRecord, tokenizer, *, use_template: bool, responses_only: bool,
                  max_length: int) -> tuple[Encoded, bool]:
    """Token ids and labels of one record, and whether it was truncated."""
    if record.is_plain_text:
        eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
        ids = _bos(tokenizer) + _ids(tokenizer, record.turns[0].content) + eos
        labels = list(ids)
    else:
        if use_template and not responses_only:
            segments = [(_ids(tokenizer, _render(tokenizer, list(record.turns), False)), True)]
        elif use_template:
            try:
                segments = _template_segments(tokenizer, record.turns)
            except _NotIncremental:
                segments = _located_segments(tokenizer, record.turns)
        else:
            segments = _fallback_segments(tokenizer, record.turns)
        ids, labels = [], []
        for piece, is_response in segments:
            ids += piece
            labels += piece if (is_response or not responses_only) else [IGNORE] * len(piece)
    truncated = len(ids) > max_length
    return Encoded(ids[:max_length], labels[:max_length]), truncated


def encode_records(records: list[TextRecord], tokenizer, job: JobConfig) -> tuple[list[Encoded], EncodeStats]:
    data = job.dataset
    use_template = template_in_use(tokenizer, data.chat_template)
    stats, encoded = EncodeStats(), []
    for record in records:
        try:
            item, cut = encode_record(record, tokenizer, use_template=use_template,
                                      responses_only=data.train_on_responses_only,
                                      max_length=data.max_seq_length)
        except Exception as exc:  # a Jinja template can raise anything (TemplateError, ...)
            stats.template_errors.append(f"{record.source}:{record.line}: {exc}")
            continue
        stats.truncated += cut
        if all(label == IGNORE for label in item.labels[1:]):
            stats.no_target += 1
            continue
        encoded.append(item)
    return encoded, stats


def collate(items: list[Encoded], pad_id: int) -> dict[str, torch.Tensor]:
    width = max(len(x.input_ids) for x in items)
    ids = torch.full((len(items), width), pad_id, dtype=torch.long)
    labels = torch.full((len(items), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(items), width), dtype=torch.long)
    for row, item in enumerate(items):
        n = len(item.input_ids)
        ids[row, :n] = torch.tensor(item.input_ids)
        labels[row, :n] = torch.tensor(item.labels)
        mask[row, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


# --- data -------------------------------------------------------------------------------

def load_dataset(job: JobConfig, tokenizer, emit: Emit) -> list[Encoded]:
    fmt = job.dataset.format
    if fmt == "images":
        raise EngineError("config", "dataset.format is 'images' but the model is a text model.",
                          "Set dataset.format to auto, prompt_response, alpaca, messages or text.")
    try:
        loaded = load_text_records(job.dataset.path, fmt)
    except TextDataError as exc:
        raise EngineError("data", str(exc), "Point dataset.path at your .jsonl / .json file.") from exc
    if loaded.problems:
        shown = "\n".join(str(p) for p in loaded.problems[:20])
        more = f"\n... and {loaded.skipped - 20} more" if loaded.skipped > 20 else ""
        emit(event("log", level="warning", message=f"Skipped {loaded.skipped} bad record(s):\n"
                                                   f"{shown}{more}"))
    encoded, stats = encode_records(loaded.records, tokenizer, job)
    if stats.template_errors:
        emit(event("log", level="warning",
                   message=f"The chat template failed on {len(stats.template_errors)} record(s), "
                           "which were skipped:\n" + "\n".join(stats.template_errors[:20])))
    if stats.truncated:
        emit(event("log", level="warning",
                   message=f"{stats.truncated} record(s) were longer than {job.dataset.max_seq_length}"
                           " tokens and were truncated.", truncated=stats.truncated))
    if stats.no_target:
        emit(event("log", level="warning",
                   message=f"{stats.no_target} record(s) had no response tokens left after "
                           "truncation and were skipped; raise dataset.max_seq_length.",
                   no_target=stats.no_target))
    if not encoded:
        raise EngineError("data", f"No usable records in {job.dataset.path} "
                                  f"({loaded.skipped} bad, {stats.no_target} empty after truncation).",
                          "Fix the lines listed in the log, or set dataset.format to the shape "
                          "of your records.")
    emit(event("log", level="info", message=f"{len(encoded)} record(s) from {len(loaded.files)} "
                                            f"file(s), formats {loaded.formats}.",
               records=len(encoded), formats=loaded.formats))
    return encoded


# --- samples ----------------------------------------------------------------------------

def prompt_ids(tokenizer, prompt: str, use_template: bool) -> list[int]:
    if use_template:
        return _ids(tokenizer, _render(tokenizer, [Turn("user", prompt)], True))
    return _bos(tokenizer) + _ids(tokenizer, fallback_prompt(prompt))


def generate_samples(model, tokenizer, prompts: list[str], *, use_template: bool,
                     max_new_tokens: int, device) -> list[dict]:
    was_training = model.training
    model.eval()
    out = []
    with torch.no_grad():
        for prompt in prompts:
            ids = torch.tensor([prompt_ids(tokenizer, prompt, use_template)], device=device)
            gen = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                                 max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id,
                                 eos_token_id=tokenizer.eos_token_id)
            text = tokenizer.decode(gen[0, ids.shape[1]:], skip_special_tokens=True)
            out.append({"prompt": prompt, "text": text.strip()})
    model.train(was_training)
    return out


# --- the run ----------------------------------------------------------------------------

@dataclass
class TextRun:
    """What train() leaves behind: the trained model (unwrapped) for callers that want
    to compare against the export, and the loop's outcome."""
    model: Any
    tokenizer: Any
    outcome: LoopOutcome
    dataset_size: int


def train(job: JobConfig, run: RunDir, emit: Emit, stop, resume: Path | None = None) -> TextRun:
    from accelerate.utils import set_seed
    from peft import get_peft_model_state_dict, set_peft_model_state_dict

    on_cuda = torch.cuda.is_available()
    if job.training.mixed_precision == "fp16" and not on_cuda:
        raise EngineError("config", "fp16 mixed precision needs an NVIDIA GPU; none was found.",
                          "Set training.mixed_precision to 'no' (or 'bf16' on a recent CPU).")
    accelerator = make_accelerator(job.training.mixed_precision)
    main = accelerator.is_main_process
    set_seed(job.training.seed)
    info = resolve_model(job)
    tokenizer = load_tokenizer(info.path)
    use_template = template_in_use(tokenizer, job.dataset.chat_template)
    data = load_dataset(job, tokenizer, emit)

    base = load_base_model(job, info.path)
    model = build_peft_model(job, info, base)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = build_optimizer([{"params": params}], job.optimizer, on_cuda)

    order = epoch_order(len(data), 0, job.training.seed, accelerator.num_processes,
                        accelerator.process_index)
    gas = job.training.gradient_accumulation_steps
    per_epoch = steps_per_epoch(len(chunks(order, job.training.batch_size)), gas)
    total = total_steps(job.training.max_steps, job.training.epochs, per_epoch)
    scheduler = build_scheduler(optimizer, job.optimizer, total)

    checkpoint = load_checkpoint(resume) if resume else None
    if checkpoint:
        set_peft_model_state_dict(model, checkpoint.trainable)
    model, optimizer = accelerator.prepare(model, optimizer)
    if checkpoint:
        optimizer.load_state_dict(checkpoint.optimizer)
        scheduler.load_state_dict(checkpoint.scheduler)
        if checkpoint.state.get("dataset_size") != len(data):
            emit(event("log", level="warning",
                       message=f"The dataset has {len(data)} records now, "
                               f"{checkpoint.state.get('dataset_size')} when the checkpoint was "
                               "written: the data order differs from the original run."))
        restore_rng(checkpoint.rng)
    start = checkpoint.step if checkpoint else 0
    unwrapped = accelerator.unwrap_model(model)
    trainable = sum(p.numel() for p in params)
    emit(event("started", family="text", total_steps=total, start_step=start,
               dataset_size=len(data), trainable_params=trainable, device=str(accelerator.device),
               processes=accelerator.num_processes, run_dir=str(run.root),
               resumed_from=str(checkpoint.path) if checkpoint else None))

    def epoch_batches(epoch: int) -> list[list[int]]:
        ids = epoch_order(len(data), epoch, job.training.seed, accelerator.num_processes,
                          accelerator.process_index)
        return chunks(ids, job.training.batch_size)

    def compute_loss(indices: list[int]) -> torch.Tensor:
        batch = collate([data[i] for i in indices], tokenizer.pad_token_id)
        return model(**{k: v.to(accelerator.device, non_blocking=True) for k, v in batch.items()}).loss

    def save(step: int) -> Path | None:
        return save_checkpoint_in_step(accelerator, emit, run.checkpoints, step,
                                       trainable=lambda: get_peft_model_state_dict(unwrapped),
                                       optimizer=optimizer, scheduler=scheduler,
                                       state={"epoch": step // per_epoch,
                                              "step_in_epoch": step % per_epoch,
                                              "total_steps": total, "dataset_size": len(data),
                                              "seed": job.training.seed})

    def sample(step: int) -> None:
        if main and job.output.sample_prompts:
            with accelerator.autocast():
                texts = generate_samples(unwrapped, tokenizer, job.output.sample_prompts,
                                         use_template=use_template,
                                         max_new_tokens=job.output.sample_max_new_tokens,
                                         device=accelerator.device)
            path = run.samples / f"step-{step:06d}.txt"
            atomic_write_text(path, "".join(f"### {t['prompt']}\n{t['text']}\n\n" for t in texts))
            emit(event("sample", step=step, path=str(path), kind="text", samples=texts))
        accelerator.wait_for_everyone()

    spec = LoopSpec(total_steps=total, steps_per_epoch=per_epoch, gradient_accumulation_steps=gas,
                    max_grad_norm=job.optimizer.max_grad_norm,
                    save_every_n_steps=job.output.save_every_n_steps,
                    sample_every_n_steps=job.output.sample_every_n_steps,
                    mixed_precision=job.training.mixed_precision)
    outcome = train_loop(accelerator, model, optimizer, scheduler, params, spec,
                         LoopHooks(epoch_batches, compute_loss, save, sample), emit, stop, start)
    if outcome.status == "cancelled":
        emit(event("finished", status="cancelled", step=outcome.step,
                   checkpoint=str(outcome.checkpoint) if outcome.checkpoint else None))
        return TextRun(unwrapped, tokenizer, outcome, len(data))
    save(outcome.step)
    files: list[str] = []
    if main:
        metadata = training_metadata(job, family="text", steps=outcome.step,
                                     dataset_size=len(data), base_model=job.model.path)
        write_peft_adapter(unwrapped, run.final, metadata, job.model.path)
        files = [str(p) for p in copy_adapter(run.final, run.exports / job.output.output_name)]
    emit(event("finished", status="completed", step=outcome.step, final=str(run.final),
               files=files))
    return TextRun(unwrapped, tokenizer, outcome, len(data))
