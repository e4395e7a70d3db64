"""Run control shared by every engine family: errors as events, cancel requests,
progress accounting, the finite-loss check.

Progress events carry: ``step`` (optimizer steps done), ``total``, ``epoch`` (1-based),
``loss`` (mean over the step's micro-batches), ``lr`` (learning rate of that step),
``it_s`` (optimizer steps per second over the last steps) and ``eta_s`` (seconds left).
"""
from __future__ import annotations

import _thread
import math
import pickle
import signal
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

from ...runs.events import Emit, event
from ...runs.layout import STOP_FILE

# Each family has its own, more specific one (OOM_HINT in its package).
OOM_HINT = ("Lower training.batch_size (raise gradient_accumulation_steps to keep the "
            "effective batch) or enable training.gradient_checkpointing.")


class EngineError(Exception):
    """A failure the user can act on; becomes an ``error`` event, never a bare traceback."""

    def __init__(self, kind: str, message: str, hint: str = ""):
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.hint = hint

    def to_event(self) -> dict:
        return event("error", kind=self.kind, message=self.message, hint=self.hint)


def refused_pickle(path) -> EngineError:
    """A pickle file that is more than tensors: torch's weights-only loader refused to
    run the code it carries. Never retried without that guard."""
    where = f"'{path}'" if path else "A pickle model file"
    return EngineError("config", f"{where} holds more than weights: it asks to run code when it is "
                                 "loaded, so it was refused (pickle files are only ever read as "
                                 "plain tensors).",
                       "Use the model's .safetensors version (most models offer one), or convert "
                       "the file with a tool you trust. Do not load it if you got it from a "
                       "stranger.")


def is_refused_pickle(exc: BaseException | None) -> bool:
    """Whether torch's weights-only unpickler refused a payload, however deep a loader
    (diffusers wraps it in an OSError) buried it."""
    seen = 0
    while exc is not None and seen < 20:
        if isinstance(exc, pickle.UnpicklingError):
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


def is_oom(exc: BaseException) -> bool:
    if isinstance(exc, MemoryError):
        return True
    try:
        import torch
        if isinstance(exc, torch.OutOfMemoryError):
            return True
    except ImportError:
        pass
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def error_event(exc: BaseException, oom_hint: str = OOM_HINT) -> dict:
    """The ``error`` event for any exception that ended a run."""
    if isinstance(exc, EngineError):
        return exc.to_event()
    if is_refused_pickle(exc):
        return refused_pickle(getattr(exc, "filename", None)).to_event()
    if is_oom(exc):
        _release_cuda_memory()
        return event("error", kind="oom", message=f"Out of memory: {str(exc).splitlines()[0][:300]}",
                     hint=oom_hint)
    if isinstance(exc, OSError):
        where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
        return event("error", kind="io", message=f"File error{where}: {exc.strerror or exc}",
                     hint="Check that the disk is not full and the folder is writable.")
    return event("error", kind="internal", message=f"{type(exc).__name__}: {exc}",
                 hint="This is a bug in LoRA Studio or a library it uses; the traceback is in "
                      "'detail'. Please report it with the run's job.toml.",
                 detail="".join(traceback.format_exception(exc))[-8000:])


def _release_cuda_memory() -> None:
    try:
        import torch
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:
        pass


class Cancelled(BaseException):
    """A stop asked for while the run was being prepared (loading the model, scanning,
    checking images, tokenising, caching): raised in the main thread at once rather
    than at the first step. A BaseException, like KeyboardInterrupt, so that no
    library's ``except Exception`` around a load swallows it."""


_SIGNALS = ("SIGINT", "SIGTERM")


def _interrupt_main_thread() -> None:
    """SIGTERM to the main thread from the stop watcher. A real signal wakes a blocking
    call (a sleep, a read: PEP 475 runs the handler, which raises); interrupt_main alone
    only raises once that call returns. It is sent before the watcher ends, and the
    block's handlers are restored only after the watcher is joined, so it never meets
    the default action. Windows has no pthread_kill: the simulated signal is all there
    is."""
    if hasattr(signal, "pthread_kill"):
        signal.pthread_kill(threading.main_thread().ident, signal.SIGTERM)
    else:
        _thread.interrupt_main(signal.SIGTERM)


