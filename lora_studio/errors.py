"""The shape shared by the errors a caller turns into a finding or a message: a short
``reason`` code it maps to a rule, the message naming what is wrong, and a hint saying
what to do. Torch-free and Qt-free, so config/, data/ and ui/ may all use it."""
from __future__ import annotations


class HintedError(Exception):
    def __init__(self, reason: str, message: str, hint: str):
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.hint = hint
