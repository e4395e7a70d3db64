"""One-click export with the family's default format, and the "Export as…" dialog,
driven with a stand-in exporter (the real one is tested in test_exports.py and
through the demo in test_ui_demo.py)."""
import hashlib
import sys
import textwrap
from pathlib import Path

import pytest
from PySide6.QtGui import QDesktopServices

from lora_studio.config.jobfile import write_job_toml
from lora_studio.config.parse import parse_job
from lora_studio.runs.events import EventWriter, event
from lora_studio.runs.exports import IMAGE_ADAPTER, TEXT_ADAPTER
from lora_studio.runs.layout import new_run_dir
from lora_studio.ui.export_dialog import ExportDialog
from lora_studio.ui.training_view import TrainingView
from ui_fixtures import no_gpu

ENDED = 20_000  # ms for the stand-in exporter on a busy machine
# Writes exports/lora-<format>.safetensors holding the format's name, and lists it as
# `lora-studio export` does; a third argument makes it fail.
EXPORTER = textwrap.dedent("""
    import pathlib, sys
    run, fmt = pathlib.Path(sys.argv[1]), sys.argv[2]
    if len(sys.argv) > 3:
        sys.exit("disk full while writing " + fmt)
    out = run / "exports" / f"lora-{fmt}.safetensors"
    out.write_bytes(fmt.encode())
    print(f"{out}  ({fmt}, SHA-256 ignored)")
""")


def finished_run(tmp_path, family):
    job, _ = parse_job({"model": {"family": family}})
    run = new_run_dir(tmp_path / "runs ü", family)
    write_job_toml(job, run.job_toml)
    (run.final / (TEXT_ADAPTER if family == "text" else IMAGE_ADAPTER)).write_bytes(b"trained")
    with EventWriter(run.events) as write:
        write(event("started", total_steps=1))
        write(event("finished", status="completed"))
    return run


@pytest.fixture
def view(qtbot):
    widget = TrainingView(no_gpu)
    qtbot.addWidget(widget)
    widget.resize(1000, 700)
    widget.show()
    widget.export_command = lambda run_dir, fmt: [sys.executable, "-c", EXPORTER, str(run_dir), fmt]
    yield widget
    widget.shutdown()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_one_click_exports_the_family_default(view, qtbot, tmp_path):
    run = finished_run(tmp_path, "sd1")
    view.show_run(run.root)
    assert view.export_button.isEnabled() and view.export_button.text() == "Export (kohya)"
    with qtbot.waitSignal(view.export_ended, timeout=ENDED):
        view.export_button.click()
    assert f"{run.exports / 'lora-kohya.safetensors'}\nSHA-256 {sha(b'kohya')}" in \
        view.export_label.text()
    assert view.export_folder == run.exports


def test_export_as_dialog_runs_the_chosen_format_and_shows_the_result(view, qtbot, tmp_path,
                                                                      monkeypatch):
    run = finished_run(tmp_path, "sdxl")
    view.show_run(run.root)
    view.export_as_button.click()
    dialog = view.export_dialog
    assert dialog.isVisible() and dialog.isModal()
    assert list(dialog.radios) == ["kohya", "diffusers"] and dialog.chosen() == "kohya"
    assert "ComfyUI" in dialog.radios["kohya"].text()

    dialog.radios["diffusers"].click()
    with qtbot.waitSignal(view.export_ended, timeout=ENDED):
        dialog.export_button.click()
        assert not dialog.export_button.isEnabled() and "Exporting (diffusers)" in dialog.status.text()
    written = run.exports / "lora-diffusers.safetensors"
    assert dialog.result.isVisible() and not dialog.status.isVisible()
    assert f"{written}\nSHA-256 {sha(b'diffusers')}" in dialog.result.label.text()
    assert view.export_label.text() == dialog.result.label.text()  # the view shows it too
    assert not (run.exports / "lora-kohya.safetensors").exists()
    opened = []
    monkeypatch.setattr(QDesktopServices, "openUrl", lambda url: opened.append(url.toLocalFile()))
    dialog.result.open_folder_button.click()
    assert [Path(p) for p in opened] == [run.exports]

    view.export_command = lambda run_dir, fmt: [sys.executable, "-c", EXPORTER, str(run_dir), fmt,
                                                "fail"]
    with qtbot.waitSignal(view.export_ended, timeout=ENDED):
        dialog.export_button.click()
    assert "disk full while writing diffusers" in dialog.status.text()
    assert dialog.status.isVisible() and not dialog.result.isVisible()
    assert dialog.export_button.isEnabled()


