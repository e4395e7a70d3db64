"""The image Playground without Qt: a Stable Diffusion base, the LoRAs added to it and
which of them are in use, the drawing settings, and what was drawn last (one image or
an XY grid). It makes requests and reads events (runs/playground_protocol.py); the
view only shows it.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..runs.playground_protocol import request
from ..runs.xy_grid import SAMPLERS, Grid, adapters_by_strengths, prompts_by_seeds

# (field, title, default, minimum, maximum, step) of the numeric settings; a size of 0
# is the model's own.
IMAGE_SETTINGS = (
    ("steps", "Steps", 25, 1, 150, 1),
    ("cfg", "CFG scale", 7.0, 0.0, 30.0, 0.5),
    ("seed", "Seed", 0, 0, 2**31 - 1, 1),
    ("width", "Width", 0, 0, 2048, 64),
    ("height", "Height", 0, 0, 2048, 64),
    ("strength", "LoRA strength", 1.0, -2.0, 2.0, 0.1),
)
DEFAULT_SAMPLER = "Euler a"
SIZE_MULTIPLE = 8     # the VAE's scale: diffusers refuses other sizes
MAX_CELLS = 64        # a bigger grid is a typo, not an afternoon of drawing

# The XY grids: (key, title).
GRID_MODES = (("strengths", "Checkpoints × strengths"), ("seeds", "Prompts × seeds"))

EXIT_MESSAGES = {
    "crashed": "The playground process ended while drawing; draw again to restart it.",
    "training": "Stopped: a training run needed the GPU.",
    "idle": "Stopped: the playground process was idle.",
    "shutdown": "Stopped.",
}


def _said(ev: dict) -> str:
    """An error event as one line: its message and hint (an internal error's hint is a
    traceback, which stays in the log)."""
    hint = "" if ev.get("kind") == "internal" else ev.get("hint", "")
    return f"{ev.get('message', '')} {hint}".strip()


class GridProblem(ValueError):
    """A grid that cannot be drawn as typed; the message says what to change."""


def base_kind(path: str | Path) -> str:
    """'image' for a diffusers folder or a single-file checkpoint, else 'text'."""
    path = Path(path)
    return "image" if (path / "model_index.json").is_file() or path.suffix.lower() == \
        ".safetensors" else "text"


def short_labels(names: list[str]) -> list[str]:
    """Adapters of one run ("run · step-000200", "run · final") labelled by what tells
    them apart: a grid's row labels have little room."""
    heads = {name.split(" · ", 1)[0] for name in names}
    if len(heads) == 1 and all(" · " in name for name in names):
        return [name.split(" · ", 1)[1] for name in names]
    return list(names)


def parse_numbers(text: str, kind: type, what: str) -> list:
    """"0, 0.5 1" -> [0.0, 0.5, 1.0]; GridProblem naming the bad item."""
    out = []
    for item in text.replace(",", " ").replace(";", " ").split():
        try:
            out.append(kind(item))
        except ValueError:
            raise GridProblem(f"{what}: {item!r} is not a {'whole ' if kind is int else ''}"
                              "number.") from None
    if not out:
        raise GridProblem(f"{what}: type at least one, separated by commas.")
    return out


def parse_prompts(text: str) -> list[str]:
    prompts = [line.strip() for line in text.splitlines() if line.strip()]
    if not prompts:
        raise GridProblem("Prompts: type one prompt a line.")
    return prompts


@dataclass
class GridSpec:
    """What the grid builder holds, as typed."""
    mode: str = "strengths"
    strengths: str = "0, 0.5, 1"
    prompts: str = ""
    seeds: str = "1, 2, 3"


