"""What an adapter was trained from, as safetensors header strings, the same for
every family."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ... import __version__
from ...config.model_info import looks_like_hub_id
from ...config.schema import SCHEMA_VERSION, JobConfig

META_PREFIX = "lora_studio."


def shareable_model_name(source: str) -> str:
    """A Hub id as it is, a local model by its file or folder name only: the header of
    a LoRA people share must not carry the trainer's folders (and user name)."""
    if looks_like_hub_id(source) and not Path(source).exists():
        return source
    return Path(source).name


def training_metadata(job: JobConfig, *, family: str, steps: int, dataset_size: int,
                      base_model: str) -> dict[str, str]:
    """What the adapter was trained from, as safetensors header strings."""
    values: dict[str, Any] = {
        "base_model": shareable_model_name(base_model), "family": family,
        "rank": job.network.rank,
        "alpha": f"{job.network.alpha:g}", "steps": steps, "dataset_size": dataset_size,
        "learning_rate": f"{job.optimizer.learning_rate:g}", "seed": job.training.seed,
        "output_name": job.output.output_name, "schema_version": SCHEMA_VERSION,
        "version": __version__,
    }
    return {"format": "pt", **{META_PREFIX + k: str(v) for k, v in values.items()}}
