"""The Playground's chat, without Qt: a base model, the adapters it may use, and one
column per answerer (the base alone, or one adapter) with its own conversation. Send
puts the same user message in every column and asks each for its answer; the events
of the playground process fill the columns in. Everything here makes requests and
reads events (runs/playground_protocol.py); the view only shows it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..config.jobfile import JobFileError, read_job_toml
from ..runs.adapter_sources import run_adapters
from ..runs.playground_protocol import request

BASE = ""  # the column of the base model alone

# (field, title, default, minimum, maximum, step) of the generation settings.
SETTINGS = (
    ("temperature", "Temperature", 0.7, 0.0, 2.0, 0.05),
    ("top_p", "Top-p", 0.9, 0.05, 1.0, 0.05),
    ("max_new_tokens", "Max new tokens", 256, 1, 8192, 16),
    ("repetition_penalty", "Repetition penalty", 1.1, 1.0, 2.0, 0.05),
    ("seed", "Seed", 0, 0, 2**31 - 1, 1),
)


EXIT_MESSAGES = {
    "crashed": "The playground process ended while answering; Send asks again.",
    "training": "Stopped: a training run needed the GPU.",
    "idle": "Stopped: the playground process was idle.",
    "shutdown": "Stopped.",
}


@dataclass
class Column:
    adapter: str                     # the adapter's name, or BASE
    messages: list[dict] = field(default_factory=list)   # {role, content}, answers included
    pending: str | None = None       # id of the answer being written
    partial: str = ""                # what has streamed in so far
    error: str = ""
    last_reason: str = ""

    @property
    def title(self) -> str:
        return self.adapter or "Base model"


@dataclass
class RunChoice:
    """What "Open run" found: the base the run trained and the adapters it left."""
    base: str
    kind: str
    chat_template: str
    adapters: list[tuple[str, Path]]
    sample_prompts: list[str]
    image_settings: dict = field(default_factory=dict)  # the run's sampling, for images


def read_run(run_dir: str | Path) -> RunChoice:
    """JobFileError naming the file when the folder is not a run LoRA Studio wrote."""
    run_dir = Path(run_dir)
    job, _ = read_job_toml(run_dir / "job.toml")
    family = job.model.family
    kind = "text" if family == "text" else "image" if family in ("sd1", "sd2", "sdxl") else \
        "text" if (run_dir / "final" / "adapter_model.safetensors").exists() else "image"
    adapters = run_adapters(run_dir)
    if not adapters:
        raise JobFileError(f"{run_dir} has no adapter yet (no final/ folder, no complete "
                           "checkpoint).")
    size = job.dataset.resolution
    return RunChoice(job.model.path, kind, job.dataset.chat_template, adapters,
                     list(job.output.sample_prompts),
                     {"steps": job.output.sample_steps, "seed": job.training.seed,
                      "width": size, "height": size})


class ChatSession:
    def __init__(self):
        self.base_path = ""
        self.chat_template = "auto"
        self.adapters: dict[str, str] = {}      # name -> path, as the user added them
        self.loaded: set[str] = set()           # adapters asked for since the base was loaded
        self.columns: list[Column] = [Column(BASE)]
        self.system = ""
        self.settings = {name: default for name, _, default, *_ in SETTINGS}
        self._sent = 0

    # -- what to compare ------------------------------------------------------
    def set_base(self, path: str, chat_template: str = "auto") -> list[dict]:
        self.base_path, self.chat_template = str(path), chat_template
        self.adapters, self.loaded = {}, set()
        self.columns = [Column(BASE)]
        return [request("load_base", id="base", kind="text", path=self.base_path,
                        chat_template=chat_template)]

    def add_adapter(self, name: str, path: str | Path) -> str:
        """The name it is known by (made unique)."""
        unique, n = name, 1
        while unique in self.adapters or unique == BASE:
            n += 1
            unique = f"{name} ({n})"
        self.adapters[unique] = str(path)
        return unique

    def set_compared(self, names: list[str], with_base: bool) -> None:
        """The columns, in order; a column kept keeps its conversation."""
        old = {c.adapter: c for c in self.columns}
        wanted = ([BASE] if with_base else []) + [n for n in names if n in self.adapters]
        self.columns = [old.get(n) or Column(n) for n in wanted]

    # -- a turn ---------------------------------------------------------------
    @property
    def busy(self) -> bool:
        return any(c.pending for c in self.columns)

    def send(self, text: str) -> list[dict]:
        """Requests that ask every column for its answer to ``text``."""
        text = text.strip()
        if not text or self.busy or not self.base_path or not self.columns:
            return []
        out = []
        for column in self.columns:
            if column.adapter and column.adapter not in self.loaded:
                self.loaded.add(column.adapter)
                out.append(request("load_adapter", id=f"load:{column.adapter}",
                                   name=column.adapter, path=self.adapters[column.adapter]))
        system = [{"role": "system", "content": self.system}] if self.system.strip() else []
        for column in self.columns:
            self._sent += 1
            column.messages.append({"role": "user", "content": text})
            column.pending, column.partial, column.error = f"g{self._sent}", "", ""
            s = self.settings
            out.append(request(
                "generate", id=column.pending, messages=system + column.messages,
                adapters=[column.adapter] if column.adapter else [], weights=[1.0] if column.adapter else [],
                temperature=float(s["temperature"]), top_p=float(s["top_p"]),
                max_new_tokens=int(s["max_new_tokens"]),
                repetition_penalty=float(s["repetition_penalty"]), seed=int(s["seed"])))
        return out

    def clear(self) -> None:
        for column in self.columns:
            column.messages, column.partial, column.error, column.pending = [], "", "", None

    # -- events ---------------------------------------------------------------
    def _column(self, rid) -> Column | None:
        return next((c for c in self.columns if c.pending is not None and c.pending == rid), None)

    def on_event(self, ev: dict) -> Column | None:
        """Apply one event; the column it changed, if any."""
        kind, rid = ev["type"], ev.get("id")
        column = self._column(rid)
        if kind == "token" and column is not None:
            column.partial += ev.get("text", "")
            return column
        if kind == "done" and column is not None:
            column.messages.append({"role": "assistant", "content": ev.get("text", "")})
            column.pending, column.partial, column.last_reason = None, "", ev.get("reason", "")
            return column
        if kind == "error":
            if isinstance(rid, str) and rid.startswith("load:"):
                name = rid[len("load:"):]
                self.loaded.discard(name)
                column = next((c for c in self.columns if c.adapter == name), None)
                if column is not None:
                    column.error = ev.get("message", "")
                return column
            if column is not None:
                self._fail(column, ev.get("message", ""))
            return column
        if kind == "exited":
            for c in self.columns:
                if c.pending:
                    self._fail(c, EXIT_MESSAGES.get(ev.get("reason"), EXIT_MESSAGES["crashed"]))
        return None

    @staticmethod
    def _fail(column: Column, message: str) -> None:
        if column.messages and column.messages[-1]["role"] == "user":
            column.messages.pop()  # the question stays askable: it was never answered
        column.pending, column.partial = None, ""
        column.error = column.error or message  # a failed adapter load says more

    def stop(self) -> list[dict]:
        """Each column's answer by its id: answers the process gives others (a server
        the Playground lends it to) go on."""
        return [request("stop", target=c.pending) for c in self.columns if c.pending]

    # -- saved sessions ---------------------------------------------------------
    def to_record(self) -> dict:
        """What a saved chat holds: the answers given, not those being written."""
        return {"kind": "chat", "base": self.base_path, "chat_template": self.chat_template,
                "adapters": dict(self.adapters), "system": self.system,
                "settings": dict(self.settings),
                "columns": [{"adapter": c.adapter, "messages": [dict(m) for m in c.messages]}
                            for c in self.columns]}

    def from_record(self, record: dict) -> list[dict]:
        """Take a saved chat back; the requests that load its base (its adapters load
        on the next Send)."""
        out = self.set_base(str(record.get("base", "")), str(record.get("chat_template", "auto")))
        for name, path in dict(record.get("adapters", {})).items():
            self.adapters[str(name)] = str(path)
        self.system = str(record.get("system", ""))
        self.settings.update({k: v for k, v in dict(record.get("settings", {})).items()
                              if k in self.settings})
        self.columns = [Column(str(c.get("adapter", "")),
                               [{"role": str(m["role"]), "content": str(m["content"])}
                                for m in c.get("messages", [])])
                        for c in record.get("columns", [])
                        if str(c.get("adapter", "")) in self.adapters or not c.get("adapter")]
        return out