class ImageSession:
    def __init__(self):
        self.base_path = ""
        self.adapters: dict[str, str] = {}   # name -> path, as the user added them
        self.loaded: set[str] = set()
        self.active: list[str] = []          # the ticked LoRAs
        self.settings = {"prompt": "", "negative_prompt": "", "sampler": DEFAULT_SAMPLER,
                         **{name: default for name, _, default, *_ in IMAGE_SETTINGS}}
        self.grid_spec = GridSpec()
        self.pending: str | None = None
        self.progress = (0, 0)               # cells drawn, cells in all
        self.image_path = ""                 # the last image or grid drawn
        self.parameters = ""
        self.drawn_kind = ""                 # "image" or "grid"
        self.drawn: dict = {}                # the settings (and grid) it was drawn with
        self.error = ""
        self._sent = 0

    # -- the models --------------------------------------------------------------
    def set_base(self, path: str) -> list[dict]:
        self.base_path = str(path)
        self.adapters, self.loaded, self.active = {}, set(), []
        return [request("load_base", id="base", kind="image", path=self.base_path)]

    def add_adapter(self, name: str, path: str | Path) -> str:
        unique, n = name, 1
        while unique in self.adapters:
            n += 1
            unique = f"{name} ({n})"
        self.adapters[unique] = str(path)
        return unique

    def set_active(self, names: list[str]) -> None:
        self.active = [n for n in names if n in self.adapters]

    def _loads(self, names: list[str]) -> list[dict]:
        out = []
        for name in names:
            if name not in self.loaded:
                self.loaded.add(name)
                out.append(request("load_adapter", id=f"iload:{name}", name=name,
                                   path=self.adapters[name]))
        return out

    # -- drawing -----------------------------------------------------------------
    def _shared(self) -> dict:
        s = self.settings
        for side in ("width", "height"):
            if int(s[side]) % SIZE_MULTIPLE:
                raise GridProblem(f"{side.title()} {int(s[side])} is not a multiple of "
                                  f"{SIZE_MULTIPLE}; Stable Diffusion draws in steps of "
                                  f"{SIZE_MULTIPLE} pixels.")
        if s["sampler"] not in SAMPLERS:
            raise GridProblem(f"Unknown sampler {s['sampler']!r}.")
        return {"prompt": str(s["prompt"]), "negative_prompt": str(s["negative_prompt"]),
                "sampler": s["sampler"], "steps": int(s["steps"]), "cfg": float(s["cfg"]),
                "seed": int(s["seed"]), "width": int(s["width"]), "height": int(s["height"])}

    def _start(self) -> str:
        self._sent += 1
        self.pending, self.error, self.progress = f"i{self._sent}", "", (0, 0)
        return self.pending

    def generate(self) -> list[dict]:
        """Requests for one image with the ticked LoRAs at the strength; GridProblem
        for settings that cannot be drawn."""
        if self.pending or not self.base_path:
            return []
        shared = self._shared()
        weights = [float(self.settings["strength"])] * len(self.active)
        out = self._loads(self.active)
        rid = self._start()
        self.drawn = {**shared, "adapters": list(self.active), "weights": weights}
        self.drawn_kind = "image"
        return out + [request("generate", id=rid, **self.drawn)]

    def build_grid(self) -> Grid:
        spec = self.grid_spec
        if spec.mode == "strengths":
            if not self.active:
                raise GridProblem("Tick the checkpoints (LoRAs) that make the grid's rows.")
            strengths = parse_numbers(spec.strengths, float, "Strengths")
            grid = adapters_by_strengths(list(self.active), strengths)
            grid.row_labels = short_labels(grid.row_labels)
        else:
            weights = [float(self.settings["strength"])] * len(self.active)
            grid = prompts_by_seeds(parse_prompts(spec.prompts),
                                    parse_numbers(spec.seeds, int, "Seeds"))
            grid.cells = [[{**cell, "adapters": list(self.active), "weights": weights}
                           for cell in row] for row in grid.cells]
        if grid.count > MAX_CELLS:
            raise GridProblem(f"{grid.count} images is more than {MAX_CELLS}; use fewer rows "
                              "or columns.")
        return grid

    def grid(self) -> list[dict]:
        """Requests for the XY grid the builder describes; GridProblem when it cannot."""
        if self.pending or not self.base_path:
            return []
        shared = self._shared()
        grid = self.build_grid()
        used = [a for row in grid.cells for cell in row for a in cell.get("adapters", [])]
        out = self._loads(list(dict.fromkeys(used)))
        rid = self._start()
        self.progress = (0, grid.count)
        self.drawn = {**shared, "grid": {"mode": self.grid_spec.mode,
                                         "row_labels": grid.row_labels,
                                         "col_labels": grid.col_labels}}
        self.drawn_kind = "grid"
        return out + [request("grid", id=rid, cells=grid.cells, row_labels=grid.row_labels,
                              col_labels=grid.col_labels, **shared)]

    def stop(self) -> list[dict]:
        return [request("stop")] if self.pending else []

    # -- events ------------------------------------------------------------------
    def on_event(self, ev: dict) -> bool:
        """Apply one event; whether it changed what is shown."""
        kind, rid = ev["type"], ev.get("id")
        if kind == "error" and isinstance(rid, str) and rid.startswith("iload:"):
            self.loaded.discard(rid[len("iload:"):])
            self.error = _said(ev)
            return True
        if rid is None or rid != self.pending:
            if kind == "exited" and self.pending:
                self.pending = None
                self.error = EXIT_MESSAGES.get(ev.get("reason"), EXIT_MESSAGES["crashed"])
                return True
            return False
        if kind == "cell":
            self.progress = (int(ev.get("done", 0)), int(ev.get("total", 0)))
        elif kind == "image":
            self.pending, self.image_path = None, str(ev.get("path", ""))
            self.parameters = str(ev.get("parameters", ""))
        elif kind == "done":  # a drawing stopped before its end
            self.pending, self.error = None, "Stopped."
        elif kind == "error":
            self.pending = None
            self.error = self.error or _said(ev)
        else:
            return False
        return True

    # -- saved sessions ----------------------------------------------------------
    def to_record(self) -> dict:
        """What a saved image or grid holds (the PNG is saved beside it)."""
        return {"kind": self.drawn_kind or "image", "base": self.base_path,
                "adapters": dict(self.adapters), "active": list(self.active),
                "settings": dict(self.settings), "grid_spec": vars(self.grid_spec).copy(),
                "drawn": dict(self.drawn), "parameters": self.parameters}

    def from_record(self, record: dict) -> list[dict]:
        """Take a saved image or grid back; the requests that load its base."""
        out = self.set_base(str(record.get("base", "")))
        for name, path in dict(record.get("adapters", {})).items():
            self.adapters[str(name)] = str(path)
        self.set_active([str(n) for n in record.get("active", [])])
        self.settings.update({k: v for k, v in dict(record.get("settings", {})).items()
                              if k in self.settings})
        spec = dict(record.get("grid_spec", {}))
        self.grid_spec = GridSpec(**{k: str(v) for k, v in spec.items()
                                     if k in vars(GridSpec())})
        self.drawn_kind, self.drawn = str(record["kind"]), dict(record.get("drawn", {}))
        self.image_path, self.parameters = str(record.get("png", "")), str(record.get("parameters", ""))
        self.error = ""
        return out
