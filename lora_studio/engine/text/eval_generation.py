"""Generation on held-out records: the model answers each record's prompt greedily and
the answers are scored against the record's own answer (metrics.py).

Prompt and reference come from the record as training tokenised it: the prompt is every
token before the record's last response (the last run of loss tokens, so it needs
dataset.train_on_responses_only), formatted exactly as in training (chat_prompt_ids
gives the same tokens for the same turns); the reference is that response decoded."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ...config.schema import JobConfig
from ...runs.events import Emit, event
from ..core.control import EngineError
from .metrics import check_installed, score
from .tokens import IGNORE, Encoded

# New tokens allowed beyond the reference's length: room for an answer a little longer.
EXTRA_NEW_TOKENS = 8
GENERATE_BATCH = 8


@dataclass(frozen=True)
class HeldOutPrompt:
    prompt_ids: list[int]
    reference: str
    max_new_tokens: int


def last_response(item: Encoded) -> tuple[int, int] | None:
    """[start, end) of the last run of loss tokens after a prompt; None for a record
    without a prompt before it (plain text) or without loss tokens."""
    end = next((i + 1 for i in range(len(item.labels) - 1, 0, -1) if item.labels[i] != IGNORE),
               None)
    if end is None:
        return None
    start = end - 1
    while start > 0 and item.labels[start - 1] != IGNORE:
        start -= 1
    return (start, end) if start > 0 else None


def held_out_prompts(eval_data: Sequence[Encoded], tokenizer, limit: int) -> list[HeldOutPrompt]:
    """Up to ``limit`` prompts of held-out records, in their order, skipping records
    without a prompt or whose reference decodes to nothing."""
    out: list[HeldOutPrompt] = []
    for i in range(len(eval_data)):
        if len(out) >= limit:
            break
        item = eval_data[i]
        span = last_response(item)
        if span is None:
            continue
        start, end = span
        reference = tokenizer.decode(item.input_ids[start:end], skip_special_tokens=True).strip()
        if reference:
            out.append(HeldOutPrompt(list(item.input_ids[:start]), reference,
                                     end - start + EXTRA_NEW_TOKENS))
    return out


def _left_padded(prompts: list[HeldOutPrompt], pad_id: int, device):
    width = max(len(p.prompt_ids) for p in prompts)
    ids = torch.tensor([[pad_id] * (width - len(p.prompt_ids)) + p.prompt_ids for p in prompts],
                       device=device)
    mask = torch.tensor([[0] * (width - len(p.prompt_ids)) + [1] * len(p.prompt_ids)
                         for p in prompts], device=device)
    return ids, mask


def generate_answers(model, tokenizer, prompts: list[HeldOutPrompt], device) -> list[str]:
    """Greedy answers, GENERATE_BATCH prompts at a time, left-padded (a batch costs
    little more than one prompt on a small model). Each answer is cut to its own prompt's
    max_new_tokens: greedy decoding's first n tokens do not depend on how many follow."""
    was_training = model.training
    model.eval()
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else \
        (tokenizer.eos_token_id or 0)
    answers = []
    try:
        with torch.no_grad():
            for at in range(0, len(prompts), GENERATE_BATCH):
                batch = prompts[at:at + GENERATE_BATCH]
                ids, mask = _left_padded(batch, pad_id, device)
                gen = model.generate(input_ids=ids, attention_mask=mask,
                                     max_new_tokens=max(p.max_new_tokens for p in batch),
                                     do_sample=False, pad_token_id=pad_id,
                                     eos_token_id=tokenizer.eos_token_id)
                for row, p in zip(gen[:, ids.shape[1]:].tolist(), batch):
                    answers.append(tokenizer.decode(row[:p.max_new_tokens],
                                                    skip_special_tokens=True).strip())
    finally:
        model.train(was_training)
    return answers


def generation_scores(model, tokenizer, prompts: list[HeldOutPrompt], device) -> dict[str, float]:
    answers = generate_answers(model, tokenizer, prompts, device)
    return score(answers, [p.reference for p in prompts])


def job_prompts(job: JobConfig, eval_data: Sequence[Encoded], tokenizer,
                emit: Emit) -> list[HeldOutPrompt]:
    """The held-out prompts a job's evaluations answer, or none with a warning saying
    why; when the early-stopping metric needs them, a missing one is a config error."""
    limit = job.output.eval_generate_records
    if not limit or not len(eval_data):
        return []
    needed = job.training.early_stopping_metric != "eval_loss"
    problem = None
    if not job.dataset.train_on_responses_only:
        problem = ("Generation metrics need dataset.train_on_responses_only: without it the "
                   "records do not say where the answer starts.",
                   "Turn Loss on responses only on, or set output.eval_generate_records to 0.")
    else:
        try:
            check_installed()
        except EngineError as exc:
            problem = (exc.message, exc.hint)
    prompts = [] if problem else held_out_prompts(eval_data, tokenizer, limit)
    if not problem and not prompts:
        problem = ("No held-out record has a prompt and an answer to score (plain-text records "
                   "have none).", "Hold out prompt/response or chat records, or set "
                                  "output.eval_generate_records to 0.")
    if problem and needed:
        raise EngineError("config", f"training.early_stopping_metric is "
                                    f"'{job.training.early_stopping_metric}': {problem[0]}",
                          problem[1])
    if problem:
        emit(event("log", level="warning", message=f"{problem[0]} {problem[1]} The eval loss "
                                                   "is measured without them."))
    return prompts
