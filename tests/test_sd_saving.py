"""Saving and samples of image runs on the tiny pipeline: checkpoints every N epochs,
the last K kept, each saved epoch's LoRA as a kohya file, the exports' save precision,
samples every N epochs, and kohya's per-prompt sample options honoured."""
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open

from lora_studio.config.jobfile import write_job_toml
from lora_studio.engine.core.checkpoint import COMPLETE, load_checkpoint, prune_checkpoints, write_best
from lora_studio.engine.core.loop import LoopSpec, epoch_files_after, samples_after, saves_after
from lora_studio.engine.exports import export_run
from lora_studio.engine.image.export import kohya_name
from test_sd_engine import DEMO_IMAGES, PROMPT, TINY_SD, images, make_job, run_dir, train_sd

NAME = "tiny lora ü"


def four_images(tmp_path):
    """Four images, one repeat: batch 2 makes 2 steps an epoch."""
    folder = tmp_path / "data" / "1_four"
    folder.mkdir(parents=True)
    for path in sorted((DEMO_IMAGES / "4_demo").iterdir())[:8]:  # 4 images + captions
        shutil.copy(path, folder / path.name)
    return str(tmp_path / "data")


def steps_of(events, kind):
    return [e["step"] for e in events if e["type"] == kind]


@pytest.fixture(scope="module")
def three_epochs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("epochs")
    job = make_job(TINY_SD, dataset={"path": four_images(tmp), "enable_bucket": False},
                   training={"max_steps": 0, "epochs": 3},
                   output={"save_every_n_epochs": 1, "save_last_n": 2, "sample_every_n_epochs": 2,
                           "sample_prompts": [f"{PROMPT} --s 1"]})
    events = []
    run = run_dir(tmp)
    result = train_sd(job, run, events.append, lambda: False)
    return job, run, result, events


def test_every_epoch_is_saved_and_the_last_two_checkpoints_are_kept(three_epochs):
    job, run, result, events = three_epochs
    assert steps_of(events, "progress") == [1, 2, 3, 4, 5, 6]
    assert steps_of(events, "checkpoint") == [2, 4, 6]       # epochs 1, 2 and the final one
    kept = sorted(p.name for p in run.checkpoints.iterdir())
    assert kept == ["step-000004", "step-000006"]
    assert all((run.checkpoints / name / COMPLETE).exists() for name in kept)


def test_each_saved_epoch_has_its_own_kohya_file_that_diffusers_loads(three_epochs):
    from diffusers import StableDiffusionPipeline

    job, run, result, events = three_epochs
    files = sorted(p.name for p in run.exports.glob("*.safetensors"))
    # as kohya: the last epoch is the run's own export, not a numbered file
    assert files == [f"{NAME}-000001.safetensors", f"{NAME}-000002.safetensors", f"{NAME}.safetensors"]
    # epoch 2's file holds the weights of its checkpoint (step 4)
    trained = load_checkpoint(run.checkpoints / "step-000004").trainable
    key = next(k for k in trained if k.endswith(".lora_A.weight"))
    with safe_open(str(run.exports / f"{NAME}-000002.safetensors"), framework="pt") as fh:
        down = fh.get_tensor(kohya_name(key[: -len(".lora_A.weight")], "sd1") + ".lora_down.weight")
        assert fh.metadata()["ss_epoch"] == "2"
    assert torch.equal(down, trained[key])
    pipe = StableDiffusionPipeline.from_pretrained(TINY_SD)
    pipe.set_progress_bar_config(disable=True)
    drawn = {"base": images(pipe)}
    for epoch in (1, 2):
        pipe.load_lora_weights(str(run.exports), weight_name=f"{NAME}-{epoch:06d}.safetensors",
                               adapter_name=f"epoch{epoch}")
        pipe.set_adapters([f"epoch{epoch}"])
        drawn[epoch] = images(pipe)
    assert np.abs(drawn[1] - drawn["base"]).max() > 1e-3
    assert np.abs(drawn[2] - drawn[1]).max() > 1e-3


def test_samples_every_two_epochs_and_after_the_last_step(three_epochs):
    job, run, result, events = three_epochs
    assert steps_of(events, "sample") == [4, 6]


def test_a_resumed_run_prunes_as_it_goes_and_keeps_what_it_resumed_from(tmp_path):
    job = make_job(TINY_SD, dataset={"path": four_images(tmp_path), "enable_bucket": False},
                   training={"max_steps": 0, "epochs": 3},
                   output={"save_every_n_epochs": 1, "save_last_n": 1})
    run = run_dir(tmp_path)
    events = []
    train_sd(job, run, events.append, lambda: len(steps_of(events, "progress")) >= 3)
    # the cancelled run's own checkpoint (step 3) pushed epoch 1's (step 2) out
    assert [p.name for p in run.checkpoints.iterdir()] == ["step-000003"]
    resumed = []
    train_sd(job, run, resumed.append, lambda: False, resume=run.checkpoints / "step-000003")
    assert steps_of(resumed, "progress") == [4, 5, 6]
    assert [p.name for p in run.checkpoints.iterdir()] == ["step-000006"]


def test_save_precision_fp16_is_what_the_run_exports(tmp_path):
    job = make_job(TINY_SD, training={"max_steps": 2}, output={"save_precision": "fp16"})
    run = run_dir(tmp_path)
    result = train_sd(job, run, lambda ev: None, lambda: False)
    for done in result.exports:
        with safe_open(str(done.path), framework="pt") as fh:
            assert {fh.get_tensor(k).dtype for k in fh.keys()} == {torch.float16}, done.format
    with safe_open(str(run.final / "adapter.safetensors"), framework="pt") as fh:
        assert {fh.get_tensor(k).dtype for k in fh.keys()} == {torch.float32}   # as trained
    # exporting again without --precision gives the same file: the job's precision
    kohya = next(d for d in result.exports if d.format == "kohya")
    write_job_toml(job, run.job_toml)
    assert [d.path for d in export_run(run.root, "kohya")] == [kohya.path]


