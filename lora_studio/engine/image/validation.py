"""The held-out images of an image run and how they are scored.

Diffusion's training loss is mostly noise: each step draws its own timestep and noise,
so the curve says little about the weights. The validation loss scores every held-out
image at the same timesteps, spread evenly over the schedule, with noise drawn from a
generator of its own that never changes: with unchanged weights two evaluations give
the same loss, so the curve moves only when the weights do. Captions are used as
written (no shuffle or dropout), images centred (no random crop or flip), and the loss
is the plain mean squared error (no noise offset, no min-SNR weighting), so runs with
different training settings can be compared."""
from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ...config.schema import JobConfig
from ...data.buckets import bucket_report
from ...runs.events import Emit, event
from ..core.control import EngineError
from .data import ImageSet, TrainImage, load_image_set, skipped_log

# Timesteps each held-out image is scored at: more is a smoother curve and a slower one.
EVAL_TIMESTEPS = 4


@dataclass(frozen=True)
class EvalItem:
    image: int        # index into the held-out images
    timestep: int
    noise_seed: int


def eval_timesteps(num_train_timesteps: int, n: int = EVAL_TIMESTEPS) -> list[int]:
    """``n`` timesteps at the centres of ``n`` equal slices of the schedule."""
    return [int((k + 0.5) * num_train_timesteps / n) for k in range(n)]


def eval_batches(images: tuple[TrainImage, ...], num_train_timesteps: int,
                 batch_size: int) -> list[tuple[EvalItem, ...]]:
    """Every (held-out image, timestep) once, in batches that never mix buckets. The
    noise seed depends only on the image's place and the timestep's, not on the run's
    seed or step, so runs of the same data are scored alike."""
    timesteps = eval_timesteps(num_train_timesteps)
    by_bucket: dict[tuple[int, int], list[EvalItem]] = {}
    for index, image in enumerate(images):
        by_bucket.setdefault(image.bucket, []).extend(
            EvalItem(index, t, index * len(timesteps) + k) for k, t in enumerate(timesteps))
    out = []
    for bucket in sorted(by_bucket):
        items = by_bucket[bucket]
        out += [tuple(items[i:i + batch_size]) for i in range(0, len(items), batch_size)]
    return out


def held_out_images(job: JobConfig, image_set: ImageSet, emit: Emit,
                    phase: Callable[..., None] = lambda *args: None
                    ) -> tuple[ImageSet, tuple[TrainImage, ...]]:
    """(training images, held-out images): the images of dataset.eval_path, or a seeded
    share of the dataset's own training images (dataset.eval_split: the same images every
    run, never trained on; regularisation images are never held out), or none."""
    ds = job.dataset
    if ds.eval_path.strip():
        eval_job = job.model_copy(update={"dataset": ds.model_copy(
            update={"path": ds.eval_path, "eval_path": "", "eval_split": 0.0, "reg_path": "",
                    "subsets": []})})
        phase("reading the eval images")
        try:
            found = load_image_set(eval_job, Path(ds.eval_path), phase)
        except EngineError as exc:
            raise EngineError("data", f"The eval images (dataset.eval_path): {exc.message}",
                              exc.hint) from None
        if found.skipped:
            emit(skipped_log(found.skipped))
        emit(event("log", level="info", message=f"Validation loss on {len(found.images)} "
                                                f"image(s) of '{ds.eval_path}'.",
                   eval_images=len(found.images)))
        return image_set, found.images
    if not ds.eval_split:
        return image_set, ()
    images = [im for im in image_set.images if not im.is_reg]
    n = max(1, round(len(images) * ds.eval_split))
    if n >= len(images):
        raise EngineError("data", f"Holding out {ds.eval_split:.0%} of {len(images)} image(s) "
                                  "leaves none to train on.",
                          "Lower dataset.eval_split, add images, or name a folder of held-out "
                          "images in dataset.eval_path.")
    picked = set(random.Random(job.training.seed).sample(range(len(images)), n))
    train = tuple(im for i, im in enumerate(images) if i not in picked) + \
        tuple(im for im in image_set.images if im.is_reg)
    emit(event("log", level="info", message=f"Held out {n} of {len(images)} image(s) for the "
                                            "validation loss; they are not trained on.",
               eval_images=n))
    report = bucket_report((im.bucket, im.repeats) for im in train)
    return (ImageSet(train, image_set.skipped, report),
            tuple(im for i, im in enumerate(images) if i in picked))
