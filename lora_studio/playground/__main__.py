"""``python -m lora_studio.playground``: requests in on stdin, events out on stdout
(runs/playground_protocol.py), until ``shutdown`` or the end of stdin (the window is
gone). Requests are answered in order; ``stop`` is acted on when it arrives, so it ends
a generation in progress."""
from __future__ import annotations

import os
import queue
import sys
import threading

from ..runs.events import stdout_events
from ..runs.playground_protocol import decode_request, reply


def main() -> int:
    emit = stdout_events()
    emit(reply("ready", pid=os.getpid()))
    from .server import Server
    server = Server(emit)
    requests: queue.SimpleQueue = queue.SimpleQueue()

    def read() -> None:
        seq = 0
        for line in sys.stdin:
            if not line.strip():
                continue
            req = decode_request(line)
            if req is None:
                emit(reply("error", kind="request", message=f"Not a request: {line.strip()[:200]}",
                           hint="Send one JSON object per line with a known 'type'."))
                continue
            seq += 1
            if req["type"] in ("stop", "shutdown"):
                server.stop(seq, req.get("target") if req["type"] == "stop" else None)
            if req["type"] != "stop":
                requests.put((seq, req))
            if req["type"] == "shutdown":
                return
        server.stop(seq + 1)
        requests.put((seq + 1, {"type": "shutdown"}))

    threading.Thread(target=read, daemon=True, name="requests").start()
    while True:
        seq, req = requests.get()
        if req["type"] == "shutdown":
            return 0
        server.handle(seq, req)


if __name__ == "__main__":
    sys.exit(main())
