"""Logging others read (issue 16, point 6): TensorBoard event files and W&B, off by
default, fed from the engine's own events."""
import sys
import types

import pytest

from lora_studio.engine.run import run
from lora_studio.runs.layout import new_run_dir
from test_engine_text import Recorder, make_job


def _read_events(folder):
    """(tag, step, value) of every scalar in the tensorboardX files, without tensorboard."""
    import struct

    from tensorboardX.proto import event_pb2
    out = []
    for path in folder.glob("events.out.tfevents.*"):
        data = path.read_bytes()
        at = 0
        while at < len(data):
            (length,) = struct.unpack("<Q", data[at:at + 8])
            record = data[at + 12:at + 12 + length]
            at += 12 + length + 4
            ev = event_pb2.Event.FromString(record)
            for value in ev.summary.value:
                if value.HasField("simple_value"):
                    out.append((value.tag, ev.step, value.simple_value))
                elif value.HasField("tensor") and value.tag.startswith("samples"):
                    out.append((value.tag, ev.step, None))
    return out


def test_tensorboard_gets_loss_lr_and_text_samples(tmp_path):
    job = make_job(output={"log_with": "tensorboard", "sample_every_n_steps": 2,
                           "sample_prompts": ["Hi?"], "sample_max_new_tokens": 3},
                   training={"max_steps": 4})
    folder = new_run_dir(tmp_path, "tb")
    events = Recorder()
    run(job, folder.root, events)
    assert events.of("finished")[-1]["status"] == "completed"
    written = _read_events(folder.root / "tensorboard")
    losses = [(step, v) for tag, step, v in written if tag == "train/loss"]
    assert [s for s, _ in losses] == [1, 2, 3, 4]
    assert [round(v, 4) for _, v in losses] == [round(e["loss"], 4) for e in events.of("progress")]
    assert {tag for tag, _, _ in written} >= {"train/loss", "train/lr"}
    assert any(tag.startswith("samples") for tag, _, _ in written)
    assert any("tensorboard --logdir" in e["message"] for e in events.of("log"))


def test_missing_tensorboardx_is_a_config_error_naming_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboardX", None)
    events = Recorder()
    run(make_job(output={"log_with": "tensorboard"}), new_run_dir(tmp_path, "no").root, events)
    [error] = events.of("error")
    assert error["kind"] == "config" and 'lora-studio[logging]' in error["hint"]


class FakeWandb(types.ModuleType):
    def __init__(self, fail=None):
        super().__init__("wandb")
        self.logged, self.fail, self.finished = [], fail, False

    def init(self, **kwargs):
        if self.fail:
            raise RuntimeError(self.fail)
        self.kwargs = kwargs
        return self

    def log(self, values, step):
        self.logged.append((step, values))

    def finish(self):
        self.finished = True


def test_wandb_logs_when_installed_and_warns_when_it_cannot_start(tmp_path, monkeypatch):
    fake = FakeWandb()
    monkeypatch.setitem(sys.modules, "wandb", fake)
    run(make_job(output={"log_with": "wandb"}, training={"max_steps": 2}),
        new_run_dir(tmp_path, "w").root, Recorder())
    assert [step for step, values in fake.logged if "train/loss" in values] == [1, 2]
    assert fake.finished and fake.kwargs["project"] == "lora-studio"
    monkeypatch.setitem(sys.modules, "wandb", FakeWandb(fail="not logged in"))
    events = Recorder()
    run(make_job(output={"log_with": "wandb"}, training={"max_steps": 1}),
        new_run_dir(tmp_path, "w2").root, events)
    assert events.of("finished")[-1]["status"] == "completed"
    assert any("wandb login" in e["message"] for e in events.of("log"))