def test_text_runs_offer_peft_merged_and_gguf(view, qtbot, tmp_path):
    run = finished_run(tmp_path, "text")
    view.show_run(run.root)
    assert view.export_button.text() == "Export (peft)"
    dialog = ExportDialog(view, "text")
    qtbot.addWidget(dialog)
    assert list(dialog.radios) == ["peft", "merged", "gguf-adapter", "gguf-f16", "gguf-q8_0", "onnx",
                                   "onnx-fp16", "onnx-kv", "onnx-kv-fp16"]
    with qtbot.waitSignal(view.export_ended, timeout=ENDED):
        assert view.export()  # the one-click export, still running when the dialog asks
        dialog.start_export()
        assert "in progress" in dialog.status.text() and dialog.export_button.isEnabled()
    assert (run.exports / "lora-peft.safetensors").exists()
    assert not dialog.result.isVisible()  # the dialog shows only the exports it started


def image_run_with_weights(tmp_path):
    """A finished SD 1.x run whose final/ holds a two-tensor LoRA in fp32, as the image
    engine writes it (with the facts its exports need), for the real exporter."""
    import json

    import torch
    from safetensors.torch import save_file

    from lora_studio.engine.image.export import FACTS_KEY
    run = finished_run(tmp_path, "sd1")
    module = "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"
    tensors = {f"{module}.lora_A.weight": torch.linspace(-1, 1, 32).reshape(4, 8),
               f"{module}.lora_B.weight": torch.linspace(1, 2, 32).reshape(8, 4)}
    facts = {"family": "sd1", "prediction_type": "epsilon", "base_model": "tiny-sd",
             "base_model_file": str(tmp_path / "absent.safetensors"), "steps": 4, "epochs": 1,
             "num_train_images": 2, "tag_frequency": {}, "dataset_dirs": {}, "buckets": {},
             "started_at": 1.0, "finished_at": 2.0}
    save_file(tensors, run.final / IMAGE_ADAPTER, {FACTS_KEY: json.dumps(facts)})
    return run


def test_export_as_a_chosen_folder_name_and_fp16_then_beside_it(qtbot, tmp_path):
    from safetensors import safe_open

    from lora_studio.ui.worker import export_command
    run = image_run_with_weights(tmp_path)
    view = TrainingView(no_gpu)
    qtbot.addWidget(view)
    view.export_command = export_command   # the real `lora-studio export`
    view.show_run(run.root)
    dialog = ExportDialog(view, "image")
    qtbot.addWidget(dialog)
    assert dialog.precision.isVisibleTo(dialog) and dialog.options() == []
    assert dialog.name.text() == "my_lora.safetensors"
    dialog.radios["diffusers"].click()
    assert dialog.name.text() == "my_lora-diffusers"  # the name follows an untouched default
    dialog.radios["kohya"].click()

    out = tmp_path / "LoRAs à partager"
    dialog.folder.setText(str(out))
    dialog.name.setText("chat v2")
    dialog.name.setModified(True)
    dialog.precision.setCurrentIndex(dialog.precision.findData("fp16"))
    assert f"Writes {out / 'chat v2.safetensors'}" == dialog.target.text()
    with qtbot.waitSignal(view.export_ended, timeout=60_000):
        dialog.export_button.click()
    written = out / "chat v2.safetensors"
    assert f"{written}\nSHA-256 " in dialog.result.label.text(), dialog.status.text()
    with safe_open(written, "pt") as fh:
        assert {fh.get_tensor(k).dtype for k in fh.keys()} == {torch_dtype("float16")}
    first = written.read_bytes()

    dialog.precision.setCurrentIndex(dialog.precision.findData("fp32"))
    assert "it is kept" in dialog.target.text()
    with qtbot.waitSignal(view.export_ended, timeout=60_000):
        dialog.export_button.click()
    beside = out / "chat v2-2.safetensors"
    assert f"{beside}\nSHA-256 " in dialog.result.label.text(), dialog.status.text()
    assert written.read_bytes() == first   # not overwritten
    with safe_open(beside, "pt") as fh:
        assert {fh.get_tensor(k).dtype for k in fh.keys()} == {torch_dtype("float32")}
    dialog.grab().save(str(tmp_path / "export_dialog.png"))  # looked at while building it
    view.shutdown()


