import io
import json
import os
import shutil
import struct
import subprocess
import sys
import types
from pathlib import Path

import pytest

from lora_studio import cli
from lora_studio.hardware import monitor
from lora_studio.config.findings import Finding
from lora_studio.config.gpu import GpuFacts
from lora_studio.config.presets import CONFIG_DIR_ENV

# Paths relative to the preset file: a model folder and a dataset beside it.
GOOD = ('[meta]\nname = "Good"\nvram_class = "8GB"\n[model]\npath = "tiny model"\nfamily = "text"\n'
        '[dataset]\npath = "chat.jsonl"\n[network]\nrank = 8\n[training]\nmax_steps = 4\n')
BROKEN = GOOD.replace('"Good"', '"Broken"').replace("rank = 8", "rank = 0\nrnak = 4") \
    + 'mixed_precision = "fp8"\n'
LLAMA = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64,
         "intermediate_size": 128, "num_attention_heads": 4, "num_key_value_heads": 4,
         "num_hidden_layers": 2, "max_position_embeddings": 2048, "vocab_size": 100}


def tiny_text_model(folder: Path) -> None:
    """config.json plus a safetensors file holding one tiny tensor: all validation reads."""
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(LLAMA), encoding="utf-8")
    header = json.dumps({"lm_head.weight": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}})
    (folder / "model.safetensors").write_bytes(
        struct.pack("<Q", len(header)) + header.encode() + b"\0" * 4)


@pytest.fixture(autouse=True)
def no_gpu(monkeypatch):
    """Findings must not depend on the machine the tests run on."""
    monkeypatch.setattr(monitor, "machine_gpu", GpuFacts)


@pytest.fixture(autouse=True)
def config_dir(tmp_path, monkeypatch):
    monkeypatch.setenv(CONFIG_DIR_ENV, str(tmp_path / "config"))
    return tmp_path / "config"


@pytest.fixture
def preset_files(tmp_path):
    folder = tmp_path / "my presets ü"
    folder.mkdir()
    (folder / "broken.toml").write_text(BROKEN, encoding="utf-8")
    (folder / "good.toml").write_text(GOOD, encoding="utf-8")
    tiny_text_model(folder / "tiny model")
    record = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}
    (folder / "chat.jsonl").write_text((json.dumps(record) + "\n") * 4, encoding="utf-8")
    return folder


def test_presets_lists_builtins_and_user_presets(capsys, config_dir):
    (config_dir / "presets").mkdir(parents=True)
    (config_dir / "presets" / "mine.toml").write_text(GOOD, encoding="utf-8")
    (config_dir / "presets" / "torn.toml").write_text("[meta\n", encoding="utf-8")
    assert cli.main(["presets"]) == 0
    out, err = capsys.readouterr()
    assert "torn.toml line 1, column" in err
    assert out.splitlines()[0].split() == ["NAME", "FAMILY", "VRAM", "ORIGIN", "FILE"]
    line = next(l for l in out.splitlines() if "demo-text-tiny.toml" in l)
    assert "Demo: tiny text model" in line and "built-in" in line and "CPU" in line
    line = next(l for l in out.splitlines() if "mine.toml" in l)
    assert "Good" in line and "user" in line and "8GB" in line


KOHYA = Path(__file__).parent / "data" / "kohya-sd15-character.json"


def test_presets_import_kohya_json_prints_where_findings_and_unsupported(capsys, config_dir,
                                                                        tmp_path):
    kohya = tmp_path / "anna.json"
    kohya.write_text(json.dumps({**json.loads(KOHYA.read_text(encoding="utf-8")),
                                 "masked_loss": True,
                                 "optimizer_args": "weight_decay=0.05 betas=0.9,0.99 d0=1e-5"}),
                     encoding="utf-8")
    assert cli.main(["presets", "import", str(kohya)]) == 1  # its D:/ paths are not on this machine
    out = capsys.readouterr().out
    written = config_dir / "presets" / "anna-muller-v1.toml"
    assert written.is_file() and f"as {written}" in out
    assert "Optimizer arguments not imported: d0=1e-5." in out and "Ready to train" not in out
    unsupported = out.split("Not imported (no equivalent in LoRA Studio):\n")[1].splitlines()
    assert unsupported == ["  masked_loss = true"]
    assert not [line for line in unsupported if line.startswith(("  sample_", "  save_"))]
    assert "  clip_skip = 2" not in unsupported  # mapped to model.clip_skip
    assert cli.main(["presets"]) == 0
    line = next(l for l in capsys.readouterr().out.splitlines() if "anna-muller-v1.toml" in l)
    assert "user" in line and "sd1" in line


def test_presets_import_toml_under_a_new_name(capsys, config_dir, preset_files):
    assert cli.main(["presets", "import", str(preset_files / "good.toml"), "--name", "Mein Stil"]) == 0
    out = capsys.readouterr().out
    assert "Not imported" not in out
    written = config_dir / "presets" / "mein-stil.toml"
    assert written.is_file() and 'name = "Mein Stil"' in written.read_text(encoding="utf-8")


