"""The benchmarks' shared figures (benchmarks/_stats.py), and every benchmark script
at least parsing --help."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._stats import compare, figure, summarize, verdict  # noqa: E402

BENCHMARKS = sorted(p for p in (ROOT / "benchmarks").glob("*.py") if not p.name.startswith("_"))


def test_ratio_is_the_median_of_per_round_ratios_not_the_ratio_of_medians():
    # per-round ratios 2, 0.5, 3: their median is 2; the medians' ratio would be 3 / 3 = 1
    s = compare([2.0, 3.0, 9.0], [1.0, 6.0, 3.0])
    assert s.ratio == pytest.approx(2.0)
    assert s.median == 3.0 and s.baseline_median == 3.0
    assert s.n == 3


def test_spread_is_the_min_and_max_of_per_round_ratios():
    s = compare([2.0, 3.0, 9.0], [1.0, 6.0, 3.0])
    assert (s.low, s.high) == (pytest.approx(0.5), pytest.approx(3.0))
    even = compare([1.0, 2.0, 3.0, 8.0], [1.0, 1.0, 1.0, 1.0])
    assert even.ratio == pytest.approx(2.5)  # the median of an even count: the middle two's mean
    assert (even.low, even.high) == (pytest.approx(1.0), pytest.approx(8.0))


def test_one_round_is_its_own_ratio_and_spread():
    s = compare([3.0], [2.0])
    assert s.ratio == s.low == s.high == pytest.approx(1.5)


@pytest.mark.parametrize("values, baselines", [([1.0, 2.0], [1.0]), ([1.0], [1.0, 2.0]), ([], [])])
def test_mismatched_or_empty_lengths_raise(values, baselines):
    with pytest.raises(ValueError):
        compare(values, baselines)


@pytest.mark.parametrize("x, shown", [
    (6.912, "6.91"), (1.0, "1.00"), (0.123456, "0.123"), (0.0481, "0.0481"), (12.345, "12.3"),
    (10.0, "10.0"), (1234.4, "1234"), (100.0, "100"), (-6.912, "-6.91"), (0.0, "0")])
def test_figure_gives_three_significant_digits(x, shown):
    assert figure(x) == shown


def test_summarize_prints_the_headline_and_every_round(capsys):
    s = summarize("thing", [2.0, 3.0, 9.0], [1.0, 6.0, 3.0], baseline="floor", unit="s")
    out = capsys.readouterr().out.splitlines()
    assert s.ratio == pytest.approx(2.0)
    assert out[0] == ("thing: 3.00 s (median of 3) vs floor 3.00 s -> ratio 2.000 "
                      "(spread, min-max of per-round ratios: 0.500-3.000 over 3 rounds)")
    assert out[1] == "  per round, value / baseline: 2.00/1.00, 3.00/6.00, 9.00/3.00"
    summarize("cells", [1.0, 2.0], [1.0, 1.0], baseline="measured", unit="GiB", over="cells",
              per_round=False)
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1 and out[0].endswith("over 2 cells)")


def test_verdict_is_ok_at_the_limit_and_missed_just_past_it(capsys):
    assert verdict("ratio", 1.05, 1.05) is True
    assert verdict("ratio", 1.051, 1.05) is False
    assert verdict("grid", 1.0, 1.0, "s") is True
    assert verdict("grid", 1.01, 1.0, "s") is False
    out = capsys.readouterr().out.splitlines()
    assert out == ["ratio: 1.050 (target <= 1.050): OK",
                   "ratio: 1.051 (target <= 1.050): MISSED",
                   "grid: 1.00 s (target <= 1.00 s): OK",
                   "grid: 1.01 s (target <= 1.00 s): MISSED"]


def test_a_lower_bound_verdict_is_ok_at_the_limit_and_missed_just_under_it(capsys):
    assert verdict("speed-up", 0.9, 0.9, at_least=True) is True
    assert verdict("speed-up", 0.899, 0.9, at_least=True) is False
    assert capsys.readouterr().out.splitlines() == ["speed-up: 0.900 (target >= 0.900): OK",
                                                    "speed-up: 0.899 (target >= 0.900): MISSED"]


def test_every_benchmark_is_found():
    names = {p.name for p in BENCHMARKS}
    assert {"sd_epoch.py", "engine_overhead.py", "ui_start.py", "dataset_open.py",
            "fit_estimate.py", "ui_stall.py", "vram_calibration.py"} <= names


@pytest.mark.parametrize("script", BENCHMARKS, ids=lambda p: p.stem)
def test_benchmark_parses_help(script):
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    out = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True,
                         env=env, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.startswith("usage:")
    # the docstring's first line is the description
    first_line = subprocess.run(
        [sys.executable, "-c", "import ast, sys; print(ast.get_docstring(ast.parse("
         "open(sys.argv[1], encoding='utf-8').read())).splitlines()[0])", str(script)],
        capture_output=True, text=True, check=True).stdout.strip()
    assert " ".join(first_line.split()[:4]) in " ".join(out.stdout.split())
