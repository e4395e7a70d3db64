"""Libraries a run does not need, kept out of a process that runs one job.

peft, transformers and diffusers import these whenever they are installed:
bitsandbytes (and with it torch's compiler stack), Hugging Face's hub kernels and
onnxruntime. Together about 1.5 s of CPU and 60-100 MB before the first step on the
tiny models (benchmarks/vs_peers.py), for nothing unless the job quantises its base
or uses an 8-bit optimizer (bitsandbytes). A ``None`` in ``sys.modules`` is Python's
own way to say a module cannot be imported: the libraries' availability checks
(importlib.util.find_spec) then see it as not installed. Only for a process that runs
this one job and ends: a library imported meanwhile keeps believing they are missing.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from ..config.optimizers import BITSANDBYTES_OPTIMIZERS
from ..config.schema import JobConfig

BITSANDBYTES = "bitsandbytes"
KERNELS = "kernels"
# transformers kernelizes every model it loads with kernels from the Hub (code fetched at
# run time) unless this says no; LoRA Studio downloads nothing while training.
HUB_KERNELS_ENV = "USE_HUB_KERNELS"
# Never used by a training run: why, by module.
NEVER_USED = {
    KERNELS: "Hub kernels are code downloaded at run time (off: USE_HUB_KERNELS=NO)",
    "onnxruntime": "ONNX exports and their check run in lora-studio export, a process of "
                   "their own",
}
# The libraries that look for those when imported: once one of them is in, hiding them
# changes nothing, or makes this process disagree with itself.
THEIR_USERS = ("transformers", "peft", "diffusers", "accelerate")


def quantised_model(path: str) -> bool:
    """Whether the model folder's configs name a quantisation (a pre-quantised base
    loads through bitsandbytes whatever the job says); True when it cannot tell."""
    folder = Path(path)
    if folder.is_file():
        return False  # a single-file checkpoint: never bitsandbytes
    if not folder.is_dir():
        return True   # a Hub id in the cache: not worth resolving here
    configs = [folder / "config.json", *folder.glob("*/config.json")]
    for config in configs:
        try:
            if "quantization_config" in json.loads(config.read_text(encoding="utf-8")):
                return True
        except FileNotFoundError:
            continue
        except (OSError, ValueError):
            return True
    return False


def needs_bitsandbytes(job: JobConfig) -> bool:
    m = job.model
    return (m.load_in_4bit or m.load_in_8bit or job.optimizer.optimizer in BITSANDBYTES_OPTIMIZERS
            or quantised_model(m.path))


def unneeded(job: JobConfig) -> list[str]:
    return [*NEVER_USED, *([] if needs_bitsandbytes(job) else [BITSANDBYTES])]


def skip_unneeded(job: JobConfig) -> list[str]:
    """Hide from this process the modules ``job`` does not need, when no library that
    looks for them is imported yet; returns those hidden."""
    if any(name in sys.modules for name in THEIR_USERS):
        return []
    hidden = [name for name in unneeded(job) if name not in sys.modules]
    if os.environ.get(HUB_KERNELS_ENV) is None:
        os.environ[HUB_KERNELS_ENV] = "NO"
    elif KERNELS in hidden:  # the user's own setting: theirs to keep
        hidden.remove(KERNELS)
    for name in hidden:
        sys.modules[name] = None  # type: ignore[assignment]
    return hidden
