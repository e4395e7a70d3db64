from lora_studio.config import JobConfig, parse_job
from lora_studio.config.fields import (SPECS, OverrideError, apply_overrides, field_specs,
                                       get_value, parse_literal)
import pytest


def test_every_field_has_panel_metadata():
    specs = field_specs()
    assert len(specs) > 40
    for spec in specs:
        assert spec.title and spec.help and spec.group, spec.path
        assert spec.kind in {"bool", "int", "float", "str", "choice", "list"}
        if spec.kind in {"int", "float"}:
            assert spec.minimum is not None or spec.exclusive_minimum is not None, spec.path
    assert any(s.advanced for s in specs) and any(not s.advanced for s in specs)
    assert SPECS["optimizer.optimizer"].choices == (
        "AdamW", "AdamW8bit", "PagedAdamW8bit", "Lion8bit", "Adafactor", "Prodigy", "DAdaptAdam",
        "AdamWScheduleFree")
    assert SPECS["optimizer.unet_lr"].optional
    assert SPECS["model.path"].local_path and SPECS["dataset.path"].local_path


def test_defaults_are_valid_and_readable_by_path():
    job = JobConfig()
    assert get_value(job, "network.rank") == 16
    assert job.kind == "unknown"
    job.model.family = "sdxl"
    assert job.kind == "image"


def test_parse_reports_every_bad_value_and_keeps_going():
    job, findings = parse_job({"network": {"rank": 0, "alpha": "x"},
                               "training": {"mixed_precision": "fp8", "bogus": 1},
                               "nonsense": {}})
    by_path = {f.path: f for f in findings}
    assert by_path["network.rank"].level == "error"
    assert "between 1 and 1024" in by_path["network.rank"].hint
    assert "no, fp16, bf16" in by_path["training.mixed_precision"].hint
    assert by_path["training.bogus"].level == "warning"
    assert "--list-keys" in by_path["training.bogus"].hint
    assert by_path["nonsense"].level == "warning"
    assert job.network.rank == 16  # bad value fell back to the default


def test_section_that_is_not_a_table():
    _, findings = parse_job({"network": 5})
    assert findings[0].path == "network" and findings[0].level == "error"


def test_overrides_parse_like_toml():
    data = apply_overrides({}, ["network.rank=8", "optimizer.learning_rate=1e-4",
                                "network.target_modules=q_proj,v_proj",
                                "output.output_name=123", "training.gradient_checkpointing=true"])
    assert data == {"network": {"rank": 8, "target_modules": ["q_proj", "v_proj"]},
                    "optimizer": {"learning_rate": 1e-4}, "output": {"output_name": "123"},
                    "training": {"gradient_checkpointing": True}}
    assert parse_literal("hello world") == "hello world"


@pytest.mark.parametrize("item,needle", [("rank=8", "network.rank"), ("nope=1", "--list-keys"),
                                         ("network.rank", "key=value")])
def test_bad_overrides_explain(item, needle):
    with pytest.raises(OverrideError, match=needle.replace(".", r"\.")):
        apply_overrides({}, [item])


def test_misspelt_key_suggests_the_right_one():
    _, findings = parse_job({"training": {"batch_sise": 4}})
    assert findings[0].rule == "unknown-key"
    assert "training.batch_size" in findings[0].hint
