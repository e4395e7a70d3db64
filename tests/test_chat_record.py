"""A record as the chat training sees, with the turns the loss is on; the rule is the
engine's own (tokens.encode_record learns from exactly the turns marked)."""
from pathlib import Path

import pytest

from lora_studio.data.chat_record import chat_record
from lora_studio.data.text_records import TextRecord, Turn

ROOT = Path(__file__).resolve().parents[1]
PIRATE = {"messages": [{"role": "system", "content": "Be a pirate."},
                       {"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Arr."},
                       {"role": "user", "content": "Again?"},
                       {"role": "assistant", "content": "Arr arr."}]}


def test_bubbles_per_turn_with_the_loss_on_the_responses():
    chat = chat_record(PIRATE, "messages", responses_only=True)
    assert [(b.title, b.text, b.loss) for b in chat.bubbles] == [
        ("System prompt", "Be a pirate.", False), ("User", "Hi?", False), ("Assistant", "Arr.", True),
        ("User", "Again?", False), ("Assistant", "Arr arr.", True)]
    assert "2 assistant turns (of 5)" in chat.note


def test_every_turn_carries_loss_when_responses_only_is_off():
    chat = chat_record(PIRATE, "messages", responses_only=False)
    assert all(b.loss for b in chat.bubbles) and "every turn" in chat.note


def test_alpaca_is_one_user_turn_as_in_training_and_plain_text_is_all_loss():
    chat = chat_record({"instruction": "Translate", "input": "Hello", "output": "Ahoy",
                        "system": "Pirate"}, None, True)
    assert [(b.role, b.text) for b in chat.bubbles] == [
        ("system", "Pirate"), ("user", "Translate\n\nHello"), ("assistant", "Ahoy")]
    text = chat_record({"text": "Yo ho"}, "text", responses_only=True)
    assert [(b.title, b.loss) for b in text.bubbles] == [("Text", True)]
    assert text.note.startswith("Plain text")


def test_a_record_training_skips_says_why_and_shows_no_bubbles():
    chat = chat_record({"messages": [{"role": "user", "content": "Hi"}]}, "messages", True)
    assert chat.bubbles == () and "no assistant turn" in chat.note
    assert chat_record({"id": 3}, None, True).note.startswith("Training skips this record")


@pytest.mark.parametrize("use_template", [True, False])
@pytest.mark.parametrize("responses_only", [True, False])
def test_the_engine_learns_from_exactly_the_turns_marked(use_template, responses_only):
    from lora_studio.engine.text import model, tokens
    tokenizer = model.load_tokenizer(ROOT / "resources" / "tiny-text-model")
    chat = chat_record(PIRATE, "messages", responses_only)
    record = TextRecord(tuple(Turn(b.role, b.text) for b in chat.bubbles), Path("x.jsonl"), 1,
                        "messages")
    item, _ = tokens.encode_record(record, tokenizer, use_template=use_template,
                                   responses_only=responses_only, max_length=512)
    trained = tokenizer.decode([t for t, label in zip(item.input_ids, item.labels)
                                if label != tokens.IGNORE])
    # Longest first, each taken out once found: a short turn's text inside a longer
    # one is not counted for it.
    for bubble in sorted(chat.bubbles, key=lambda b: -len(b.text)):
        assert (bubble.text in trained) is bubble.loss, bubble
        trained = trained.replace(bubble.text, "", 1)
