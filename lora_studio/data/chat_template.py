"""A chat template from a preset is data a stranger wrote: it runs in Jinja's sandbox
under a time and a size budget, both in `check` (on a sample conversation) and in the
engine (on every record).

Jinja compiles a template to Python, so a trace function sees every line it runs and
can stop a loop that would never end; one huge string operation ('x' * 10**10) is a
single C call, so `*` and `**` are intercepted in the sandbox and sized first.
"""
from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache

TEMPLATE_MAX_CHARS = 64 * 1024   # the largest templates on the Hub (tool calling) are ~15 KB
RENDER_SECONDS = 2.0             # a real template renders a conversation in about a millisecond
RENDER_MIN_CHARS = 1024 * 1024   # output allowed on top of twice the conversation's own text

# What a template may say, as transformers passes it: a sample of every role.
SAMPLE = [{"role": "system", "content": "You are a helpful assistant."},
          {"role": "user", "content": "What is the capital of France?"},
          {"role": "assistant", "content": "Paris."},
          {"role": "user", "content": "And of Italy?"},
          {"role": "assistant", "content": "Rome."}]
SAMPLE_TOKENS = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "</s>"}


class TemplateProblem(Exception):
    """The template cannot be used: `message` says why, `hint` what to do."""

    def __init__(self, message: str, hint: str):
        super().__init__(message)
        self.message, self.hint = message, hint


BUDGET_HINT = ("Use the model's own template (dataset.chat_template = 'auto') or 'none' for the "
               "plain User:/Assistant: format, or fix the template's loops.")


def is_custom(setting: str) -> bool:
    return setting not in ("auto", "none")


def output_limit(messages: list[dict]) -> int:
    return 2 * sum(len(str(m.get("content", ""))) for m in messages) + RENDER_MIN_CHARS


@contextmanager
def time_budget(seconds: float, what: str = "The chat template"):
    """Raise TemplateProblem from inside the code run within once `seconds` have passed."""
    deadline = time.monotonic() + seconds
    previous = sys.gettrace()

    def trace(frame, event, arg):
        if time.monotonic() > deadline:
            raise TemplateProblem(f"{what} ran for more than {seconds:g} s on one conversation "
                                  "(a loop that does not end, or far too much work).", BUDGET_HINT)
        return trace

    sys.settrace(trace)
    try:
        yield
    finally:
        sys.settrace(previous)


def render_within_budget(render: Callable[[], str], limit: int, seconds: float | None = None,
                         what: str = "The chat template") -> str:
    """`render()` stopped after `seconds` (RENDER_SECONDS by default); its output refused
    past `limit` characters."""
    with time_budget(RENDER_SECONDS if seconds is None else seconds, what):
        text = render()
    if len(text) > limit:
        raise TemplateProblem(f"{what} wrote {len(text):,} characters for one conversation, more "
                              f"than the {limit:,} allowed for it.", BUDGET_HINT)
    return text


def _sandbox(limit: int):
    from jinja2 import ext
    from jinja2.exceptions import SecurityError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class Sandbox(ImmutableSandboxedEnvironment):
        intercepted_binops = frozenset({"*", "**"})

        def call_binop(self, context, operator, left, right):
            if operator == "**" and isinstance(right, (int, float)) and abs(right) > 64:
                raise SecurityError(f"the power {right} is too large for a template")
            if operator == "*":
                for seq, count in ((left, right), (right, left)):
                    if isinstance(seq, (str, list, tuple)) and isinstance(count, int) \
                            and len(seq) * count > limit:
                        raise SecurityError(f"repeating something {len(seq):,} long {count:,} "
                                            "times is too large for a template")
            return super().call_binop(context, operator, left, right)

    def raise_exception(message):
        from jinja2.exceptions import TemplateError
        raise TemplateError(message)

    env = Sandbox(trim_blocks=True, lstrip_blocks=True, extensions=[ext.loopcontrols])
    env.filters["tojson"] = lambda x, indent=None, **kw: json.dumps(x, ensure_ascii=False,
                                                                    indent=indent)
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return env


@dataclass(frozen=True)
class TemplateReport:
    chars: int          # the template's own length
    rendered: int       # characters of the sample conversation, rendered
    seconds: float      # the slower of the two sample renders


def preflight(source: str) -> TemplateReport:
    """Compile `source` in the sandbox and render the sample conversation with and
    without a generation prompt, within the budgets; TemplateProblem when it fails."""
    report, problem = _preflight(source)  # validation runs on every edit: once per template
    if problem:
        raise problem
    return report


@lru_cache(maxsize=16)
def _preflight(source: str) -> tuple[TemplateReport | None, TemplateProblem | None]:
    try:
        return _run_preflight(source), None
    except TemplateProblem as exc:
        return None, exc


def _run_preflight(source: str) -> TemplateReport:
    if len(source) > TEMPLATE_MAX_CHARS:
        raise TemplateProblem(f"The chat template is {len(source):,} characters long; more than "
                              f"{TEMPLATE_MAX_CHARS:,} is not a chat template.", BUDGET_HINT)
    from jinja2.exceptions import TemplateError
    limit = output_limit(SAMPLE)
    try:
        template = _sandbox(limit).from_string(source)
        slowest, rendered = 0.0, 0
        for generation_prompt in (False, True):
            start = time.perf_counter()
            text = render_within_budget(
                lambda: template.render(messages=SAMPLE, add_generation_prompt=generation_prompt,
                                        tools=None, documents=None, **SAMPLE_TOKENS), limit)
            slowest, rendered = max(slowest, time.perf_counter() - start), max(rendered, len(text))
    except TemplateProblem:
        raise
    except TemplateError as exc:
        raise TemplateProblem(f"The chat template fails on a sample conversation: {exc}.",
                              "Fix the template (it is Jinja, as on the Hugging Face Hub), or set "
                              "dataset.chat_template to 'auto' or 'none'.") from None
    except (RecursionError, MemoryError, OverflowError, TypeError, ValueError) as exc:
        raise TemplateProblem(f"The chat template fails on a sample conversation "
                              f"({type(exc).__name__}: {exc}).", BUDGET_HINT) from None
    if not rendered:
        raise TemplateProblem("The chat template renders a sample conversation as nothing.",
                              "A chat template writes out the messages (loop over 'messages'); "
                              "set dataset.chat_template to 'auto' or 'none'.")
    return TemplateReport(len(source), rendered, slowest)
