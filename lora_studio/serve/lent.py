"""Serving from the window: the Playground's own process (its base already loaded) is
lent to the server, so chat front-ends reach the models the window has open without a
second copy of the base. The window still reads every event of its process and hands the
server's on (``offer``); the server runs in threads of its own. No Qt, no torch."""
from __future__ import annotations

import queue
import threading

from ..errors import HintedError
from ..runs.playground_launch import PlaygroundProcess
from .catalog import Catalog
from .gateway import PREFIX, Gateway
from .http_server import OpenAIServer


class LentProcess:
    """What the gateway needs of a process, over one its owner keeps: requests go to
    it, and the events the owner offers that answer the server come out of ``events``."""

    def __init__(self, process: PlaygroundProcess):
        self.process = process
        self.events: queue.SimpleQueue = queue.SimpleQueue()

    @property
    def pid(self) -> int | None:
        return self.process.pid

    def send(self, req: dict) -> None:
        self.process.send(req)

    def stop(self, reason: str = "shutdown", grace_s: float = 5.0) -> None:
        self.process.stop(reason, grace_s)   # it hung: the owner's next request restarts it

    def offer(self, ev: dict) -> bool:
        """Take the events meant for the server; True when the owner should skip it
        (the end of the process concerns both)."""
        if ev["type"] == "exited":
            self.events.put(ev)
            return False
        if str(ev.get("id") or "").startswith(PREFIX):
            self.events.put(ev)
            return True
        return False


class WindowServer:
    """``lora-studio serve`` on the window's process: listening from the constructor on
    (OSError when the port is taken), the adapters loaded in a thread, then served until
    ``close``. ``messages`` receives ("serving", url) or ("failed", message)."""

    def __init__(self, catalog: Catalog, process: PlaygroundProcess, host: str, port: int,
                 api_key: str | None = None, allow_origins: tuple[str, ...] = ()):
        self.lent = LentProcess(process)
        self.gateway = Gateway(catalog, self.lent, load_base=False)
        self.server = OpenAIServer(self.gateway, host, port, api_key, allow_origins)
        self.messages: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._closed = False
        self._serving = False
        self._thread = threading.Thread(target=self._run, daemon=True, name="serve")
        self._thread.start()

    @property
    def url(self) -> str:
        return self.server.url

    def offer(self, ev: dict) -> bool:
        return self.lent.offer(ev)

    def _run(self) -> None:
        try:
            self.gateway.start()
        except HintedError as exc:
            self.messages.put(("failed", f"{exc.message} {exc.hint}".strip()))
            self.close()
            return
        except Exception as exc:  # the gateway's ApiError on a timeout, a bug
            self.messages.put(("failed", f"{type(exc).__name__}: {exc}"))
            self.close()
            return
        with self._lock:
            if self._closed:
                return
            self._serving = True
        self.messages.put(("serving", self.url))
        self.server.serve_forever(poll_interval=0.2)

    def close(self) -> None:
        """Stop listening (answers being written finish); the process stays its owner's."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            serving = self._serving
        if serving:
            self.server.shutdown()
        self.server.server_close()
