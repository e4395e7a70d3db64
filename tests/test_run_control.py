"""Starting and stopping runs: who owns the STOP file, a Stop pressed while the engine
starts up, and a forced stop that reaches every process the engine started."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lora_studio.config.jobfile import write_job_toml
from lora_studio.engine.core.checkpoint import COMPLETE
from lora_studio.engine.run import run_in_process
from lora_studio.engine.run import run
from lora_studio.runs.events import decode, read_events
from lora_studio.runs.launch import follow_engine
from lora_studio.runs.layout import RunDir, new_run_dir
from test_engine_text import ROOT, Recorder, losses, make_job
from ui_fixtures import FAKE_ENGINE

ENDED = 20_000  # ms a fake run may take on a busy CI machine


def stop_after(calls: int):
    """A stop callback that says no ``calls`` times, then yes."""
    asked = []

    def stop() -> bool:
        asked.append(1)
        return len(asked) > calls
    return stop


# --- the engine -------------------------------------------------------------------

def test_stop_there_before_the_start_ends_at_once_and_is_kept(tmp_path):
    folder = new_run_dir(tmp_path, "early")
    folder.stop_file.write_text("stop\n", encoding="utf-8")
    events = Recorder()
    run(make_job(), folder.root, events)
    assert [e["type"] for e in events] == ["finished"]  # no model was loaded: no "started"
    assert events[0]["status"] == "cancelled" and events[0]["checkpoint"] is None
    assert folder.latest_checkpoint() is None and not any(folder.checkpoints.iterdir())
    assert folder.stop_file.exists()  # only a launcher removes it


def test_stop_while_loading_keeps_the_resumed_checkpoint_and_resume_still_works(tmp_path):
    job = make_job(training={"max_steps": 4})
    folder = new_run_dir(tmp_path, "resumed")
    first = Recorder()
    run(job, folder.root, first, lambda: len(first.of("progress")) >= 2)
    checkpoint = Path(first.of("finished")[-1]["checkpoint"])
    weights = checkpoint / "trainable.safetensors"
    before = (weights.stat().st_mtime_ns, weights.read_bytes())

    # The early check passes, the stop comes while the model loads: no step runs.
    second = Recorder()
    run(job, folder.root, second, stop_after(1), resume=checkpoint)
    finished = second.of("finished")[-1]
    assert finished["status"] == "cancelled" and finished["step"] == 2
    assert finished["checkpoint"] is None and not second.of("progress")
    assert (weights.stat().st_mtime_ns, weights.read_bytes()) == before
    assert (checkpoint / COMPLETE).exists() and folder.latest_checkpoint() == checkpoint

    third = Recorder()
    run(job, folder.root, third, None, resume=folder.latest_checkpoint())
    assert third.of("started")[0]["start_step"] == 2
    assert [e["step"] for e in third.of("progress")] == [3, 4]
    assert third.of("finished")[-1]["status"] == "completed" and len(losses(third)) == 2


def test_engine_process_honours_a_stop_made_while_it_started(tmp_path):
    folder = new_run_dir(tmp_path, "proc")
    write_job_toml(make_job(training={"max_steps": 10_000}), folder.job_toml)
    folder.stop_file.touch()  # what Stop does while the engine is still importing torch
    proc = subprocess.run([sys.executable, "-m", "lora_studio.engine", str(folder.root)],
                          capture_output=True, text=True, cwd=ROOT, timeout=300,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    events = [decode(line) for line in proc.stdout.splitlines()]
    assert events[-1]["type"] == "finished" and events[-1]["status"] == "cancelled"
    assert "progress" not in [e["type"] for e in events]
    assert list(read_events(folder.events))[-1]["status"] == "cancelled"
    assert folder.latest_checkpoint() is None


# --- the launchers remove a stale STOP ----------------------------------------------

def fake_run(tmp_path, name="stale") -> RunDir:
    folder = new_run_dir(tmp_path, name).ensure()
    folder.stop_file.write_text("left by an earlier stop\n", encoding="utf-8")
    return folder


def fake_command(folder: RunDir, *extra: str) -> list[str]:
    return [sys.executable, str(FAKE_ENGINE), str(folder.root), *extra]


def test_cli_launchers_ignore_a_stale_stop(tmp_path):
    folder = fake_run(tmp_path)
    shown = []
    last = follow_engine(fake_command(folder, "--steps", "3"), folder, shown.append)
    assert last["status"] == "completed" and len([e for e in shown if e["type"] == "progress"]) == 3

    folder = fake_run(tmp_path, "in-process")
    last = run_in_process(make_job(training={"max_steps": 1}), folder, display=lambda ev: None)
    assert last["type"] == "finished" and last["status"] == "completed"


def test_gui_worker_ignores_a_stale_stop_but_not_a_stop_during_start_up(tmp_path, qtbot):
    from lora_studio.ui.worker import TrainingWorker
    folder = fake_run(tmp_path)
    worker = TrainingWorker(folder.root, command=fake_command(folder, "--steps", "3"))
    events = []
    worker.event.connect(events.append)
    with qtbot.waitSignal(worker.exited, timeout=ENDED):
        worker.start()
    worker.wait()
    assert events[-1]["status"] == "completed"

    folder = new_run_dir(tmp_path, "pressed").ensure()
    worker = TrainingWorker(folder.root, command=fake_command(folder, "--steps", "3"))
    events = []
    worker.event.connect(events.append)
    with qtbot.waitSignal(worker.exited, timeout=ENDED):
        worker.start()
        worker.stop()  # before the child has even started
    worker.wait()
    assert [e["type"] for e in events] == ["started", "finished"]
    assert events[-1]["status"] == "cancelled" and folder.latest_checkpoint() is None


# --- a forced stop ends the engine's whole process group ------------------------------

def alive(pid: int) -> bool:
    """Running, not a zombie waiting to be reaped."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def group_members(pgid: int) -> list[int]:
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                members.append(int(entry.name))
    return members


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc (Linux)")
@pytest.mark.parametrize("grandchild", ["keep", "detach"])
def test_stop_escalation_ends_every_process_of_the_group(tmp_path, qtbot, grandchild):
    from lora_studio.ui.worker import TrainingWorker
    folder = new_run_dir(tmp_path, "group").ensure()
    # The engine hangs ignoring STOP; what it started ignores SIGTERM too.
    worker = TrainingWorker(folder.root, command=fake_command(
        folder, "--steps", "10", "--mode", "hang", "--grandchild", grandchild), stop_grace_s=0.2)
    worker.kill_grace_s = 0.3
    events = []
    worker.event.connect(events.append)
    worker.start()
    qtbot.waitUntil(lambda: any(e["type"] == "progress" for e in events), timeout=ENDED)
    pid_file = folder.root / "grandchild.pid"
    grandchild_pid = int(pid_file.read_text())
    leader = worker._proc.pid
    assert os.getpgid(grandchild_pid) == leader != os.getpgid(0)
    try:
        with qtbot.waitSignal(worker.exited, timeout=ENDED):
            worker.stop()
        worker.wait()
        qtbot.waitUntil(lambda: not alive(grandchild_pid), timeout=ENDED)  # reaped by init
        assert group_members(leader) == []
        assert events[-1]["type"] == "finished" and events[-1]["status"] == "cancelled"
    finally:
        if alive(grandchild_pid):
            os.kill(grandchild_pid, 9)