def torch_dtype(name):
    import torch
    return getattr(torch, name)


def test_export_as_refuses_names_windows_cannot_hold(view, tmp_path):
    run = finished_run(tmp_path, "text")
    view.show_run(run.root)
    dialog = ExportDialog(view, "text")
    assert not dialog.precision.isVisibleTo(dialog)   # text adapters are saved as trained
    assert dialog.name.text() == "my_lora" and dialog.export_button.isEnabled()
    dialog.name.setText("v2: final?")
    dialog.name.textEdited.emit("v2: final?")
    assert not dialog.export_button.isEnabled() and "Windows does not allow" in dialog.target.text()
    dialog.name.setText("v2")
    dialog.name.textEdited.emit("v2")
    dialog.folder.setText(str(run.job_toml))
    assert not dialog.export_button.isEnabled() and "is a file" in dialog.target.text()
    dialog.folder.setText(str(tmp_path / "new folder"))
    assert dialog.export_button.isEnabled()
    assert dialog.options() == ["--output", str(tmp_path / "new folder"), "--name", "v2"]


MODELFILE_EXPORTER = textwrap.dedent("""
    import pathlib, sys
    folder = pathlib.Path(sys.argv[1]) / "exports" / "lora-gguf"
    folder.mkdir(parents=True)
    for name in ("lora-lora.gguf", "Modelfile"):
        (folder / name).write_text("x")
        print(f"{folder / name}  (gguf-adapter, SHA-256 ignored)")
""")


def _shown_text_dialog(view, qtbot, run) -> ExportDialog:
    """The Export dialog of a finished text run, on screen (its findings and checks are
    shown only when it is)."""
    view.show_run(run.root)
    dialog = ExportDialog(view, "text")
    qtbot.addWidget(dialog)
    dialog.show()
    return dialog


def _export_with(view, dialog, qtbot, script: str) -> None:
    """Click Export with ``script`` (given the run folder) standing in for `lora-studio
    export`, and wait for its end."""
    view.export_command = lambda run_dir, fmt: [sys.executable, "-c", script, str(run_dir)]
    with qtbot.waitSignal(view.export_ended, timeout=ENDED):
        dialog.export_button.click()


def test_dialog_names_what_the_target_cannot_take_and_shows_the_ollama_command(view, qtbot,
                                                                               tmp_path):
    run = finished_run(tmp_path, "text")
    (run.final / "adapter_config.json").write_text('{"r": 32, "use_dora": true}')
    dialog = _shown_text_dialog(view, qtbot, run)
    dialog.radios["gguf-adapter"].click()
    assert dialog.findings.isVisible() and "cannot load DoRA adapters" in dialog.findings.text()
    assert "fix: Export the merged model instead" in dialog.findings.text()
    assert not dialog.export_button.isEnabled()
    dialog.radios["peft"].click()   # vLLM: DoRA blocks, the rank is a note with its flag
    assert "--max-lora-rank 32" in dialog.findings.text() and not dialog.export_button.isEnabled()
    assert dialog.height() >= dialog.layout().totalHeightForWidth(dialog.width())  # all shown
    dialog.radios["merged"].click()
    assert not dialog.findings.isVisible() and dialog.export_button.isEnabled()

    dialog.radios["gguf-adapter"].click()   # the job names no model: GGUF cannot map it
    assert "does not know the architecture" in dialog.findings.text()
    (run.final / "adapter_config.json").write_text('{"r": 8}')
    dialog.radios["peft"].click()
    assert not dialog.findings.isVisible() and dialog.export_button.isEnabled()
    _export_with(view, dialog, qtbot, MODELFILE_EXPORTER)
    modelfile = run.exports / "lora-gguf" / "Modelfile"
    assert dialog.ollama.isVisible()
    assert dialog.ollama.text() == f'Ollama: ollama create my_lora -f "{modelfile}"'


ONNX_EXPORTER = textwrap.dedent("""
    import json, pathlib, sys
    folder = pathlib.Path(sys.argv[1]) / "exports" / "lora-onnx"
    folder.mkdir(parents=True)
    (folder / "model.onnx").write_text("x")
    (folder / "onnx_check.json").write_text(json.dumps({
        "onnxruntime": "1.2.3", "prompts": 3, "dtype": "float32", "max_abs_diff": 2e-6,
        "relative_diff": 1.5e-5, "tolerance": 1e-4, "same_next_token": 1.0, "passed": True}))
    for name in ("model.onnx", "onnx_check.json"):
        print(f"{folder / name}  (onnx, SHA-256 ignored)")
""")


