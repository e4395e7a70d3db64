"""Packaging files: icons, the Linux desktop entry, the Windows launcher, the
PyInstaller spec and the bundle's entry script, and a real build of the slim bundle
(`packaging/build.sh slim`, about 30 s on two cores). The full bundle with torch
(GBs, ~10 min) is left to `packaging/build.sh full`."""
from __future__ import annotations

import configparser
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from PIL import Image, ImageChops, ImageStat

ROOT = Path(__file__).resolve().parents[1]
PACKAGING = ROOT / "packaging"
ICONS = ROOT / "resources" / "icons"
sys.path.insert(0, str(ROOT / "resources"))
import make_icons  # noqa: E402


def test_committed_icons_are_what_the_script_draws(tmp_path):
    written = make_icons.make_icons(tmp_path)
    assert sorted(p.name for p in written) == sorted(p.name for p in ICONS.iterdir())
    for size in make_icons.SIZES:
        fresh = Image.open(tmp_path / f"lora-studio-{size}.png").convert("RGBA")
        committed = Image.open(ICONS / f"lora-studio-{size}.png").convert("RGBA")
        assert committed.size == (size, size)
        # Resampling may differ by a unit between Pillow versions, not more.
        diff = ImageStat.Stat(ImageChops.difference(fresh, committed)).mean
        assert max(diff) < 1.0, f"{size}px icon is stale: run python resources/make_icons.py"
    ico = Image.open(ICONS / "lora-studio.ico")
    assert set(ico.info["sizes"]) == {(n, n) for n in make_icons.ICO_SIZES}


def test_icon_has_transparent_corners_and_opaque_centre():
    img = Image.open(ICONS / "lora-studio-64.png").convert("RGBA")
    assert img.getpixel((0, 0))[3] == 0
    assert img.getpixel((32, 32))[3] == 255


def _desktop_entry() -> configparser.SectionProxy:
    parser = configparser.ConfigParser(interpolation=None, delimiters=("=",))
    parser.optionxform = str  # keys are case-sensitive in desktop entries
    parser.read(PACKAGING / "lora-studio.desktop", encoding="utf-8")
    return parser["Desktop Entry"]


def test_desktop_entry_starts_the_installed_command_with_the_icon():
    entry = _desktop_entry()
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["scripts"]
    assert entry["Type"] == "Application"
    assert entry["Exec"].split()[0] in scripts
    assert entry["TryExec"] in scripts
    assert entry["Terminal"] == "false"
    assert entry["Categories"].endswith(";") and entry["Keywords"].endswith(";")
    # The icon name resolves to the PNGs build.sh installs into the hicolor theme.
    assert all((ICONS / f"{entry['Icon']}-{n}.png").exists() for n in make_icons.SIZES)


@pytest.mark.skipif(shutil.which("desktop-file-validate") is None,
                    reason="desktop-file-validate not installed (apt install desktop-file-utils)")
