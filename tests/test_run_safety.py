"""Runs never lose their last good state: run folders are never shared, a resumed or
re-saved checkpoint stays whole until its successor is, a torn events line is
repaired, a damaged checkpoint is named and resume falls back past it."""
import os
import threading
from pathlib import Path

import pytest
import torch

from lora_studio.engine.core import checkpoint as ckpt
from lora_studio.engine.core.control import EngineError
from lora_studio.runs.events import EventWriter, event, read_events
from lora_studio.runs.layout import RunDir, new_run_dir
from exact import assert_same_checkpoint
from toy_family import run_toy, toy_job


def test_runs_started_in_the_same_second_get_folders_of_their_own(tmp_path, monkeypatch):
    # another process creating the folder between a look and a mkdir: every look says free
    monkeypatch.setattr(Path, "exists", lambda self: False)
    roots = [new_run_dir(tmp_path, "same", now=0).root for _ in range(3)]
    assert len(set(roots)) == 3 and all(r.is_dir() for r in roots)


def test_many_threads_starting_runs_at_once_never_share_a_folder(tmp_path):
    barrier, roots = threading.Barrier(12), []

    def start():
        barrier.wait()
        roots.append(new_run_dir(tmp_path / "runs", "same", now=0).root)

    threads = [threading.Thread(target=start) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(roots)) == 12


def _files(folder: Path) -> dict[str, tuple[int, int]]:
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in folder.iterdir()}


def test_resuming_a_finished_run_keeps_its_last_checkpoint_untouched(tmp_path):
    job = toy_job(training={"max_steps": 4})
    run_toy(tmp_path, job, "done")
    run = RunDir(tmp_path / "done")
    last = run.latest_checkpoint()
    before = _files(last)
    result, events, _ = run_toy(tmp_path, job, "done", resume=last)
    assert events[-1]["type"] == "finished" and events[-1]["status"] == "completed"
    assert not [e for e in events if e["type"] == "checkpoint"]  # nothing trained, nothing saved
    assert _files(last) == before


def test_a_checkpoint_rewritten_at_the_same_step_stays_whole_if_the_rewrite_fails(tmp_path,
                                                                                   monkeypatch):
    job = toy_job(training={"max_steps": 2})
    run_toy(tmp_path, job, "run")
    run = RunDir(tmp_path / "run")
    kept = tmp_path / "copy"
    import shutil
    shutil.copytree(run.latest_checkpoint(), kept)
    real = ckpt.atomic_write_bytes

    def fail_on_rng(path, data):
        if Path(path).name == "rng.pt":
            raise OSError(28, "No space left on device")
        return real(path, data)

    monkeypatch.setattr(ckpt, "atomic_write_bytes", fail_on_rng)
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    with pytest.raises(OSError):
        ckpt.save_checkpoint(run.checkpoints, 2, trainable={"x": torch.ones(1)},
                             optimizer=optimizer, scheduler=scheduler, state={})
    assert_same_checkpoint(run.latest_checkpoint(), kept)
    assert sorted(p.name for p in run.checkpoints.iterdir()) == ["step-000002"]  # no temp left


def test_a_torn_last_events_line_is_cut_before_appending(tmp_path):
    path = tmp_path / "events.jsonl"
    with EventWriter(path) as emit:
        emit(event("log", message="first"))
    with open(path, "ab") as fh:
        fh.write(b'{"type": "progress", "step": 1, "lo')  # killed mid-line
    with EventWriter(path) as emit:
        emit(event("log", message="after the crash"))
    assert [e["message"] for e in read_events(path)] == ["first", "after the crash"]
    assert path.read_bytes().count(b"\n") == 2 and path.read_bytes().endswith(b"\n")


def test_a_file_that_is_one_torn_line_is_emptied(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_bytes(b'{"type": "lo' + b"x" * 100_000)  # longer than one read block
    with EventWriter(path) as emit:
        emit(event("log", message="fresh"))
    assert [e["message"] for e in read_events(path)] == ["fresh"]


def _damage(file: Path) -> None:
    data = file.read_bytes()
    file.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize("name", ["trainable.safetensors", "optimizer.pt", "rng.pt", "state.json"])
def test_a_damaged_checkpoint_file_is_an_io_error_naming_it(tmp_path, name):
    run_toy(tmp_path, toy_job(training={"max_steps": 1}), "run")
    folder = RunDir(tmp_path / "run").latest_checkpoint()
    _damage(folder / name)
    with pytest.raises(EngineError) as caught:
        ckpt.load_checkpoint(folder)
    assert caught.value.kind == "io" and str(folder / name) in caught.value.message
    assert "earlier checkpoint" in caught.value.hint


def test_resume_falls_back_past_a_damaged_checkpoint(tmp_path):
    job = toy_job(training={"max_steps": 6}, output={"save_every_n_steps": 2})
    run_toy(tmp_path, job, "straight")
    events: list[dict] = []
    run = RunDir(tmp_path / "stopped")
    from toy_family import ToyTrainee, progress
    from lora_studio.engine.core import trainer
    trainer.train(job, run.ensure(), events.append, lambda: len(progress(events)) >= 5, ToyTrainee)
    assert [p.name for p in ckpt.complete_checkpoints(run.checkpoints)] == \
        ["step-000005", "step-000004", "step-000002"]
    _damage(run.checkpoints / "step-000005" / "optimizer.pt")
    _, resumed, _ = run_toy(tmp_path, job, "stopped", resume=ckpt.resolve_resume(run.root))
    warning = next(e for e in resumed if e["type"] == "log" and e.get("level") == "warning")
    assert "step-000005" in warning["message"] and "optimizer.pt" in warning["message"]
    assert "step-000004" in warning["message"]
    started = next(e for e in resumed if e["type"] == "started")
    assert started["start_step"] == 4 and resumed[-1]["status"] == "completed"
    assert_same_checkpoint(run.latest_checkpoint(), RunDir(tmp_path / "straight").latest_checkpoint())


def test_resume_with_no_good_checkpoint_left_is_the_io_error(tmp_path):
    run_toy(tmp_path, toy_job(training={"max_steps": 1}), "run")
    folder = RunDir(tmp_path / "run").latest_checkpoint()
    _damage(folder / "trainable.safetensors")
    with pytest.raises(EngineError) as caught:
        ckpt.load_resumable(folder, lambda ev: None)
    assert caught.value.kind == "io" and "trainable.safetensors" in caught.value.message
    assert os.path.exists(folder)  # nothing deleted
