"""Requests to the loaded backend, every failure an ``error`` event: a bad path, an
unknown adapter, an out-of-memory error end that request, never the process."""
from __future__ import annotations

import os
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from ..errors import HintedError
from ..runs.adapter_sources import adapter_source
from ..runs.playground_protocol import BASE_KINDS, reply
from ..runs.xy_grid import a1111_parameters
from .errors import PlaygroundError

OOM_HINT = ("Close other programs that use the GPU, stop a training run, or pick a smaller "
            "base model; for images, lower the size.")


def _is_oom(exc: BaseException) -> bool:
    import torch
    return isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in str(exc).lower()


def check_base_path(kind: str, path: str) -> None:
    """Refuse a path that cannot be a base before the loaded one is let go."""
    folder = Path(path)
    if kind == "text" and not (folder / "config.json").is_file():
        raise PlaygroundError("config", f"{folder} is not a text model folder (no config.json).",
                              "Pick the folder of a causal language model (config.json and "
                              ".safetensors weights), or the run whose base you want.")
    if kind == "image" and not ((folder / "model_index.json").is_file() or (
            folder.is_file() and folder.suffix.lower() == ".safetensors")):
        raise PlaygroundError("config", f"{folder} is not a Stable Diffusion model (no "
                                        "model_index.json, not a .safetensors file).",
                              "Pick a diffusers model folder or a single-file checkpoint.")


def _backend(kind: str, path: str, chat_template: str):
    if kind == "text":
        from .text import TextBackend
        return TextBackend(path, chat_template)
    from .image import ImageBackend
    return ImageBackend(path)


