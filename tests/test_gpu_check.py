"""benchmarks/gpu_check.py without a GPU: the dry run plans every section and writes the
JSON and Markdown reports with the CUDA sections skipped; a missing package stops it
with a message naming the package and the wheels line; the wheels list is pinned."""
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import gpu_check  # noqa: E402

NO_CUDA = "skipped: no CUDA"


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("report ü")
    assert gpu_check.main(["--dry-run", "--out", str(out)]) == 0
    [report_file] = out.glob("*.json")
    [markdown_file] = out.glob("*.md")
    return json.loads(report_file.read_text(encoding="utf-8")), markdown_file, report_file


def test_dry_run_names_the_files_after_the_gpu_and_the_date(dry_run):
    report, markdown_file, report_file = dry_run
    assert re.fullmatch(r"gpu-check-no-gpu-dry-run-\d{4}-\d\d-\d\d", report_file.stem)
    assert markdown_file.stem == report_file.stem
    assert report["dry_run"] is True and report["date"][:10] in report_file.stem
    env = report["environment"]
    assert env["gpu"] is None and env["cuda_available"] is False
    assert {"torch", "transformers", "diffusers", "peft", "accelerate", "bitsandbytes"} <= set(env["libraries"])
    assert env["libraries"]["torch"]


def test_dry_run_skips_every_cuda_section_and_still_plans_it(dry_run):
    report, _, _ = dry_run
    sections = report["sections"]
    assert list(sections) == ["tests", "calibration", "speed"]
    assert all(s["status"] == NO_CUDA and s["seconds"] >= 0 for s in sections.values())


def test_every_gpu_test_is_listed_and_skipped(dry_run):
    report, _, _ = dry_run
    tests = report["sections"]["tests"]
    source = (ROOT / "tests" / "test_gpu.py").read_text(encoding="utf-8")
    names = set(re.findall(r"^def (test_\w+)", source, re.M))
    listed = {r["test"].split("::")[1].split("[")[0] for r in tests["results"]}
    assert names and listed == names
    assert tests["skipped"] == len(tests["results"]) and tests["passed"] == tests["failed"] == 0
    assert all("CUDA" in r["message"] for r in tests["results"])


def test_calibration_plans_the_issue_grid_with_estimates(dry_run):
    report, _, _ = dry_run
    plan = report["sections"]["calibration"]["plan"]
    cells = [p["cell"] for p in plan]
    assert all(p["estimated"] > 0 for p in plan)
    for wanted in ("sd15 b4 512px", "sd15 b4 768px", "sdxl b1 1024px AdamW", "sdxl b1 1024px ckpt",
                   "llama1b", "llama7b"):
        assert any(c.startswith(wanted) for c in cells), (wanted, cells)
    assert "cells" not in report["sections"]["calibration"]  # nothing measured


def test_speed_plans_the_real_sizes_and_runs_its_plumbing_on_tiny_models(dry_run):
    report, _, _ = dry_run
    speed = report["sections"]["speed"]
    plan = speed["plan"]
    assert (plan["image"]["resolution"], plan["image"]["batch_size"], plan["image"]["mixed_precision"]) \
        == (512, 4, "bf16")
    assert (plan["text"]["seq"], plan["text"]["load_in_4bit"]) == (1024, True)
    for kind, unit in (("image", "it/s"), ("text", "tokens/s")):
        figures = speed["dry_run"][kind]
        assert figures["unit"] == unit
        assert len(figures["engine"]) == len(figures["reference"]) == 1
        assert figures["engine"][0] > 0 and figures["reference"][0] > 0
        assert figures["ratio"] == pytest.approx(figures["engine"][0] / figures["reference"][0])
        assert figures["engine_peak_bytes"] == [None]  # no CUDA allocator on a CPU


