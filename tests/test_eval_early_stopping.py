"""Held-out evaluation and early stopping (issue 16, point 4): a seeded held-out share
or a separate file, eval loss every N steps, early stopping on it with patience, and
the best checkpoint marked and exported."""
import json

import pytest
import torch

from lora_studio.engine import text
from lora_studio.engine.core import trainer
from lora_studio.engine.core.checkpoint import BEST, read_best
from lora_studio.engine.core.control import StopRequest
from lora_studio.engine.core.loop import Evaluations, LoopHooks, LoopSpec
from lora_studio.engine.text.train import padded_loss_sum
from lora_studio.runs.layout import new_run_dir
from test_engine_text import DATA, MODEL, Recorder, make_job


def _evaluations(losses, every=2, patience=2, total=100):
    events, marked = [], []
    spec = LoopSpec(total_steps=total, steps_per_epoch=total, eval_every_n_steps=every,
                    early_stopping_patience=patience)
    hooks = LoopHooks(epoch_batches=None, batch_items=None, loss_sum=None, save_checkpoint=None,
                      evaluate=lambda step: 0.0,
                      mark_best=lambda s, l, scores: marked.append(s))
    ev = Evaluations(spec, hooks, events.append, None)
    stops = [ev.record(every * (i + 1), loss) for i, loss in enumerate(losses)]
    return stops, marked, events


def test_patience_counts_evaluations_without_a_better_loss():
    stops, marked, events = _evaluations([3.0, 2.0, 2.5, 2.1])
    assert stops == [False, False, False, True] and marked == [2, 4]
    assert [e["since_best"] for e in events] == [0, 0, 1, 2]
    assert events[-1]["best_step"] == 4 and events[-1]["early_stopping"]
    assert _evaluations([3.0, 2.0, 2.5, 1.0, 1.5], patience=2)[0] == [False] * 5  # improved again
    assert _evaluations([1.0, 2.0, 3.0], patience=0)[0] == [False] * 3  # off


def test_a_resumed_run_remembers_its_best_from_the_step():
    events = []
    spec = LoopSpec(total_steps=100, steps_per_epoch=100, eval_every_n_steps=2,
                    early_stopping_patience=2)
    hooks = LoopHooks(None, None, None, None, evaluate=lambda s: 0.0,
                      mark_best=lambda s, l, scores: None)
    ev = Evaluations(spec, hooks, events.append, best=(4, 1.0))
    assert ev.record(6, 1.5) is False and ev.record(8, 1.2) is True


def test_held_out_share_is_seeded_excluded_from_training_and_evaluated(tmp_path):
    job = make_job(dataset={"eval_split": 0.2}, output={"eval_every_n_steps": 2},
                   training={"max_steps": 4})
    events = Recorder()
    result = trainer.train(job, new_run_dir(tmp_path, "eval"), events, StopRequest(), text.prepare)
    trainee = result.trainee
    assert len(trainee.eval_data) == 7 and len(trainee.data) == 34 - 7
    assert not {tuple(e.input_ids) for e in trainee.eval_data} & {tuple(e.input_ids)
                                                                 for e in trainee.data}
    evals = events.of("eval")
    assert [e["step"] for e in evals] == [2, 4]
    # The eval loss is the mean over the held-out label tokens; the model now holds the
    # best evaluated weights (what final/ exports), so it gives that evaluation's loss.
    trainee.model.eval()
    with torch.no_grad():
        total = sum(float(padded_loss_sum(trainee.model, [e], trainee.tokenizer.pad_token_id,
                                          "cpu")) for e in trainee.eval_data)
    items = sum(trainee.eval_items([i]) for i in range(len(trainee.eval_data)))
    best = events.of("finished")[-1]["best_step"]
    best_eval = next(e for e in evals if e["step"] == best)
    assert best_eval["loss"] == pytest.approx(total / items, rel=1e-4)
    assert best_eval["loss"] == min(e["loss"] for e in evals)
    again = Recorder()
    trainer.train(job, new_run_dir(tmp_path, "eval2"), again, StopRequest(), text.prepare)
    assert [e["loss"] for e in again.of("eval")] == [e["loss"] for e in evals]  # same split


def test_a_separate_eval_file_is_used_whole(tmp_path):
    lines = DATA.read_text(encoding="utf-8").splitlines()
    eval_file = tmp_path / "eval.jsonl"
    eval_file.write_text("\n".join(lines[:5]) + "\n", encoding="utf-8")
    job = make_job(dataset={"eval_path": str(eval_file)}, training={"max_steps": 2})
    events = Recorder()
    result = trainer.train(job, new_run_dir(tmp_path, "file"), events, StopRequest(), text.prepare)
    assert len(result.trainee.eval_data) == 5 and len(result.trainee.data) == 34
    assert [e["step"] for e in events.of("eval")] == [2]  # after the last step only


def test_early_stopping_stops_and_exports_the_best_checkpoint(tmp_path, monkeypatch):
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    from lora_studio.engine.core import loop
    losses = iter([2.0, 1.0, 1.5, 1.7, 9.9, 9.9])
    # The trainer's evaluation is replaced by a script of losses: the best is step 4.
    real_record = loop.Evaluations.record
    monkeypatch.setattr(loop.Evaluations, "record",
                        lambda self, step, loss, metrics=None: real_record(self, step,
                                                                          next(losses), metrics))
    job = make_job(dataset={"eval_split": 0.1}, output={"eval_every_n_steps": 2},
                   training={"max_steps": 20, "early_stopping_patience": 2})
    folder = new_run_dir(tmp_path, "early")
    events = Recorder()
    trainer.train(job, folder, events, StopRequest(), text.prepare)
    finished = events.of("finished")[-1]
    assert (finished["step"], finished["best_step"], finished["early_stopped"]) == (8, 4, True)
    assert [e["step"] for e in events.of("eval")] == [2, 4, 6, 8]
    assert read_best(folder.checkpoints) == (4, 1.0)
    assert json.loads((folder.checkpoints / BEST).read_text())["step"] == 4
    best = load_file(folder.checkpoints / "step-000004" / "trainable.safetensors")
    last = load_file(folder.checkpoints / "step-000008" / "trainable.safetensors")
    final = load_file(folder.final / "adapter_model.safetensors")
    key = next(k for k in best if "lora_B" in k)
    assert torch.equal(final[key], best[key]) and not torch.equal(final[key], last[key])
    PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(MODEL), folder.final)


