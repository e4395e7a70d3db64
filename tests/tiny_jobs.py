"""Image jobs for engine tests: two steps of a rank-4 LoRA on the shipped
resources/tiny-sd model at 64 px, on a dataset folder with settings of the test's own."""
from __future__ import annotations

from pathlib import Path

from lora_studio.config.parse import parse_job

TINY_SD = Path(__file__).resolve().parents[1] / "resources" / "tiny-sd"


def tiny_sd_job(dataset: Path, **settings):
    """``settings``: dataset.* values over these; the job has no error finding."""
    data = {"model": {"path": str(TINY_SD)},
            "dataset": {"path": str(dataset), "resolution": 64, "min_bucket_reso": 64,
                        "max_bucket_reso": 128, **settings},
            "network": {"rank": 4, "alpha": 8.0}, "optimizer": {"learning_rate": 1e-2},
            "training": {"max_steps": 2, "batch_size": 2}}
    job, findings = parse_job(data)
    assert not [f for f in findings if f.level == "error"], findings
    return job
