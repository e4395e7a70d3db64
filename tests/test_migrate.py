from pathlib import Path

import pytest
import tomli_w

from lora_studio.config.fields import get_value
from lora_studio.config.migrate import V1_CONVERTED, V1_FAMILIES, V1_KEYS, migrate
from lora_studio.config.presets import load_preset
from lora_studio.config.schema import SCHEMA_VERSION, JobConfig

DATA = Path(__file__).parent / "data"


def test_v1_preset_file_loads_as_current_schema():
    preset = load_preset(DATA / "preset-v1.toml")
    job = preset.job
    assert (job.model.path, job.model.family) == ("models/v1-5-pruned.safetensors", "sd1")
    assert job.dataset.path == "datasets/anna"
    assert job.dataset.resolution == 640  # 512x768 has about the area of 640x640
    assert (job.network.rank, job.network.alpha) == (32, 16.0)
    assert job.network.target_modules == ["to_q", "to_k", "to_v"]
    assert (job.optimizer.optimizer, job.optimizer.text_encoder_lr) == ("AdamW8bit", 5e-5)
    assert (job.training.epochs, job.training.batch_size, job.training.mixed_precision) == (12, 2, "fp16")
    assert job.output.sample_prompts == ["anna, portrait", "anna, full body"]
    assert preset.meta.vram_class == "8GB" and preset.meta.model_family == "sd1"
    assert preset.meta.schema_version == SCHEMA_VERSION
    by_rule = {}
    for f in preset.findings:
        by_rule.setdefault(f.rule, []).append(f)
    summary = by_rule["migrated"][0]
    assert summary.level == "info" and "network_dim → network.rank" in summary.message
    dropped = by_rule["migrate-dropped"]
    assert [(f.path, f.level) for f in dropped] == [("train.clip_skip", "warning")]
    assert not [f for f in preset.findings if f.level == "error"]


def test_migrate_leaves_input_alone_and_reports_bad_values():
    doc = {"meta": {"schema_version": 1}, "train": {"resolution": "wide", "model_type": "sd9",
                                                     "network_dim": 8}}
    new, notes = migrate(doc, 1)
    assert "train" in doc and "train" not in new  # input unchanged
    assert new["network"] == {"rank": 8} and new["meta"]["schema_version"] == SCHEMA_VERSION
    bad = {f.path: f for f in notes if f.rule == "migrate-value"}
    assert set(bad) == {"dataset.resolution", "model.family"}
    assert "'wide'" in bad["dataset.resolution"].message


def test_migrate_current_version_is_a_no_op_and_unknown_versions_refuse():
    doc = {"network": {"rank": 4}}
    assert migrate(doc, SCHEMA_VERSION) == (doc, [])
    with pytest.raises(ValueError, match="schema version 0"):
        migrate(doc, 0)


def test_preset_without_version_but_with_train_table_is_read_as_v1(tmp_path):
    path = tmp_path / "old.toml"
    path.write_text('[train]\nnetwork_dim = 12\n', encoding="utf-8")
    preset = load_preset(path)
    assert preset.job.network.rank == 12
    assert any(f.path == "meta.schema_version" and "version 1" in f.message for f in preset.findings)


# Hand-written on purpose: deriving it from V1_KEYS would let a wrong entry there pass.
# v1 [train] key: (value written by LoRA Studio 0.0.x, schema 2 path, value expected there).
# Values differ from the schema 2 defaults so a key that is dropped cannot pass as "kept".
V1_TRAIN = {
    "pretrained_model": ("models/base.safetensors", "model.path", "models/base.safetensors"),
    "load_in_4bit": (True, "model.load_in_4bit", True),
    "model_type": ("sdxl", "model.family", "sdxl"),
    "train_data_dir": ("datasets/cats", "dataset.path", "datasets/cats"),
    "caption_extension": (".caption", "dataset.caption_extension", ".caption"),
    "resolution": ("768,768", "dataset.resolution", 768),
    "enable_bucket": (False, "dataset.enable_bucket", False),
    "shuffle_caption": (True, "dataset.shuffle_caption", True),
    "keep_tokens": (3, "dataset.keep_tokens", 3),
    "flip_aug": (True, "dataset.flip_aug", True),
    "cache_latents": (False, "dataset.cache_latents", False),
    "max_seq_len": (3072, "dataset.max_seq_length", 3072),
    "network_dim": (12, "network.rank", 12),
    "network_alpha": (6.5, "network.alpha", 6.5),
    "network_dropout": (0.25, "network.dropout", 0.25),
    "target_modules": ("to_q, to_k,,to_out.0 ", "network.target_modules", ["to_q", "to_k", "to_out.0"]),
    "train_text_encoder": (True, "network.train_text_encoder", True),
    "optimizer_type": ("Lion8bit", "optimizer.optimizer", "Lion8bit"),
    "learning_rate": (3e-4, "optimizer.learning_rate", 3e-4),
    "unet_lr": (2e-4, "optimizer.unet_lr", 2e-4),
    "text_encoder_lr": (5e-5, "optimizer.text_encoder_lr", 5e-5),
    "lr_scheduler": ("polynomial", "optimizer.lr_scheduler", "polynomial"),
    "lr_warmup_steps": (77, "optimizer.lr_warmup_steps", 77),
    "max_grad_norm": (0.5, "optimizer.max_grad_norm", 0.5),
    "max_train_epochs": (9, "training.epochs", 9),
    "max_train_steps": (1234, "training.max_steps", 1234),
    "train_batch_size": (3, "training.batch_size", 3),
    "gradient_accumulation_steps": (5, "training.gradient_accumulation_steps", 5),
    "mixed_precision": ("bf16", "training.mixed_precision", "bf16"),
    "gradient_checkpointing": (True, "training.gradient_checkpointing", True),
    "seed": (31337, "training.seed", 31337),
    "noise_offset": (0.07, "training.noise_offset", 0.07),
    "min_snr_gamma": (5.0, "training.min_snr_gamma", 5.0),
    "output_name": ("cat_lora", "output.output_name", "cat_lora"),
    "output_dir": ("out/runs", "output.output_dir", "out/runs"),
    "save_every_n_steps": (250, "output.save_every_n_steps", 250),
    "sample_every_n_steps": (125, "output.sample_every_n_steps", 125),
    "sample_prompts": ("a cat\n\n  a dog  \n", "output.sample_prompts", ["a cat", "a dog"]),
}

