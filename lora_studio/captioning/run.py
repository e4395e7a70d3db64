"""Caption a list of images with one model, writing each caption as soon as it is made.

Three stages overlap: a reader thread reads the caption already there and, unless it
is kept (mode skip), decodes and prepares the image; the calling thread runs the model;
a writer thread merges and writes the caption atomically (data/captions.write_caption,
which keeps the file's encoding and line endings) and only then reports it. A stop
lets the captions already made be written and starts no other: a file is old or new,
never cut, and a killed process loses only the image it was on."""
from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from ..data.caption_merge import merged_caption
from ..data.captions import CaptionFile, CaptionReadError, read_caption, write_caption
from ..data.images import ImageLoadError, load_rgb
from ..engine.core.control import ProgressMeter
from ..runs.caption_protocol import CaptionRequest, reply

READ_AHEAD = 4  # images decoded ahead of the model


class Predictor(Protocol):
    def prepare(self, img) -> Any: ...
    def predict(self, prepared) -> str: ...


@dataclass
class _Loaded:
    index: int
    caption: CaptionFile | None = None
    prepared: Any = None
    kept: bool = False       # skip mode, and the image has a caption
    problem: str = ""


def _load(request: CaptionRequest, predictor: Predictor, index: int) -> _Loaded:
    try:
        caption = read_caption(request.captions[index])
    except CaptionReadError as exc:
        return _Loaded(index, problem=str(exc))
    if request.mode == "skip" and caption.text.strip():
        return _Loaded(index, caption, kept=True)
    try:
        img = load_rgb(request.images[index])
    except ImageLoadError as exc:
        return _Loaded(index, problem=str(exc))
    try:
        return _Loaded(index, caption, predictor.prepare(img))
    except Exception as exc:  # an image processor may refuse one picture in any way it likes
        return _Loaded(index, problem=f"{request.images[index]}: the model cannot take this "
                                      f"image ({type(exc).__name__}: {exc}); it is left as it is.")


def caption_images(request: CaptionRequest, predictor: Predictor, emit: Callable[[dict], None],
                   should_stop: Callable[[], bool] = lambda: False) -> str:
    """Caption every image of the request; "completed" or "cancelled". Emits one
    ``captioned`` or ``failed`` event per image handled, then ``finished``."""
    total = len(request.images)
    meter = ProgressMeter(total)
    lock = threading.Lock()
    counts = {"done": 0, "written": 0, "skipped": 0, "failed": 0}

    def report(type_: str, counter: str, **values) -> None:
        with lock:
            counts["done"] += 1
            counts[counter] += 1
            _rate, eta = meter.tick(counts["done"])
            emit(reply(type_, done=counts["done"], total=total, eta_s=round(eta, 1), **values))

    def write(loaded: _Loaded, generated: str | None) -> None:
        cf, new = loaded.caption, None
        try:
            if generated is not None:
                cf = read_caption(cf.path)  # as it is now: a change made meanwhile is kept
                new = merged_caption(cf.text, generated, request.mode, request.trigger)
            if new is not None:
                write_caption(cf, new, force=True)
        except OSError as exc:
            message = str(exc) if isinstance(exc, CaptionReadError) else \
                f"Cannot write {cf.path}: {exc.strerror or exc}"
            report("failed", "failed", index=loaded.index, message=message)
            return
        action = "written" if new is not None else ("skipped" if loaded.kept else "unchanged")
        report("captioned", "written" if new is not None else "skipped", index=loaded.index,
               caption=str(cf.path), action=action, old=cf.text, text=cf.text if new is None else new)

    status = "completed"
    with ThreadPoolExecutor(1, thread_name_prefix="caption-read") as reader, \
            ThreadPoolExecutor(1, thread_name_prefix="caption-write") as writer:
        ahead: deque[Future] = deque()
        upcoming = iter(range(total))

        def top_up() -> None:
            while len(ahead) < READ_AHEAD:
                index = next(upcoming, None)
                if index is None:
                    return
                ahead.append(reader.submit(_load, request, predictor, index))
        top_up()
        written: list[Future] = []
        while ahead:
            if should_stop():
                status = "cancelled"
                for pending in ahead:
                    pending.cancel()
                break
            loaded = ahead.popleft().result()
            top_up()
            if loaded.problem:
                report("failed", "failed", index=loaded.index, message=loaded.problem)
                continue
            generated = None if loaded.kept else predictor.predict(loaded.prepared)
            written.append(writer.submit(write, loaded, generated))
        for job in written:
            job.result()  # a bug in write() surfaces here, not silently
    emit(reply("finished", status=status, written=counts["written"], skipped=counts["skipped"],
               failed=counts["failed"]))
    return status


def load_predictor(request: CaptionRequest, folder: Path) -> Predictor:
    if request.kind == "tagger":
        from .tagger import Tagger
        providers = ["CPUExecutionProvider"] if request.device == "cpu" else None
        return Tagger(folder, request.general_threshold, request.character_threshold,
                      request.exclude, request.underscores_to_spaces, request.include_rating,
                      providers)
    from .captioner import Captioner
    return Captioner(folder, request.task, request.max_new_tokens, request.device)
