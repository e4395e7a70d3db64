"""The one exception the playground turns into an ``error`` event and goes on."""
from __future__ import annotations

from ..runs.playground_protocol import reply


class PlaygroundError(Exception):
    def __init__(self, kind: str, message: str, hint: str = ""):
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.hint = hint

    def to_event(self, request_id=None) -> dict:
        return reply("error", id=request_id, kind=self.kind, message=self.message, hint=self.hint)
