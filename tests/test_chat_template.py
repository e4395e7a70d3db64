"""A preset's chat template is a stranger's code: sandboxed, within a time and a size
budget, in `check` and in the engine. Budgets are shortened for the tests and the
work asked of the templates is far beyond them, so no timing decides a result."""
import signal
from pathlib import Path

import pytest

from lora_studio.config.validate import check
from lora_studio.data import chat_template
from lora_studio.data.chat_template import TemplateProblem, preflight
from lora_studio.data.text_records import TextRecord, Turn
from lora_studio.engine.core.control import EngineError
from lora_studio.engine.text import model as text_model, tokens

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "resources" / "tiny-text-model"

PLAIN = ("{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}<|end|>\n{% endfor %}"
         "{% if add_generation_prompt %}<|assistant|>\n{% endif %}")
# 10^10 loop iterations: hours without a budget.
FOREVER = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
# Fine on check's sample conversation, endless on a record that says "boom".
FOREVER_ON_BOOM = ("{% for m in messages %}{% if m['content'] == 'boom' %}" + FOREVER +
                   "{% endif %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}")


@pytest.fixture(autouse=True)
def short_budget(monkeypatch):
    monkeypatch.setattr(chat_template, "RENDER_SECONDS", 0.3)
    chat_template._preflight.cache_clear()
    yield
    chat_template._preflight.cache_clear()


def _hung(signum, frame):
    raise AssertionError("no budget stopped the template within 30 s")


@pytest.fixture(autouse=True)
def watchdog():
    """Where a budget is broken, the test fails instead of running for hours."""
    if not hasattr(signal, "SIGALRM"):
        yield
        return
    previous = signal.signal(signal.SIGALRM, _hung)
    signal.alarm(30)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def test_a_plain_template_passes_with_its_figures():
    report = preflight(PLAIN)
    assert report.chars == len(PLAIN) and report.rendered > len("What is the capital of France?")


@pytest.mark.parametrize("source,needle", [
    (FOREVER, "ran for more than 0.3 s"),
    ("{{ 'x' * 1000000000 }}", "too large for a template"),  # refused before 1 GB is built
    ("{{ [1, 2] * 900000000 }}", "too large for a template"),
    ("{{ 10 ** 100000000 }}", "too large for a template"),
    ("{% for m in messages %}{{ 'y' * 300000 }}{% endfor %}", "more than the"),  # 1.5 M characters
    ("{{ raise_exception('Only user and assistant roles are supported') }}", "Only user and assistant"),
    ("{% for m in messages %}", "fails on a sample conversation"),
    ("{{ ''.__class__.__mro__ }}", "fails on a sample conversation"),  # the sandbox's own refusal
    ("{% if false %}x{% endif %}", "renders a sample conversation as nothing"),
    ("x" * (chat_template.TEMPLATE_MAX_CHARS + 1), "not a chat template"),
])
def test_templates_that_cannot_be_used_are_refused_with_a_reason(source, needle):
    with pytest.raises(TemplateProblem) as err:
        preflight(source)
    assert needle in err.value.message and err.value.hint


def test_check_reports_a_custom_template_and_refuses_one_that_never_ends():
    _, findings = check({"dataset": {"chat_template": PLAIN}})
    [note] = [f for f in findings if f.path == "dataset.chat_template"]
    assert (note.level, note.rule) == ("info", "preset-custom-template")
    assert f"{len(PLAIN)} characters of Jinja" in note.message and "renders a sample" in note.message
    _, findings = check({"dataset": {"chat_template": FOREVER}})
    [error] = [f for f in findings if f.path == "dataset.chat_template"]
    assert (error.level, error.rule) == ("error", "chat-template-fails")
    assert "ran for more than" in error.message


def _record(*turns):
    return TextRecord(tuple(Turn(r, c) for r, c in turns), Path("chat é.jsonl"), 7, "messages")


def test_the_engine_refuses_a_template_that_check_refuses():
    tokenizer = text_model.load_tokenizer(MODEL)
    with pytest.raises(EngineError) as err:
        tokens.template_in_use(tokenizer, FOREVER)
    assert err.value.kind == "config" and "ran for more than" in err.value.message


def test_the_engine_stops_a_template_that_loops_on_one_record(monkeypatch):
    from lora_studio.config.parse import parse_job
    tokenizer = text_model.load_tokenizer(MODEL)
    job, _ = parse_job({"dataset": {"chat_template": FOREVER_ON_BOOM, "max_seq_length": 64}})
    records = [_record(("user", "hi"), ("assistant", "ho")), _record(("user", "boom"), ("assistant", "x"))]
    with pytest.raises(EngineError) as err:
        tokens.encode_records(records, tokenizer, job)
    assert err.value.kind == "config"
    assert "chat é.jsonl:7" in err.value.message and "dataset.chat_template" in err.value.message


def test_the_models_own_template_is_used_without_the_time_budget():
    tokenizer = text_model.load_tokenizer(MODEL)
    assert tokens.template_in_use(tokenizer, "auto")
    assert not getattr(tokenizer, "lora_studio_custom_template", False)
    item, _ = tokens.encode_record(_record(("user", "hi"), ("assistant", "ho")), tokenizer,
                                   use_template=True, responses_only=True, max_length=64)
    assert item.input_ids