def test_dialog_offers_onnx_and_shows_the_onnxruntime_check(view, qtbot, tmp_path):
    dialog = _shown_text_dialog(view, qtbot, finished_run(tmp_path, "text"))
    assert {"onnx", "onnx-fp16", "onnx-kv", "onnx-kv-fp16"} <= set(dialog.radios)
    dialog.radios["onnx-kv"].click()
    assert dialog.name.text() == "my_lora-onnx-kv"
    dialog.radios["onnx"].click()
    assert dialog.name.text() == "my_lora-onnx"
    _export_with(view, dialog, qtbot, ONNX_EXPORTER)
    assert dialog.onnx_check.isVisible()
    assert dialog.onnx_check.text() == (
        "onnxruntime 1.2.3 matches the merged PyTorch model on 3 prompts (float32): largest "
        "logit difference 2e-06, 1.5e-05 of the largest logit (tolerance 0.0001); the same "
        "next token 100% of the time.")
    dialog.grab().save("/tmp/export_dialog_onnx.png")


MERGED_EXPORTER = textwrap.dedent("""
    import json, pathlib, sys
    folder = pathlib.Path(sys.argv[1]) / "exports" / "lora-merged"
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_text("x")
    (folder / "verify.json").write_text(json.dumps({
        "checked": True, "export": "merged model", "runtime": "transformers 5.0",
        "max_abs_diff": 2e-6, "relative_diff": 1e-6, "tolerance": 1e-4, "base_diff": 0.5,
        "passed": True, "prompts": [{"prompt": "Hello!", "peft": "Arr", "export": "Arr",
                                     "tokens": 8, "same_tokens": 8}]}))
    for name in ("model.safetensors", "verify.json"):
        print(f"{folder / name}  (merged, SHA-256 ignored)")
""")


def test_dialog_shows_the_round_trip_of_a_merged_export(view, qtbot, tmp_path):
    dialog = _shown_text_dialog(view, qtbot, finished_run(tmp_path, "text"))
    dialog.radios["merged"].click()
    _export_with(view, dialog, qtbot, MERGED_EXPORTER)
    assert dialog.roundtrip.isVisible()
    assert dialog.roundtrip.text() == (
        "Round trip passed: transformers 5.0 loads the merged model back; greedy answers the "
        "same as PEFT (base + adapter) on 1/1 prompts; largest logit difference 2e-06, 1e-06 "
        "of the largest logit (tolerance 0.0001); it differs from the base model by up to 0.5."
        "\n  'Hello!': PEFT 'Arr', export 'Arr'")
    assert dialog.height() >= dialog.layout().totalHeightForWidth(dialog.width())
    dialog.grab().save("/tmp/export_dialog_roundtrip.png")


def _image_dialog(qtbot, tmp_path, **sections) -> ExportDialog:
    """The Export dialog of a finished SD 1.x run whose job has ``sections``."""
    run = finished_run(tmp_path, "sd1")
    job, _ = parse_job({"model": {"family": "sd1"}, **sections})
    write_job_toml(job, run.job_toml)
    view = TrainingView(no_gpu)
    qtbot.addWidget(view)
    view.show_run(run.root)
    dialog = ExportDialog(view, "image")
    qtbot.addWidget(dialog)
    return dialog


def test_the_dialogs_precision_starts_at_the_jobs_and_fp32_is_then_asked_for(qtbot, tmp_path):
    dialog = _image_dialog(qtbot, tmp_path, output={"save_precision": "fp16"})
    assert dialog.precision.currentData() == "fp16" and dialog.options() == []
    dialog.precision.setCurrentIndex(dialog.precision.findData("fp32"))
    assert dialog.options() == ["--precision", "fp32"]  # without it the job's fp16 would apply


def test_a_loha_run_cannot_pick_the_diffusers_format(qtbot, tmp_path):
    dialog = _image_dialog(qtbot, tmp_path, network={"algo": "loha"})
    assert not dialog.radios["diffusers"].isEnabled() and dialog.radios["kohya"].isEnabled()
    assert "not LoHa" in dialog.radios["diffusers"].toolTip()
