import tomllib
from pathlib import Path

import pytest

from lora_studio.config import JobConfig
from lora_studio.config.presets import (CONFIG_DIR_ENV, PresetError, PresetMeta, PresetReadOnlyError,
                                        builtin_dir, delete_preset, diff_from_defaults, duplicate_preset,
                                        export_preset, find_preset, import_preset, is_builtin,
                                        list_presets, load_preset, read_preset, rename_preset,
                                        save_preset, slug, user_dir)

DATA = Path(__file__).parent / "data"
BUILTINS = {"sd15-character-8gb", "sdxl-style-12gb", "text-lora-chat-24gb", "text-qlora-8gb",
            "demo-text-tiny", "demo-image-tiny"}


@pytest.fixture(autouse=True)
def config_dir(tmp_path, monkeypatch):
    folder = tmp_path / "config dir ü"
    monkeypatch.setenv(CONFIG_DIR_ENV, str(folder))
    return folder


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("stem", sorted(BUILTINS))
def test_builtin_presets_load_without_schema_problems(stem):
    preset = load_preset(builtin_dir() / f"{stem}.toml")
    assert preset.findings == []
    assert preset.meta.vram_class and preset.meta.description and preset.meta.author
    assert preset.meta.model_family == preset.job.model.family != "auto"
    assert diff_from_defaults(preset.data) == preset.data  # only keys that differ from defaults


def test_demo_presets_point_beside_the_preset_and_run_on_cpu():
    for stem in ("demo-text-tiny", "demo-image-tiny"):
        preset = load_preset(builtin_dir() / f"{stem}.toml")
        assert preset.job.model.path.startswith("../resources/")
        assert preset.base_dir == builtin_dir()
        assert preset.job.training.mixed_precision == "no"
        assert 0 < preset.job.training.max_steps <= 200  # tiny models: seconds on a CPU
        assert not preset.job.model.load_in_4bit


def test_list_presets_has_builtins_and_user_presets(config_dir):
    write(config_dir / "presets" / "mine.toml", '[meta]\nname = "Mine"\nvram_class = "6GB"\n')
    write(config_dir / "presets" / "broken.toml", "[meta\n")
    infos = {i.path.stem: i for i in list_presets()}
    assert BUILTINS <= set(infos)
    assert {infos[s].origin for s in BUILTINS} == {"built-in"}
    assert infos["mine"].origin == "user" and infos["mine"].meta.vram_class == "6GB"
    assert "line 1" in infos["broken"].error and infos["broken"].meta.name == "broken"
    assert find_preset("Mine") == config_dir / "presets" / "mine.toml"
    assert find_preset("demo-text-tiny") == builtin_dir() / "demo-text-tiny.toml"
    with pytest.raises(PresetError, match="lora-studio presets"):
        find_preset("no such thing")


def test_save_writes_only_the_differences_and_loads_back(tmp_path):
    job = JobConfig()
    job.network.rank = 8
    job.model.family = "text"
    job.output.sample_prompts = ["hi"]
    path = save_preset(job, PresetMeta(name="Säve me", vram_class="8GB"), tmp_path / "sub dir" / "p.toml")
    doc = tomllib.loads(path.read_text(encoding="utf-8"))
    assert doc == {"meta": {"name": "Säve me", "model_family": "auto", "vram_class": "8GB",
                            "schema_version": 2},
                   "model": {"family": "text"}, "network": {"rank": 8}, "output": {"sample_prompts": ["hi"]}}
    again = load_preset(path)
    assert again.job == job and again.findings == []
    assert again.meta.model_family == "text"  # filled from model.family


@pytest.fixture
def preset_with_relative_paths(tmp_path) -> Path:
    (tmp_path / "src" / "models" / "tiny ü").mkdir(parents=True)
    return write(tmp_path / "src" / "p.toml", '[meta]\nname = "Rel"\n[model]\npath = "models/tiny ü"\n'
                                              '[dataset]\npath = "not/there"\n')


def test_save_elsewhere_keeps_relative_paths_pointing_at_the_same_place(tmp_path,
                                                                        preset_with_relative_paths):
    source = load_preset(preset_with_relative_paths)
    moved = load_preset(save_preset(source.job, source.meta, tmp_path / "copy.toml", base_dir=source.base_dir))
    assert Path(moved.job.model.path) == (source.base_dir / "models" / "tiny ü").resolve()
    assert moved.job.dataset.path == "not/there"  # found nowhere: left as written
    same = load_preset(save_preset(source.job, source.meta, source.base_dir / "again.toml",
                                   base_dir=source.base_dir))
    assert same.job.model.path == "models/tiny ü"  # same folder: left relative


