"""``python -m lora_studio.captioning``: one CaptionRequest in on stdin, events out on
stdout (runs/caption_protocol.py). Any later line on stdin, or its end (the window
cancelled, or is gone), stops the run after the caption being written."""
from __future__ import annotations

import sys
import threading
import time
import traceback

from ..errors import HintedError
from ..runs.caption_models import ModelMissing, locate
from ..runs.caption_protocol import CaptionRequest, reply
from ..runs.events import stdout_events


def run(request: CaptionRequest, emit, should_stop) -> int:
    """Load the model, caption, report. 0 when it ran (completed or cancelled)."""
    from .run import caption_images, load_predictor
    try:
        located = locate(request.kind, request.model)
        start = time.perf_counter()
        predictor = load_predictor(request, located.path)
        emit(reply("started", total=len(request.images), model=str(located.path),
                   seconds=round(time.perf_counter() - start, 2)))
        caption_images(request, predictor, emit, should_stop)
        return 0
    except (ModelMissing, HintedError) as exc:
        emit(reply("error", message=exc.message, hint=exc.hint))
    except MemoryError as exc:
        emit(reply("error", message=f"Out of memory: {exc}",
                   hint="Close other programs, or pick a smaller model or the CPU."))
    except Exception as exc:  # the window shows it; the traceback goes to stderr
        traceback.print_exc()
        emit(reply("error", message=f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
                   if str(exc) else type(exc).__name__,
                   hint="This is a bug in LoRA Studio or a library it uses; the full "
                        "traceback is in the process output."))
    return 1


def main() -> int:
    emit = stdout_events()
    first = sys.stdin.readline()
    if not first.strip():
        return 0
    try:
        request = CaptionRequest.from_json(first)
    except (ValueError, TypeError) as exc:
        emit(reply("error", message=f"Not a captioning request: {exc}",
                   hint="Send one JSON CaptionRequest on the first line."))
        return 1
    stop = threading.Event()

    def watch() -> None:
        sys.stdin.readline()  # a line, or the end of stdin
        stop.set()
    threading.Thread(target=watch, daemon=True, name="cancel").start()
    return run(request, emit, stop.is_set)


if __name__ == "__main__":
    sys.stdin.reconfigure(encoding="utf-8")
    sys.exit(main())
