"""The adapters a playground backend holds, by the user's names, and which of them are
active at what weight: the bookkeeping the text and the image backends share. PEFT's
own names are ``adapter1``, ``adapter2`` ...: they must be valid module names and must
not contain "lora_" (PEFT would re-initialise such an adapter)."""
from __future__ import annotations

from .errors import PlaygroundError


class AdapterSlots:
    def __init__(self):
        self.peft_names: dict[str, str] = {}
        self.added = 0
        self.active: list[str] = []
        self.weights: list[float] = []

    @property
    def adapters(self) -> list[str]:
        return list(self.peft_names)

    def _new_slot(self, name: str) -> str:
        """A fresh PEFT name for ``name``, the old one forgotten first."""
        if name in self.peft_names:
            self._forget(name)
        self.added += 1
        self.peft_names[name] = f"adapter{self.added}"
        return self.peft_names[name]

    def _forget(self, name: str) -> None:
        """Subclasses delete the adapter from their model, then call this."""
        self.peft_names.pop(name, None)
        if name in self.active:
            i = self.active.index(name)
            del self.active[i], self.weights[i]

    def _choose(self, names: list[str], weights: list[float]) -> None:
        unknown = [n for n in names if n not in self.peft_names]
        if unknown:
            raise PlaygroundError("request", f"No adapter named {unknown[0]!r} is loaded.",
                                  "Load it first; loaded: " + (", ".join(self.adapters) or "none"))
        self.active, self.weights = list(names), list(weights) or [1.0] * len(names)
