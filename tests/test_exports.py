"""Export plumbing without training: canonical safetensors headers (the same export,
the same SHA-256), file permissions of atomic writes, `lora-studio export --format`."""
import hashlib
import json
import os
import stat
import sys

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from lora_studio.cli import main
from lora_studio.config.parse import parse_job
from lora_studio.config.jobfile import write_job_toml
from lora_studio.engine.core.safetensors_io import (atomic_save_safetensors, canonicalise_header,
                                                   read_metadata)
from lora_studio.engine.exports import export_run
from lora_studio.engine.text.export import ADAPTER_CONFIG, ADAPTER_WEIGHTS
from lora_studio.fsutil import atomic_write_bytes, temp_dir_beside
from lora_studio.runs.layout import new_run_dir

posix_only = pytest.mark.skipif(os.name == "nt", reason="POSIX permission bits")
METADATA = {f"key {i}": f"value {i} é" for i in range(30)}


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def header(path):
    data = path.read_bytes()
    n = int.from_bytes(data[:8], "little")
    return n, data[8:8 + n]


# --- deterministic headers --------------------------------------------------------------

def test_the_same_tensors_and_metadata_give_the_same_bytes(tmp_path):
    tensors = {"b.weight": torch.arange(6.0).reshape(2, 3), "a.alpha": torch.tensor(8.0)}
    raw = tmp_path / "raw.safetensors"
    raw_digests = set()
    for _ in range(4):  # safetensors itself orders the metadata at random
        save_file(tensors, raw, metadata=METADATA)
        raw_digests.add(digest(raw))
    assert len(raw_digests) > 1
    first, second = tmp_path / "one.safetensors", tmp_path / "two.safetensors"
    atomic_save_safetensors(tensors, first, METADATA)
    atomic_save_safetensors(tensors, second, METADATA)
    assert digest(first) == digest(second)
    n, text = header(first)
    assert n % 8 == 0 and text.rstrip(b" ").endswith(b"}")
    parsed = json.loads(text)
    assert list(parsed) == sorted(parsed) and list(parsed["__metadata__"]) == sorted(METADATA)
    assert b", " not in text.rstrip() and b'": ' not in text  # compact
    with safe_open(str(first), framework="pt") as fh:
        assert fh.metadata() == METADATA
        assert torch.equal(fh.get_tensor("b.weight"), tensors["b.weight"])
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_a_header_that_changes_length_is_rewritten_before_unchanged_data(tmp_path):
    """A hand-written file with a spaced-out header: the canonical one is shorter, so
    the data moves up, and the offsets (relative to the data) still hold."""
    path = tmp_path / "hand made.safetensors"
    tensors = {"z": torch.tensor([1.0, 2.0]), "y": torch.tensor([[3, 4]], dtype=torch.int32)}
    save_file(tensors, path, metadata={"b": "2", "a": "1"})
    n, text = header(path)
    data = path.read_bytes()[8 + n:]
    loose = json.dumps(json.loads(text), indent=4).encode()
    loose += b" " * (-len(loose) % 8)
    path.write_bytes(len(loose).to_bytes(8, "little") + loose + data)
    canonicalise_header(path)
    new_n, new_text = header(path)
    assert new_n < len(loose) and new_n % 8 == 0
    assert path.read_bytes()[8 + new_n:] == data
    assert list(json.loads(new_text)) == ["__metadata__", "y", "z"]
    loaded = load_file(path)
    assert torch.equal(loaded["z"], tensors["z"]) and torch.equal(loaded["y"], tensors["y"])
    assert read_metadata(path) == {"a": "1", "b": "2"}
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


# --- permissions ------------------------------------------------------------------------

@pytest.fixture
def umask():
    def set_mask(mask):
        os.umask(mask)
    old = os.umask(0o022)
    yield set_mask
    os.umask(old)


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


