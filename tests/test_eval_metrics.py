"""Generation metrics on held-out records (issue 20): BLEU, ROUGE-L and exact match
against hand-computed values, early stopping on ROUGE-L, and the eval event."""
import math
from pathlib import Path

import pytest
import torch

from lora_studio.engine import text
from lora_studio.engine.core import trainer
from lora_studio.engine.core.checkpoint import read_best
from lora_studio.engine.core.control import EngineError, StopRequest
from lora_studio.engine.core.loop import Evaluations, LoopHooks, LoopSpec
from lora_studio.engine.text.metrics import score
from lora_studio.runs.layout import new_run_dir
from test_engine_text import MODEL, Recorder, make_job

pytest.importorskip("sacrebleu")
pytest.importorskip("rouge_score")


def test_scores_equal_a_hand_computation():
    preds = ["the cat sat on the mat", "hello world"]
    refs = ["the cat sat on a mat", "hello   world "]
    # BLEU over the corpus, clipped n-gram matches / n-grams of the predictions:
    #   1-grams: the(clipped to 1) cat sat on mat + hello world      = 7 / 8
    #   2-grams: "the cat" "cat sat" "sat on" + "hello world"         = 4 / 6
    #   3-grams: "the cat sat" "cat sat on"                            = 2 / 4
    #   4-grams: "the cat sat on"                                      = 1 / 3
    # lengths 8 and 8: no brevity penalty; BLEU = 100 * (geometric mean).
    bleu = 100 * (7 / 8 * 4 / 6 * 2 / 4 * 1 / 3) ** 0.25
    # ROUGE-L: LCS "the cat sat on mat" = 5 of 6 words both ways, F = 5/6; then 1.
    rouge = (5 / 6 + 1.0) / 2
    got = score(preds, refs)
    assert got["bleu"] == pytest.approx(bleu, abs=1e-9)
    assert got["rougeL"] == pytest.approx(rouge, abs=1e-12)
    assert got["exact_match"] == 0.5  # whitespace is not a difference


def test_rouge_counts_words_outside_ascii():
    assert score(["καλη μέρα"], ["καλη νύχτα"])["rougeL"] == pytest.approx(0.5)
    assert math.isclose(score(["x"], ["y"])["rougeL"], 0.0)


# ---------------------------------------------------------------- the held-out prompts

def _tokenizer():
    from lora_studio.engine.text.model import load_tokenizer
    return load_tokenizer(str(MODEL))


@pytest.mark.parametrize("template", ["auto", "none"])
def test_the_prompt_is_formatted_as_training_formats_it(template):
    from lora_studio.data.text_records import TextRecord, Turn
    from lora_studio.engine.text.eval_generation import held_out_prompts
    from lora_studio.engine.text.tokens import chat_prompt_ids, encode_record, template_in_use
    tokenizer = _tokenizer()
    use = template_in_use(tokenizer, template)
    turns = (Turn("user", "What colour is a plum?"), Turn("assistant", "Purple, matey."),
             Turn("user", "And a lime?"), Turn("assistant", "Ahoy! A lime be green."))
    record = TextRecord(turns, Path("x.jsonl"), 1, "messages")
    item, _ = encode_record(record, tokenizer, use_template=use, responses_only=True,
                            max_length=512)
    plain = TextRecord((Turn("text", "just text"),), Path("x.jsonl"), 2, "text")
    text_item, _ = encode_record(plain, tokenizer, use_template=use, responses_only=True,
                                 max_length=512)
    [prompt] = held_out_prompts([text_item, item, item], tokenizer, 1)  # plain text: no prompt
    assert prompt.prompt_ids == chat_prompt_ids(tokenizer, list(turns[:3]), use)
    assert prompt.reference == "Ahoy! A lime be green."


# ---------------------------------------------------------------- early stopping on ROUGE-L

def test_a_higher_rouge_is_better():
    events, marked = [], []
    spec = LoopSpec(total_steps=100, steps_per_epoch=100, eval_every_n_steps=2,
                    early_stopping_patience=2, early_stopping_metric="rougeL")
    hooks = LoopHooks(None, None, None, None, evaluate=lambda s: {},
                      mark_best=lambda s, v, scores: marked.append((s, v)))
    ev = Evaluations(spec, hooks, events.append, None)
    # the loss falls all along; ROUGE-L is best at step 4, so that is the best
    stops = [ev.record(2 * (i + 1), loss, {"rougeL": r, "bleu": 1.0, "exact_match": 0.0})
             for i, (loss, r) in enumerate([(3.0, 0.2), (2.0, 0.5), (1.5, 0.4), (1.0, 0.45)])]
    assert stops == [False, False, False, True] and marked == [(2, 0.2), (4, 0.5)]
    assert events[-1]["best_step"] == 4 and events[-1]["best_value"] == 0.5
    assert events[-1]["best_loss"] == 2.0 and events[-1]["rougeL"] == 0.45
    assert events[-1]["metric"] == "rougeL"


def test_early_stopping_on_rouge_stops_a_run(tmp_path, monkeypatch):
    from lora_studio.engine.text import eval_generation
    rouge = iter([0.1, 0.3, 0.2, 0.25, 0.9, 0.9])
    real = eval_generation.score
    # The scorer is replaced by a script of ROUGE-L values (the tiny model's answers are
    # noise): the best is step 4, and two evaluations without a better one stop the run.
    monkeypatch.setattr(eval_generation, "score",
                        lambda preds, refs: {**real(preds, refs), "rougeL": next(rouge)})
    job = make_job(dataset={"eval_split": 0.1}, output={"eval_every_n_steps": 2,
                                                         "eval_generate_records": 2},
                   training={"max_steps": 20, "early_stopping_patience": 2,
                             "early_stopping_metric": "rougeL"})
    folder = new_run_dir(tmp_path, "rouge")
    events = Recorder()
    trainer.train(job, folder, events, StopRequest(), text.prepare)
    finished = events.of("finished")[-1]
    assert (finished["step"], finished["best_step"], finished["early_stopped"]) == (8, 4, True)
    assert finished["best_metric"] == "rougeL" and finished["best_rougeL"] == 0.3
    assert [e["rougeL"] for e in events.of("eval")] == [0.1, 0.3, 0.2, 0.25]
    assert read_best(folder.checkpoints, metric="rougeL") == (4, 0.3)
    assert read_best(folder.checkpoints) is None  # judged by another metric