def _finding_lines(out: str) -> set[str]:
    return {line for line in out.splitlines() if line.startswith(("  ERROR", "  WARNING", "  INFO"))}


def test_import_reports_what_check_finds(capsys, config_dir):
    assert cli.main(["presets", "import", str(KOHYA)]) == 1
    imported = capsys.readouterr().out
    assert cli.main(["check", str(config_dir / "presets" / "anna-muller-v1.toml")]) == 1
    checked = capsys.readouterr().out
    assert "ERROR   model.path:" in checked and "ERROR   dataset.path:" in checked
    assert _finding_lines(checked) <= _finding_lines(imported)
    assert checked.splitlines()[-1].split(",")[0] == imported.split("Not imported")[0] \
        .splitlines()[-1].split(",")[0] == "4 errors"


def test_presets_import_with_errors_writes_and_exits_1(capsys, config_dir, preset_files):
    assert cli.main(["presets", "import", str(preset_files / "broken.toml")]) == 1
    out = capsys.readouterr().out
    assert "network.rank" in out and "Fix the errors" in out
    assert (config_dir / "presets" / "broken.toml").is_file()


@pytest.mark.parametrize("name,content,argv,needle", [
    ("bad kohya.json", '{"network_dim": 8,\n  "x": }', [], "line 2, column 8: not valid JSON"),
    ("list.json", "[1, 2]", [], "expected a JSON object"),
    ("notes.txt", "hello", [], "cannot be imported"),
    ("missing.json", None, [], "no such file"),
    ("ok.json", "{}", ["--name", " "], "--name is empty"),
])
def test_presets_import_bad_file_exits_2_and_writes_nothing(capsys, tmp_path, config_dir,
                                                           name, content, argv, needle):
    if content is not None:
        (tmp_path / name).write_text(content, encoding="utf-8")
    assert cli.main(["presets", "import", str(tmp_path / name), *argv]) == 2
    out, err = capsys.readouterr()
    assert err.startswith("lora-studio: error: ") and needle in err and "Traceback" not in err
    assert out == "" and not (config_dir / "presets").exists()


def test_check_good_preset_passes(capsys, preset_files):
    assert cli.main(["check", str(preset_files / "good.toml")]) == 0
    out = capsys.readouterr().out
    assert "0 errors" in out and "Ready to train" in out and "\033[" not in out


def test_check_broken_preset_fails_with_readable_findings(capsys, preset_files):
    assert cli.main(["check", str(preset_files / "broken.toml")]) == 1
    out = capsys.readouterr().out
    assert "ERROR   network.rank:" in out and "between 1 and 1024" in out
    assert "WARNING network.rnak:" in out
    assert "hint: Pick one of: no, fp16, bf16." in out
    assert "2 errors, 1 warning, 0 info. Fix the errors before training." in out
    assert out.index("ERROR") < out.index("WARNING")


def test_check_overrides_fix_or_break_a_preset(capsys, preset_files):
    broken = str(preset_files / "broken.toml")
    assert cli.main(["check", broken, "--set", "network.rank=8",
                     "--set", "training.mixed_precision=no"]) == 0
    assert cli.main(["check", str(preset_files / "good.toml"), "--set", "training.batch_size=0"]) == 1
    assert "training.batch_size" in capsys.readouterr().out


def test_check_judges_against_this_machine_unless_told_not_to(capsys, preset_files):
    good = str(preset_files / "good.toml")
    assert cli.main(["check", good, "--set", "training.mixed_precision=fp16"]) == 1
    assert "fp16 needs an NVIDIA GPU" in capsys.readouterr().out
    assert cli.main(["check", good, "--set", "training.mixed_precision=fp16", "--no-hardware"]) == 0


def test_machine_gpu_reads_this_machine(monkeypatch):
    monkeypatch.undo()  # the real reading, whatever this machine has
    facts = monitor.machine_gpu()
    assert isinstance(facts, GpuFacts) and facts.cuda_available == (facts.device_count > 0)


def test_check_finds_a_preset_by_name(capsys):
    assert cli.main(["check", "demo-text-tiny"]) in (0, 1)
    assert "demo-text-tiny.toml" in capsys.readouterr().out


@pytest.mark.parametrize("argv,needle", [
    (["check", "missing.toml"], "no such preset file"),
    (["check"], "check needs a preset file"),
    (["check", "{good}", "--set", "rank=3"], "Did you mean network.rank?"),
    (["check", "{good}", "--set", "network.rank"], "key=value"),
    (["check", "{bad_toml}"], "line 2, column 8: not valid TOML"),
])
def test_errors_exit_2_with_a_message_and_no_traceback(capsys, preset_files, argv, needle):
    (preset_files / "bad.toml").write_text('[network]\nrank = eight\n', encoding="utf-8")
    argv = [a.format(good=preset_files / "good.toml", bad_toml=preset_files / "bad.toml") for a in argv]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("lora-studio: error: ") and needle in err and "Traceback" not in err


