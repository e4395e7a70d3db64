"""WD14-style taggers (SmilingWolf's ``wd-*-tagger-v3``): ``model.onnx`` takes a batch
of NHWC float32 BGR images, 0..255, padded square on white and resized to the model's
side (448); it outputs one sigmoid probability per row of ``selected_tags.csv``
(tag_id, name, category, count; category 0 general, 4 character, 9 rating). Tags are
picked as SmilingWolf's own demo picks them."""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import HintedError

GENERAL, CHARACTER, RATING = 0, 4, 9
# Tags that are faces drawn with underscores: their underscores are the picture, not
# spaces (the list SmilingWolf's tagger demo keeps as they are).
KAOMOJI = frozenset({"0_0", "(o)_(o)", "+_+", "+_-", "._.", "<o>_<o>", "<|>_<|>", "=_=", ">_<",
                     "3_3", "6_9", ">_o", "@_@", "^_^", "o_o", "u_u", "x_x", "|_|", "||_||"})
ONNX_EXTRA = 'pip install "lora-studio[caption]"'


def shown_name(name: str, underscores_to_spaces: bool) -> str:
    return name.replace("_", " ") if underscores_to_spaces and name not in KAOMOJI else name


@dataclass(frozen=True)
class TagList:
    names: tuple[str, ...]
    categories: tuple[int, ...]


def read_tag_list(path: Path) -> TagList:
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    except (OSError, UnicodeDecodeError) as exc:
        raise HintedError("tags", f"Cannot read the tag list '{path}': {exc}.",
                          "Download the tagger again; selected_tags.csv comes with model.onnx.")
    if not rows or not {"name", "category"} <= set(rows[0]):
        raise HintedError("tags", f"'{path}' has no 'name' and 'category' columns.",
                          "Use the selected_tags.csv of the same tagger as model.onnx.")
    try:
        return TagList(tuple(r["name"] for r in rows), tuple(int(r["category"]) for r in rows))
    except ValueError as exc:
        raise HintedError("tags", f"'{path}' has a category that is not a number ({exc}).",
                          "Use the selected_tags.csv of the same tagger as model.onnx.")


def square_on_white(img: Image.Image, side: int) -> np.ndarray:
    """One image as the tagger takes it: (side, side, 3) float32 BGR, padded to a
    square on white around its centre, then resized (bicubic)."""
    longest = max(img.size)
    canvas = Image.new("RGB", (longest, longest), (255, 255, 255))
    canvas.paste(img, ((longest - img.width) // 2, (longest - img.height) // 2))
    if longest != side:
        canvas = canvas.resize((side, side), Image.BICUBIC)
    return np.asarray(canvas, dtype=np.float32)[:, :, ::-1]


class Tagger:
    """prepare(image) -> array (any thread); predict(array) -> caption text."""

    def __init__(self, folder: Path, general_threshold: float = 0.35,
                 character_threshold: float = 0.85, exclude=(), underscores_to_spaces: bool = True,
                 include_rating: bool = False, providers: list[str] | None = None):
        try:
            import onnxruntime as ort
        except ImportError:
            raise HintedError("extra", "Tagging needs onnxruntime, which is not installed.",
                              f"Install it with: {ONNX_EXTRA}") from None
        self.tags = read_tag_list(folder / "selected_tags.csv")
        available = ort.get_available_providers()
        wanted = providers or [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider")
                               if p in available]
        try:
            self.session = ort.InferenceSession(str(folder / "model.onnx"), providers=wanted)
        except Exception as exc:  # onnxruntime raises its own exception types
            raise HintedError("model", f"'{folder / 'model.onnx'}' cannot be loaded: {exc}",
                              "Download the tagger again; the file may be cut short.") from exc
        model_input = self.session.get_inputs()[0]
        shape = model_input.shape
        if len(shape) != 4 or shape[3] != 3:
            raise HintedError("model", f"'{folder / 'model.onnx'}' takes {shape}, not NHWC "
                              "images: it is not a WD14 tagger.", "Choose a wd-*-tagger model.")
        self.side = shape[1] if isinstance(shape[1], int) else 448
        self.input_name = model_input.name
        self.output_name = self.session.get_outputs()[0].name
        self.general_threshold = general_threshold
        self.character_threshold = character_threshold
        self.underscores = underscores_to_spaces
        self.include_rating = include_rating
        self.excluded = {shown_name(t.strip(), True).lower() for t in exclude if t.strip()}

    def prepare(self, img: Image.Image) -> np.ndarray:
        return square_on_white(img, self.side)

    def probabilities(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run([self.output_name], {self.input_name: batch})[0]

    def predict(self, prepared: np.ndarray) -> str:
        return self.caption(self.probabilities(prepared[None])[0])

    def caption(self, probs: np.ndarray) -> str:
        """Character tags, then general tags, each most likely first (the rating first
        when asked for)."""
        if len(probs) != len(self.tags.names):
            raise HintedError("tags", f"The model gives {len(probs)} scores but its tag list "
                                      f"has {len(self.tags.names)} tags.",
                              "Use the selected_tags.csv that came with this model.onnx.")
        cats = np.asarray(self.tags.categories)
        picked: list[str] = []
        if self.include_rating and (cats == RATING).any():
            ratings = np.flatnonzero(cats == RATING)
            picked.append(self.tags.names[ratings[np.argmax(probs[ratings])]])
        for category, threshold in ((CHARACTER, self.character_threshold),
                                    (GENERAL, self.general_threshold)):
            hits = np.flatnonzero((cats == category) & (probs > threshold))
            picked += [self.tags.names[i] for i in hits[np.argsort(-probs[hits], kind="stable")]]
        shown = [shown_name(name, self.underscores) for name in picked]
        return ", ".join(t for t in shown if shown_name(t, True).lower() not in self.excluded)