@posix_only
def test_new_files_get_the_umask_mode_and_rewrites_keep_theirs(tmp_path, umask):
    caption = tmp_path / "a.txt"
    atomic_write_bytes(caption, b"red")
    assert mode(caption) == 0o644
    lora = atomic_save_safetensors({"a": torch.ones(2)}, tmp_path / "lora.safetensors")
    assert mode(lora) == 0o644
    assert mode(temp_dir_beside(tmp_path / "merged")) == 0o755
    umask(0o027)
    other = tmp_path / "b.txt"
    atomic_write_bytes(other, b"blue")
    assert mode(other) == 0o640
    os.chmod(caption, 0o664)
    os.chmod(lora, 0o600)
    atomic_write_bytes(caption, b"green")
    atomic_save_safetensors({"a": torch.zeros(2)}, lora)
    assert mode(caption) == 0o664 and caption.read_bytes() == b"green"
    assert mode(lora) == 0o600 and torch.equal(load_file(lora)["a"], torch.zeros(2))


@posix_only
def test_captions_written_in_a_batch_get_normal_permissions(tmp_path, umask):
    from lora_studio.data.captions import read_caption, write_captions
    (tmp_path / "dog.txt").write_text("dog")
    os.chmod(tmp_path / "dog.txt", 0o666)
    cat, dog = read_caption(tmp_path / "cat.txt"), read_caption(tmp_path / "dog.txt")
    results = write_captions([(cat, "a cat"), (dog, "a dog")])
    assert all(not isinstance(r, Exception) for r in results), results
    assert mode(tmp_path / "cat.txt") == 0o644 and mode(tmp_path / "dog.txt") == 0o666


# --- lora-studio export --format --------------------------------------------------------

def text_run(tmp_path):
    """A finished text run as far as export is concerned: job.toml and final/."""
    job, _ = parse_job({"model": {"path": "some/model", "family": "text"},
                        "output": {"output_name": "my lora"}})
    run = new_run_dir(tmp_path / "runs", "text")
    write_job_toml(job, run.job_toml)
    atomic_save_safetensors({"base_model.model.lm_head.lora_A.weight": torch.ones(2, 4)},
                            run.final / ADAPTER_WEIGHTS, {"format": "pt", **METADATA})
    (run.final / ADAPTER_CONFIG).write_text('{"peft_type": "LORA"}\n')
    return run


def test_export_peft_lists_files_with_sha256_and_repeats_exactly(tmp_path, capsys):
    run = text_run(tmp_path)
    assert main(["export", str(run.root)]) == 0
    out = capsys.readouterr().out.splitlines()
    weights = run.exports / "my lora" / ADAPTER_WEIGHTS
    assert out == [f"{weights}  (peft, SHA-256 {digest(weights)})",
                   f"{run.exports / 'my lora' / ADAPTER_CONFIG}  (peft, SHA-256 "
                   f"{digest(run.exports / 'my lora' / ADAPTER_CONFIG)})"]
    again = export_run(run.root, "peft")
    assert [(e.format, e.path, e.sha256) for e in again][0] == ("peft", weights, digest(weights))


@pytest.mark.parametrize("argv, message", [
    (["--format", "kohya"], "'kohya' is not an export format for text runs"),
    (["--format", "kohya", "--merged"], "--merged is --format merged"),
])
def test_a_format_of_the_other_family_is_refused(tmp_path, capsys, argv, message):
    run = text_run(tmp_path)
    assert main(["export", str(run.root), *argv]) in (1, 2)
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert list(run.exports.iterdir()) == []


@pytest.mark.parametrize("argv, message", [
    (["--precision", "fp16"], "--precision is for image LoRAs"),
    (["--name", "a/b"], "Cannot export as 'a/b'"),
    (["--name", "NUL"], "device name on Windows"),
    (["--precision", "fp8"], "invalid choice: 'fp8'"),
])
def test_export_options_that_cannot_work_are_refused(tmp_path, capsys, argv, message):
    run = text_run(tmp_path)
    assert main(["export", str(run.root), *argv]) in (1, 2)
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert list(run.exports.iterdir()) == []


def test_export_output_that_is_a_file_is_refused(tmp_path, capsys):
    run = text_run(tmp_path)
    (tmp_path / "a file").write_text("x")
    assert main(["export", str(run.root), "--output", str(tmp_path / "a file")]) == 1
    assert "is a file, not a folder" in capsys.readouterr().err