def test_list_keys_prints_every_key(capsys):
    assert cli.main(["check", "--list-keys"]) == 0
    out = capsys.readouterr().out
    assert "[network]" in out and "network.rank  (int, default 16)" in out
    assert "one of: AdamW, AdamW8bit" in out and "Rank (network dim)." in out


def test_usage_errors_and_help_return_codes(capsys):
    assert cli.main(["--help"]) == 0
    assert "presets" in capsys.readouterr().out
    assert cli.main(["frobnicate"]) == 2


def test_no_subcommand_launches_the_gui(monkeypatch):
    calls = []
    fake = types.ModuleType("lora_studio.ui.app")
    fake.main = lambda: calls.append("started") or 0
    monkeypatch.setitem(sys.modules, "lora_studio.ui.app", fake)
    assert cli.main([]) == 0 and calls == ["started"]


def test_missing_gui_is_a_clear_message(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "lora_studio.ui.app", None)  # makes the import fail
    assert cli.main([]) == 2
    assert "app window is not part of this installation" in capsys.readouterr().err


def test_a_bug_is_reported_without_a_traceback(monkeypatch, capsys):
    def explode(args):
        raise ZeroDivisionError("boom")
    monkeypatch.setattr(cli, "cmd_presets", explode)
    assert cli.main(["presets"]) == 2
    err = capsys.readouterr().err
    assert "internal error: ZeroDivisionError: boom" in err and "Traceback" not in err


def test_colour_only_on_a_terminal(monkeypatch):
    class Tty(io.StringIO):
        def isatty(self):
            return True
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    findings = [Finding("network.rank", "error", "Too big.", "Lower it.", "x")]
    tty, plain = Tty(), io.StringIO()
    cli.print_findings(findings, tty)
    cli.print_findings(findings, plain)
    assert "\033[31;1m" in tty.getvalue() and "\033[" not in plain.getvalue()
    monkeypatch.setenv("NO_COLOR", "1")
    colourless = Tty()
    cli.print_findings(findings, colourless)
    assert "\033[" not in colourless.getvalue()


def _installed_command() -> str:
    scripts = Path(sys.executable).parent
    found = shutil.which("lora-studio", path=f"{scripts}{os.pathsep}{os.environ.get('PATH', '')}")
    assert found, "the lora-studio console script is not installed (pip install -e .)"
    return found


def test_installed_command_fails_on_a_broken_preset(preset_files, config_dir):
    env = {**os.environ, CONFIG_DIR_ENV: str(config_dir), "NO_COLOR": "1"}
    proc = subprocess.run([_installed_command(), "check", str(preset_files / "broken.toml")],
                          capture_output=True, text=True, encoding="utf-8", env=env, timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert "ERROR   network.rank:" in proc.stdout and "Fix the errors" in proc.stdout
    proc = subprocess.run([sys.executable, "-m", "lora_studio", "check", str(preset_files / "good.toml")],
                          capture_output=True, text=True, encoding="utf-8", env=env, timeout=120)
    assert proc.returncode == 0 and "Ready to train" in proc.stdout


def test_a_reader_that_leaves_early_is_not_an_error(config_dir):
    """`lora-studio presets | head -1`: quiet, exit 0, whether the pipe closes before the
    first write (a pipe with no reader) or after some lines were read (head)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # a real user's pipe
    env[CONFIG_DIR_ENV] = str(config_dir)
    for command in (["presets"], ["check", "--list-keys"]):  # written at exit / while running
        read_end, write_end = os.pipe()
        os.close(read_end)
        proc = subprocess.run([sys.executable, "-m", "lora_studio", *command], stdout=write_end,
                              stderr=subprocess.PIPE, text=True, env=env, timeout=120)
        os.close(write_end)
        assert (proc.returncode, proc.stderr) == (0, ""), command
    if shutil.which("sh") and shutil.which("head"):
        for command in ("presets", "check --list-keys"):
            shell = subprocess.run(
                ["sh", "-c", f'{{ "$0" -m lora_studio {command}; echo "rc=$?" >&2; }} | head -1',
                 sys.executable], capture_output=True, text=True, env=env, timeout=120)
            assert shell.stderr == "rc=0\n" and len(shell.stdout.splitlines()) == 1, shell


def test_demo_text_prints_where_its_export_is(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the demo writes ./runs
    assert cli.main(["demo", "text", "--set", "training.max_steps=2",
                     "--set", "output.sample_every_n_steps=0"]) == 0
    last = capsys.readouterr().out.splitlines()[-1]
    assert last.startswith("Exported to ")
    folder = Path(last.removeprefix("Exported to "))
    assert folder.parent.name == "exports" and (folder / "adapter_model.safetensors").is_file()