class Server:
    def __init__(self, emit: Callable[[dict], None]):
        self.emit = emit
        self.backend = None
        self.loads = 0              # bases loaded by this process: switching never adds one
        self.stopped_before = 0     # generations with a lower sequence number are stopped
        self.stopped_ids: set = set()   # and those stopped by their id
        self.drawn = 0

    def stop(self, seq: int, target=None) -> None:
        """Every generation sent before ``seq``, or only the one whose id is ``target``
        (a server's answer whose client left, while the window's own go on)."""
        if target is None:
            self.stopped_before = max(self.stopped_before, seq)
        else:
            self.stopped_ids.add(target)

    def handle(self, seq: int, req: dict) -> None:
        rid = req.get("id")
        try:
            getattr(self, "_" + req["type"])(seq, req)
        except PlaygroundError as exc:
            self.emit(exc.to_event(rid))
        except HintedError as exc:
            self.emit(reply("error", id=rid, kind="config", message=exc.message, hint=exc.hint))
        except Exception as exc:  # a library failing: one request lost, the process goes on
            if _is_oom(exc):
                import torch
                torch.cuda.empty_cache()
                self.emit(reply("error", id=rid, kind="oom",
                                message=f"Out of memory during {req['type']}.", hint=OOM_HINT))
            else:
                self.emit(reply("error", id=rid, kind="internal",
                                message=f"{req['type']} failed: {type(exc).__name__}: {exc}",
                                hint=traceback.format_exc(limit=4)))

    def _need_backend(self):
        if self.backend is None:
            raise PlaygroundError("request", "No base model is loaded.", "Load a base model first.")
        return self.backend

    def _load_base(self, seq: int, req: dict) -> None:
        kind = req.get("kind")
        if kind not in BASE_KINDS:
            raise PlaygroundError("request", f"Unknown base kind {kind!r}.",
                                  "Say 'text' or 'image'.")
        check_base_path(kind, str(req.get("path", "")))
        started = time.perf_counter()
        self.backend = None  # the old base is let go before the new one takes its memory
        self.backend = _backend(kind, str(req.get("path", "")), str(req.get("chat_template", "auto")))
        self.loads += 1
        self.emit(reply("base_loaded", id=req.get("id"), kind=kind, path=req.get("path"),
                        loads=self.loads, model_id=id(self.backend.base),
                        seconds=round(time.perf_counter() - started, 4)))

    def _load_adapter(self, seq: int, req: dict) -> None:
        backend = self._need_backend()
        name = str(req.get("name") or "")
        if not name:
            raise PlaygroundError("request", "An adapter needs a name.", "Name it.")
        source = adapter_source(str(req.get("path", "")))
        started = time.perf_counter()
        backend.load_adapter(name, source)
        self.emit(reply("adapter_loaded", id=req.get("id"), name=name, path=req.get("path"),
                        source=source.kind, loads=self.loads, model_id=id(backend.base),
                        seconds=round(time.perf_counter() - started, 4)))

    def _set_adapters(self, seq: int, req: dict) -> None:
        backend = self._need_backend()
        names = [str(n) for n in req.get("names", [])]
        weights = [float(w) for w in req.get("weights", [1.0] * len(names))]
        started = time.perf_counter()
        backend.set_active(names, weights)
        self.emit(reply("adapters_set", id=req.get("id"), names=names, weights=weights,
                        loads=self.loads, model_id=id(backend.base),
                        seconds=round(time.perf_counter() - started, 6)))

    def _generate(self, seq: int, req: dict) -> None:
        backend = self._need_backend()
        rid = req.get("id")

        def should_stop() -> bool:
            return self.stopped_before > seq or rid in self.stopped_ids

        if should_stop():  # stopped while it waited behind another request
            self.stopped_ids.discard(rid)
            self.emit(reply("done", id=rid, text="", reason="stopped", tokens=0, seconds=0,
                            first_token_s=None))
            return
        if backend.kind == "text":
            try:
                result = backend.generate(
                    req, lambda text: self.emit(reply("token", id=rid, text=text)), should_stop)
            finally:
                self.stopped_ids.discard(rid)
            self.emit(reply("done", id=rid, **result))
        else:
            from .grid_image import save_png
            image, settings = backend.generate(req, should_stop)
            parameters = a1111_parameters(settings, backend.active, backend.weights)
            path = save_png(image, self._out(req, "image"), parameters)
            self.emit(reply("image", id=rid, path=str(path), parameters=parameters,
                            seconds=settings["seconds"]))

    def _grid(self, seq: int, req: dict) -> None:
        backend = self._need_backend()
        if backend.kind != "image":
            raise PlaygroundError("request", "Grids are drawn by image models.",
                                  "Load a Stable Diffusion model.")
        from .grid_image import compose, save_png
        cells = req.get("cells") or []
        rows, cols = list(req.get("row_labels", [])), list(req.get("col_labels", []))
        if not cells or len(cells) != len(rows) or any(len(r) != len(cols) for r in cells):
            raise PlaygroundError("request", "A grid needs one row of cells per row label and one "
                                             "cell per column label.", "Rebuild the grid.")
        shared = {k: v for k, v in req.items() if k not in ("type", "id", "cells", "row_labels",
                                                               "col_labels", "out")}
        total, images, started = len(rows) * len(cols), [], time.perf_counter()
        for r, row in enumerate(cells):
            images.append([])
            for c, cell in enumerate(row):
                if self.stopped_before > seq:
                    self.emit(reply("done", id=req.get("id"), text="", reason="stopped", tokens=0,
                                    seconds=0, first_token_s=None))
                    return
                image, settings = backend.generate({**shared, "adapters": [], "weights": [],
                                                    **cell}, lambda: self.stopped_before > seq)
                images[-1].append(image)
                self.emit(reply("cell", id=req.get("id"), done=r * len(cols) + c + 1, total=total))
        grid = compose(images, cols, rows)
        settings.pop("seconds", None)
        parameters = a1111_parameters(settings) + f"\nXY grid: {len(rows)} rows ({', '.join(rows)}) " \
            f"x {len(cols)} columns ({', '.join(cols)})"
        path = save_png(grid, self._out(req, "grid"), parameters)
        self.emit(reply("image", id=req.get("id"), path=str(path), parameters=parameters,
                        rows=len(rows), cols=len(cols),
                        seconds=round(time.perf_counter() - started, 4)))

    def _out(self, req: dict, stem: str) -> Path:
        if req.get("out"):
            return Path(req["out"])
        import tempfile
        self.drawn += 1
        return Path(tempfile.gettempdir()) / "lora-studio-playground" / f"{stem}-{os.getpid()}-{self.drawn}.png"

    def _stop(self, seq: int, req: dict) -> None:
        self.stop(seq)

    def _shutdown(self, seq: int, req: dict) -> None:
        pass  # the main loop ends after it
