"""What Windows users bring: folders with spaces and accents, presets written with
backslash paths, CRLF (and BOM) text files, and no symlinks. Run here on Linux
through the public APIs (presets, dataset scan, captions, text records, run dir)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
from PIL import Image

from lora_studio.config.jobfile import read_job_toml, write_job_toml
from lora_studio.config.presets import PresetError, PresetMeta, load_preset, save_preset
from lora_studio.config.validate import validate
from lora_studio.data.captions import read_caption, write_caption
from lora_studio.data.scan import scan_images
from lora_studio.data.text_records import load_text_records
from lora_studio.runs.events import EventWriter, event, read_events
from lora_studio.runs.layout import list_runs, new_run_dir

ROOT = Path(__file__).resolve().parents[1]
WEIRD = Path("Mes données") / "ç 1"


@pytest.fixture
def weird(tmp_path) -> Path:
    folder = tmp_path / WEIRD
    folder.mkdir(parents=True)
    return folder


def _write_preset(folder: Path, body: str, crlf: bool = True) -> Path:
    path = folder / "mon preset é.toml"
    text = body.replace("\n", "\r\n") if crlf else body
    path.write_bytes(("\ufeff" + text).encode("utf-8"))  # Notepad's UTF-8 BOM
    return path


def test_preset_with_windows_paths_in_literal_strings_loads_on_linux(weird):
    path = _write_preset(weird, "[meta]\nname = \"Réglage\"\n[model]\npath = 'C:\\Users\\Ana\\models\\sd15.safetensors'\n"
                                "[dataset]\npath = \"D:\\\\Mes données\\\\chats\"\n[network]\nrank = 8\n")
    loaded = load_preset(path)
    assert loaded.meta.name == "Réglage"
    assert loaded.job.model.path == r"C:\Users\Ana\models\sd15.safetensors"
    assert loaded.job.dataset.path == r"D:\Mes données\chats"
    assert loaded.job.network.rank == 8


def test_windows_paths_of_another_machine_are_reported_missing_not_a_crash(weird):
    path = _write_preset(weird, "[meta]\nname = \"w\"\n[model]\npath = 'C:\\Users\\Ana\\sd15.safetensors'\n"
                                "family = \"sd1\"\n[dataset]\npath = 'D:\\Mes données\\chats'\n")
    loaded = load_preset(path)
    findings = {f.path: f for f in validate(loaded.job, base_dir=loaded.base_dir) if f.level == "error"}
    assert findings["model.path"].rule == "model-not-found"
    assert r"C:\Users\Ana\sd15.safetensors" in findings["model.path"].message
    assert findings["dataset.path"].rule == "dataset-missing"
    assert r"D:\Mes données\chats" in findings["dataset.path"].message


@pytest.mark.parametrize("value", [r'"C:\Users\Ana\chats"', r'"C:\Program Files\x"'])
def test_preset_with_unescaped_backslashes_gives_a_message_naming_file_and_line(weird, value):
    path = _write_preset(weird, f"[meta]\nname = \"x\"\n[dataset]\npath = {value}\n")
    with pytest.raises(PresetError) as info:
        load_preset(path)
    message = str(info.value)
    assert str(path) in message and "line 4" in message
    assert "Traceback" not in message


def test_preset_saved_and_reloaded_in_a_folder_with_spaces_and_accents(weird):
    job = load_preset(_write_preset(weird, "[meta]\nname = \"a\"\n[network]\nrank = 4\n")).job
    job.dataset.path = r"C:\Users\Zoë\Mes images"
    target = save_preset(job, PresetMeta(name="Zoë's préset"), weird / "sous dossier" / "zoë.toml")
    again = load_preset(target)
    assert again.job.dataset.path == r"C:\Users\Zoë\Mes images"
    assert again.meta.name == "Zoë's préset"


def _image(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (200, 10, 10)).save(path)


def test_dataset_scan_pairs_captions_in_folders_with_spaces_and_accents(weird):
    _image(weird / "10_chat noir" / "café 1.png")
    (weird / "10_chat noir" / "café 1.txt").write_bytes("chat noir, café\r\n".encode("utf-8"))
    _image(weird / "10_chat noir" / "sous-dossier ü" / "été.JPG".replace(".JPG", ".jpg"))
    (weird / "10_chat noir" / "sous-dossier ü" / "été.txt").write_bytes(b"\xef\xbb\xbfsummer\r\n")
    dataset = scan_images(weird)
    assert dataset.images == 2 and dataset.captioned == 2
    assert dataset.samples_per_epoch == 20
    assert {i.folder for i in dataset.items} == {"10_chat noir"}


def test_crlf_caption_reads_clean_and_is_written_back_crlf(weird):
    path = weird / "café 1.txt"
    path.write_bytes(b"\xef\xbb\xbfchat noir, caf\xc3\xa9\r\nsecond line\r\n")
    caption = read_caption(path)
    assert caption.text == "chat noir, café\nsecond line"
    assert "\r" not in caption.text
    write_caption(caption, "chat noir, café, nuit\nsecond line")
    assert path.read_bytes() == b"\xef\xbb\xbfchat noir, caf\xc3\xa9, nuit\r\nsecond line\r\n"


def test_crlf_text_records_have_no_carriage_returns(weird):
    jsonl = weird / "données.jsonl"
    jsonl.write_bytes('{"prompt": "Bonjour ?", "response": "Salut !"}\r\n'
                      '{"prompt": "Ça va ?", "response": "Oui."}\r\n'.encode("utf-8"))
    plain = weird / "notes é.txt"
    plain.write_bytes(b"first paragraph\r\nline two\r\n\r\nsecond\r\n")
    result = load_text_records(weird)
    assert len(result.records) == 4 and not result.problems
    for record in result.records:
        assert all("\r" not in turn.content for turn in record.turns)


def test_run_dir_events_and_job_round_trip_under_non_ascii_output_dir(weird):
    job = load_preset(_write_preset(weird, "[meta]\nname = \"a\"\n")).job
    job.output.output_name = "mon_lora_é"
    job.dataset.path = r"C:\Users\Ana\Mes données\chats"
    run = new_run_dir(weird / "runs", job.output.output_name)
    write_job_toml(job, run.job_toml)
    again, findings = read_job_toml(run.job_toml)
    assert again.dataset.path == job.dataset.path and not findings
    with EventWriter(run.events) as emit:
        emit(event("log", message=f"dataset {job.dataset.path} → ok"))
    assert [e["message"] for e in read_events(run.events)] == [r"dataset C:\Users\Ana\Mes données\chats → ok"]
    assert list_runs(weird / "runs") == [run]
    # events.jsonl uses "\n" on every OS, so a run copied between machines replays the same.
    assert b"\r\n" not in run.events.read_bytes()


SYMLINK_CALL = re.compile(r"\b(os\.symlink|symlink_to|hardlink_to|os\.link|mklink)\b")


def test_no_symlinks_are_created_anywhere_in_the_package():
    """Symlinks need admin rights or developer mode on Windows."""
    offenders = []
    for source in sorted((ROOT / "lora_studio").rglob("*.py")):
        for n, line in enumerate(source.read_text(encoding="utf-8").splitlines(), 1):
            code = line.split("#", 1)[0]
            if SYMLINK_CALL.search(code):
                offenders.append(f"{source.relative_to(ROOT)}:{n}: {line.strip()}")
    assert not offenders, "\n".join(offenders)
