"""`lora-studio train --processes 2`: data-parallel training through accelerate
launch, here as two CPU processes over gloo on the bundled tiny text model. Run on
a "headless box" (no DISPLAY, no Qt platform), then the run folder is copied to
another place and replayed in the GUI's training view, as after copying it back."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lora_studio.runs.events import read_events
from lora_studio.runs.launch import ENGINE_MODULE, engine_command, follow_engine
from lora_studio.runs.layout import RunDir, list_runs
from test_headless import headless_env
from ui_fixtures import no_gpu

ROOT = Path(__file__).resolve().parents[1]
PRESET = ROOT / "presets" / "demo-text-tiny.toml"
TINY_MODEL = ROOT / "resources" / "tiny-text-model"
STEPS = 4


def test_engine_command_uses_accelerate_launch_only_for_several_processes(tmp_path):
    run = tmp_path / "run ç"
    assert engine_command(run) == [sys.executable, "-m", ENGINE_MODULE, str(run)]
    cmd = engine_command(run, processes=4, mixed_precision="bf16", resume=run / "checkpoints" / "s")
    assert cmd[:3] == [sys.executable, "-m", "accelerate.commands.launch"]
    flags = dict(zip(cmd[3::1], cmd[4::1]))
    assert flags["--num_processes"] == "4" and flags["--mixed_precision"] == "bf16"
    assert flags["--main_process_port"] == "0"  # a free port: two runs on one box do not clash
    assert cmd[-5:] == ["-m", ENGINE_MODULE, str(run), "--resume", str(run / "checkpoints" / "s")]


def test_the_gui_worker_launches_the_gpus_setting_of_the_job(tmp_path):
    from lora_studio.config import JobConfig
    from lora_studio.config.jobfile import write_job_toml
    from lora_studio.ui.worker import engine_command as gui_command

    run = RunDir(tmp_path / "run").ensure()
    job = JobConfig()
    job.training.processes = 3
    write_job_toml(job, run.job_toml)
    assert gui_command(run.root) == engine_command(run.root, 3, "no")
    run.job_toml.unlink()  # unreadable: one process, which reports it
    assert gui_command(run.root) == engine_command(run.root)


def test_processes_that_die_without_a_word_leave_an_error_event(tmp_path):
    run = RunDir(tmp_path / "run").ensure()
    shown = []
    crash = [sys.executable, "-c", "import sys; sys.stderr.write('worker 1 was killed\\n'); sys.exit(3)"]
    last = follow_engine(crash, run, shown.append)
    assert last["type"] == "error" and "exit code 3" in last["message"]
    assert "worker 1 was killed" in last["hint"]
    assert shown == [last] and list(read_events(run.events)) == [last]


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory) -> tuple[RunDir, Path, subprocess.CompletedProcess]:
    work = tmp_path_factory.mktemp("box") / "headless box"
    hashes = work / "weight hashes"
    hashes.mkdir(parents=True)
    env = headless_env()
    env["LORA_STUDIO_WEIGHT_HASHES"] = str(hashes)
    proc = subprocess.run(
        [sys.executable, "-m", "lora_studio", "train", str(PRESET), "--processes", "2",
         "--set", f"training.max_steps={STEPS}", "--set", "training.batch_size=2", "--set", "output.save_every_n_steps=2",
         "--set", "output.sample_every_n_steps=2", "--set", f"output.output_dir={work / 'runs'}"],
        cwd=work, env=env, capture_output=True, text=True, encoding="utf-8", timeout=300)
    runs = list_runs(work / "runs")
    assert len(runs) == 1, proc.stdout + proc.stderr
    return runs[0], hashes, proc


def test_two_processes_complete_and_only_the_main_one_writes(two_process_run):
    run, _, proc = two_process_run
    assert proc.returncode == 0, proc.stdout + proc.stderr
    events = list(read_events(run.events))
    types = [e["type"] for e in events]
    assert types.count("started") == 1 and types.count("finished") == 1
    started = next(e for e in events if e["type"] == "started")
    assert started["processes"] == 2
    assert [e["step"] for e in events if e["type"] == "progress"] == list(range(1, STEPS + 1))
    assert [e["step"] for e in events if e["type"] == "checkpoint"] == [2, 4]
    assert [e["step"] for e in events if e["type"] == "sample"] == [2, 4]
    assert events[-1]["type"] == "finished" and events[-1]["status"] == "completed"
    # The effective batch is shown: 2 per device x 2 processes x 1 accumulation step.
    batch = [e for e in events if e.get("effective_batch")]
    assert len(batch) == 1 and batch[0]["effective_batch"] == 4 and batch[0]["processes"] == 2
    # The terminal showed each event once too.
    assert proc.stdout.count("completed at step") == 1
    assert sorted(p.name for p in run.checkpoints.iterdir()) == ["step-000002", "step-000004"]
    assert sorted(p.name for p in run.samples.iterdir()) == ["step-000002.txt", "step-000004.txt"]
    # Windows: nothing in a run folder may be a symlink.
    assert not [p for p in run.root.rglob("*") if p.is_symlink()]


def _hashes(path: Path) -> list[tuple[int, str]]:
    return [(int(step), digest) for step, digest in
            (line.split() for line in path.read_text(encoding="utf-8").splitlines())]


def test_both_processes_hold_identical_lora_weights_after_every_step(two_process_run):
    _, hashes, _ = two_process_run
    rank0 = _hashes(hashes / "weights-rank0.txt")
    rank1 = _hashes(hashes / "weights-rank1.txt")
    assert [s for s, _ in rank0] == list(range(1, STEPS + 1))
    assert rank0 == rank1
    assert len({d for _, d in rank0}) == STEPS  # the weights did change at every step


def test_export_of_a_two_process_run_loads_with_the_trained_weights(two_process_run):
    import hashlib

    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    run, hashes, _ = two_process_run
    files = next(e for e in read_events(run.events) if e["type"] == "finished")["files"]
    export_dir = Path(files[0]).parent
    assert export_dir.parent == run.exports
    base = AutoModelForCausalLM.from_pretrained(TINY_MODEL)
    model = PeftModel.from_pretrained(base, export_dir)
    lora = [p for name, p in model.named_parameters() if "lora_" in name]
    assert lora
    digest = hashlib.sha256()
    for p in lora:
        digest.update(p.detach().float().cpu().numpy().tobytes())
    assert digest.hexdigest() == _hashes(hashes / "weights-rank0.txt")[-1][1]
    with torch.no_grad():
        out = model(input_ids=torch.tensor([[1, 2, 3]]))
    assert torch.isfinite(out.logits).all()


def test_a_headless_run_copied_elsewhere_replays_in_the_gui(two_process_run, tmp_path, qtbot):
    from lora_studio.runs.catalog import summarize
    from lora_studio.ui.training_view import TrainingView

    run, _, _ = two_process_run
    copy = RunDir(tmp_path / "copié du serveur" / run.root.name)
    shutil.copytree(run.root, copy.root)
    summary = summarize(copy.root)
    assert (summary.status, summary.step, summary.total, summary.checkpoint) == \
        ("finished", STEPS, STEPS, "step-000004")
    view = TrainingView(no_gpu)
    qtbot.addWidget(view)
    view.show_run(copy.root)
    assert view.series.n == STEPS
    assert "step 4" in view.text_samples.toPlainText()
    assert "Effective batch 4" in view.log_view.toPlainText()
    view.shutdown()


def test_image_samples_of_a_copied_run_are_found_in_its_new_place(tmp_path, qtbot):
    from PIL import Image

    from lora_studio.runs.events import EventWriter, event
    from lora_studio.ui.training_view import TrainingView

    copy = RunDir(tmp_path / "copié" / "sd-run").ensure()
    Image.new("RGB", (16, 16), (0, 90, 200)).save(copy.samples / "step-000002.png")
    with EventWriter(copy.events) as emit:  # paths as written on the training machine
        emit(event("sample", step=2, kind="image", prompt="a cat",
                   path="/home/gpu-box/runs/sd-run/samples/step-000002.png"))
    view = TrainingView(no_gpu)
    qtbot.addWidget(view)
    view.show_run(copy.root)
    grid = view.samples.grid
    assert len(grid.grid) == 1 and grid.grid.steps == [2]
    view.shutdown()


def test_item_losses_of_both_processes_are_added_up(two_process_run):
    """Each process records the records of its share; the file holds them all once."""
    from lora_studio.runs.item_loss import read_item_losses
    run, _, _ = two_process_run
    losses = read_item_losses(run.root)
    assert losses.kind == "text" and losses.step == STEPS
    # 2 records a process a step, 2 processes, all within the first epoch: 16 records once
    assert len(losses.items) == STEPS * 2 * 2
    assert {v.seen for v in losses.items.values()} == {1}
    assert all(v.loss > 0 for v in losses.items.values())
    state = json.loads((run.checkpoints / "step-000002" / "state.json").read_text("utf-8"))
    assert sum(state["item_loss"]["seen"]) == 2 * 2 * 2


def test_events_file_is_plain_json_lines(two_process_run):
    run, _, _ = two_process_run
    for line in run.events.read_text(encoding="utf-8").splitlines():
        assert isinstance(json.loads(line), dict)
