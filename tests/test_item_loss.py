"""Per-item losses: a tiny image run and a tiny text run write item_loss.json, whose
losses are the step losses of the steps that trained each item (batch size 1), and a
resumed run writes what an uninterrupted one does."""
import json
import shutil
from pathlib import Path

import pytest

from lora_studio.engine import image, text
from lora_studio.engine.core import trainer
from lora_studio.engine.core.control import StopRequest
from lora_studio.engine.image.data import epoch_batches
from lora_studio.runs.item_loss import (ITEM_LOSS_FILE, ItemLossError, read_item_losses,
                                        runs_with_item_losses)
from lora_studio.runs.layout import RunDir
from test_engine_text import make_job as text_job
from test_sd_engine import DEMO_IMAGES, TINY_SD, make_job as image_job

TEXT_DATA = Path(__file__).resolve().parents[1] / "resources" / "demo-text" / "chat.jsonl"


def progress(events):
    return [e for e in events if e["type"] == "progress"]


@pytest.fixture(scope="module")
def image_data(tmp_path_factory):
    """Three images in a kohya folder with spaces and a non-ASCII name."""
    root = tmp_path_factory.mktemp("data") / "my shapes ü"
    folder = root / "1_shapes"
    folder.mkdir(parents=True)
    for path in sorted((DEMO_IMAGES / "4_demo").iterdir())[:6]:
        shutil.copy(path, folder / path.name)
    return root


def image_run(root, run, min_snr=0.0, **extra):
    job = image_job(TINY_SD, dataset={"path": str(root), "enable_bucket": False},
                    training={"max_steps": 0, "epochs": 2, "batch_size": 1,
                              "min_snr_gamma": min_snr, **extra.pop("training", {})}, **extra)
    events = []
    result = trainer.train(job, run, events.append, StopRequest(), image.prepare)
    return job, events, result


def test_image_item_loss_is_the_mean_of_its_steps_min_snr_weighted(image_data, tmp_path):
    run = RunDir(tmp_path / "run").ensure()
    job, events, result = image_run(image_data, run, min_snr=5.0)
    images = result.trainee.image_set.images
    steps = iter(progress(events))
    expected: dict[str, list[float]] = {}
    for epoch in range(2):
        for batch in epoch_batches(images, 1, job.training.seed, epoch):
            name = "1_shapes/" + images[batch.indices[0]].path.name
            expected.setdefault(name, []).append(next(steps)["loss"])
    losses = read_item_losses(run.root)
    assert losses.kind == "image" and losses.step == 6
    assert losses.root == image_data.resolve()
    assert set(losses.items) == set(expected) and len(expected) == 3
    for name, seen in expected.items():
        assert losses.items[name].seen == 2
        assert losses.items[name].loss == pytest.approx(sum(seen) / 2, rel=1e-5)
    assert losses.for_path(images[0].path) == losses.items["1_shapes/" + images[0].path.name]
    (run.root / "job.toml").write_text("", encoding="utf-8")  # what makes it a listed run
    assert [r.root for r in runs_with_item_losses(tmp_path, image_data)] == [run.root]
    assert runs_with_item_losses(tmp_path, tmp_path) == []


def test_a_resumed_image_run_keeps_the_item_losses_of_its_checkpoint(image_data, tmp_path):
    whole = RunDir(tmp_path / "whole").ensure()
    image_run(image_data, whole, output={"save_every_n_steps": 2})
    mid = json.loads((whole.checkpoints / "step-000002" / "state.json").read_text())
    assert sum(mid["item_loss"]["seen"]) == 2
    resumed = RunDir(tmp_path / "resumed").ensure()
    job = image_job(TINY_SD, dataset={"path": str(image_data), "enable_bucket": False},
                    training={"max_steps": 0, "epochs": 2, "batch_size": 1})
    trainer.train(job, resumed, [].append, StopRequest(), image.prepare,
                  resume=whole.checkpoints / "step-000002")
    a, b = read_item_losses(whole.root), read_item_losses(resumed.root)
    assert a.items.keys() == b.items.keys()
    for key in a.items:
        assert b.items[key].seen == a.items[key].seen == 2
        assert b.items[key].loss == pytest.approx(a.items[key].loss, rel=1e-5)


def record_lines(path):
    return [n for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
            if line.strip()]


def test_text_record_loss_is_the_mean_of_its_steps_by_file_and_line(tmp_path):
    run = RunDir(tmp_path / "run").ensure()
    job = text_job(training={"max_steps": 8, "batch_size": 1, "gradient_accumulation_steps": 1})
    events = []
    result = trainer.train(job, run, events.append, StopRequest(), text.prepare)
    trainee = result.trainee
    lines = record_lines(TEXT_DATA)
    assert len(lines) == len(trainee.data)  # every demo record is trained
    expected: dict[str, list[float]] = {}
    for step, indices in zip(progress(events), trainee.epoch_batches(0)):
        expected.setdefault(f"chat.jsonl:{lines[indices[0]]}", []).append(step["loss"])
    losses = read_item_losses(run.root)
    assert losses.kind == "text" and losses.step == 8
    assert set(losses.items) == set(expected)
    for key, seen in expected.items():
        assert losses.items[key].seen == len(seen)
        assert losses.items[key].loss == pytest.approx(sum(seen) / len(seen), rel=1e-5)
    first = trainee.epoch_batches(0)[0][0]
    assert losses.for_record(TEXT_DATA, lines[first]).loss == pytest.approx(
        progress(events)[0]["loss"], rel=1e-5)


def test_packed_records_each_get_their_own_loss(tmp_path):
    """A packed row of several records: the step loss is the token-weighted mean of
    their own losses, and each record of the row was seen once."""
    from lora_studio.engine.text.train import label_count
    run = RunDir(tmp_path / "run").ensure()
    job = text_job(dataset={"packing": True, "max_seq_length": 64},
                   training={"max_steps": 1, "batch_size": 1, "gradient_accumulation_steps": 1})
    events = []
    trainee = trainer.train(job, run, events.append, StopRequest(), text.prepare).trainee
    row = trainee.rows[trainee.epoch_batches(0)[0][0]]
    assert len(row) > 1
    lines = record_lines(TEXT_DATA)
    losses = read_item_losses(run.root)
    assert len(losses.items) == len(row)
    counts = [label_count(trainee.data[j]) for j in row]
    means = [losses.items[f"chat.jsonl:{lines[j]}"].loss for j in row]
    assert sum(m * c for m, c in zip(means, counts)) / sum(counts) == pytest.approx(
        progress(events)[0]["loss"], rel=1e-5)
    assert len(set(means)) == len(means)  # not one number spread over the row


def test_a_damaged_item_loss_file_is_named(tmp_path):
    (tmp_path / ITEM_LOSS_FILE).write_text("{not json", encoding="utf-8")
    with pytest.raises(ItemLossError) as info:
        read_item_losses(tmp_path)
    assert ITEM_LOSS_FILE in info.value.message
    assert read_item_losses(tmp_path / "nothing") is None
