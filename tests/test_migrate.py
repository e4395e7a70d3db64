from pathlib import Path

import pytest

from lora_studio.config.migrate import migrate
from lora_studio.config.presets import load_preset
from lora_studio.config.schema import SCHEMA_VERSION

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
