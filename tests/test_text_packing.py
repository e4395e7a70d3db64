"""Padding-free packing (issue 16, point 3): records share rows without attending to
each other, and the loss, responses-only included, equals the unpacked loss."""
import random

import pytest
import torch

from lora_studio.data.text_records import TextRecord, Turn
from lora_studio.engine import text
from lora_studio.engine.core import trainer
from lora_studio.engine.core.control import StopRequest
from lora_studio.engine.text import model as text_model, tokens
from lora_studio.engine.text.packing import collate_packed, pack, padding_share
from lora_studio.engine.text.train import causal_lm_loss_sum
from lora_studio.runs.layout import new_run_dir
from test_engine_text import MODEL, Recorder, make_job


def test_pack_puts_every_record_once_within_the_row_length():
    rng = random.Random(0)
    lengths = [rng.randint(1, 100) for _ in range(500)]
    rows = pack(lengths, 128)
    assert sorted(i for row in rows for i in row) == list(range(500))
    assert all(sum(lengths[i] for i in row) <= 128 for row in rows)
    assert len(rows) <= sum(lengths) / 128 * 1.1 + 1  # nearly full rows
    assert rows == pack(lengths, 128)


def test_padding_share():
    assert padding_share([[(0,), (1,)]], [4, 2]) == pytest.approx(0.25)
    assert padding_share([[(0, 1)]], [4, 2]) == 0.0


@pytest.fixture(scope="module")
def setup():
    from transformers import AutoModelForCausalLM
    tok = text_model.load_tokenizer(MODEL)
    records = [TextRecord((Turn("user", f"Question {i}?" + " more" * i),
                           Turn("assistant", f"Answer {i}." + " yes" * (3 - i))),
                          None, i + 1, "messages") for i in range(4)]
    items = [tokens.encode_record(r, tok, use_template=True, responses_only=True,
                                  max_length=128)[0] for r in records]
    model = AutoModelForCausalLM.from_pretrained(MODEL).eval()
    return tok, items, model


def _unpacked_loss(model, items, pad_id):
    batch = tokens.collate(items, pad_id)
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return causal_lm_loss_sum(logits, batch["labels"])


def _packed(model, rows, pad_id):
    batch = collate_packed(rows, pad_id)
    logits = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"],
                   use_cache=False).logits
    return logits, batch


def test_the_packed_loss_equals_the_unpacked_loss(setup):
    tok, items, model = setup
    with torch.no_grad():
        expected = _unpacked_loss(model, items, tok.pad_token_id)
        logits, batch = _packed(model, [items[:3], items[3:]], tok.pad_token_id)
        got = causal_lm_loss_sum(logits, batch["labels"])
    assert torch.allclose(got, expected, rtol=1e-5)
    targets = (batch["labels"][:, 1:] != tokens.IGNORE).sum().item()
    assert targets == sum(sum(l != tokens.IGNORE for l in it.labels[1:]) for it in items)


def test_records_in_a_row_do_not_attend_to_each_other(setup):
    tok, items, model = setup
    other = tokens.Encoded([5] * len(items[0].input_ids), items[0].labels)
    with torch.no_grad():
        first, _ = _packed(model, [[items[0], items[1]]], tok.pad_token_id)
        second, _ = _packed(model, [[other, items[1]]], tok.pad_token_id)
    n = len(items[0].input_ids)
    assert torch.allclose(first[0, n:], second[0, n:], atol=1e-5)  # record 2 sees only itself
    assert not torch.allclose(first[0, :n], second[0, :n])


def test_a_packed_run_trains_and_logs_the_padding_share(tmp_path):
    job = make_job(dataset={"packing": True, "max_seq_length": 128},
                   training={"max_steps": 2, "batch_size": 2, "gradient_accumulation_steps": 1})
    events = Recorder()
    result = trainer.train(job, new_run_dir(tmp_path, "packed"), events, StopRequest(), text.prepare)
    log = next(e for e in events.of("log") if "padding_share" in e)
    assert log["packing"] and log["packed_padding_share"] < log["padding_share"]
    trainee = result.trainee
    assert sorted(j for row in trainee.rows for j in row) == list(range(len(trainee.data)))
    assert all(e["loss"] > 0 for e in events.of("progress"))
    assert events.of("finished")[-1]["status"] == "completed"
