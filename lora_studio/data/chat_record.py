"""One text record as the chat the model is trained on: a bubble per turn (the
system prompt first), each marked with whether the loss is computed on it
(loss_turns.carries_loss, the engine's rule), and one line saying so in words."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .loss_turns import carries_loss
from .text_records import TEXT_ROLE, RecordError, detect_format, normalise

BUBBLE_TITLES = {"system": "System prompt", "user": "User", "assistant": "Assistant",
                 TEXT_ROLE: "Text"}


@dataclass(frozen=True)
class Bubble:
    role: str    # "system", "user", "assistant", or "text" for a plain-text record
    title: str
    text: str
    loss: bool   # training computes the loss on this turn


@dataclass(frozen=True)
class ChatRecord:
    bubbles: tuple[Bubble, ...]
    note: str    # which turns carry the loss, or why the record is skipped


def chat_record(obj: Any, fmt: str | None, responses_only: bool) -> ChatRecord:
    """The turns training makes of one parsed record (alpaca's instruction and input
    become one user turn, as in training); no bubbles when training skips it."""
    fmt = fmt or detect_format(obj)
    if fmt is None:
        return ChatRecord((), "Training skips this record: it has none of the fields of a "
                              "known format.")
    try:
        turns = normalise(obj, fmt)
    except RecordError as exc:
        return ChatRecord((), f"Training skips this record: {exc}.")
    bubbles = tuple(Bubble(t.role, BUBBLE_TITLES[t.role], t.content, carries_loss(t, responses_only))
                    for t in turns)
    return ChatRecord(bubbles, _note(bubbles, responses_only))


def _note(bubbles: tuple[Bubble, ...], responses_only: bool) -> str:
    if bubbles[0].role == TEXT_ROLE:
        return "Plain text: the loss is on all of it."
    if not responses_only:
        return ("The loss is on every turn (Loss on responses only is off), prompts and "
                "system prompt included.")
    trained = sum(b.loss for b in bubbles)
    return (f"The loss is on the {trained} assistant turn{'' if trained == 1 else 's'} "
            f"(of {len(bubbles)}); the other turns are context the model reads but does "
            "not learn to write.")