def test_an_eval_split_that_leaves_nothing_is_a_data_error(tmp_path):
    from lora_studio.engine.run import run
    tiny = tmp_path / "one.jsonl"
    tiny.write_text(json.dumps({"prompt": "a", "response": "b"}) + "\n", encoding="utf-8")
    events = Recorder()
    run(make_job(dataset={"path": str(tiny), "eval_split": 0.5}), new_run_dir(tmp_path, "x").root,
        events)
    [error] = events.of("error")
    assert error["kind"] == "data" and "leaves none to train on" in error["message"]


# --- schedule-free: the best checkpoint holds the weights that were evaluated ------------

def schedule_free_eval_job(**training):
    return make_job(dataset={"eval_split": 0.2}, output={"eval_every_n_steps": 2},
                    optimizer={"optimizer": "AdamWScheduleFree", "learning_rate": 3e-2,
                               "lr_scheduler": "constant", "lr_warmup_steps": 1},
                    training={"max_steps": 6, **training})


@pytest.fixture
def first_evaluation_is_best(monkeypatch):
    """Step 2's evaluation is the best whatever the losses, so the export comes from a
    checkpoint written in the middle of training (a schedule-free optimizer in training
    mode), not from the last step's."""
    from lora_studio.engine.core import loop
    monkeypatch.setattr(loop.Evaluations, "_better", lambda self, value: self.best is None)


def test_schedule_free_best_checkpoint_and_export_are_the_evaluated_weights(
        tmp_path, monkeypatch, first_evaluation_is_best):
    from peft import PeftModel, get_peft_model_state_dict
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    from lora_studio.engine.text.train import TextTrainee
    from lora_studio.runs.adapter_sources import adapter_source
    seen = []   # the adapter weights each eval batch is measured with
    real_eval_loss_sum = TextTrainee.eval_loss_sum

    def eval_loss_sum(self, model, indices):
        seen.append({k: v.detach().clone()
                     for k, v in get_peft_model_state_dict(self.model).items()})
        return real_eval_loss_sum(self, model, indices)

    monkeypatch.setattr(TextTrainee, "eval_loss_sum", eval_loss_sum)
    folder = new_run_dir(tmp_path, "sf")
    events = Recorder()
    result = trainer.train(schedule_free_eval_job(), folder, events, StopRequest(), text.prepare)
    assert events.of("finished")[-1]["best_step"] == 2
    assert json.loads((folder.checkpoints / BEST).read_text())["step"] == 2
    step2 = folder.checkpoints / "step-000002"
    evaluated = load_file(step2 / "evaluated.safetensors")
    training_point = load_file(step2 / "trainable.safetensors")
    assert evaluated.keys() == seen[0].keys()
    assert all(torch.equal(evaluated[k], seen[0][k]) for k in evaluated)   # x at step 2
    assert any(not torch.equal(evaluated[k], training_point[k]) for k in evaluated)   # not y
    assert adapter_source(step2).weights == step2 / "evaluated.safetensors"   # the playground's
    final = load_file(folder.final / "adapter_model.safetensors")
    assert final.keys() == evaluated.keys()
    assert all(torch.equal(final[k], evaluated[k]) for k in final)
    # the exported adapter, loaded back on its own, measures the loss step 2 logged
    trainee = result.trainee
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(MODEL), folder.final)
    model.eval()
    with torch.no_grad():
        total = sum(float(padded_loss_sum(model, [e], trainee.tokenizer.pad_token_id, "cpu"))
                    for e in trainee.eval_data)
    items = sum(trainee.eval_items([i]) for i in range(len(trainee.eval_data)))
    logged = next(e for e in events.of("eval") if e["step"] == 2)["loss"]
    assert total / items == pytest.approx(logged, rel=1e-5)


def test_schedule_free_resume_with_evaluation_is_exact(tmp_path, first_evaluation_is_best):
    from safetensors.torch import load_file

    from exact import assert_same_checkpoint
    job = schedule_free_eval_job()
    straight, stopped = new_run_dir(tmp_path, "straight"), new_run_dir(tmp_path, "stopped")
    first = Recorder()
    trainer.train(job, straight, first, StopRequest(), text.prepare)
    events = Recorder()
    trainer.train(job, stopped, events, StopRequest(lambda: len(events.of("progress")) >= 3),
                  text.prepare)
    assert events.of("finished")[-1]["status"] == "cancelled"
    resumed = Recorder()
    trainer.train(job, stopped, resumed, StopRequest(), text.prepare,
                  resume=stopped.latest_checkpoint())
    assert [e["loss"] for e in resumed.of("eval")] == \
        [e["loss"] for e in first.of("eval") if e["step"] > 3]
    assert_same_checkpoint(straight.checkpoints / "step-000006", stopped.checkpoints / "step-000006")
    a = load_file(straight.final / "adapter_model.safetensors")
    b = load_file(stopped.final / "adapter_model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
