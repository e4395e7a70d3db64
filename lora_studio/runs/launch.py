"""The command line that starts the engine on a run folder: one process, or one per
GPU through accelerate's launcher (data parallel). The CLI and the GUI both start
runs through here. No torch, no Qt: deciding the command loads neither.

``python -m accelerate.commands.launch`` is accelerate's ``accelerate launch``
without needing its console script on PATH (a bundle or a venv that was not
activated has none).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from .events import EventWriter, decode, event
from .layout import RunDir

ENGINE_MODULE = "lora_studio.engine"


def engine_command(run_dir: str | Path, processes: int = 1, mixed_precision: str = "no",
                   resume: str | Path | None = None) -> list[str]:
    """argv that runs the engine on ``run_dir``; several processes go through accelerate."""
    engine = ["-m", ENGINE_MODULE, str(run_dir)]
    if resume is not None:
        engine += ["--resume", str(resume)]
    if processes <= 1:
        return [sys.executable, *engine]
    # --multi_gpu selects torch.distributed's launcher for every device kind; on a
    # machine without CUDA the engine joins the processes over gloo on the CPU.
    # Port 0: accelerate picks a free one, so two runs on one machine do not collide.
    return [sys.executable, "-m", "accelerate.commands.launch",
            "--multi_gpu", "--num_processes", str(processes), "--num_machines", "1",
            "--mixed_precision", mixed_precision, "--dynamo_backend", "no",
            "--main_process_port", "0", *engine]


def engine_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment of the engine process(es): events arrive line by line, in UTF-8
    whatever the console's code page."""
    env = dict(os.environ if base is None else base)
    env.update(PYTHONUNBUFFERED="1", PYTHONIOENCODING="utf-8")
    return env


STDERR_NAME = "engine-stderr.log"  # the GUI worker writes the same file


# A console window would pop up beside the app for each child on Windows.
NO_WINDOW = getattr(subprocess, "CREATE_NO_WINDOW", 0)


def group_options() -> dict:
    """Popen options that start the engine in a process group of its own, so that a
    forced stop reaches what it started too (accelerate launch's worker processes)."""
    if os.name == "nt":
        return {"creationflags": NO_WINDOW | subprocess.CREATE_NEW_PROCESS_GROUP}
    return {"start_new_session": True}


def signal_group(proc: subprocess.Popen, hard: bool) -> None:
    """Ask (``hard`` False) or force (``hard`` True) every process of the group that
    ``proc`` leads, started with group_options(), to end; processes already gone are
    fine. Windows (not tested here): CTRL_BREAK_EVENT to the group, or, where that
    cannot be sent (no console), and when forced, ``taskkill /T /F`` on the tree, which
    only finds the children while their parent is alive."""
    if os.name == "nt":
        if not hard:
            try:
                proc.send_signal(signal.CTRL_BREAK_EVENT)
                return
            except OSError:
                pass
        if proc.poll() is None:
            try:
                subprocess.run(["taskkill", "/T", "/F", "/PID", str(proc.pid)],
                               capture_output=True, stdin=subprocess.DEVNULL,
                               creationflags=NO_WINDOW, timeout=30)
            except (OSError, subprocess.SubprocessError):
                pass
            if proc.poll() is None:
                proc.kill()
        return
    try:  # the group's id is its leader's pid (start_new_session)
        os.killpg(proc.pid, signal.SIGKILL if hard else signal.SIGTERM)
    except OSError:  # the group has ended
        pass


def clear_stale_stop(run: RunDir) -> None:
    """Call just before starting the engine: a STOP left by an earlier stop must not end
    this run. The engine itself never removes it, so a Stop pressed while the engine is
    still importing is kept and honoured."""
    run.stop_file.unlink(missing_ok=True)


def follow_engine(command: list[str], run: RunDir, display: Callable[[dict], None]) -> dict | None:
    """Run the engine command to its end, showing its events as they come; returns the
    last ``finished`` / ``error`` event. The engine writes events.jsonl itself; when
    its processes die without a word (one was killed, a library aborted), an ``error``
    event says so there too. Ctrl+C reaches the engine processes as well, which stop
    after their step and save, so this keeps reading until they exit."""
    last: dict | None = None
    stderr_path = run.root / STDERR_NAME
    clear_stale_stop(run)
    with open(stderr_path, "ab") as err:
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL,
                                env=engine_env(), text=True, encoding="utf-8", errors="replace")
        assert proc.stdout is not None
        while True:
            try:
                line = proc.stdout.readline()
            except KeyboardInterrupt:
                continue
            if not line:
                break
            ev = decode(line)
            if ev is None:
                continue  # a library printing to stdout; its stderr is in the log
            display(ev)
            if ev["type"] in ("finished", "error"):
                last = ev
        while True:
            try:
                code = proc.wait()
                break
            except KeyboardInterrupt:
                continue
    if last is None:
        tail = stderr_path.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-15:]
        last = event("error", kind="internal",
                     message=f"The training processes ended (exit code {code}) without finishing.",
                     hint=f"The end of {stderr_path} says:\n" + "\n".join(tail))
        with EventWriter(run.events) as write:
            write(last)
        display(last)
    return last
