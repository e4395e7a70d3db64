"""Which turns of a text record the loss is computed on. The engine's tokeniser
(engine/text/tokens.py) and the dataset browser's chat view both ask here, so what
the view marks as trained is what training learns from."""
from __future__ import annotations

from .text_records import TEXT_ROLE, Turn

RESPONSE_ROLE = "assistant"


def is_response(turn: Turn) -> bool:
    """A turn the model answers with: the part of a conversation it learns to write."""
    return turn.role == RESPONSE_ROLE


def carries_loss(turn: Turn, responses_only: bool) -> bool:
    """With dataset.train_on_responses_only the loss is on the responses only (their
    end-of-turn token included); without it on every turn. A plain-text record is
    trained on as a whole either way."""
    return is_response(turn) or turn.role == TEXT_ROLE or not responses_only
