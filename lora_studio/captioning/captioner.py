"""Natural-language captioners through transformers: BLIP (an optional start of the
caption as its prompt) and Florence-2 (a task token such as ``<DETAILED_CAPTION>``),
picked by the model folder's config.json."""
from __future__ import annotations

from pathlib import Path

from PIL import Image

from ..errors import HintedError
from ..runs.caption_models import TASKS, model_type


class Captioner:
    """prepare(image) -> model inputs (any thread); predict(inputs) -> caption text."""

    def __init__(self, folder: Path, task: str = "", max_new_tokens: int = 60,
                 device: str = "auto"):
        import torch
        import transformers
        self.kind = model_type(folder)
        if self.kind not in TASKS:
            raise HintedError("model", f"'{folder}' is a {self.kind} model; captioning knows "
                                       f"{' and '.join(sorted(TASKS))} models.",
                              "Choose a BLIP or Florence-2 model (Florence-2 from the "
                              "florence-community repositories, which transformers loads "
                              "without remote code).")
        self.task = task if task or self.kind != "florence2" else TASKS["florence2"][0]
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        dtype = torch.float16 if self.device.type == "cuda" else torch.float32
        model_class = {"blip": transformers.BlipForConditionalGeneration,
                       "florence2": transformers.Florence2ForConditionalGeneration}[self.kind]
        try:
            self.processor = transformers.AutoProcessor.from_pretrained(folder, local_files_only=True)
            self.model = model_class.from_pretrained(folder, local_files_only=True, dtype=dtype)
        except (OSError, ValueError) as exc:
            raise HintedError("model", f"'{folder}' cannot be loaded as a {self.kind} model: "
                                       f"{str(exc).splitlines()[0]}",
                              "Download the model again, whole.") from exc
        self.model.to(self.device).eval()
        self.dtype = dtype
        self.max_new_tokens = max_new_tokens
        self._torch = torch

    def prepare(self, img: Image.Image):
        return self.processor(images=img, text=self.task or None, return_tensors="pt")

    def predict(self, prepared) -> str:
        """The caption, special tokens dropped: BLIP's starts with its prompt, Florence-2's
        caption tasks answer in plain text (what its post-processor leaves of them)."""
        inputs = {k: (v.to(self.device, self.dtype) if v.is_floating_point() else v.to(self.device))
                  for k, v in prepared.items()}
        with self._torch.inference_mode():
            ids = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens)
        text = self.processor.batch_decode(ids, skip_special_tokens=True)[0]
        return " ".join(text.split())
