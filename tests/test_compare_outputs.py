"""Compare outputs (issue 20, point 3): the held-out records whose answers changed most
between the base model (or another run) and the adapter, side by side."""
import pytest

from lora_studio.cli import main
from lora_studio.config.jobfile import write_job_toml
from lora_studio.engine import text
from lora_studio.engine.core import trainer
from lora_studio.engine.core.control import StopRequest
from lora_studio.engine.text.compare import Compared, compare_run, largest_gaps
from lora_studio.engine.text.metrics import rouge_l
from lora_studio.runs.compare_file import COMPARE_FILE, read_comparison
from lora_studio.runs.layout import new_run_dir
from test_engine_text import Recorder, make_job

pytest.importorskip("rouge_score")


def _c(before, after):
    return Compared("p", "r", "b", "a", before, after)


def test_the_largest_changes_come_first_either_way():
    found = largest_gaps([_c(0.5, 0.6), _c(0.9, 0.1), _c(0.0, 0.5), _c(0.3, 0.3)], 3)
    assert [round(c.gap, 3) for c in found] == [-0.8, 0.5, 0.1]


def _trained(folder, name, steps, seed=42):
    # A high learning rate: the adapter's answers differ from the base's after a few steps.
    job = make_job(dataset={"eval_split": 0.2}, optimizer={"learning_rate": 3e-2},
                   training={"max_steps": steps, "seed": seed})
    run = new_run_dir(folder, name)
    write_job_toml(job, run.job_toml)
    return run, trainer.train(job, run, Recorder(), StopRequest(), text.prepare)


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    return _trained(tmp_path_factory.mktemp("runs"), "cmp", 8)


def test_compare_lists_base_and_adapter_answers_of_held_out_records(tuned, capsys):
    run, result = tuned
    found = compare_run(run.root, records=4, top=2).found
    assert len(found) == 2 and abs(found[0].gap) >= abs(found[1].gap)
    references = {p.reference for p in result.trainee.eval_prompts}
    for c in found:
        assert c.reference in references
        assert c.before_rouge == pytest.approx(rouge_l(c.before, c.reference))
        assert c.after_rouge == pytest.approx(rouge_l(c.after, c.reference))
    assert any(c.before != c.after for c in found)
    assert main(["compare", str(run.root), "--records", "4", "--top", "2"]) == 0
    out = capsys.readouterr().out
    assert out.count("  reference: ") == 2 and f"  adapter:   {found[0].after}" in out
    # What the Runs tab reads: the same records, greedy answers being deterministic.
    kept = read_comparison(run.root)
    assert f"Written to {run.root / COMPARE_FILE}" in out
    assert kept.found == found and (kept.before, kept.after, kept.against) == (
        "base", run.root.name, "") and kept.records == 4


def test_the_runs_tabs_command_writes_what_its_pane_lists(tuned):
    from lora_studio.ui.compare_state import CompareState, compare_command
    run, _ = tuned
    assert main(compare_command(run.root, "", 3)[3:]) == 0
    state = CompareState()
    state.load(run.root)
    assert len(state.rows) == 3 and "3 of 3 held-out records" in state.message
    assert [abs(c.gap) for c in state.rows] == sorted((abs(c.gap) for c in state.rows),
                                                      reverse=True)


def test_two_runs_are_compared_on_the_first_runs_records(tuned, tmp_path, capsys):
    from lora_studio.engine.text.eval_generation import generate_answers
    run, result = tuned
    other, other_result = _trained(tmp_path, "other", 8, seed=7)
    prompts = result.trainee.eval_prompts[:4]
    tokenizer = result.trainee.tokenizer

    def answers(model):
        return {tokenizer.decode(p.prompt_ids, skip_special_tokens=True).strip(): a
                for p, a in zip(prompts, generate_answers(model, tokenizer, prompts, "cpu"))}
    found = compare_run(run.root, records=4, top=4, against=other.root).found
    base = {c.prompt: c.before for c in compare_run(run.root, records=4, top=4).found}
    assert answers(other_result.trainee.model) != base   # the other run is not the base
    assert {c.prompt: c.before for c in found} == answers(other_result.trainee.model)
    assert {c.prompt: c.after for c in found} == answers(result.trainee.model)
    assert main(["compare", str(run.root), "--against", str(other.root), "--records", "4",
                 "--top", "1"]) == 0
    out = capsys.readouterr().out
    assert f"ROUGE-L {other.root.name} " in out and f"  {run.root.name}:" in out
    assert read_comparison(run.root).against == str(other.root)


def test_runs_of_different_bases_and_runs_without_held_out_records_are_refused(tuned, tmp_path,
                                                                              capsys):
    run, _ = tuned
    job = make_job(training={"max_steps": 1})
    bare = new_run_dir(tmp_path, "none")
    write_job_toml(job, bare.job_toml)
    trainer.train(job, bare, Recorder(), StopRequest(), text.prepare)
    assert main(["compare", str(bare.root)]) == 1
    assert "held out no records" in capsys.readouterr().err
    (bare.root / "job.toml").write_text((bare.root / "job.toml").read_text(encoding="utf-8")
                                        .replace("tiny-text-model", "other-model"),
                                        encoding="utf-8")
    assert main(["compare", str(run.root), "--against", str(bare.root)]) == 1
    assert "another base model" in capsys.readouterr().err
