"""What the window (or the command line) and the captioning process
(``python -m lora_studio.captioning``) say to each other. No torch, no Qt.

The caller writes one request, a JSON line on the child's stdin (CaptionRequest);
any later line, or the end of stdin, cancels: the child finishes the caption it is
writing and stops. Events come back as JSON lines on stdout:

- ``started``    total, model (the folder it loaded), seconds (the load)
- ``captioned``  index (into the request's images), caption (its path), text (what
                 is now in the file), old (what was there), action ("written",
                 "skipped": had a caption and mode is skip, "unchanged"), done, total,
                 eta_s. Sent after the file is on disk.
- ``failed``     index, message: that image was left alone (it cannot be read);
                 done, total, eta_s.
- ``finished``   status ("completed" or "cancelled"), written, skipped, failed
- ``error``      message, hint: the run cannot go on (model missing, not loadable).
"""
from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields

CAPTION_MODULE = "lora_studio.captioning"
KINDS = ("tagger", "captioner")
EVENT_TYPES = ("started", "captioned", "failed", "finished", "error")


@dataclass
class CaptionRequest:
    kind: str                         # "tagger" (WD14 ONNX) or "captioner" (BLIP, Florence-2)
    model: str                        # a folder, or a Hub id already in the local cache
    images: list[str] = field(default_factory=list)
    captions: list[str] = field(default_factory=list)  # the caption file of each image
    mode: str = "skip"                # data/caption_merge.MODES
    trigger: str = ""
    general_threshold: float = 0.35   # SmilingWolf's defaults
    character_threshold: float = 0.85
    exclude: list[str] = field(default_factory=list)
    underscores_to_spaces: bool = True
    include_rating: bool = False
    task: str = ""                    # Florence-2 task token or BLIP's text prompt
    max_new_tokens: int = 60
    device: str = "auto"              # "auto", "cpu" or "cuda"

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False)

    @classmethod
    def from_json(cls, line: str) -> "CaptionRequest":
        data = json.loads(line)
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def reply(type_: str, **values) -> dict:
    if type_ not in EVENT_TYPES:
        raise ValueError(f"unknown caption event {type_!r}")
    return {"type": type_, "time": round(time.time(), 3), **values}


def decode_event(line: str) -> dict | None:
    """One line from the child, or None for a line that is not an event (a library
    printing to stdout)."""
    line = line.strip()
    if not line.startswith("{"):
        return None
    try:
        ev = json.loads(line)
    except ValueError:
        return None
    return ev if isinstance(ev, dict) and ev.get("type") in EVENT_TYPES else None


def caption_command() -> list[str]:
    return [sys.executable, "-m", CAPTION_MODULE]


def caption_env(package_root: str, base: dict[str, str] | None = None) -> dict[str, str]:
    """The child's environment: this copy of lora_studio first on its path, UTF-8 pipes
    whatever the console's code page, and no network for the Hub libraries."""
    env = dict(os.environ if base is None else base)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
    env.update(PYTHONIOENCODING="utf-8", PYTHONUNBUFFERED="1", HF_HUB_OFFLINE="1")
    return env


def eta_text(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    if seconds >= 3600:
        return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
    if seconds >= 60:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds} s"


@dataclass
class CaptionTally:
    """What the events of one captioning run add up to, for a progress line and for the
    one undoable edit at the end: ``written`` maps an image index to (old, new) text."""
    total: int = 0
    done: int = 0
    eta_s: float = 0.0
    written: dict[int, tuple[str, str]] = field(default_factory=dict)
    skipped: int = 0
    failures: dict[int, str] = field(default_factory=dict)
    status: str = "running"           # running, loading, completed, cancelled, error
    error: str = ""

    def add(self, ev: dict) -> None:
        kind = ev.get("type")
        if kind == "started":
            self.total, self.status = int(ev["total"]), "running"
        elif kind in ("captioned", "failed"):
            self.done, self.total = int(ev["done"]), int(ev["total"])
            self.eta_s = float(ev.get("eta_s", 0.0))
            if kind == "failed":
                self.failures[int(ev["index"])] = str(ev["message"])
            elif ev["action"] == "written":
                self.written[int(ev["index"])] = (str(ev["old"]), str(ev["text"]))
            else:
                self.skipped += 1
        elif kind == "finished":
            self.status = str(ev["status"])
        elif kind == "error":
            self.status = "error"
            self.error = " ".join(filter(None, (ev.get("message"), ev.get("hint"))))

    @property
    def over(self) -> bool:
        return self.status in ("completed", "cancelled", "error")

    def progress_text(self) -> str:
        if self.status == "loading":
            return "Loading the model…"
        if not self.total:
            return "Starting…"
        line = f"{self.done}/{self.total} images"
        if self.done < self.total and self.done and not self.over:
            line += f", about {eta_text(self.eta_s)} left"
        return line

    def summary(self) -> str:
        """One sentence on what the run did, for the status line."""
        head = {"completed": "Captioning done", "cancelled": "Captioning cancelled",
                "error": "Captioning stopped"}.get(self.status, "Captioning")
        parts = [f"{len(self.written)} caption(s) written"]
        if self.skipped:
            parts.append(f"{self.skipped} left as they were")
        if self.failures:
            first = next(iter(self.failures.values()))
            parts.append(f"{len(self.failures)} image(s) could not be read (first: {first})")
        text = f"{head}: {', '.join(parts)}."
        if self.status == "error":
            text += f" {self.error}"
        return text


def request_for(kind: str, model: str, images: Sequence[str], captions: Sequence[str],
                **options) -> CaptionRequest:
    if kind not in KINDS:
        raise ValueError(f"unknown captioning kind {kind!r}; one of {', '.join(KINDS)}")
    return CaptionRequest(kind, model, [str(p) for p in images], [str(p) for p in captions],
                          **options)
