"""Records to token ids and labels.

With a chat template (the model's own, or dataset.chat_template set to a
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

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ...config.schema import JobConfig
from ...data.chat_template import (TemplateProblem, is_custom, output_limit, preflight,
                                  render_within_budget)
from ...data.loss_turns import is_response
from ...data.text_records import TextRecord, Turn
from ..core.control import EngineError

if TYPE_CHECKING:
    import torch

IGNORE = -100


@dataclass
class Encoded:
    input_ids: list[int]
    labels: list[int]
    # (file, line) of the record it came from, for the per-record loss (data.py); not
    # cached, since the cache is keyed by content and the same records may lie elsewhere
    origin: tuple[Path, int] | None = field(default=None, compare=False)


@dataclass
class EncodeStats:
    truncated: int = 0
    no_target: int = 0                       # nothing left to learn after truncation
    template_errors: list[str] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)  # indices of the records left out


def template_in_use(tokenizer, setting: str) -> bool:
    """Applies dataset.chat_template: 'auto', 'none', or a Jinja template of its own."""
    if is_custom(setting):
        try:
            preflight(setting)
        except TemplateProblem as exc:
            raise EngineError("config", exc.message, exc.hint) from None
        tokenizer.chat_template = setting
        tokenizer.lora_studio_custom_template = True
    return setting != "none" and bool(getattr(tokenizer, "chat_template", None))


def _render(tokenizer, turns: list[Turn], generation_prompt: bool) -> str:
    messages = [{"role": t.role, "content": t.content} for t in turns]

    def render() -> str:
        return tokenizer.apply_chat_template(messages, tokenize=False,
                                             add_generation_prompt=generation_prompt)
    # A preset's own template is a stranger's code: bounded in time as well as in size.
    if getattr(tokenizer, "lora_studio_custom_template", False):
        return render_within_budget(render, output_limit(messages),
                                    what="The preset's chat template (dataset.chat_template)")
    text = render()
    if len(text) > output_limit(messages):
        raise TemplateProblem(f"The model's chat template wrote {len(text):,} characters for one "
                              "conversation of far fewer.",
                              "Set dataset.chat_template to 'none' to use the plain format.")
    return text


def _ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"] if text else []


def _bos(tokenizer) -> list[int]:
    return [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []


# A piece of a record: the text to tokenise (or token ids already), and whether it is
# the response. Tokenising every piece of many records in one call is what makes the
# dataset browser's token view as fast as the tokenizer alone.
Piece = tuple[str | list[int], bool]


def _template_pieces(tokenizer, turns: tuple[Turn, ...]) -> list[Piece]:
    """(text, is_response) pieces whose concatenation is the rendered chat."""
    pieces, done, upto = [], "", 0
    for i, turn in enumerate(turns):
        if not is_response(turn):
            continue
        head = _render(tokenizer, list(turns[:i]), True) if i else ""
        full = _render(tokenizer, list(turns[: i + 1]), False)
        if not (head.startswith(done) and full.startswith(head)):
            raise _NotIncremental
        pieces += [(head[len(done):], False), (full[len(head):], True)]
        done, upto = full, i + 1
    # A conversation that ends with a response is already rendered whole.
    rest = done if upto == len(turns) else _render(tokenizer, list(turns), False)
    if len(rest) > len(done):
        pieces.append((rest[len(done):], False))
    return pieces


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
        if not is_response(turn):
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


def _fallback_pieces(tokenizer, turns: tuple[Turn, ...]) -> list[Piece]:
    pieces: list[Piece] = [(_bos(tokenizer), False)]
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    for turn in turns:
        if turn.role == "system":
            pieces.append((f"System: {turn.content}\n", False))
        elif turn.role == "user":
            pieces.append((f"User: {turn.content}\nAssistant: ", False))
        else:
            pieces += [(turn.content, True), (eos, True), ("\n", False)]
    return pieces


def _tokenised(tokenizer, pieces: list[Piece]) -> list[tuple[list[int], bool]]:
    return [(_ids(tokenizer, p) if isinstance(p, str) else p, r) for p, r in pieces]


def _fallback_segments(tokenizer, turns: tuple[Turn, ...]) -> list[tuple[list[int], bool]]:
    return _tokenised(tokenizer, _fallback_pieces(tokenizer, turns))


# No token of a real vocabulary spans more characters than this, so text beyond
# max_length times it cannot reach the kept tokens and need not be tokenised.
MAX_CHARS_PER_TOKEN = 256


def clip_turns(turns: tuple[Turn, ...], max_length: int) -> tuple[tuple[Turn, ...], bool]:
    """The turns cut to max_length * MAX_CHARS_PER_TOKEN characters of content in all,
    and whether anything was cut: a 100 MB record costs no more than a short one."""
    budget = max_length * MAX_CHARS_PER_TOKEN
    kept: list[Turn] = []
    for turn in turns:
        if budget <= 0:
            return tuple(kept), True
        if len(turn.content) > budget:
            return tuple(kept) + (Turn(turn.role, turn.content[:budget]),), True
        kept.append(turn)
        budget -= len(turn.content)
    return turns, False


def record_pieces(record: TextRecord, tokenizer, *, use_template: bool, responses_only: bool,
                  max_length: int) -> tuple[list[Piece], bool]:
    """The pieces of one record as training tokenises them, and whether its text was
    cut before tokenising (clip_turns)."""
    turns, clipped = clip_turns(record.turns, max_length)
    if record.is_plain_text:
        eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
        return [(_bos(tokenizer), True), (turns[0].content, True), (eos, True)], clipped
    if use_template and not responses_only:
        return [(_render(tokenizer, list(turns), False), True)], clipped
    if use_template:
        try:
            return _template_pieces(tokenizer, turns), clipped
        except _NotIncremental:
            return _located_segments(tokenizer, turns), clipped
    return _fallback_pieces(tokenizer, turns), clipped


def joined(segments: list[tuple[list[int], bool]], responses_only: bool) -> Encoded:
    """Token ids and labels of a whole record, before the cut at max_length."""
    ids, labels = [], []
    for piece, is_response in segments:
        ids += piece
        labels += piece if (is_response or not responses_only) else [IGNORE] * len(piece)
    return Encoded(ids, labels)


def encode_record(record: TextRecord, tokenizer, *, use_template: bool, responses_only: bool,
                  max_length: int) -> tuple[Encoded, bool]:
    """Token ids and labels of one record, and whether it was truncated."""
    pieces, clipped = record_pieces(record, tokenizer, use_template=use_template,
                                    responses_only=responses_only, max_length=max_length)
    whole = joined(_tokenised(tokenizer, pieces), responses_only)
    truncated = clipped or len(whole.input_ids) > max_length
    return Encoded(whole.input_ids[:max_length], whole.labels[:max_length]), truncated


def tokenise_pieces(tokenizer, records_pieces: list[list[Piece]]) -> list[list[tuple[list[int], bool]]]:
    """Every text piece of many records tokenised in one call of the fast tokenizer,
    which gives each text the ids a call of its own would."""
    texts = [p for pieces in records_pieces for p, _ in pieces if isinstance(p, str) and p]
    ids = iter(tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else [])
    return [[((next(ids) if p else []) if isinstance(p, str) else p, r) for p, r in pieces]
            for pieces in records_pieces]


def has_target(labels: list[int]) -> bool:
    """Whether a cut record still has a token to learn from (the first label is never
    predicted)."""
    return any(label != IGNORE for label in labels[1:])


def encode_each(records: Iterable[TextRecord], tokenizer, job: JobConfig, stats: EncodeStats,
                progress: Callable[[int], None] | None = None) -> Iterator[Encoded]:
    """The records tokenised one by one (a stream need not fit in memory), counting in
    ``stats`` what was cut, skipped or failed; ``progress(done)`` before each record."""
    data = job.dataset
    use_template = template_in_use(tokenizer, data.chat_template)
    for done, record in enumerate(records):
        if progress is not None:
            progress(done)
        try:
            item, cut = encode_record(record, tokenizer, use_template=use_template,
                                      responses_only=data.train_on_responses_only,
                                      max_length=data.max_seq_length)
        except TemplateProblem as exc:  # over budget: every other record would be too
            raise EngineError("config", f"{record.source}:{record.line}: {exc.message}",
                              exc.hint) from None
        except Exception as exc:  # a Jinja template can raise anything (TemplateError, ...)
            stats.template_errors.append(f"{record.source}:{record.line}: {exc}")
            stats.skipped.append(done)
            continue
        stats.truncated += cut
        if not has_target(item.labels):
            stats.no_target += 1
            stats.skipped.append(done)
            continue
        yield item


def encode_records(records: list[TextRecord], tokenizer, job: JobConfig,
                   progress: Callable[[int, int], None] | None = None
                   ) -> tuple[list[Encoded], EncodeStats]:
    """Tokenise every record; ``progress(done, total)`` is called before each one."""
    stats = EncodeStats()
    step = (lambda done: progress(done, len(records))) if progress is not None else None
    encoded = list(encode_each(records, tokenizer, job, stats, step))
    if progress is not None:
        progress(len(records), len(records))
    return encoded, stats


def tokenizer_by_name(path: str | Path):
    """The tokenizer class tokenizer_config.json names, imported by its name, or None
    when it names none. AutoTokenizer picks the same class but imports torch on the way
    (its model registry); the token view's child must not."""
    import json

    import transformers
    try:
        config = json.loads((Path(path) / "tokenizer_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    name = config.get("tokenizer_class") if isinstance(config, dict) else None
    cls = next((getattr(transformers, n, None) for n in (name, (name or "").removesuffix("Fast"))
                if n and getattr(transformers, n, None) is not None), None)
    if cls is None:
        return None
    tokenizer = cls.from_pretrained(str(path))
    if tokenizer.pad_token_id is None:  # as model.load_tokenizer does for training
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def collate(items: list[Encoded], pad_id: int) -> dict[str, torch.Tensor]:
    import torch
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


def chat_prompt_ids(tokenizer, turns: list[Turn], use_template: bool) -> list[int]:
    """Token ids of a conversation that ends with a user turn, followed by what starts
    the assistant's answer, formatted as training formats it (the template, or the
    fallback whose user turn ends with "Assistant: ")."""
    if use_template:
        return _ids(tokenizer, _render(tokenizer, list(turns), True))
    return [i for piece, _ in _fallback_segments(tokenizer, tuple(turns)) for i in piece]


def prompt_ids(tokenizer, prompt: str, use_template: bool) -> list[int]:
    return chat_prompt_ids(tokenizer, [Turn("user", prompt)], use_template)