class FakeProc:
    """What signal_group uses of a Popen on Windows."""

    def __init__(self, break_fails=False, dies_on_taskkill=True):
        self.pid, self.calls, self.alive = 4242, [], True
        self.break_fails, self.dies_on_taskkill = break_fails, dies_on_taskkill

    def send_signal(self, sig):
        self.calls.append(("signal", sig))
        if self.break_fails:
            raise OSError("no console")

    def poll(self):
        return None if self.alive else 1

    def kill(self):
        self.calls.append(("kill",))
        self.alive = False


@pytest.mark.parametrize("hard, break_fails, dies, expected", [
    (False, False, True, [("signal", "BREAK")]),
    (False, True, True, [("signal", "BREAK"), ("taskkill", "4242")]),
    (True, False, True, [("taskkill", "4242")]),
    (True, False, False, [("taskkill", "4242"), ("kill",)]),
])
def test_windows_group_signals_logic(monkeypatch, hard, break_fails, dies, expected):
    """Only the decisions: the real calls need Windows, which this machine is not."""
    import types

    from lora_studio.runs import launch
    proc = FakeProc(break_fails, dies)

    def run(argv, **kwargs):
        assert argv[:4] == ["taskkill", "/T", "/F", "/PID"]
        proc.calls.append(("taskkill", argv[4]))
        proc.alive = not proc.dies_on_taskkill
    monkeypatch.setattr(launch, "os", types.SimpleNamespace(name="nt"))
    monkeypatch.setattr(launch, "signal", types.SimpleNamespace(CTRL_BREAK_EVENT="BREAK"))
    monkeypatch.setattr(launch, "subprocess", types.SimpleNamespace(
        run=run, DEVNULL=-3, SubprocessError=subprocess.SubprocessError))
    launch.signal_group(proc, hard)
    assert proc.calls == expected
