"""A child process (most often `python -m MODULE`) read line by line without blocking
the GUI thread: reader threads collect its stdout lines (and keep the tail of its stderr
to explain a crash), and the runner's QTimer takes them on the GUI thread. Each child has
its own lines, so one that was killed never hands a line to its successor."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import lora_studio

from ..runs.launch import NO_WINDOW

STDERR_KEPT = 4000  # characters of the child's stderr kept


def python_module(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


def package_root() -> str:
    """The folder this copy of lora_studio is in: the child imports it, not another."""
    return str(Path(lora_studio.__file__).resolve().parents[1])


def package_env() -> dict[str, str]:
    """This environment with this copy of lora_studio first on the path and UTF-8 pipes
    whatever the console's code page."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root(), env.get("PYTHONPATH")]))
    env["PYTHONIOENCODING"] = "utf-8"
    return env


class ChildLines:
    """``command`` runs with ``env`` (else package_env()). ``stdin``: a pipe to write()
    to (else none); ``stderr``: keep its tail (else discarded); ``merge_stderr``: its
    lines are read with stdout's instead. Raises OSError when the command cannot start."""

    def __init__(self, command: list[str], env: dict[str, str] | None = None, *,
                 stdin: bool = False, stderr: bool = False, merge_stderr: bool = False):
        pipe, nothing = subprocess.PIPE, subprocess.DEVNULL
        self.proc = subprocess.Popen(
            command, stdin=pipe if stdin else nothing, stdout=pipe,
            stderr=subprocess.STDOUT if merge_stderr else pipe if stderr else nothing,
            env=package_env() if env is None else env, encoding="utf-8", errors="replace",
            creationflags=NO_WINDOW)
        self._lines: list[str] = []
        self._stderr = ""
        self._lock = threading.Lock()
        self._readers = [threading.Thread(target=self._read, daemon=True)]
        if self.proc.stderr is not None:
            self._readers.append(threading.Thread(target=self._read_stderr, daemon=True))
        for reader in self._readers:
            reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            with self._lock:
                self._lines.append(line)

    def _read_stderr(self) -> None:
        for line in self.proc.stderr:
            with self._lock:
                self._stderr = (self._stderr + line)[-STDERR_KEPT:]

    def write(self, text: str) -> None:
        try:
            self.proc.stdin.write(text)
            self.proc.stdin.flush()
        except OSError:  # the child has ended; ended() will say so
            pass

    def take(self) -> list[str]:
        """The lines read since the last take."""
        with self._lock:
            lines, self._lines = self._lines, []
        return lines

    def ended(self) -> bool:
        """The child has exited and every line it wrote has been taken."""
        if self.proc.poll() is None or any(r.is_alive() for r in self._readers):
            return False
        with self._lock:
            return not self._lines

    @property
    def returncode(self) -> int | None:
        return self.proc.returncode

    @property
    def stderr(self) -> str:
        with self._lock:
            return self._stderr.strip()

    def close(self) -> None:
        for pipe in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                try:
                    pipe.close()
                except OSError:
                    pass

    def kill(self) -> None:
        """End the child now and wait for it and its readers."""
        self.proc.kill()
        self.proc.wait()
        for reader in self._readers:
            reader.join(5)
        self.close()
