"""The image side of the playground: one Stable Diffusion pipeline loaded once (as the
engine loads it: a diffusers folder or a single-file checkpoint, nothing downloaded),
LoRAs added by name with diffusers' ``load_lora_weights(adapter_name=...)`` and mixed
with ``set_adapters`` (a strength of 0 is the base model), never by loading the base
again. Sampler names are A1111's (runs/xy_grid.py's SAMPLERS table)."""
from __future__ import annotations

import time
from collections.abc import Callable

import torch

from ..config.jobfile import JobFileError, read_job_toml
from ..config.parse import parse_job
from ..engine.core.control import EngineError
from ..engine.core.safetensors_io import read_metadata
from ..engine.image.export import to_diffusers
from ..engine.image.model import load_sd
from ..runs.adapter_sources import AdapterSource
from ..runs.xy_grid import SAMPLERS
from .errors import PlaygroundError
from .slots import AdapterSlots

META_ALPHA = ("lora_studio.alpha", "ss_network_alpha")
# Tensor names of LoRA Studio's own adapters (PEFT's LoRA, LoHa, LoKr).
OWN_MARKERS = (".lora_A.", ".hada_", ".lokr_")


def _scaled_for_diffusers(tensors: dict[str, torch.Tensor], alpha: float | None) -> dict:
    """LoRA Studio's own image adapters (PEFT names per component, no alpha tensors):
    diffusers reads them at scale 1 (alpha = rank), so lora_B carries alpha / rank."""
    if alpha is None:
        return tensors
    out = {}
    for key, value in tensors.items():
        if ".lora_B." in key:
            rank = value.shape[1]
            value = value * (alpha / rank)
        out[key] = value
    return out


class ImageBackend(AdapterSlots):
    kind = "image"

    def __init__(self, path: str):
        super().__init__()
        on_cuda = torch.cuda.is_available()
        job, _ = parse_job({"model": {"path": path},
                            "training": {"mixed_precision": "fp16" if on_cuda else "no"}})
        try:
            self.sd = load_sd(job)
        except EngineError as exc:
            raise PlaygroundError(exc.kind if exc.kind in ("config", "io") else "config",
                                  exc.message, exc.hint) from exc
        self.device = torch.device("cuda" if on_cuda else "cpu")
        self.pipe = self.sd.pipe.to(self.device)
        self.base = self.pipe.unet
        self.model_name = self.sd.info.path.name

    def _own_for_diffusers(self, source: AdapterSource) -> dict:
        """A LoRA Studio adapter as diffusers reads it: a run's through its job's network
        (each layer's own alpha / rank: LoCon's convs have the conv alpha); a loose file
        with the alpha in its header."""
        from safetensors.torch import load_file
        tensors = load_file(str(source.weights))
        if source.job_toml is None:
            metadata = read_metadata(source.weights)
            alpha = next((float(metadata[k]) for k in META_ALPHA if k in metadata), None)
            return _scaled_for_diffusers(tensors, alpha)
        try:
            network = read_job_toml(source.job_toml)[0].network
        except JobFileError as exc:
            raise PlaygroundError("config", str(exc), "The run's job.toml gives the "
                                                      "adapter's alpha; fix it.") from exc
        try:
            return to_diffusers(tensors, network)
        except EngineError as exc:
            raise PlaygroundError("config", f"{source.weights}: {exc.message}",
                                  "Draw with the run's kohya export (exports/) in ComfyUI or "
                                  "A1111; the Playground draws LoRA and LoCon networks.") from exc
        except ValueError as exc:  # a tensor no LoRA Studio network has
            raise PlaygroundError("config", f"{source.weights}: {exc}.",
                                  "Pick the run's final/ folder or one of its checkpoints, or a "
                                  "kohya / diffusers LoRA file.") from exc

    def load_adapter(self, name: str, source: AdapterSource) -> None:
        peft_name = self._new_slot(name)
        if source.kind == "file" and not any(k.startswith(("unet.", "text_encoder"))
                                             and any(m in k for m in OWN_MARKERS)
                                             for k in _keys(source)):
            what: str | dict = str(source.weights)   # kohya / diffusers: diffusers converts them
        else:
            try:
                what = self._own_for_diffusers(source)
            except PlaygroundError:
                self._forget(name)
                raise
        try:
            self.pipe.load_lora_weights(what, adapter_name=peft_name)
        except (ValueError, RuntimeError, KeyError, OSError) as exc:
            self._forget(name)
            raise PlaygroundError("config", f"{source.weights} does not load as a LoRA of this "
                                            f"model: {str(exc).splitlines()[0][:300]}",
                                  "Load the Stable Diffusion base the LoRA was trained on "
                                  "(SD 1.x, SD 2.x or SDXL).") from exc
        self.set_active(self.active, self.weights)

    def _forget(self, name: str) -> None:
        peft_name = self.peft_names.get(name)
        if peft_name and any(peft_name in names for names in self.pipe.get_list_adapters().values()):
            self.pipe.delete_adapters(peft_name)
        super()._forget(name)

    def set_active(self, names: list[str], weights: list[float]) -> None:
        self._choose(names, weights)
        if not self.peft_names:
            return
        if self.active:
            self.pipe.enable_lora()
            self.pipe.set_adapters([self.peft_names[n] for n in self.active], self.weights)
        else:
            self.pipe.disable_lora()

    def generate(self, req: dict, should_stop: Callable[[], bool]):
        """(PIL image, the settings used)."""
        if "adapters" in req:
            self.set_active(list(req["adapters"]), [float(w) for w in req.get("weights", [])])
        sampler = req.get("sampler", "Euler a")
        if sampler not in SAMPLERS:
            raise PlaygroundError("request", f"Unknown sampler {sampler!r}.",
                                  "One of: " + ", ".join(SAMPLERS))
        import diffusers
        cls_name, options = SAMPLERS[sampler]
        self.pipe.scheduler = getattr(diffusers, cls_name).from_config(self.pipe.scheduler.config,
                                                                       **options)
        size = self.pipe.unet.config.sample_size * self.pipe.vae_scale_factor
        settings = {"prompt": str(req.get("prompt", "")),
                    "negative_prompt": str(req.get("negative_prompt", "")),
                    "steps": int(req.get("steps", 25)), "sampler": sampler,
                    "cfg": float(req.get("cfg", 7.0)), "seed": int(req.get("seed", 0)),
                    "width": int(req.get("width") or size), "height": int(req.get("height") or size),
                    "model": self.model_name}

        def interrupt(pipe, step, timestep, kwargs):
            if should_stop():
                pipe._interrupt = True
            return kwargs

        started = time.perf_counter()
        image = self.pipe(settings["prompt"], negative_prompt=settings["negative_prompt"] or None,
                          num_inference_steps=settings["steps"], guidance_scale=settings["cfg"],
                          width=settings["width"], height=settings["height"],
                          generator=torch.Generator("cpu").manual_seed(settings["seed"]),
                          callback_on_step_end=interrupt).images[0]
        settings["seconds"] = round(time.perf_counter() - started, 4)
        return image, settings


def _keys(source: AdapterSource) -> list[str]:
    from safetensors import safe_open
    with safe_open(str(source.weights), framework="pt") as fh:
        return list(fh.keys())