def test_export_peft_to_a_chosen_folder_goes_beside_a_different_one(tmp_path, capsys):
    run = text_run(tmp_path)
    out = tmp_path / "elsewhere ü" / "deeper"
    assert main(["export", str(run.root), "--output", str(out), "--name", "v1"]) == 0
    assert (out / "v1" / ADAPTER_WEIGHTS).read_bytes() == (run.final / ADAPTER_WEIGHTS).read_bytes()
    assert export_run(run.root, "peft", out, "v1")[0].path == out / "v1" / ADAPTER_WEIGHTS
    (out / "v1" / ADAPTER_CONFIG).write_text('{"mine": true}\n')  # the user's own edit
    written = export_run(run.root, "peft", out, "v1")
    assert [e.path for e in written] == [out / "v1-2" / ADAPTER_WEIGHTS, out / "v1-2" / ADAPTER_CONFIG]
    assert (out / "v1" / ADAPTER_CONFIG).read_text() == '{"mine": true}\n'
    assert sorted(p.name for p in out.iterdir()) == ["v1", "v1-2"]  # no temp left


def test_settle_numbers_files_before_their_suffix_and_keeps_one_copy(tmp_path):
    from lora_studio.fsutil import settle
    wanted = tmp_path / "lora.v1.safetensors"
    for content, expected in ((b"a", "lora.v1.safetensors"), (b"b", "lora.v1-2.safetensors"),
                              (b"a", "lora.v1.safetensors"), (b"c", "lora.v1-3.safetensors"),
                              (b"b", "lora.v1-2.safetensors")):
        tmp = tmp_path / ".tmp"
        tmp.write_bytes(content)
        assert settle(tmp, wanted).name == expected and not tmp.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "lora.v1-2.safetensors", "lora.v1-3.safetensors", "lora.v1.safetensors"]


def test_export_of_an_unfinished_run_says_so(tmp_path, capsys):
    run = text_run(tmp_path)
    (run.final / ADAPTER_WEIGHTS).unlink()
    assert main(["export", str(run.root)]) == 1
    assert "no trained adapter in final/" in capsys.readouterr().err


def test_the_window_asks_the_cli_for_the_chosen_format(tmp_path):
    from lora_studio.ui.worker import export_command
    assert export_command(tmp_path, "diffusers")[-3:] == [str(tmp_path), "--format", "diffusers"]
    assert export_command(tmp_path)[1:] == ["-m", "lora_studio", "export", str(tmp_path)]
    assert export_command(tmp_path)[0] == sys.executable


def test_shared_metadata_names_the_base_model_without_local_folders(tmp_path):
    from lora_studio.engine.core.metadata import shareable_model_name
    local = tmp_path / "Jane Doe" / "models" / "my-llama"
    local.mkdir(parents=True)
    assert shareable_model_name(str(local)) == "my-llama"
    assert shareable_model_name(str(tmp_path / "sd15.safetensors")) == "sd15.safetensors"
    assert shareable_model_name("Qwen/Qwen2.5-0.5B") == "Qwen/Qwen2.5-0.5B"


def _write_versions_forever(path: str, ready) -> None:
    """Rewrite one large safetensors file, version after version, until killed."""
    version = 0
    while True:
        version += 1
        atomic_save_safetensors({"w": torch.full((4_000_000,), float(version))}, path,
                                {"version": str(version)})
        ready.set()


def _complete_version(path) -> float:
    """The version a safetensors file holds, after checking that it is whole."""
    from safetensors.torch import load

    data = path.read_bytes()  # one open: safetensors' own readers reopen by name
    header = json.loads(data[8:8 + int.from_bytes(data[:8], "little")])
    version = float(header["__metadata__"]["version"])
    weights = load(data)["w"]
    assert weights.shape == (4_000_000,) and torch.all(weights == version)
    return version


def test_a_writer_killed_mid_write_never_leaves_a_truncated_file(tmp_path):
    """While a writer rewrites a 16 MB file, every read of the final name finds a whole
    file whose data is the version its header names; so does the read after kill -9."""
    import multiprocessing
    import time

    path = tmp_path / "adapter model.safetensors"
    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Event()
    proc = ctx.Process(target=_write_versions_forever, args=(str(path), ready))
    proc.start()
    seen = set()
    try:
        assert ready.wait(120)
        for i in range(40):
            seen.add(_complete_version(path))
            time.sleep(0.003 * (i % 7))
    finally:
        proc.kill()
        proc.join(10)
    assert _complete_version(path) >= max(seen) and len(seen) > 1  # it kept writing