def test_unknown_keys_and_wrong_types_are_findings_not_crashes(tmp_path):
    path = write(tmp_path / "p.toml", '[meta]\nname = "x"\ncolour = "red"\n'
                                      '[network]\nrank = "eight"\nrnak = 4\n[extras]\na = 1\n')
    preset = load_preset(path)
    by_path = {f.path: f for f in preset.findings}
    assert by_path["network.rnak"].level == "warning" and "network.rnak" in by_path["network.rnak"].message
    assert by_path["meta.colour"].level == "warning"
    assert by_path["extras"].level == "warning"
    assert by_path["network.rank"].level == "error"
    assert preset.job.network.rank == 16


def test_malformed_toml_names_file_line_and_column(tmp_path):
    path = write(tmp_path / "bad.toml", '[meta]\nname = "x"\n[network]\nrank = eight\n')
    with pytest.raises(PresetError) as info:
        load_preset(path)
    assert (info.value.line, info.value.column) == (4, 8)
    assert str(info.value).startswith(f"{path} line 4, column 8: not valid TOML")
    write(tmp_path / "cut.toml", '[meta]\nname = "unterminated\n')
    with pytest.raises(PresetError, match="line 2"):
        load_preset(tmp_path / "cut.toml")


@pytest.mark.parametrize("name,content,needle", [("p.toml", None, "no such file"),
                                                  ("p.toml", b"\xff\xfe[meta]", "UTF-8"),
                                                  ("k.json", b"{}", "kohya_ss config can be imported")])
def test_unreadable_files_are_clear_errors(tmp_path, name, content, needle):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(PresetError, match=needle):
        load_preset(path)


def test_crlf_and_bom_are_fine(tmp_path):
    path = tmp_path / "win.toml"
    path.write_bytes('\ufeff[meta]\r\nname = "Windows"\r\n[network]\r\nrank = 4\r\n'.encode("utf-8"))
    preset = load_preset(path)
    assert preset.meta.name == "Windows" and preset.job.network.rank == 4


def test_meta_problems_are_warnings(tmp_path):
    path = write(tmp_path / "p.toml", '[meta]\nname = 5\nvram_class = "lots"\nmodel_family = "sd1"\n'
                                      'schema_version = 9\n[model]\nfamily = "sdxl"\n')
    preset = load_preset(path)
    rules = {f.rule for f in preset.findings}
    assert {"preset-meta", "preset-newer", "preset-family-mismatch"} <= rules
    assert all(f.level == "warning" for f in preset.findings)
    assert preset.meta.name == "p"
    not_a_table = load_preset(write(tmp_path / "q.toml", 'meta = "fancy"\n'))
    assert [(f.path, f.level) for f in not_a_table.findings] == [("meta", "warning")]


def test_builtins_are_read_only_and_duplicate_into_the_user_folder(config_dir):
    builtin = builtin_dir() / "demo-text-tiny.toml"
    before = builtin.read_bytes()
    for change in (lambda: rename_preset(builtin, "x"), lambda: delete_preset(builtin),
                   lambda: save_preset(JobConfig(), PresetMeta(name="x"), builtin)):
        with pytest.raises(PresetReadOnlyError, match="built-in"):
            change()
    assert builtin.read_bytes() == before
    copy = duplicate_preset(builtin, "My demo")
    assert copy.parent == user_dir() and copy.name == "my-demo.toml" and not is_builtin(copy)
    loaded = load_preset(copy)
    assert loaded.meta.name == "My demo"
    assert duplicate_preset(builtin, "My demo").name == "my-demo-2.toml"


def test_duplicate_anchors_relative_paths(preset_with_relative_paths):
    copy = load_preset(duplicate_preset(preset_with_relative_paths, "Rel copy"))
    assert Path(copy.job.model.path) == (preset_with_relative_paths.parent / "models" / "tiny ü").resolve()


def test_rename_and_delete_user_presets(config_dir):
    first = duplicate_preset(builtin_dir() / "sd15-character-8gb.toml", "Anna")
    other = duplicate_preset(builtin_dir() / "sd15-character-8gb.toml", "Bob")
    renamed = rename_preset(first, "Anna v2")
    assert renamed.name == "anna-v2.toml" and not first.exists()
    assert read_preset(renamed).meta.name == "Anna v2"
    with pytest.raises(PresetError, match="already exists"):
        rename_preset(renamed, "Bob")
    assert other.exists() and renamed.exists()
    delete_preset(renamed)
    assert not renamed.exists()
    with pytest.raises(PresetError, match="no such file"):
        delete_preset(renamed)