def test_markdown_report_has_every_section(dry_run):
    report, markdown_file, _ = dry_run
    text = markdown_file.read_text(encoding="utf-8")
    assert text.startswith("# GPU check: no GPU")
    for heading in ("## Machine", "## GPU-only tests", "## VRAM estimate", "## Speed against the references"):
        assert heading in text
    assert text.count(f"Status: {NO_CUDA}") == 3
    assert "test_running_out_of_memory_ends_in_an_oom_event_with_its_hint" in text
    assert "| image |" in text and "| text |" in text


def test_help_parses_without_the_ml_libraries():
    out = subprocess.run([sys.executable, "-X", "importtime", str(ROOT / "benchmarks" / "gpu_check.py"),
                          "--help"], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert out.returncode == 0 and out.stdout.startswith("usage:")
    assert "--dry-run" in out.stdout and "--sections" in out.stdout
    imported = {line.split("|")[-1].strip() for line in out.stderr.splitlines()}
    assert "torch" not in imported and "pydantic" not in imported


def test_a_missing_package_is_named_with_the_wheels_line(capsys, monkeypatch):
    monkeypatch.setitem(gpu_check.PACKAGES, "no_such_package_x", "no-such-package-x")
    assert gpu_check.main(["--dry-run", "--out", "never-written"]) == 2
    err = capsys.readouterr().err
    assert "no-such-package-x" in err and "benchmarks/gpu_wheels.txt" in err
    assert "pip download" in err and "pip install" in err
    assert not (ROOT / "never-written").exists()


def test_without_cuda_a_real_run_says_so(capsys, monkeypatch, tmp_path):
    import torch
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu_check.main(["--out", str(tmp_path)]) == 2
    assert "--dry-run" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_unknown_section_is_a_usage_error():
    with pytest.raises(SystemExit):
        gpu_check.main(["--sections", "tests,vibes"])


def test_junit_results_read_each_outcome(tmp_path):
    xml = tmp_path / "junit.xml"
    xml.write_text(
        '<testsuites><testsuite><testcase classname="tests.test_gpu" name="test_ok" time="1.5"/>'
        '<testcase classname="tests.test_gpu" name="test_bad" time="0.2"><failure message="assert 1 == 2">'
        'trace</failure></testcase><testcase classname="tests.test_gpu" name="test_off" time="0">'
        '<skipped message="no CUDA"/></testcase></testsuite></testsuites>', encoding="utf-8")
    results = gpu_check.junit_results(xml)
    assert [(r["test"], r["outcome"], r["message"]) for r in results] == [
        ("tests.test_gpu::test_ok", "passed", ""), ("tests.test_gpu::test_bad", "failed", "assert 1 == 2"),
        ("tests.test_gpu::test_off", "skipped", "no CUDA")]
    assert results[0]["seconds"] == 1.5


def test_steps_per_second_counts_only_the_steps_after_warmup():
    # steps end at 0, 10, 12, 13, 14 s: after 2 warm-up steps, steps 3-5 take 12 - 10 + 1 + 1 = 4 s
    assert gpu_check.steps_per_second([0.0, 10.0, 12.0, 13.0, 14.0], warmup=2) == pytest.approx(0.75)
    assert gpu_check.steps_per_second([0.0, 2.0, 4.0], warmup=0) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        gpu_check.steps_per_second([0.0, 1.0], warmup=2)


def test_the_wheels_list_pins_what_the_gpu_machine_lacks():
    lines = [line.strip() for line in (ROOT / "benchmarks" / "gpu_wheels.txt").read_text(encoding="utf-8")
             .splitlines() if line.strip() and not line.startswith("#")]
    pins = dict(line.split("==") for line in lines)
    assert all(re.fullmatch(r"[A-Za-z0-9_.-]+==[0-9][0-9A-Za-z.+-]*", line) for line in lines), lines
    assert {"diffusers", "bitsandbytes", "pydantic", "pydantic-core", "tomli-w", "platformdirs"} <= set(pins)
    assert {"torch", "transformers", "peft", "accelerate"}.isdisjoint(pins)  # the machine has those
    guide = (ROOT / "benchmarks" / "GPU.md").read_text(encoding="utf-8")
    assert "-r benchmarks/gpu_wheels.txt" in guide and "gpu_check.py" in guide
