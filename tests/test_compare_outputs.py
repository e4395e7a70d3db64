"""Compare outputs (issue 20, point 3): the held-out records whose answers changed most
between the base model and the adapter, side by side."""
import pytest

from lora_studio.cli import main
from lora_studio.config.jobfile import write_job_toml
from lora_studio.engine import text
from lora_studio.engine.core import trainer
from lora_studio.engine.core.control import StopRequest
from lora_studio.engine.text.compare import Compared, compare_run, largest_gaps
from lora_studio.engine.text.metrics import rouge_l
from lora_studio.runs.layout import new_run_dir
from test_engine_text import Recorder, make_job

pytest.importorskip("rouge_score")


def _c(base, adapter):
    return Compared("p", "r", "b", "a", base, adapter)


def test_the_largest_changes_come_first_either_way():
    found = largest_gaps([_c(0.5, 0.6), _c(0.9, 0.1), _c(0.0, 0.5), _c(0.3, 0.3)], 3)
    assert [round(c.gap, 3) for c in found] == [-0.8, 0.5, 0.1]


def test_compare_lists_base_and_adapter_answers_of_held_out_records(tmp_path, capsys):
    # A high learning rate: the adapter's answers differ from the base's after 8 steps.
    job = make_job(dataset={"eval_split": 0.2}, optimizer={"learning_rate": 3e-2},
                   training={"max_steps": 8})
    run = new_run_dir(tmp_path, "cmp")
    write_job_toml(job, run.job_toml)
    result = trainer.train(job, run, Recorder(), StopRequest(), text.prepare)
    found = compare_run(run.root, records=4, top=2)
    assert len(found) == 2 and abs(found[0].gap) >= abs(found[1].gap)
    references = {p.reference for p in result.trainee.eval_prompts}
    for c in found:
        assert c.reference in references
        assert c.base_rouge == pytest.approx(rouge_l(c.base, c.reference))
        assert c.adapter_rouge == pytest.approx(rouge_l(c.adapter, c.reference))
    assert any(c.base != c.adapter for c in found)
    assert main(["compare", str(run.root), "--records", "4", "--top", "2"]) == 0
    out = capsys.readouterr().out
    assert out.count("  reference: ") == 2 and f"  adapter:   {found[0].adapter}" in out


def test_a_run_without_held_out_records_says_so(tmp_path, capsys):
    job = make_job(training={"max_steps": 1})
    run = new_run_dir(tmp_path, "none")
    write_job_toml(job, run.job_toml)
    trainer.train(job, run, Recorder(), StopRequest(), text.prepare)
    assert main(["compare", str(run.root)]) == 1
    assert "held out no records" in capsys.readouterr().err
