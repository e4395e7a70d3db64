"""OpenAI's chat API in plain data: a request body read into the playground's
``generate`` fields, the answers and stream chunks built from its events, errors in
OpenAI's shape. No sockets, no torch."""
from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field

DEFAULT_MAX_TOKENS = 512
MAX_STOPS = 4
# OpenAI's roles -> the roles training formats; "developer" is OpenAI's newer "system".
ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}
# The playground's reasons -> OpenAI's finish_reason.
FINISH = {"eos": "stop", "stop": "stop", "length": "length", "stopped": "stop"}


class ApiError(Exception):
    """Answered as ``{"error": {"message", "type", "param", "code"}}`` with ``status``."""

    def __init__(self, status: int, message: str, type_: str = "invalid_request_error",
                 code: str | None = None, param: str | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.code, self.param = \
            status, message, type_, code, param

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param,
                          "code": self.code}}


@dataclass
class ChatRequest:
    model: str
    messages: list[dict]          # {role, content} with the roles training knows
    max_tokens: int = DEFAULT_MAX_TOKENS
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    stream: bool = False
    include_usage: bool = False

    def generate_fields(self) -> dict:
        """The playground ``generate`` request's fields (adapters are the caller's)."""
        # top_p 0 keeps only the likeliest token: greedy (transformers refuses 0 itself)
        greedy = self.temperature == 0 or self.top_p == 0
        return {"messages": self.messages, "max_new_tokens": self.max_tokens,
                "temperature": 0.0 if greedy else self.temperature, "top_p": self.top_p,
                "seed": self.seed, "repetition_penalty": 1.0}


def _content(message: dict, i: int) -> str:
    content = message.get("content")
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts, as Open WebUI and LobeChat may send
        texts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text":
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise ApiError(400, f"messages[{i}] has a {kind!r} part; this server's models "
                                    "read text only.", param=f"messages[{i}].content")
            texts.append(str(part.get("text", "")))
        return "".join(texts)
    raise ApiError(400, f"messages[{i}].content must be a string or a list of text parts.",
                   param=f"messages[{i}].content")


def _number(body: dict, name: str, default, low: float, high: float, kind=float):
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or \
            (kind is int and float(value) != int(value)):
        raise ApiError(400, f"{name} must be a{'n integer' if kind is int else ' number'}.",
                       param=name)
    if not low <= value <= high:
        raise ApiError(400, f"{name} must be between {low} and {high}; it is {value}.",
                       param=name)
    return kind(value)


def parse_chat(raw: bytes, known_models: list[str]) -> ChatRequest:
    """ApiError (400 bad body, 404 unknown model) naming the field at fault."""
    try:
        body = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ApiError(400, f"The request body is not JSON: {exc}.") from None
    if not isinstance(body, dict):
        raise ApiError(400, "The request body must be a JSON object.")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise ApiError(400, "Say which model answers: 'model' is missing.", param="model")
    if model not in known_models:
        raise ApiError(404, f"The model {model!r} does not exist here; served: "
                            + ", ".join(known_models) + ".", code="model_not_found",
                       param="model")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, "'messages' must be a non-empty list.", param="messages")
    turns = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise ApiError(400, f"messages[{i}] must be an object.", param=f"messages[{i}]")
        role = message.get("role")
        if role not in ROLES:
            raise ApiError(400, f"messages[{i}] has the role {role!r}; this server takes "
                                "system, developer, user and assistant messages (no tools).",
                           param=f"messages[{i}].role")
        turns.append({"role": ROLES[role], "content": _content(message, i)})
    if turns[-1]["role"] != "user":
        raise ApiError(400, "The last message must be the user's: the model answers it.",
                       param="messages")
    if body.get("n") not in (None, 1):
        raise ApiError(400, "n must be 1: one answer per request.", param="n")
    stop = body.get("stop")
    stops = [stop] if isinstance(stop, str) else stop if stop is not None else []
    if not isinstance(stops, list) or len(stops) > MAX_STOPS or \
            not all(isinstance(s, str) for s in stops):
        raise ApiError(400, f"stop must be a string or a list of up to {MAX_STOPS} strings.",
                       param="stop")
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise ApiError(400, "stream must be true or false.", param="stream")
    options = body.get("stream_options") or {}
    return ChatRequest(
        model=model, messages=turns,
        max_tokens=_number({"max_tokens": max_tokens}, "max_tokens", DEFAULT_MAX_TOKENS, 1,
                           1 << 20, int),
        temperature=_number(body, "temperature", 1.0, 0.0, 2.0),
        top_p=_number(body, "top_p", 1.0, 0.0, 1.0),
        seed=_number(body, "seed", None, -(1 << 63), (1 << 63) - 1, int),
        stop=[s for s in stops if s], stream=stream,
        include_usage=isinstance(options, dict) and options.get("include_usage") is True)


class StopText:
    """Cuts a streamed answer before the first stop string. Text that could be the start
    of one is held back until the next piece shows whether it is."""

    def __init__(self, stops: list[str]):
        self.stops = stops
        self.held = ""
        self.hit = False

    def feed(self, piece: str) -> str:
        """The text that may be sent now; after a hit, ``hit`` is True and nothing more
        is given out."""
        if self.hit:
            return ""
        text = self.held + piece
        cuts = [text.find(s) for s in self.stops if s in text]
        if cuts:
            self.hit, self.held = True, ""
            return text[:min(cuts)]
        keep = max((n for s in self.stops for n in range(len(s) - 1, 0, -1)
                    if text.endswith(s[:n])), default=0)
        self.held = text[len(text) - keep:] if keep else ""
        return text[:len(text) - keep]

    def flush(self) -> str:
        held, self.held = self.held, ""
        return "" if self.hit else held


def completion_id() -> str:
    return "chatcmpl-" + uuid.uuid4().hex[:24]


def usage(done: dict) -> dict:
    prompt, answer = int(done.get("prompt_tokens") or 0), int(done.get("tokens") or 0)
    return {"prompt_tokens": prompt, "completion_tokens": answer,
            "total_tokens": prompt + answer}


def completion(cid: str, model: str, text: str, done: dict) -> dict:
    return {"id": cid, "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "finish_reason": FINISH.get(done.get("reason"), "stop"),
                         "logprobs": None}],
            "usage": usage(done)}


def chunk(cid: str, model: str, delta: dict, finish_reason: str | None = None,
          with_choice: bool = True) -> dict:
    return {"id": cid, "object": "chat.completion.chunk", "created": int(time.time()),
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason,
                         "logprobs": None}] if with_choice else []}


def sse(obj: dict | str) -> bytes:
    """One server-sent event: ``data: {...}`` and a blank line."""
    text = obj if isinstance(obj, str) else json.dumps(obj, ensure_ascii=False)
    return f"data: {text}\n\n".encode("utf-8")


def model_list(ids: list[str], created: int) -> dict:
    return {"object": "list", "data": [model_entry(i, created) for i in ids]}


def model_entry(model_id: str, created: int) -> dict:
    return {"id": model_id, "object": "model", "created": created, "owned_by": "lora-studio"}