# The other shapes the converted keys accepted in schema 1.
V1_TRAIN_VARIANTS = [
    ("resolution", 640, "dataset.resolution", 640),
    ("resolution", [1024, 1024], "dataset.resolution", 1024),
    ("resolution", "512x768", "dataset.resolution", 640),  # sqrt(512 * 768) = 627 -> nearest 64
    ("resolution", "1024,576", "dataset.resolution", 768),  # sqrt(1024 * 576) = 768
    ("target_modules", ["q_proj", "v_proj"], "network.target_modules", ["q_proj", "v_proj"]),
    ("sample_prompts", ["one", "two"], "output.sample_prompts", ["one", "two"]),
    *[("model_type", v1, "model.family", v2) for v1, v2 in [
        ("sd15", "sd1"), ("sd1", "sd1"), ("sd2", "sd2"), ("sd21", "sd2"), ("sdxl", "sdxl"),
        ("llm", "text"), ("text", "text"), ("auto", "auto"), ("SD15", "sd1")]],
]

# [meta] keys schema 1 had: (v1 key, v1 value, schema 2 key, value expected there).
V1_META = [
    ("vram_gb", 8, "vram_class", "8GB"),
    ("vram_gb", 10.5, "vram_class", "10.5GB"),
    ("vram_gb", 24.0, "vram_class", "24GB"),
    ("vram_gb", "16GB", "vram_class", "16GB"),
    ("family", "sd15", "model_family", "sd1"),
    ("family", "sd21", "model_family", "sd2"),
    ("family", "LLM", "model_family", "text"),
    ("family", "flux", "model_family", "flux"),  # unknown: kept for the preset reader to report
]


def _changed_paths(job: JobConfig) -> dict:
    """Dotted path -> value for every field of `job` that differs from the defaults."""
    default = JobConfig().model_dump()
    return {f"{section}.{name}": value
            for section, values in job.model_dump().items() if isinstance(values, dict)
            for name, value in values.items() if value != default[section][name]}


def test_expected_table_covers_every_v1_key_migrate_knows():
    assert set(V1_TRAIN) == set(V1_KEYS) | set(V1_CONVERTED)
    assert {value for key, value, _, _ in V1_TRAIN_VARIANTS if key == "model_type"} >= set(V1_FAMILIES)


@pytest.mark.parametrize("key,value,path,expected",
                         [(k, *row) for k, row in V1_TRAIN.items()] + V1_TRAIN_VARIANTS)
def test_each_v1_train_key_lands_on_its_v2_path_and_nowhere_else(key, value, path, expected, tmp_path):
    new, notes = migrate({"meta": {"schema_version": 1}, "train": {key: value}}, 1)
    section, name = path.split(".")
    assert new == {"meta": {"schema_version": SCHEMA_VERSION}, section: {name: expected}}
    assert not [f for f in notes if f.level != "info"]
    assert f"{key} → {path}" in notes[0].message
    # Through the file reader too: the migrated value is valid schema 2 and the only change.
    preset_file = tmp_path / "v1.toml"
    preset_file.write_text(tomli_w.dumps({"meta": {"schema_version": 1}, "train": {key: value}}),
                           encoding="utf-8")
    preset = load_preset(preset_file)
    default = get_value(JobConfig(), path)
    assert _changed_paths(preset.job) == ({path: expected} if expected != default else {})
    assert not [f for f in preset.findings if f.level == "error"]


@pytest.mark.parametrize("key,value,new_key,expected", V1_META)
def test_each_v1_meta_key_becomes_its_v2_meta_key(key, value, new_key, expected):
    new, notes = migrate({"meta": {"schema_version": 1, "name": "n", key: value}}, 1)
    assert new == {"meta": {"schema_version": SCHEMA_VERSION, "name": "n", new_key: expected}}
    assert not [f for f in notes if f.level != "info"]
