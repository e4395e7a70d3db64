"""What the window and the playground process (``python -m lora_studio.playground``)
say to each other: JSON lines, one object each with a ``type``, encoded like the
engine's events (runs/events.py). Requests go in on the child's stdin, events come out
on its stdout. No torch, no Qt.

Requests (``id`` is the caller's, echoed by the events that answer it):

- ``load_base``     path, kind ("text" or "image"), chat_template ("auto", "none" or a
                    Jinja template, as dataset.chat_template). Replaces the loaded base
                    and forgets every adapter.
- ``load_adapter``  name, path: a run's ``final/``, one of its ``checkpoints/step-N/``,
                    a PEFT folder, or a kohya / diffusers / PEFT ``.safetensors`` file.
- ``set_adapters``  names, weights: the adapters in use and their strengths; [] is the
                    base alone. Image bases mix several; a text base uses the first.
- ``generate``      text: messages [{role, content}], max_new_tokens, temperature,
                    top_p, repetition_penalty, seed; image: prompt, negative_prompt,
                    sampler, steps, cfg, seed, width, height. ``adapters``/``weights``
                    (optional) select the adapters for this generation only; ``out``
                    (image) the PNG to write, with A1111's ``parameters`` text chunk.
- ``grid``          image: the settings of ``generate`` shared by every cell, ``cells``
                    (rows of dicts that override them: adapters, weights, prompt, seed),
                    col_labels, row_labels, out: one labelled PNG (runs/xy_grid.py).
- ``stop``          ends the generation running now and those waiting (answered while
                    it runs); with ``target``, only the generation whose id it is.
- ``shutdown``      the process exits.

Events:

- ``ready``           the process is up (pid).
- ``base_loaded``     kind, path, loads (how many times a base was loaded in this
                      process), seconds.
- ``adapter_loaded``  name, path, source (what the path was read as), seconds.
- ``adapters_set``    names, weights, seconds.
- ``token``           id, text: the next piece of a streamed answer.
- ``done``            id, text (the whole answer), reason ("eos": an end token of the
                      model or its chat template, "length", "stopped"), tokens,
                      prompt_tokens (text), seconds, first_token_s.
- ``image``           id, path (a PNG the process wrote), parameters, seconds; for a
                      grid also rows, cols. While a grid is drawn, ``cell`` events
                      (id, done, total) count its images.
- ``error``           id (when it answers a request), kind (config, io, oom, request,
                      internal), message, hint. The process goes on after an error.

The launcher (runs/playground_launch.py) adds one of its own when the process ends:
``exited`` with pid, code, reason ("idle", "training", "shutdown", "crashed", "replaced")
and hint (the end of its error output after a crash).
"""
from __future__ import annotations

import json
import time
from typing import Any

from .events import encode

REQUEST_TYPES = ("load_base", "load_adapter", "set_adapters", "generate", "grid", "stop",
                 "shutdown")
EVENT_TYPES = ("ready", "base_loaded", "adapter_loaded", "adapters_set", "token", "done",
               "image", "cell", "error")
ERROR_KINDS = ("config", "io", "oom", "request", "internal")
BASE_KINDS = ("text", "image")

# Requests that make up the process's state: replayed, in order, by a launcher that
# starts a fresh process after the old one was stopped or died.
STATE_REQUESTS = ("load_base", "load_adapter", "set_adapters")

MODULE = "lora_studio.playground"


def request(type_: str, **fields: Any) -> dict:
    if type_ not in REQUEST_TYPES:
        raise ValueError(f"unknown playground request {type_!r}")
    return {"type": type_, **fields}


def reply(type_: str, **fields: Any) -> dict:
    if type_ not in EVENT_TYPES:
        raise ValueError(f"unknown playground event {type_!r}")
    if type_ == "error" and fields.get("kind") not in ERROR_KINDS:
        raise ValueError(f"unknown error kind {fields.get('kind')!r}")
    return {"type": type_, "time": round(time.time(), 3), **fields}


def _parse(line: str, types: tuple[str, ...]) -> dict | None:
    line = line.strip()
    if not line.startswith("{"):
        return None
    try:
        obj = json.loads(line)
    except json.JSONDecodeError:
        return None
    return obj if isinstance(obj, dict) and obj.get("type") in types else None


def decode_event(line: str) -> dict | None:
    """One event line of the child, or None for anything else (a library printing)."""
    return _parse(line, EVENT_TYPES)


def decode_request(line: str) -> dict | None:
    return _parse(line, REQUEST_TYPES)


__all__ = ["encode", "request", "reply", "decode_event", "decode_request", "REQUEST_TYPES",
           "EVENT_TYPES", "ERROR_KINDS", "STATE_REQUESTS", "MODULE", "BASE_KINDS"]