def test_sample_prompt_options_are_honoured(tmp_path):
    base = f"{PROMPT} --w 96 --h 128 --d 5 --s 2 --ss ddim"
    lines = [base, base, base.replace("--d 5", "--d 6"), f"{base} --n blurry, green",
             f"{base} --l 1", base.replace("--s 2", "--s 3"), base.replace("--ss ddim", "--ss euler_a")]
    job = make_job(TINY_SD, training={"max_steps": 1},
                   output={"sample_every_n_steps": 1, "sample_prompts": lines})
    events = []
    result = train_sd(job, run_dir(tmp_path), events.append, lambda: False)
    paths = [e["path"] for e in events if e["type"] == "sample"]
    assert [e["prompt"] for e in events if e["type"] == "sample"] == lines
    drawn = []
    for path in paths:
        with Image.open(path) as image:
            assert image.size == (96, 128)   # the job's resolution is 64
            drawn.append(np.asarray(image.convert("RGB"), dtype=np.float32))
            parameters = image.info["parameters"]
    assert "Steps: 2, Sampler: Euler a, CFG scale: 7.5, Seed: 5, Size: 96x128" in parameters
    same, *others = drawn[1:]
    assert np.array_equal(drawn[0], same)                       # same seed: same image
    for i, other in enumerate(others):                          # seed, negative, CFG, steps, sampler
        assert np.abs(other - drawn[0]).max() > 1, lines[i + 2]
    with Image.open(paths[3]) as image:
        assert image.info["parameters"].splitlines()[1] == "Negative prompt: blurry, green"
    pipe = result.trainee.base.pipe
    assert type(pipe.scheduler).__name__ == "DDIMScheduler"    # the model's own again


def _folders(root, steps):
    for step in steps:
        folder = root / f"step-{step:06d}"
        folder.mkdir(parents=True)
        (folder / COMPLETE).write_text("")


def test_pruning_keeps_the_newest_the_best_and_any_later_ones(tmp_path):
    root = tmp_path / "checkpoints"
    _folders(root, [2, 4, 6, 8, 10, 12])
    (root / "step-000014").mkdir()          # being written: not complete, not touched
    write_best(root, 4, 0.1)
    # a run resumed from step 8 has just saved step 8 again; 10 and 12 are the old run's
    removed = prune_checkpoints(root, 2, 8)
    assert [p.name for p in removed] == ["step-000002"]
    left = sorted(p.name for p in root.iterdir() if p.is_dir())
    assert left == ["step-000004", "step-000006", "step-000008", "step-000010", "step-000012",
                    "step-000014"]
    assert prune_checkpoints(root, 0, 12) == []             # 0 keeps them all
    prune_checkpoints(root, 1, 12)
    assert sorted(p.name for p in root.iterdir() if p.is_dir()) == [
        "step-000004", "step-000012", "step-000014"]


@pytest.mark.parametrize("spec,saves,epoch_files,samples", [
    # 3 steps an epoch, 9 steps: epoch ends at 3 and 6; the last step has the final save
    (LoopSpec(9, 3, save_every_n_epochs=1), [3, 6], [3, 6], []),
    (LoopSpec(9, 3, save_every_n_epochs=2, save_every_n_steps=4), [4, 6, 8], [6], []),
    (LoopSpec(9, 3, sample_every_n_epochs=2), [], [], [6, 9]),
    (LoopSpec(9, 3, sample_every_n_steps=4, sample_every_n_epochs=1), [], [], [3, 4, 6, 8, 9]),
])
def test_what_happens_after_each_step(spec, saves, epoch_files, samples):
    steps = range(1, spec.total_steps + 1)
    assert [s for s in steps if saves_after(spec, s)] == saves
    assert [s for s in steps if epoch_files_after(spec, s)] == epoch_files
    assert [s for s in steps if samples_after(spec, s)] == samples


def test_an_imported_kohya_config_saves_and_samples_as_it_says(tmp_path):
    from lora_studio.config.kohya import convert_kohya

    imported = convert_kohya({
        "save_every_n_epochs": 1, "save_last_n_epochs": 1, "save_precision": "fp16",
        "sample_every_n_epochs": 1, "sample_sampler": "k_euler",
        "sample_prompts": f"# a comment\n{PROMPT} --n blurry --w 96 --h 64 --s 1 --d 3\n",
        "epoch": 2, "train_batch_size": 2})
    assert not imported.unsupported_set
    data = imported.data
    job = make_job(TINY_SD, dataset={"path": four_images(tmp_path), "enable_bucket": False},
                   training={**data["training"], "max_steps": 0}, output=data["output"])
    events = []
    run = run_dir(tmp_path)
    train_sd(job, run, events.append, lambda: False)
    assert [p.name for p in run.checkpoints.iterdir()] == ["step-000004"]
    epoch_file = run.exports / f"{NAME}-000001.safetensors"
    with safe_open(str(epoch_file), framework="pt") as fh:
        assert {fh.get_tensor(k).dtype for k in fh.keys()} == {torch.float16}
    samples = [e["path"] for e in events if e["type"] == "sample"]
    assert steps_of(events, "sample") == [2, 4]
    with Image.open(samples[0]) as image:
        assert image.size == (96, 64)
        assert "Sampler: Euler, CFG scale: 7.5, Seed: 3" in image.info["parameters"]