class StopRequest:
    """Whether the run should stop after the current step: a caller's callback, a
    ``STOP`` file in the run folder (the GUI's way, works on Windows), or a signal.
    While preparing (``interrupting``) a stop does not wait for a step: it raises
    Cancelled in the main thread."""

    def __init__(self, should_stop: Callable[[], bool] | None = None,
                 run_root: Path | None = None):
        self._callback = should_stop
        self._stop_file = Path(run_root) / STOP_FILE if run_root is not None else None
        self._requested = threading.Event()

    def request(self) -> None:
        self._requested.set()

    def __call__(self) -> bool:
        if self._requested.is_set():
            return True
        if (self._callback is not None and self._callback()) or \
                (self._stop_file is not None and self._stop_file.exists()):
            self._requested.set()
        return self._requested.is_set()

    def raise_if_stopped(self) -> None:
        if self():
            raise Cancelled

    @contextmanager
    def interrupting(self, poll_s: float = 0.2):
        """While inside, SIGINT / SIGTERM, the STOP file or the callback raise Cancelled
        in the main thread within about ``poll_s``, wherever it is: loading weights,
        decoding images and tokenising are long calls that poll nothing. Outside, the
        loop polls once per step, so a checkpoint is never cut in half."""
        if threading.current_thread() is not threading.main_thread():
            self.raise_if_stopped()
            yield self
            return
        live = True

        def handler(signum, frame):
            self.request()
            if live:
                raise Cancelled
        previous = {name: signal.signal(getattr(signal, name), handler)
                    for name in _SIGNALS if hasattr(signal, name)}
        done = threading.Event()

        def watch() -> None:
            while not done.wait(poll_s):
                if self():
                    _interrupt_main_thread()
                    return
        watcher = threading.Thread(target=watch, name="stop-watch", daemon=True)
        watcher.start()
        try:
            self.raise_if_stopped()
            yield self
        finally:
            live = False
            done.set()
            watcher.join()
            for name, old in previous.items():
                signal.signal(getattr(signal, name), old)

    @contextmanager
    def handling_signals(self):
        """While inside, SIGINT / SIGTERM ask for a clean stop (a second SIGINT interrupts
        at once); the previous handlers come back afterwards."""
        def handler(signum, frame):
            if self._requested.is_set() and signum == signal.SIGINT:
                raise KeyboardInterrupt
            self.request()
        names = [s for s in _SIGNALS if hasattr(signal, s)] \
            if threading.current_thread() is threading.main_thread() else []
        previous = {name: signal.signal(getattr(signal, name), handler) for name in names}
        try:
            yield self
        finally:
            for name, old in previous.items():
                signal.signal(getattr(signal, name), old)


class Phases:
    """``phase`` events for the work before the first step (and between steps), with
    their own n/N: at most one every ``interval`` seconds per phase, the first and the
    last always. Each report is also a stop check, for where signals cannot reach
    (a thread other than the main one)."""

    def __init__(self, emit: Emit, stop: Callable[[], bool] | None = None,
                 interval: float = 0.25, clock: Callable[[], float] = time.monotonic):
        self._emit, self._stop, self._interval, self._clock = emit, stop, interval, clock
        self._name: str | None = None
        self._last = 0.0

    def __call__(self, name: str, done: int | None = None, total: int | None = None) -> None:
        if self._stop is not None and self._stop():
            raise Cancelled
        now = self._clock()
        new = name != self._name
        if not (new or done == total or now - self._last >= self._interval):
            return
        self._name, self._last = name, now
        fields = {} if total is None else {"done": done or 0, "total": total}
        self._emit(event("phase", phase=name, **fields))


class ProgressMeter:
    """Optimizer steps per second over a sliding window, and the ETA from it."""

    def __init__(self, total_steps: int, start_step: int = 0, window: int = 20,
                 clock: Callable[[], float] = time.perf_counter):
        self.total = total_steps
        self._clock = clock
        self._marks: deque[tuple[int, float]] = deque([(start_step, clock())], maxlen=window + 1)

    def tick(self, step: int) -> tuple[float, float]:
        """(steps per second, seconds left) after ``step`` optimizer steps are done."""
        now = self._clock()
        self._marks.append((step, now))
        first_step, first_time = self._marks[0]
        elapsed = now - first_time
        rate = (step - first_step) / elapsed if elapsed > 0 else 0.0
        eta = (self.total - step) / rate if rate > 0 else 0.0
        return rate, eta


def check_finite(loss: float, step: int, lr: float, mixed_precision: str = "no") -> None:
    if math.isfinite(loss):
        return
    hint = f"Lower optimizer.learning_rate (it is {lr:g})"
    if mixed_precision == "fp16":
        hint += ", use bf16 instead of fp16 mixed precision"
    hint += ", keep optimizer.max_grad_norm above 0, and resume from the last checkpoint."
    raise EngineError("nan", f"The loss became {loss} at step {step}; training was stopped "
                             "before the weights were damaged.", hint)
