import hashlib
import json
import multiprocessing
import os
import subprocess
import sys
import time

from lora_studio.config import JobConfig
from lora_studio.config.jobfile import read_job_toml, write_job_toml
from lora_studio.fsutil import atomic_write_text, sha256_file
from lora_studio.runs.events import EventWriter, decode, event, read_events
from lora_studio.runs.layout import list_runs, new_run_dir


def test_run_dir_layout_and_status(tmp_path):
    out = tmp_path / "runs ü"
    run = new_run_dir(out, "demo", now=0)
    twin = new_run_dir(out, "demo", now=0)
    assert run.root != twin.root
    for sub in ("checkpoints", "samples", "final", "exports"):
        assert (run.root / sub).is_dir()
    job = JobConfig()
    job.network.rank = 4
    write_job_toml(job, run.job_toml)
    assert read_job_toml(run.job_toml)[0].network.rank == 4
    assert run.status() == "new"
    with EventWriter(run.events) as emit:
        emit(event("started", total_steps=3))
        emit(event("progress", step=1, total=3, loss=1.5))
        emit(event("finished", status="cancelled", checkpoint="x"))
    assert run.status() == "cancelled"
    assert [r.root for r in list_runs(out)] == [run.root]  # twin has no job.toml


def test_events_skip_junk_and_cut_lines(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_text('{"type":"log","message":"a"}\nnot json\n{"type":"bogus"}\n{"type":"progr',
                    encoding="utf-8")
    assert [e["type"] for e in read_events(path)] == ["log"]
    assert decode('{"type": "error", "kind": "oom"}')["kind"] == "oom"


def test_a_child_process_prints_only_events_on_its_stdout():
    # What the captioning and playground processes write: a library's print goes to stderr.
    script = ("import threading\n"
              "from lora_studio.runs.events import event, stdout_events\n"
              "emit = stdout_events()\n"
              "print('Loading checkpoint shards: 100%')\n"
              "threads = [threading.Thread(target=lambda: [emit(event('log', message='ü' * 500))"
              " for _ in range(200)]) for _ in range(4)]\n"
              "[t.start() for t in threads]; [t.join() for t in threads]\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, encoding="utf-8",
                          env={**os.environ, "PYTHONIOENCODING": "utf-8"}, timeout=60)
    lines = done.stdout.splitlines()
    assert done.returncode == 0 and len(lines) == 800
    assert all(decode(line)["message"] == "ü" * 500 for line in lines)
    assert "Loading checkpoint shards: 100%" in done.stderr


def test_checkpoint_needs_complete_marker(tmp_path):
    run = new_run_dir(tmp_path, "r")
    (run.checkpoints / "step-000010").mkdir()
    (run.checkpoints / "step-000005").mkdir()
    (run.checkpoints / "step-000005" / "COMPLETE").touch()
    assert run.latest_checkpoint().name == "step-000005"


def _writer(path):
    i = 0
    while True:
        i += 1
        atomic_write_text(path, f"version {i}\n" + "x" * 200_000)


def test_atomic_write_survives_kill(tmp_path):
    path = tmp_path / "cap tion.txt"
    atomic_write_text(path, "version 0\n" + "x" * 200_000)
    proc = multiprocessing.get_context("spawn").Process(target=_writer, args=(path,))
    proc.start()
    time.sleep(1.0)
    proc.kill()
    proc.join()
    text = path.read_text()
    assert text.startswith("version ") and text.endswith("x" * 100) and len(text) > 200_000


def test_atomic_write_keeps_crlf(tmp_path):
    path = tmp_path / "c.txt"
    atomic_write_text(path, "a, b\nc", newline="\r\n")
    assert path.read_bytes() == b"a, b\r\nc"


def test_sha256_file_matches_across_read_blocks(tmp_path):
    path = tmp_path / "lora wëights.safetensors"
    data = bytes(range(256)) * (3 * 4096 + 1)  # a little over 3 MiB: several 1 MiB blocks
    path.write_bytes(data)
    assert sha256_file(path) == hashlib.sha256(data).hexdigest()