def test_the_eval_event_carries_the_scores_of_the_answers(tmp_path):
    from lora_studio.engine.text.eval_generation import generate_answers
    job = make_job(dataset={"eval_split": 0.2}, output={"eval_generate_records": 3},
                   training={"max_steps": 2})
    events = Recorder()
    result = trainer.train(job, new_run_dir(tmp_path, "scores"), events, StopRequest(),
                           text.prepare)
    trainee = result.trainee
    [ev] = events.of("eval")
    assert len(trainee.eval_prompts) == 3
    answers = generate_answers(trainee.model, trainee.tokenizer, trainee.eval_prompts, "cpu")
    expected = score(answers, [p.reference for p in trainee.eval_prompts])
    for name in ("bleu", "rougeL", "exact_match"):
        assert ev[name] == pytest.approx(expected[name], abs=1e-6)
    finished = events.of("finished")[-1]
    assert finished["best_eval_loss"] == ev["loss"] and finished["best_bleu"] == ev["bleu"]


def test_without_loss_on_responses_only_the_metrics_are_off_with_a_warning(tmp_path):
    job = make_job(dataset={"eval_split": 0.2, "train_on_responses_only": False},
                   training={"max_steps": 1})
    events = Recorder()
    trainer.train(job, new_run_dir(tmp_path, "off"), events, StopRequest(), text.prepare)
    [ev] = events.of("eval")
    assert "rougeL" not in ev and "loss" in ev
    assert any("train_on_responses_only" in e["message"] for e in events.of("log")
               if e.get("level") == "warning")
    job = make_job(dataset={"eval_split": 0.2, "train_on_responses_only": False},
                   training={"max_steps": 1, "early_stopping_metric": "bleu"})
    with pytest.raises(EngineError, match="early_stopping_metric is 'bleu'"):
        trainer.train(job, new_run_dir(tmp_path, "off2"), Recorder(), StopRequest(), text.prepare)


def test_the_log_line_names_the_metrics_and_the_best_by_the_metric():
    from lora_studio.runs.run_progress import eval_line
    line = eval_line({"step": 8, "loss": 3.0, "rougeL": 0.25, "bleu": 12.345, "exact_match": 0.0,
                      "metric": "rougeL", "best_step": 4, "best_value": 0.3, "best_loss": 2.0,
                      "since_best": 2, "early_stopping": True})
    assert line == ("Eval loss 3.0000, ROUGE-L 0.25, BLEU 12.35, exact match 0 at step 8 "
                    "(best ROUGE-L 0.3000 at step 4): no better ROUGE-L in 2 evaluation(s), "
                    "stopping early.")


def test_batched_answers_equal_one_prompt_at_a_time(monkeypatch):
    from transformers import AutoModelForCausalLM

    from lora_studio.engine.text import eval_generation
    from lora_studio.engine.text.eval_generation import HeldOutPrompt, generate_answers
    from lora_studio.engine.text.tokens import prompt_ids
    tokenizer = _tokenizer()
    model = AutoModelForCausalLM.from_pretrained(MODEL)
    torch.manual_seed(1)
    with torch.no_grad():   # the shipped weights answer with EOS at once; these do not
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    prompts = [HeldOutPrompt(prompt_ids(tokenizer, q, True), "-", n) for q, n in
               [("What colour is a banana?", 12), ("Hi", 5),
                ("Tell me a long story about the sea and ships", 20), ("Why?", 9)]]
    batched = generate_answers(model, tokenizer, prompts, "cpu")
    monkeypatch.setattr(eval_generation, "GENERATE_BATCH", 1)
    assert batched == generate_answers(model, tokenizer, prompts, "cpu")
    assert all(batched) and len(set(batched)) == 4


def test_a_resumed_run_reports_the_scores_of_its_earlier_best(tmp_path, monkeypatch):
    from lora_studio.engine.core import loop
    losses = iter([2.0, 1.0, 1.5, 1.7])   # best at step 4, before the resume
    real_record = loop.Evaluations.record
    monkeypatch.setattr(loop.Evaluations, "record", lambda self, step, loss, metrics=None:
                        real_record(self, step, next(losses), metrics))
    job = make_job(dataset={"eval_split": 0.1}, output={"eval_every_n_steps": 2,
                                                         "save_every_n_steps": 2},
                   training={"max_steps": 8})
    folder = new_run_dir(tmp_path, "resumed")
    first = Recorder()
    trainer.train(job, folder, first, StopRequest(lambda: len(first.of("progress")) >= 4),
                  text.prepare)
    assert first.of("finished")[-1]["status"] == "cancelled"
    best_rouge = first.of("eval")[1]["rougeL"]
    again = Recorder()
    trainer.train(job, folder, again, StopRequest(), text.prepare,
                  resume=folder.checkpoints / "step-000004")
    assert [e["step"] for e in again.of("eval")] == [6, 8]
    finished = again.of("finished")[-1]
    assert (finished["best_step"], finished["best_eval_loss"]) == (4, 1.0)
    assert finished["best_rougeL"] == best_rouge
    assert again.of("eval")[-1]["best_loss"] == 1.0
