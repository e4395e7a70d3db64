"""Libraries a run does not need, kept out of a process that runs one job.

peft, transformers and diffusers import bitsandbytes whenever it is installed, and
it imports torch's compiler stack: about 1 s of CPU and 45 MB before the first step
(benchmarks/vs_peers.py), for nothing unless the job quantises its base or uses an
8-bit optimizer. A ``None`` in ``sys.modules`` is Python's own way to say a module
cannot be imported: the libraries' availability checks (importlib.util.find_spec)
then see it as not installed. Only for a process that runs this one job and ends:
a library imported meanwhile keeps believing bitsandbytes is missing.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from ..config.schema import JobConfig

BITSANDBYTES = "bitsandbytes"
# The libraries that look for bitsandbytes when imported: once one of them is in, hiding
# it changes nothing, or makes this process disagree with itself.
ITS_USERS = ("transformers", "peft", "diffusers", "accelerate")
EIGHT_BIT_OPTIMIZERS = ("AdamW8bit", "PagedAdamW8bit", "Lion8bit")


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
    return (m.load_in_4bit or m.load_in_8bit or job.optimizer.optimizer in EIGHT_BIT_OPTIMIZERS
            or quantised_model(m.path))


def skip_unneeded(job: JobConfig) -> bool:
    """Hide bitsandbytes from this process when ``job`` does not need it and no library
    that looks for it is imported yet; returns whether it was hidden."""
    if needs_bitsandbytes(job) or BITSANDBYTES in sys.modules \
            or any(name in sys.modules for name in ITS_USERS):
        return False
    sys.modules[BITSANDBYTES] = None  # type: ignore[assignment]
    return True