def test_desktop_entry_passes_desktop_file_validate():
    out = subprocess.run(["desktop-file-validate", str(PACKAGING / "lora-studio.desktop")],
                         capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "", out.stdout + out.stderr


def test_build_sh_desktop_installs_entry_and_icons(tmp_path):
    env = {**os.environ, "XDG_DATA_HOME": str(tmp_path / "Mes données")}
    subprocess.run(["bash", str(PACKAGING / "build.sh"), "desktop"], check=True, env=env,
                   capture_output=True)
    data = tmp_path / "Mes données"
    assert (data / "applications" / "lora-studio.desktop").read_bytes() == \
        (PACKAGING / "lora-studio.desktop").read_bytes()
    for size in make_icons.SIZES:
        installed = data / "icons" / "hicolor" / f"{size}x{size}" / "apps" / "lora-studio.png"
        assert Image.open(installed).size == (size, size)


def test_windows_launcher_is_crlf_ascii_and_runs_the_package():
    raw = (PACKAGING / "lora-studio.bat").read_bytes()
    raw.decode("ascii")
    # cmd.exe mis-parses labels and blocks in LF-only batch files.
    assert raw.count(b"\n") == raw.count(b"\r\n") > 0
    text = raw.decode("ascii")
    assert '"%PY%" -m lora_studio %*' in text
    assert (ROOT / "lora_studio" / "__main__.py").exists()


def _exec_spec(args: list[str]) -> dict:
    """Run the spec as PyInstaller does, with its build steps recorded instead of run."""
    pytest.importorskip("PyInstaller", reason="pip install -e '.[test]'")
    calls: dict = {}

    class Built:
        pure = scripts = binaries = datas = ()

    def recorder(name):
        def call(*a, **k):
            calls[name] = (a, k)
            return Built()
        return call

    spec = PACKAGING / "lora_studio.spec"
    scope = {name: recorder(name) for name in ("Analysis", "PYZ", "EXE", "COLLECT")}
    scope.update(SPECPATH=str(PACKAGING), __file__=str(spec), __name__="__main__")
    saved = sys.argv
    sys.argv = ["pyinstaller", str(spec), *args]
    try:
        exec(compile(spec.read_text(encoding="utf-8"), str(spec), "exec"), scope)
    finally:
        sys.argv = saved
    return calls


def test_slim_spec_points_at_existing_files_and_leaves_out_ml_and_qt():
    calls = _exec_spec(["--", "--slim"])
    (scripts,), analysis = calls["Analysis"]
    assert [Path(s) for s in scripts] == [PACKAGING / "entry.py"]
    for source, dest in analysis["datas"]:
        assert Path(source).exists(), source
    assert {dest for _, dest in analysis["datas"]} >= {"presets", "resources"}
    assert {"torch", "PySide6", "lora_studio.engine", "lora_studio.ui"} <= set(analysis["excludes"])
    hidden = set(analysis["hiddenimports"])
    assert "lora_studio.config.schema" in hidden and "lora_studio.runs.events" in hidden
    assert not any(h.startswith(("lora_studio.engine", "lora_studio.ui")) for h in hidden)
    exe = calls["EXE"][1]
    assert exe["name"] == "lora-studio-slim" and Path(exe["icon"]).exists()
    assert calls["COLLECT"][1]["name"] == "lora-studio-slim"


def test_entry_script_runs_the_interpreter_forms_a_bundle_is_started_with(tmp_path):
    """accelerate and the GUI start the engine as `sys.executable [-u] -m MODULE` or
    `sys.executable [-u] SCRIPT.py`; in a bundle sys.executable is entry.py."""
    folder = tmp_path / "ç dir"
    folder.mkdir()
    (folder / "probe_mod.py").write_text(
        "import sys, pathlib\npathlib.Path(sys.argv[1]).write_text(repr(sys.argv[1:]) + __name__)\n",
        encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(folder)}
    out = folder / "out m.txt"
    subprocess.run([sys.executable, str(PACKAGING / "entry.py"), "-u", "-m", "probe_mod", str(out), "x y"],
                   check=True, env=env)
    assert out.read_text(encoding="utf-8") == repr([str(out), "x y"]) + "__main__"
    out.unlink()
    subprocess.run([sys.executable, str(PACKAGING / "entry.py"), str(folder / "probe_mod.py"), str(out)],
                   check=True)
    assert out.read_text(encoding="utf-8") == repr([str(out)]) + "__main__"


def _demo_preset_copy(folder: Path, name: str, dataset_file: str = "chat.jsonl") -> Path:
    """The demo preset in `folder`, its relative model and dataset paths made absolute."""
    folder.mkdir(parents=True, exist_ok=True)
    text = (ROOT / "presets" / "demo-text-tiny.toml").read_text(encoding="utf-8")
    text = text.replace('"../resources/', f'"{(ROOT / "resources").as_posix()}/')
    text = text.replace("/chat.jsonl", f"/{dataset_file}")
    preset = folder / name
    preset.write_text(text, encoding="utf-8")
    return preset


@pytest.mark.skipif(shutil.which("bash") is None, reason="packaging/build.sh needs bash")
def test_build_sh_uses_the_given_interpreter_and_names_a_missing_pyinstaller(tmp_path):
    # An interpreter without site-packages stands for a venv where PyInstaller is missing;
    # python on PATH (which has it here) must not be used instead.
    bare = tmp_path / "bin dir" / "python-bare"
    bare.parent.mkdir()
    bare.write_text(f'#!/bin/sh\nexec "{sys.executable}" -S "$@"\n', encoding="utf-8")
    bare.chmod(0o755)
    env = {**os.environ, "LORA_STUDIO_BUILD_DIR": str(tmp_path / "out"), "PYTHON": str(bare)}
    build = subprocess.run(["bash", str(PACKAGING / "build.sh"), "slim"], env=env,
                           capture_output=True, text=True)
    assert build.returncode == 2
    assert f"PyInstaller is not installed for {bare}" in build.stderr and ".[package]" in build.stderr
    assert not (tmp_path / "out").exists()
    env["PYTHON"] = str(tmp_path / "absent python")
    build = subprocess.run(["bash", str(PACKAGING / "build.sh"), "slim"], env=env,
                           capture_output=True, text=True)
    assert build.returncode == 2 and "No Python interpreter found" in build.stderr


@pytest.mark.skipif(shutil.which("bash") is None, reason="packaging/build.sh needs bash")
def test_slim_bundle_builds_and_checks_presets_in_windows_style_folders(tmp_path):
    """The real PyInstaller build (build.sh also runs its own smoke test), then the
    bundle on its own: the spec, the entry script and the bundled data are right."""
    out = tmp_path / "build dir é"
    try:
        _build_and_check_slim_bundle(out, tmp_path)
    finally:
        shutil.rmtree(out, ignore_errors=True)  # 150 MB; pytest keeps the last three tmp dirs


def _build_and_check_slim_bundle(out: Path, tmp_path: Path) -> None:
    env = {**os.environ, "LORA_STUDIO_BUILD_DIR": str(out), "PYTHON": sys.executable}
    build = subprocess.run(["bash", str(PACKAGING / "build.sh"), "slim"], env=env,
                           capture_output=True, text=True, encoding="utf-8", errors="replace")
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    assert "bundle OK" in build.stdout
    # Everything went to LORA_STUDIO_BUILD_DIR, the smoke test's presets included.
    assert (out / "work").is_dir() and (out / "smoke" / "broken.txt").is_file()
    app = out / "dist" / "lora-studio-slim" / "lora-studio-slim"
    assert app.is_file()

    folder = tmp_path / "Mes données ç" / "sous dossier"
    good = _demo_preset_copy(folder, "démo texte.toml")
    ok = subprocess.run([str(app), "check", str(good)], capture_output=True, text=True,
                        encoding="utf-8")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "Demo: tiny text model (CPU)" in ok.stdout and "0 errors" in ok.stdout

    broken = _demo_preset_copy(folder, "cassé.toml", dataset_file="absent é.jsonl")
    bad = subprocess.run([str(app), "check", str(broken)], capture_output=True, text=True,
                         encoding="utf-8")
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert "absent é.jsonl" in bad.stdout and "was not found" in bad.stdout
    assert "dataset.path" in bad.stdout
    assert "Traceback" not in bad.stdout + bad.stderr