def test_export_leaves_out_local_paths_unless_asked(tmp_path):
    source = write(tmp_path / "src" / "p.toml",
                   '[meta]\nname = "p"\n[model]\npath = "C:/models/sd15.safetensors"\n'
                   '[dataset]\npath = "D:/data/anna"\n[output]\noutput_dir = "E:/runs"\n'
                   '[network]\nrank = 8\n')
    left_out = export_preset(source, tmp_path / "shared.toml")
    assert set(left_out) == {"model.path", "dataset.path", "output.output_dir"}
    shared = tomllib.loads((tmp_path / "shared.toml").read_text(encoding="utf-8"))
    assert "model" not in shared and "dataset" not in shared and shared["network"] == {"rank": 8}
    assert export_preset(source, tmp_path / "full.toml", include_local_paths=True) == []
    assert load_preset(tmp_path / "full.toml").job.dataset.path == "D:/data/anna"


def test_export_keeps_a_hub_model_id(tmp_path):
    source = write(tmp_path / "p.toml", '[model]\npath = "Qwen/Qwen2.5-0.5B"\nfamily = "text"\n')
    assert export_preset(source, tmp_path / "out.toml") == []
    assert load_preset(tmp_path / "out.toml").job.model.path == "Qwen/Qwen2.5-0.5B"


def test_import_toml_copies_into_user_folder(tmp_path, config_dir):
    source = write(tmp_path / "shared" / "friend's preset.toml",
                   '[meta]\nname = "Friend’s style"\n[network]\nrank = 8\nbogus = 1\n')
    result = import_preset(source)
    assert result.path.parent == user_dir() and result.path.name == "friend-s-style.toml"
    assert load_preset(result.path).job.network.rank == 8
    assert any(f.path == "network.bogus" for f in result.findings)


def test_import_v1_preset_is_saved_in_the_current_schema(config_dir):
    result = import_preset(DATA / "preset-v1.toml")
    doc = tomllib.loads(result.path.read_text(encoding="utf-8"))
    assert doc["meta"]["schema_version"] == 2 and "train" not in doc
    assert doc["network"]["rank"] == 32


def test_import_kohya_json_converts(config_dir, tmp_path):
    kohya = (DATA / "kohya-sd15-character.json").read_text(encoding="utf-8")
    result = import_preset(write(tmp_path / "anna.json",
                                 kohya.replace('"max_token_length": "75"',
                                               '"max_token_length": "225"')))
    assert result.path.name == "anna-muller-v1.toml"
    preset = load_preset(result.path)
    assert preset.job.network.rank == 32 and preset.job.dataset.path == "D:/lora/Anna Müller/img"
    assert preset.meta.model_family == "sd1"
    assert "max_token_length" in result.unsupported and "clip_skip" not in result.unsupported


@pytest.mark.parametrize("name,content,needle", [
    ("bad.json", '{"network_dim": 8,\n  "x": }', "line 2"),
    ("list.json", "[1, 2]", "JSON object"),
    ("notes.txt", "hello", "cannot be imported"),
    ("bad.toml", "[meta", "line 1"),
])
def test_bad_imports_write_nothing(tmp_path, config_dir, name, content, needle):
    with pytest.raises(PresetError, match=needle):
        import_preset(write(tmp_path / name, content))
    assert not (config_dir / "presets").exists() or not list((config_dir / "presets").iterdir())


def test_slug_keeps_letters_of_any_script():
    assert slug("Ånna's  LoRA / v2") == "ånna-s-lora-v2"
    assert slug("日本語 スタイル") == "日本語-スタイル"
    assert slug("///") == "preset"


@pytest.mark.parametrize("name,text", [
    ("deep.toml", "[train]\nx = " + "[" * 100_000 + "]" * 100_000 + "\n"),
    ("deep kohya.json", "[" * 100_000 + "]" * 100_000),
])
def test_deeply_nested_files_are_a_clear_error_and_change_nothing(tmp_path, config_dir, name, text):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    before = sorted(p.name for p in config_dir.rglob("*")) if config_dir.exists() else []
    with pytest.raises(PresetError) as caught:
        import_preset(path)
    assert "nested too deeply" in str(caught.value) and name in str(caught.value)
    if name.endswith(".toml"):
        with pytest.raises(PresetError):
            read_preset(path)
    assert (sorted(p.name for p in config_dir.rglob("*")) if config_dir.exists() else []) == before


def test_a_deeply_nested_job_toml_is_a_job_file_error(tmp_path):
    from lora_studio.config.jobfile import JobFileError, read_job_toml
    path = tmp_path / "job.toml"
    path.write_text("x = " + "[" * 100_000 + "]" * 100_000, encoding="utf-8")
    with pytest.raises(JobFileError, match="nested too deeply"):
        read_job_toml(path)
