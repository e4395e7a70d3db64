"""Every numeric limit of the validation rules and of the schema, at the limit and one
step past it.

The rule limits below are worked out by hand from each rule's message and hint (not
read from validate.py), so a comparison that drifts by one (> for >=, a changed
constant, a wrong step count) fails here. Floats step with math.nextafter, the
smallest step there is.
"""
import math
from dataclasses import dataclass, field

import pytest

from lora_studio.config.fields import SPECS, get_value, set_in
from lora_studio.config.gpu import GIB, GpuFacts
from lora_studio.config.parse import parse_job
from lora_studio.config.validate import check
from tiny_models import gpt2_folder, llama_folder, sd_diffusers_folder, sdxl_single_file, tiny_png_bytes


def up(x: float) -> float:
    return math.nextafter(x, math.inf)


def down(x: float) -> float:
    return math.nextafter(x, -math.inf)


def _images(folder, n, captioned=True, name="img"):
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (folder / f"{name}{i}.png").write_bytes(tiny_png_bytes())
        if captioned:
            (folder / f"{name}{i}.txt").write_text("a photo of sks", encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    d = tmp_path_factory.mktemp("edges")
    records = d / "chat.jsonl"
    records.write_text("\n".join(f'{{"prompt": "q{i}", "response": "a{i}"}}' for i in range(20)),
                       encoding="utf-8")
    return {
        # llama: q_proj 64 wide, k_proj 32 (2 KV heads of 16), 2048 rotary positions
        "llama": llama_folder(d / "llama", positions=2048),
        "gpt2": gpt2_folder(d / "gpt2"),  # 128 absolute positions
        "sd15": sd_diffusers_folder(d / "sd15"),  # native 512, every layer 32 wide
        "sdxl": sdxl_single_file(d / "sdxl.safetensors"),  # native 1024
        "images": _images(d / "images", 4),
        "five_raw": _images(d / "five", 5, captioned=False),
        "six_raw": _images(d / "six", 6, captioned=False),
        "records": records,
        "runs": d / "runs",
    }


def build(world, kind: str, overrides: dict) -> dict:
    data = {"model": {"path": str(world["llama"]), "family": "text"},
            "dataset": {"path": str(world["records"])}} if kind == "text" else \
        {"model": {"path": str(world["sd15"]), "family": "sd1"}, "dataset": {"path": str(world["images"])}}
    data["output"] = {"output_dir": str(world["runs"])}
    for path, value in overrides.items():
        set_in(data, path, str(world[value[1:]]) if str(value).startswith("@") else value)
    return data


@dataclass
class Edge:
    rule: str
    kind: str
    at: dict            # the value at the limit: no finding of the rule (or `at_level`)
    past: dict          # one step past it: a finding of `level`
    level: str
    base: dict = field(default_factory=dict)  # set in both jobs
    at_level: str | None = None
    gpu: object = None  # the machine, or (at, past) where the limit is the machine's
    needle: str = ""    # text of the past finding that names the limit (so message, hint and rule agree)


GPUS_2 = GpuFacts("2x RTX 3090", 24 * GIB, supports_bf16=True, cuda_available=True, device_count=2)
CPU = GpuFacts()
SDXL = {"model.path": "@sdxl", "model.family": "sdxl", "dataset.resolution": 1024}
# 20 records, batch 3 -> 7 batches, accumulation 2 -> 4 optimizer steps an epoch, 3 epochs -> 12.
RUN_12 = {"training.batch_size": 3, "training.gradient_accumulation_steps": 2, "training.epochs": 3,
          "optimizer.lr_scheduler": "cosine"}
# 4 images x 3 repeats = 12 samples, batch 5 -> 3 steps an epoch, 2 epochs -> 6.
IMAGE_RUN_6 = {"dataset.repeats": 3, "training.batch_size": 5, "training.epochs": 2,
               "optimizer.lr_scheduler": "cosine"}
# 20 records over 2 processes of batch 3 -> 6 a step -> 4 steps an epoch, 2 epochs -> 8.
TWO_PROCESS_RUN_8 = {"training.batch_size": 3, "training.processes": 2, "training.epochs": 2,
                     "optimizer.lr_scheduler": "cosine"}

EDGES = [
    Edge("rank-exceeds-width", "text", {"network.rank": 64}, {"network.rank": 65}, "error",
         base={"network.target_modules": ["q_proj"]}, needle="q_proj width 64; valid 1..64"),
    Edge("rank-exceeds-width", "text", {"network.rank": 32}, {"network.rank": 33}, "error",
         needle="to 32 or less"),  # the default targets: the narrowest is k_proj
    Edge("rank-exceeds-width", "image", {"network.rank": 32}, {"network.rank": 33}, "error",
         needle="valid 1..32"),
    Edge("alpha-vs-rank", "text", {"network.alpha": 10.0}, {"network.alpha": up(10.0)}, "warning",
         base={"network.rank": 5}),
    Edge("alpha-vs-rank", "image", {"network.alpha": 2.0}, {"network.alpha": up(2.0)}, "warning",
         base={"network.rank": 1}),
    Edge("warmup-longer-than-run", "text", {"optimizer.lr_warmup_steps": 11},
         {"optimizer.lr_warmup_steps": 12}, "warning", base=RUN_12, needle="about 12 steps"),
    Edge("warmup-longer-than-run", "image", {"optimizer.lr_warmup_steps": 5},
         {"optimizer.lr_warmup_steps": 6}, "warning", base=IMAGE_RUN_6, needle="about 6 steps"),
    Edge("warmup-longer-than-run", "text", {"optimizer.lr_warmup_steps": 7},
         {"optimizer.lr_warmup_steps": 8}, "warning", base=TWO_PROCESS_RUN_8, needle="about 8 steps"),
    Edge("warmup-longer-than-run", "text", {"optimizer.lr_warmup_steps": 8},
         {"optimizer.lr_warmup_steps": 9}, "warning",
         base={"training.max_steps": 9, "optimizer.lr_scheduler": "cosine"}, needle="about 9 steps"),
    Edge("warmup-with-constant", "text", {"optimizer.lr_warmup_steps": 0},
         {"optimizer.lr_warmup_steps": 1}, "warning"),
    Edge("steps-and-epochs", "text", {"training.epochs": 1}, {"training.epochs": 2}, "warning",
         base={"training.max_steps": 10}),
    Edge("steps-and-epochs", "text", {"training.max_steps": 0}, {"training.max_steps": 1}, "warning",
         base={"training.epochs": 2}),
    Edge("batch-larger-than-dataset", "image", {"training.batch_size": 4}, {"training.batch_size": 5},
         "error", needle="to 4 or less"),
    Edge("batch-larger-than-dataset", "image", {"training.batch_size": 20}, {"training.batch_size": 21},
         "error", base={"dataset.repeats": 5}, needle="(20 samples"),
    Edge("batch-larger-than-dataset", "text", {"training.batch_size": 10}, {"training.batch_size": 11},
         "error", base={"training.processes": 2}, needle="to 10 or less"),
    Edge("accumulation-exceeds-dataset", "image", {"training.gradient_accumulation_steps": 2},
         {"training.gradient_accumulation_steps": 3}, "warning", base={"training.batch_size": 2},
         needle="to 2 or less"),
    # The loop saves a checkpoint at step N only while N < the last step, so an interval of
    # the whole run saves nothing before the end, as the message says.
    Edge("save-every-beyond-run", "text", {"output.save_every_n_steps": 11},
         {"output.save_every_n_steps": 12}, "warning", base=RUN_12, needle="below 12"),
    Edge("save-every-beyond-run", "text", {"output.save_every_n_steps": 0},
         {"output.save_every_n_steps": 1}, "warning", base={"training.max_steps": 1},
         needle="Set it to 0"),
    Edge("sample-every-beyond-run", "text", {"output.sample_every_n_steps": 11},
         {"output.sample_every_n_steps": 12}, "warning",
         base={**RUN_12, "output.sample_prompts": ["hi"]}, needle="below 12"),
    Edge("lr-very-high", "text", {"optimizer.learning_rate": 1e-3}, {"optimizer.learning_rate": up(1e-3)},
         "warning", needle="Learning rate"),
    Edge("lr-very-high", "image", {"optimizer.unet_lr": 1e-3}, {"optimizer.unet_lr": up(1e-3)},
         "warning", needle="UNet learning rate"),
    Edge("lr-very-high", "image", {"optimizer.text_encoder_lr": 1e-3},
         {"optimizer.text_encoder_lr": up(1e-3)}, "warning",
         base={"network.train_text_encoder": True}, needle="Text encoder learning rate"),
    Edge("caption-dropout-high", "image", {"dataset.caption_dropout_rate": down(0.5)},
         {"dataset.caption_dropout_rate": 0.5}, "warning"),
    Edge("caption-dropout-high", "image", {"dataset.caption_dropout_rate": down(1.0)},
         {"dataset.caption_dropout_rate": 1.0}, "error", at_level="warning"),
    Edge("noise-offset-high", "image", {"training.noise_offset": 0.2}, {"training.noise_offset": up(0.2)},
         "warning"),
    Edge("max-seq-past-positions", "text", {"dataset.max_seq_length": 2048},
         {"dataset.max_seq_length": 2049}, "warning", needle="to 2048 or less"),
    Edge("max-seq-past-positions", "text", {"dataset.max_seq_length": 128},
         {"dataset.max_seq_length": 129}, "error", base={"model.path": "@gpt2"}, needle="to 128 or less"),
    Edge("resolution-multiple-of-8", "image", {"dataset.resolution": 512}, {"dataset.resolution": 513},
         "error", needle="Use 512 or 576"),
    Edge("resolution-multiple-of-8", "image", {"dataset.resolution": 576}, {"dataset.resolution": 575},
         "error", needle="Use 512 or 576"),
    Edge("resolution-multiple-of-64", "image", {"dataset.resolution": 512}, {"dataset.resolution": 520},
         "warning", needle="Use 512 or 576"),
    Edge("resolution-multiple-of-64", "image", {"dataset.resolution": 576}, {"dataset.resolution": 568},
         "warning", needle="Use 512 or 576"),
    # 0.75x to 1.5x the native side is close enough.
    Edge("resolution-vs-model", "image", {"dataset.resolution": 384}, {"dataset.resolution": 383},
         "warning", needle="native 512"),
    Edge("resolution-vs-model", "image", {"dataset.resolution": 768}, {"dataset.resolution": 769},
         "warning", needle="native 512"),
    Edge("resolution-vs-model", "image", {"dataset.resolution": 768}, {"dataset.resolution": 767},
         "warning", base=SDXL, needle="native 1024"),
    Edge("resolution-vs-model", "image", {"dataset.resolution": 1536}, {"dataset.resolution": 1537},
         "warning", base={**SDXL, "dataset.max_bucket_reso": 2048}, needle="native 1024"),
    Edge("bucket-min-above-max", "image", {"dataset.min_bucket_reso": 512},
         {"dataset.min_bucket_reso": 513}, "error", base={"dataset.max_bucket_reso": 512}),
    Edge("resolution-outside-buckets", "image", {"dataset.max_bucket_reso": 512},
         {"dataset.max_bucket_reso": 511}, "warning", needle="to at least 512"),
    Edge("resolution-outside-buckets", "image", {"dataset.min_bucket_reso": 512},
         {"dataset.min_bucket_reso": 513}, "warning", needle="to at most 512"),
    Edge("bucket-step-multiple-of-8", "image", {"dataset.bucket_reso_steps": 64},
         {"dataset.bucket_reso_steps": 63}, "error"),
    Edge("bucket-step-multiple-of-8", "image", {"dataset.bucket_reso_steps": 24},
         {"dataset.bucket_reso_steps": 25}, "error"),
    Edge("keep-tokens-without-shuffle", "image", {"dataset.keep_tokens": 0}, {"dataset.keep_tokens": 1},
         "warning"),
    Edge("processes-vs-gpus", "text", {"training.processes": 2}, {"training.processes": 3}, "error",
         gpu=GPUS_2, needle="'GPUs' to 2"),
    Edge("processes-vs-gpus", "text", {"training.processes": 1}, {"training.processes": 2}, "warning",
         gpu=CPU),
    Edge("sdxl-low-vram", "image", {}, {}, "warning", base=SDXL,
         gpu=(GpuFacts("12 GiB", 12 * GIB, True, True, 1), GpuFacts("12 GiB less a byte", 12 * GIB - 1,
                                                                       True, True, 1))),
]


def _hits(world, edge: Edge, overrides: dict, gpu) -> list:
    _, findings = check(build(world, edge.kind, {**edge.base, **overrides}), gpu=gpu)
    return [f for f in findings if f.rule == edge.rule]


@pytest.mark.parametrize("edge", EDGES, ids=[f"{e.rule}-{i}" for i, e in enumerate(EDGES)])
def test_rule_limit(world, edge):
    gpu_at, gpu_past = edge.gpu if isinstance(edge.gpu, tuple) else (edge.gpu, edge.gpu)
    at = _hits(world, edge, edge.at, gpu_at)
    assert [f.level for f in at] == ([edge.at_level] if edge.at_level else []), [str(f) for f in at]
    past = _hits(world, edge, edge.past, gpu_past)
    assert [f.level for f in past] == [edge.level]
    assert edge.needle in past[0].message + " " + past[0].hint, str(past[0])


def test_uncaptioned_list_names_five_files_then_counts_the_rest(world):
    def message(folder):
        _, findings = check(build(world, "image", {"dataset.path": folder}))
        return next(f.message for f in findings if f.rule == "images-uncaptioned")
    assert message("@five_raw").endswith("img0.png, img1.png, img2.png, img3.png, img4.png.")
    assert message("@six_raw").endswith("img0.png, img1.png, img2.png, img3.png, img4.png and 1 more.")


NUMERIC = [s for s in SPECS.values() if s.kind in ("int", "float")]


def test_every_numeric_field_has_both_bounds():
    # The panel's spin boxes and the bounds tests below need both.
    for spec in NUMERIC:
        assert (spec.minimum, spec.exclusive_minimum) != (None, None), spec.path
        assert (spec.maximum, spec.exclusive_maximum) != (None, None), spec.path


def _limits():
    """(path, value that parses, value one step past it) for each bound of each field."""
    for spec in NUMERIC:
        step = 1 if spec.kind == "int" else None
        lower = (lambda x: x - step) if step else down
        higher = (lambda x: x + step) if step else up
        if spec.minimum is not None:
            yield spec.path, spec.minimum, lower(spec.minimum)
        if spec.exclusive_minimum is not None:
            yield spec.path, higher(spec.exclusive_minimum), spec.exclusive_minimum
        if spec.maximum is not None:
            yield spec.path, spec.maximum, higher(spec.maximum)
        if spec.exclusive_maximum is not None:
            yield spec.path, lower(spec.exclusive_maximum), spec.exclusive_maximum


LIMITS = list(_limits())


@pytest.mark.parametrize("path,inside,outside", LIMITS, ids=[f"{p}={v}" for p, v, _ in LIMITS])
def test_schema_bound(path, inside, outside):
    data: dict = {}
    set_in(data, path, inside)
    job, findings = parse_job(data)
    assert findings == [] and get_value(job, path) == inside
    set_in(data, path, outside)
    job, findings = parse_job(data)
    assert [(f.path, f.level, f.rule) for f in findings] == [(path, "error", "schema-bounds")]
    assert get_value(job, path) == SPECS[path].default
