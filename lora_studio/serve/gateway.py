"""The served models behind one lock: the playground process (the Playground tab's
child, runs/playground_launch.py) keeps the base loaded with every adapter added, and
answers one chat at a time, each naming its adapter, so two adapters never mix in one
answer and the base is never loaded again to switch."""
from __future__ import annotations

import itertools
import math
import queue
import sys
import threading
from collections.abc import Callable

from ..errors import HintedError
from ..runs.playground_launch import PlaygroundProcess
from ..runs.playground_protocol import request
from .catalog import Catalog
from .openai_api import ApiError

LOAD_TIMEOUT_S = 1800.0     # a large base read from a slow disk
EVENT_TIMEOUT_S = 600.0     # between two events of one answer (a restart reloads the base)
DRAIN_TIMEOUT_S = 30.0      # for the end of an answer that was asked to stop

# Every request the server sends, and so every event answering one, has an id that starts
# with this: a window lending its playground process (serve/lent.py) hands those events on.
# The adapters it loads are named with it too, apart from the window's own.
PREFIX = "serve:"

# The playground's error kinds -> HTTP status and OpenAI error type.
ERROR_STATUS = {"request": (400, "invalid_request_error"), "config": (500, "server_error"),
                "oom": (503, "server_error"), "io": (500, "server_error"),
                "internal": (500, "server_error")}


def _hint(ev: dict) -> str:
    """The hint of a playground error; an internal one carries a traceback, which goes to
    this terminal only, never to a client."""
    if ev.get("kind") != "internal":
        return ev.get("hint", "")
    print(ev.get("hint", ""), file=sys.stderr)
    return "This is a bug in LoRA Studio or a library; the details are in the server's output."


class Gateway:
    def __init__(self, catalog: Catalog, process: PlaygroundProcess | None = None,
                 event_timeout_s: float = EVENT_TIMEOUT_S, load_base: bool = True):
        """``process``: one lent by its owner, who keeps running it (and has loaded the
        base, unless ``load_base``); without it the gateway starts and stops its own."""
        self.catalog = catalog
        self.owns_process = process is None
        self.load_base = load_base
        self.process = process or PlaygroundProcess(idle_s=math.inf)
        self.event_timeout_s = event_timeout_s
        self.lock = threading.Lock()
        self._ids = itertools.count(1)

    def start(self) -> None:
        """Load the base and every adapter; HintedError with the process's own message
        when one of them fails."""
        with self.lock:
            waiting = set()
            if self.load_base:
                waiting.add(PREFIX + "base")
                self.process.send(request("load_base", id=PREFIX + "base", kind="text",
                                          path=str(self.catalog.base),
                                          chat_template=self.catalog.chat_template))
            for model in self.catalog.models:
                if model.path is not None:
                    waiting.add(f"{PREFIX}adapter:{model.id}")
                    self.process.send(request("load_adapter", id=f"{PREFIX}adapter:{model.id}",
                                              name=PREFIX + model.id, path=str(model.path)))
            while waiting:
                ev = self._next(LOAD_TIMEOUT_S, "loading the models")
                if ev["type"] == "exited" and ev.get("reason") != "replaced":
                    raise HintedError("internal", "The model process ended while loading.",
                                      ev.get("hint") or "Run again with a smaller base model.")
                if ev["type"] == "error" and (ev.get("id") in waiting or ev.get("id") is None):
                    raise HintedError(ev.get("kind", "internal"), ev["message"], _hint(ev))
                if ev["type"] in ("base_loaded", "adapter_loaded"):
                    waiting.discard(ev.get("id"))

    def answer(self, model_id: str, fields: dict, on_text: Callable[[str], bool]) -> dict:
        """The playground's ``done`` event for one chat answered by ``model_id``.
        ``on_text`` gets each piece as it streams and returns False to end the answer
        there; an exception from it (the client left) ends it too and is raised again."""
        model = self.catalog.find(model_id)
        if model is None:
            raise ApiError(404, f"The model {model_id!r} does not exist here.",
                           code="model_not_found", param="model")
        with self.lock:
            self._forget_old_events()
            rid = f"{PREFIX}chat-{next(self._ids)}"
            self.process.send(request("generate", id=rid, **fields,
                                      adapters=[] if model.path is None else [PREFIX + model.id]))
            pid = self.process.pid   # the process answering: one that ended before is news
            stopping = False
            while True:
                ev = self._next(self.event_timeout_s, "answering")
                if ev["type"] == "exited":
                    if ev.get("reason") == "replaced" or pid not in (None, ev.get("pid")):
                        continue
                    print(ev.get("hint") or "", file=sys.stderr)   # its last words: here only
                    raise ApiError(503, "The model process ended while answering; it starts "
                                        "again on the next request.", type_="server_error")
                if ev.get("id") not in (rid, None):
                    continue  # what a restarted process says while reloading
                if ev["type"] == "error":
                    status, type_ = ERROR_STATUS.get(ev.get("kind"), (500, "server_error"))
                    raise ApiError(status, f"{ev.get('message')} {_hint(ev)}".strip(),
                                   type_=type_)
                if ev["type"] == "done":
                    return {**ev, "reason": "stop"} if stopping else ev
                if ev["type"] == "token" and not stopping:
                    try:
                        keep_going = on_text(ev["text"])
                    except BaseException:
                        self._stop_and_drain(rid)
                        raise
                    if not keep_going:
                        stopping = True
                        self.process.send(request("stop", target=rid))

    def close(self) -> None:
        if self.owns_process:
            self.process.stop("shutdown")

    # -- events ----------------------------------------------------------------
    def _next(self, timeout_s: float, doing: str) -> dict:
        try:
            return self.process.events.get(timeout=timeout_s)
        except queue.Empty:
            # A hung library call: the process is ended so the next request gets a fresh one.
            self.process.stop("crashed", grace_s=5.0)
            self._stop_and_drain(None)  # its exited event, so the next answer starts clean
            raise ApiError(504, f"The model process said nothing for {timeout_s:.0f} s while "
                                f"{doing}; it was stopped and starts again on the next request.",
                           type_="server_error") from None

    def _forget_old_events(self) -> None:
        """Events no answer waits for: a process that ended between requests (the next
        send starts a fresh one) or the rest of an answer that timed out."""
        while True:
            try:
                self.process.events.get_nowait()
            except queue.Empty:
                return

    def _stop_and_drain(self, rid: str | None) -> None:
        """Until the answer ``rid`` ends, or the process does."""
        # Only this answer: a window lending its process goes on with its own.
        self.process.send(request("stop") if rid is None else request("stop", target=rid))
        while True:
            try:
                ev = self.process.events.get(timeout=DRAIN_TIMEOUT_S)
            except queue.Empty:
                return
            if ev["type"] == "exited" or (ev.get("id") == rid and ev["type"] in ("done", "error")):
                return
