import itertools

import pytest

from lora_studio.config.gpu import GpuFacts
from lora_studio.config.schema import JobConfig
from lora_studio.hardware import archs
from lora_studio.hardware.autofit import STEPS, Change, DoesNotFit, apply_changes, autofit, fit_findings
from lora_studio.hardware.estimate import GIB, estimate, spec_from_config
from lora_studio.hardware.monitor import GpuInfo

TEXT_7B = spec_from_config("text", archs.LLAMA_7B)
SDXL = spec_from_config("sdxl", {})


def make_job(family, **values) -> JobConfig:
    data: dict = {"model": {"family": family}, "training": {"mixed_precision": "bf16"}}
    for key, value in values.items():
        section, name = key.split("__")
        data.setdefault(section, {})[name] = value
    return JobConfig.model_validate(data)


def total(job, spec) -> int:
    return estimate(job, None, spec).total


def card(free_gib: float, name="RTX 4070") -> GpuInfo:
    free = int(free_gib * GIB)
    return GpuInfo(0, name, 0, free, free, 0, 40, 50.0, (8, 9), True)


def test_a_job_that_fits_needs_no_change():
    job = make_job("sdxl", training__gradient_checkpointing=True)
    assert autofit(job, 40 * GIB, spec=SDXL) == []


def test_checkpointing_comes_first_when_it_is_enough():
    job = make_job("sdxl", dataset__resolution=1024)
    free = total(make_job("sdxl", dataset__resolution=1024, training__gradient_checkpointing=True), SDXL)
    changes = autofit(job, free, spec=SDXL)
    assert [(c.path, c.old, c.new) for c in changes] == [("training.gradient_checkpointing", False, True)]
    assert changes[0].saving == total(job, SDXL) - free


def test_batch_becomes_accumulation_keeping_the_effective_batch():
    job = make_job("sdxl", training__batch_size=8, training__gradient_accumulation_steps=2,
                   training__gradient_checkpointing=True)
    free = total(make_job("sdxl", training__batch_size=4, training__gradient_accumulation_steps=4,
                          training__gradient_checkpointing=True), SDXL)
    changes = autofit(job, free, spec=SDXL)
    fitted = apply_changes(job, changes)
    assert fitted.training.batch_size == 4  # the mildest reduction that fits
    assert fitted.training.batch_size * fitted.training.gradient_accumulation_steps == 16
    assert total(fitted, SDXL) <= free
    assert job.training.batch_size == 8  # the original job is untouched


def _steps_used(job, fitted, cuda=True):
    """Indices of the STEPS whose fields differ between the two jobs."""
    used = []
    for i, (step, _) in enumerate(STEPS):
        options = step(job, cuda, "text" if job.model.family == "text" else "image")
        paths = {p for option in options for p in option}
        if any(_get(job, p) != _get(fitted, p) for p in paths):
            used.append(i)
    return used


def _step_of(job, path):
    return next(i for i, (step, _) in enumerate(STEPS)
                if any(path in option for option in step(job, True, "text")))


def _get(job, path):
    section, name = path.split(".")
    return getattr(getattr(job, section), name)


@pytest.mark.parametrize("free_gib", [7, 10, 14, 18])
def test_text_changes_are_minimal_and_in_preference_order(free_gib):
    job = make_job("text", training__batch_size=4, dataset__max_seq_length=1024)
    free = int(free_gib * GIB)
    changes = autofit(job, free, spec=TEXT_7B)
    fitted = apply_changes(job, changes)
    assert total(fitted, TEXT_7B) <= free
    used = _steps_used(job, fitted)
    order = [_step_of(job, c.path) for c in changes]
    assert order == sorted(order) and sorted(set(order)) == used  # in preference order
    # Minimal: no set with fewer steps fits, whatever options those steps take.
    for smaller in itertools.combinations(range(len(STEPS)), len(used) - 1):
        strongest = job
        for i in smaller:
            options = STEPS[i][0](strongest, True, "text")
            if options:
                strongest = apply_changes(strongest, [Change(p, None, v, 0, "") for p, v in options[-1].items()])
        assert total(strongest, TEXT_7B) > free


def test_without_cuda_no_bitsandbytes_changes():
    job = make_job("text", training__batch_size=4, dataset__max_seq_length=1024)
    with pytest.raises(DoesNotFit) as info:
        autofit(job, 10 * GIB, cuda=False, spec=TEXT_7B)
    assert all(c.path not in ("optimizer.optimizer", "model.load_in_4bit") for c in info.value.changes)
    with_cuda = autofit(job, 10 * GIB, cuda=True, spec=TEXT_7B)
    assert any(c.path == "model.load_in_4bit" for c in with_cuda)


def test_resolution_is_the_last_resort_for_images():
    job = make_job("sdxl", dataset__resolution=1024, training__gradient_checkpointing=True,
                   optimizer__optimizer="AdamW8bit")
    free = total(make_job("sdxl", dataset__resolution=768, training__gradient_checkpointing=True,
                          optimizer__optimizer="AdamW8bit"), SDXL)
    changes = autofit(job, free, spec=SDXL)
    assert [c.path for c in changes] == ["dataset.resolution"]
    assert changes[0].new == 768 and changes[0].new % 64 == 0


def test_nothing_fits_says_so_with_the_estimate():
    job = make_job("sdxl", dataset__resolution=1024)
    with pytest.raises(DoesNotFit) as info:
        autofit(job, 3 * GIB, spec=SDXL)
    assert info.value.estimate.total > 3 * GIB
    assert "3.00 GiB free" in info.value.message
    assert {c.path for c in info.value.changes} >= {"training.gradient_checkpointing", "dataset.resolution"}


def test_apply_changes_validates():
    job = make_job("text")
    with pytest.raises(ValueError):
        apply_changes(job, [Change("training.batch_size", 1, 0, 0, "")])


def test_fit_findings_warns_with_the_auto_fit_hint():
    job = make_job("sdxl", dataset__resolution=1024)
    need_ckpt = total(make_job("sdxl", dataset__resolution=1024, training__gradient_checkpointing=True), SDXL)
    findings = fit_findings(job, card(need_ckpt / GIB + 0.01), spec=SDXL)
    assert len(findings) == 1
    finding = findings[0]
    assert finding.level == "warning" and finding.rule == "vram-fit"
    assert finding.path == "training.gradient_checkpointing"
    assert "training.gradient_checkpointing = True" in finding.hint and "RTX 4070" in finding.message
    assert fit_findings(job, card(80), spec=SDXL) == []


def test_fit_findings_nothing_fits_and_unknown_cards():
    job = make_job("sdxl", dataset__resolution=1024)
    (finding,) = fit_findings(job, card(2), spec=SDXL)
    assert "Even with every change" in finding.message and finding.path == ""
    facts = GpuFacts(name="RTX 3050", total_vram_bytes=2 * GIB, supports_bf16=True, cuda_available=True,
                     device_count=1)
    assert fit_findings(job, facts, spec=SDXL)[0].rule == "vram-fit"
    assert fit_findings(job, GpuFacts(), spec=SDXL) == []
    assert fit_findings(job, None, spec=SDXL) == []
    assert fit_findings(make_job("text", model__path="no/such/model-here"), card(8)) == []
