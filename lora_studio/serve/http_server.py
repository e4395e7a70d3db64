"""The HTTP side of ``lora-studio serve`` on the standard library's threading server:
``GET /v1/models``, ``GET /v1/models/{id}`` and ``POST /v1/chat/completions`` (a JSON
answer, or server-sent events ending ``data: [DONE]``), an optional Bearer key, and
CORS for the origins the user allows (browser front-ends such as LobeChat)."""
from __future__ import annotations

import hmac
import ipaddress
import json
import socket
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

from .gateway import Gateway
from .openai_api import (FINISH, ApiError, StopText, chunk, completion, completion_id,
                         model_entry, model_list, parse_chat, sse, usage)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
MAX_BODY = 16 * 1024 * 1024
CLIENT_GONE = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class OpenAIServer(ThreadingHTTPServer):
    daemon_threads = True   # a client that never reads does not keep the server from exiting

    def __init__(self, gateway: Gateway, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
                 api_key: str | None = None, allow_origins: tuple[str, ...] = ()):
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.gateway = gateway
        self.api_key = api_key or None
        self.allow_origins = allow_origins
        self.created = int(time.time())
        super().__init__((host.strip("[]"), port), Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{f'[{host}]' if ':' in host else host}:{port}/v1"


class Handler(BaseHTTPRequestHandler):
    server: OpenAIServer
    protocol_version = "HTTP/1.1"
    server_version = "lora-studio"

    # -- routing ---------------------------------------------------------------
    def do_OPTIONS(self) -> None:  # a browser's CORS preflight
        self.send_response(204)
        self._cors_headers(preflight=True)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self) -> None:
        self._route("GET")

    def do_POST(self) -> None:
        self._route("POST")

    def _route(self, method: str) -> None:
        path = urlsplit(self.path).path.rstrip("/")
        try:
            self._authorise()
            if path == "/v1/models":
                self._need(method, "GET")
                ids = self.server.gateway.catalog.ids
                self._json(200, model_list(ids, self.server.created))
            elif path.startswith("/v1/models/"):
                self._need(method, "GET")
                model_id = unquote(path[len("/v1/models/"):])
                if self.server.gateway.catalog.find(model_id) is None:
                    raise ApiError(404, f"The model {model_id!r} does not exist here.",
                                   code="model_not_found")
                self._json(200, model_entry(model_id, self.server.created))
            elif path == "/v1/chat/completions":
                self._need(method, "POST")
                self._chat()
            else:
                raise ApiError(404, f"Nothing here at {path or '/'}: this server answers "
                                    "/v1/models and /v1/chat/completions.", code="not_found")
        except ApiError as exc:
            self._json(exc.status, exc.body())
        except CLIENT_GONE:
            self.close_connection = True
        except Exception as exc:  # a bug: the client gets a message, the server goes on
            print(f"lora-studio serve: internal error: {type(exc).__name__}: {exc}",
                  file=sys.stderr)
            self._json(500, ApiError(500, f"Internal error: {type(exc).__name__}: {exc}",
                                     type_="server_error").body())

    def _need(self, method: str, wanted: str) -> None:
        if method != wanted:
            raise ApiError(405, f"Use {wanted} here.", code="method_not_allowed")

    def _authorise(self) -> None:
        key = self.server.api_key
        if key is None:
            return
        given = self.headers.get("Authorization", "")
        scheme, _, token = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(),
                                                                 key.encode()):
            raise ApiError(401, "Missing or wrong API key: send 'Authorization: Bearer KEY' "
                                "with the key lora-studio serve was started with.",
                           code="invalid_api_key")

    # -- chat --------------------------------------------------------------------
    def _body(self) -> bytes:
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            raise ApiError(411, "Send the body with a Content-Length.")
        if int(length) > MAX_BODY:
            raise ApiError(413, f"The body is over {MAX_BODY // (1024 * 1024)} MiB.")
        return self.rfile.read(int(length))

    def _chat(self) -> None:
        req = parse_chat(self._body(), self.server.gateway.catalog.ids)
        cid, stopper = completion_id(), StopText(req.stop)
        if not req.stream:
            pieces: list[str] = []

            def collect(piece: str) -> bool:
                pieces.append(stopper.feed(piece))
                return not stopper.hit
            done = self.server.gateway.answer(req.model, req.generate_fields(), collect)
            pieces.append(stopper.flush())
            self._json(200, completion(cid, req.model, "".join(pieces), done))
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")  # the stream's end is the connection's
        self._cors_headers()
        self.end_headers()
        self.close_connection = True
        self._send(sse(chunk(cid, req.model, {"role": "assistant", "content": ""})))

        def stream(piece: str) -> bool:
            text = stopper.feed(piece)
            if text:
                self._send(sse(chunk(cid, req.model, {"content": text})))
            return not stopper.hit
        try:
            done = self.server.gateway.answer(req.model, req.generate_fields(), stream)
        except ApiError as exc:  # the status line is sent: the error goes in the stream
            self._send(sse(exc.body()) + sse("[DONE]"))
            return
        rest = stopper.flush()
        if rest:
            self._send(sse(chunk(cid, req.model, {"content": rest})))
        self._send(sse(chunk(cid, req.model, {}, FINISH.get(done.get("reason"), "stop"))))
        if req.include_usage:
            self._send(sse({**chunk(cid, req.model, {}, with_choice=False), "usage": usage(done)}))
        self._send(sse("[DONE]"))

    # -- writing -----------------------------------------------------------------
    def _send(self, data: bytes) -> None:
        self.wfile.write(data)
        self.wfile.flush()

    def _json(self, status: int, body: dict) -> None:
        data = json.dumps(body, ensure_ascii=False).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        if status == 401:
            self.send_header("WWW-Authenticate", "Bearer")
        if status >= 400:  # a body left unread would be taken for the next request
            self.send_header("Connection", "close")
            self.close_connection = True
        self._cors_headers()
        self.end_headers()
        self._send(data)

    def _cors_headers(self, preflight: bool = False) -> None:
        origin = self.headers.get("Origin")
        allowed = self.server.allow_origins
        if not origin or not ("*" in allowed or origin in allowed):
            return
        self.send_header("Access-Control-Allow-Origin", origin)
        self.send_header("Vary", "Origin")
        if preflight:
            self.send_header("Access-Control-Allow-Methods", "GET, POST, OPTIONS")
            self.send_header("Access-Control-Allow-Headers",
                             self.headers.get("Access-Control-Request-Headers")
                             or "Authorization, Content-Type")
            self.send_header("Access-Control-Max-Age", "600")

    def log_message(self, format: str, *args) -> None:
        sys.stderr.write(f"{self.address_string()} {format % args}\n")
