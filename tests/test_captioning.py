"""Auto-captioning: the merge rules, the WD14 tagger and BLIP captioner on tiny models
with the real layouts, and the captioning process (python -m lora_studio.captioning)
writing captions as it goes, cancelled midway, and naming a missing model's download."""
import os
import subprocess
import threading
from pathlib import Path

import pytest

from lora_studio.captioning.run import caption_images
from lora_studio.captioning.tagger import Tagger, shown_name
from lora_studio.data.caption_merge import merged_caption
from lora_studio.data.captions import read_caption
from lora_studio.data.session import CaptionSession
from lora_studio.fsutil import is_temp_name
from lora_studio.runs.caption_models import ModelMissing, cached_models, locate
from lora_studio.runs.caption_protocol import (CaptionRequest, CaptionTally, caption_command,
                                               caption_env, decode_event, request_for)
from tests.tiny_captioners import (BLUE_TAGS, RED_TAGS, tiny_blip, tiny_florence2, tiny_tagger,
                                   write_image)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tagger_dir(tmp_path_factory):
    return tiny_tagger(tmp_path_factory.mktemp("models") / "wd tagger")


@pytest.fixture(scope="module")
def blip_dir(tmp_path_factory):
    return tiny_blip(tmp_path_factory.mktemp("models") / "blip")


@pytest.fixture(scope="module")
def florence_dir(tmp_path_factory):
    return tiny_florence2(tmp_path_factory.mktemp("models") / "florence 2")


def dataset(folder: Path, colours: list[tuple[int, int, int]]):
    images = [write_image(folder / f"img {i:03d}.png", c) for i, c in enumerate(colours)]
    return images, [p.with_suffix(".txt") for p in images]


def run_child(request: CaptionRequest, cancel_after: int | None = None, env=None):
    """The events of one run of the captioning process; a cancel line after
    `cancel_after` captioned events."""
    proc = subprocess.Popen(caption_command(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, encoding="utf-8",
                            env=caption_env(str(ROOT), env), cwd=ROOT)
    proc.stdin.write(request.to_json() + "\n")
    proc.stdin.flush()
    events, seen = [], 0
    for line in proc.stdout:
        ev = decode_event(line)
        if ev is None:
            continue
        events.append(ev)
        if ev["type"] == "captioned":
            seen += 1
            if seen == cancel_after:
                proc.stdin.write("cancel\n")
                proc.stdin.flush()
    proc.stdin.close()
    stderr = proc.stderr.read()
    assert proc.wait(60) in (0, 1), stderr
    return events


def no_temp_files(folder: Path) -> bool:
    return not [p for p in folder.iterdir() if is_temp_name(p.name)]


# -- the rules ---------------------------------------------------------------------

def test_merge_modes_put_the_trigger_first_once_and_never_duplicate():
    assert merged_caption("", "cat, sky", "skip", "ohwx") == "ohwx, cat, sky"
    assert merged_caption("dog", "cat", "skip", "ohwx") is None
    assert merged_caption("  ", "cat", "skip") == "cat"  # a blank caption is none
    assert merged_caption("dog, cat", "cat, sky", "append") == "dog, cat, sky"
    assert merged_caption("ohwx, dog", "cat, ohwx", "append", "ohwx") == "ohwx, dog, cat"
    assert merged_caption("dog", "cat, ohwx", "overwrite", "ohwx") == "ohwx, cat"
    assert merged_caption("dog, cat", "cat", "append") is None  # nothing new
    assert merged_caption("dog", "", "overwrite") is None      # never an empty caption over one


def test_tag_names_keep_kaomoji_underscores():
    assert shown_name("long_hair", True) == "long hair"
    assert shown_name("^_^", True) == "^_^"
    assert shown_name("long_hair", False) == "long_hair"


def test_tagger_thresholds_exclusions_and_rating(tagger_dir, tmp_path):
    red, blue = (write_image(tmp_path / n, c) for n, c in (("r.png", (255, 0, 0)),
                                                            ("b.png", (0, 0, 255))))
    from lora_studio.data.images import load_rgb
    tagger = Tagger(tagger_dir)
    assert tagger.predict(tagger.prepare(load_rgb(red))) == RED_TAGS
    assert tagger.predict(tagger.prepare(load_rgb(blue))) == BLUE_TAGS
    strict = Tagger(tagger_dir, general_threshold=0.6, character_threshold=0.99999,
                    exclude=["watermark", "blue_sky"], underscores_to_spaces=False,
                    include_rating=True)
    assert strict.predict(strict.prepare(load_rgb(blue))) == "general, ^_^"
    assert strict.predict(strict.prepare(load_rgb(red))) == "general, red_background, ^_^"


def test_a_missing_model_names_the_hf_download_command(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty cache"))
    with pytest.raises(ModelMissing) as info:
        locate("tagger", "SmilingWolf/wd-vit-tagger-v3")
    assert "'hf download SmilingWolf/wd-vit-tagger-v3'" in info.value.hint
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "model.onnx").write_bytes(b"")
    with pytest.raises(ModelMissing, match="selected_tags.csv"):
        locate("tagger", str(tmp_path / "half"))


def test_a_model_in_the_hub_cache_is_found_without_network(tagger_dir, tmp_path, monkeypatch):
    cache = tmp_path / "hub"
    snapshot = cache / "models--me--tiny-tagger" / "snapshots" / ("a" * 40)
    snapshot.mkdir(parents=True)
    for name in ("model.onnx", "selected_tags.csv"):
        (snapshot / name).write_bytes((tagger_dir / name).read_bytes())
    (cache / "models--me--tiny-tagger" / "refs").mkdir()
    (cache / "models--me--tiny-tagger" / "refs" / "main").write_text("a" * 40)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    import huggingface_hub.constants as hub_constants
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(cache))
    assert locate("tagger", "me/tiny-tagger").path == snapshot
    (cache / "models--someone--llm" / "snapshots" / "b").mkdir(parents=True)
    (cache / "models--someone--llm" / "snapshots" / "b" / "config.json").write_text(
        '{"model_type": "llama"}')
    (cache / "models--me--blip" / "snapshots" / "c").mkdir(parents=True)
    (cache / "models--me--blip" / "snapshots" / "c" / "config.json").write_text(
        '{"model_type": "blip"}')
    assert ("me/tiny-tagger", True) in cached_models("tagger")
    assert ("me/blip", True) in cached_models("captioner")
    assert not {"someone/llm", "me/blip"} & {repo for repo, _ in cached_models("tagger")}
    assert "someone/llm" not in {repo for repo, _ in cached_models("captioner")}


# -- the loop, in this process ------------------------------------------------------

def test_modes_on_existing_captions(tagger_dir, tmp_path):
    images, captions = dataset(tmp_path, [(255, 0, 0)] * 3)
    captions[0].write_text("my own, red background", encoding="utf-8")
    captions[1].write_text("keep me", encoding="utf-8")
    tagger = Tagger(tagger_dir, exclude=["watermark"])

    def run(mode):
        events = []
        request = request_for("tagger", str(tagger_dir), images, captions, mode=mode,
                              trigger="ohwx")
        assert caption_images(request, tagger, events.append) == "completed"
        return events

    events = run("skip")
    assert [e["action"] for e in events if e["type"] == "captioned"] == \
        ["skipped", "skipped", "written"]
    assert captions[2].read_text() == "ohwx, red background, ^_^, simple background"
    run("append")
    assert captions[0].read_text() == "ohwx, my own, red background, ^_^, simple background"
    run("overwrite")
    assert captions[1].read_text() == "ohwx, red background, ^_^, simple background"


def test_cancel_midway_writes_what_was_made_and_no_partial_file(tagger_dir, tmp_path):
    images, captions = dataset(tmp_path, [(0, 0, 255)] * 12)
    events, stop = [], threading.Event()

    def emit(ev):
        events.append(ev)
        if ev["type"] == "captioned" and ev["done"] == 3:
            stop.set()
    status = caption_images(request_for("tagger", str(tagger_dir), images, captions,
                                        mode="overwrite"), Tagger(tagger_dir), emit, stop.is_set)
    assert status == "cancelled" and events[-1]["status"] == "cancelled"
    written = [Path(e["caption"]) for e in events if e["type"] == "captioned"]
    assert 3 <= len(written) < 12
    assert sorted(p for p in captions if p.exists()) == sorted(written)
    assert all(p.read_text() == BLUE_TAGS for p in written)
    assert no_temp_files(tmp_path)


def test_an_unreadable_image_is_named_and_the_others_captioned(tagger_dir, tmp_path):
    images, captions = dataset(tmp_path, [(255, 0, 0)] * 2)
    images[0].write_bytes(b"not a png")
    events = []
    caption_images(request_for("tagger", str(tagger_dir), images, captions, mode="overwrite"),
                   Tagger(tagger_dir), events.append)
    tally = CaptionTally()
    for ev in events:
        tally.add(ev)
    assert list(tally.failures) == [0] and "img 000.png" in tally.failures[0]
    assert list(tally.written) == [1] and not captions[0].exists()
    assert "1 image(s) could not be read" in tally.summary()


def test_an_image_the_model_refuses_is_named_and_the_run_goes_on(tagger_dir, tmp_path):
    images, captions = dataset(tmp_path, [(255, 0, 0)] * 2)
    tagger = Tagger(tagger_dir)

    def prepare(img, original=tagger.prepare):
        if img.getpixel((0, 0)) == (255, 0, 0) and not prepare.refused:
            prepare.refused = True
            raise ValueError("odd shape")
        return original(img)
    prepare.refused = False
    tagger.prepare = prepare
    events = []
    assert caption_images(request_for("tagger", str(tagger_dir), images, captions,
                                      mode="overwrite"), tagger, events.append) == "completed"
    failed = [e for e in events if e["type"] == "failed"]
    assert len(failed) == 1 and "odd shape" in failed[0]["message"]
    assert "img 000.png" in failed[0]["message"] and captions[1].read_text() == RED_TAGS


# -- the captioning process ------------------------------------------------------------

def test_the_process_captions_a_folder_keeping_encoding_and_line_endings(tagger_dir, tmp_path):
    folder = tmp_path / "my dataset ü 猫"
    images, captions = dataset(folder, [(255, 0, 0), (0, 0, 255)])
    captions[0].write_bytes(b"\xef\xbb\xbfold tag\r\n")  # Notepad's UTF-8 with BOM, CRLF
    events = run_child(request_for("tagger", str(tagger_dir), images, captions, mode="append",
                                   trigger="ohwx", exclude=["watermark"]))
    tally = CaptionTally()
    for ev in events:
        tally.add(ev)
    assert tally.status == "completed", events
    assert events[0]["type"] == "started" and events[0]["total"] == 2
    assert [e["done"] for e in events if e["type"] == "captioned"] == [1, 2]
    assert captions[0].read_bytes() == \
        b"\xef\xbb\xbfohwx, old tag, red background, ^_^, simple background\r\n"
    assert captions[1].read_text(encoding="utf-8") == \
        "ohwx, hatsune miku, blue sky, ^_^, simple background"
    assert tally.written[0] == ("old tag", "ohwx, old tag, red background, ^_^, simple background")

    captions[0].write_bytes(b"\xef\xbb\xbfold tag\r\n")  # as the session saw it before the run
    session = CaptionSession(images, captions)
    before = list(session.texts)
    run_child(request_for("tagger", str(tagger_dir), images, captions, mode="overwrite",
                          trigger="ohwx"))
    assert session.adopt_written(range(2), "Auto-caption") == [0, 1]
    assert not session.dirty and session.texts[1].startswith("ohwx, hatsune miku")
    assert session.undo() == [0, 1] and session.texts == before  # one step
    assert session.save().ok
    assert read_caption(captions[0]).text == "old tag" and captions[0].read_bytes().endswith(b"\r\n")


def test_the_process_stops_on_cancel_leaving_no_partial_file(tagger_dir, tmp_path):
    images, captions = dataset(tmp_path, [(0, 0, 255)] * 150)
    events = run_child(request_for("tagger", str(tagger_dir), images, captions, mode="overwrite"),
                       cancel_after=2)
    assert events[-1]["type"] == "finished" and events[-1]["status"] == "cancelled"
    written = [Path(e["caption"]) for e in events if e["type"] == "captioned"]
    assert 2 <= len(written) < 150
    assert sorted(p for p in captions if p.exists()) == sorted(written)
    assert all(p.read_text() == BLUE_TAGS for p in written)
    assert no_temp_files(tmp_path)


def test_the_process_says_how_to_download_a_missing_model(tmp_path):
    images, captions = dataset(tmp_path, [(0, 0, 255)])
    events = run_child(request_for("captioner", "Salesforce/blip-image-captioning-base", images,
                                   captions), env={**os.environ,
                                                   "HF_HUB_CACHE": str(tmp_path / "no cache")})
    assert [e["type"] for e in events] == ["error"]
    assert "hf download Salesforce/blip-image-captioning-base" in events[0]["hint"]
    assert not captions[0].exists()


def test_the_process_describes_images_with_blip(blip_dir, tmp_path):
    images, captions = dataset(tmp_path / "blip ds", [(255, 0, 0), (0, 0, 255)])
    events = run_child(request_for("captioner", str(blip_dir), images, captions,
                                   trigger="ohwx", task="a picture of", max_new_tokens=6))
    assert events[-1]["status"] == "completed", events
    for path in captions:
        text = path.read_text(encoding="utf-8")
        assert text.startswith("ohwx, a picture of ") and len(text.split()) > 4


def test_florence2_answers_its_caption_task_in_plain_text(florence_dir, tmp_path):
    from lora_studio.captioning.captioner import Captioner
    from lora_studio.data.images import load_rgb
    image = write_image(tmp_path / "x.png", (10, 200, 30))
    default = Captioner(florence_dir)
    assert default.task == "<MORE_DETAILED_CAPTION>"
    short = Captioner(florence_dir, task="<CAPTION>", max_new_tokens=6)
    text = short.predict(short.prepare(load_rgb(image)))
    assert text and "<" not in text and "</s>" not in text


def test_the_command_line_captions_a_dataset(tagger_dir, tmp_path, capsys, monkeypatch):
    from lora_studio.cli import main
    root = tmp_path / "ds ü"
    write_image(root / "2_cat" / "a.png", (255, 0, 0))
    write_image(root / "b.png", (0, 0, 255))
    (root / "b.txt").write_text("mine", encoding="utf-8")
    assert main(["caption", str(root), "--tagger", str(tagger_dir), "--trigger", "ohwx",
                 "--exclude", "watermark, ^_^"]) == 0
    out = capsys.readouterr().out
    assert (root / "2_cat" / "a.txt").read_text() == "ohwx, red background, simple background"
    assert (root / "b.txt").read_text() == "mine"  # skip is the default
    assert "a.txt: ohwx, red background" in out and "1 caption(s) written" in out

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty"))
    assert main(["caption", str(root), "--captioner", "microsoft/nothing-here",
                 "--mode", "overwrite"]) == 1
    assert "hf download microsoft/nothing-here" in capsys.readouterr().err
    assert (root / "b.txt").read_text() == "mine"


def test_a_killed_process_loses_nothing_it_wrote(tagger_dir, tmp_path):
    images, captions = dataset(tmp_path, [(0, 0, 255)] * 150)
    request = request_for("tagger", str(tagger_dir), images, captions, mode="overwrite")
    proc = subprocess.Popen(caption_command(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, encoding="utf-8",
                            env=caption_env(str(ROOT)), cwd=ROOT)
    proc.stdin.write(request.to_json() + "\n")
    proc.stdin.flush()
    reported = []
    for line in proc.stdout:
        ev = decode_event(line)
        if ev and ev["type"] == "captioned":
            reported.append(Path(ev["caption"]))
            if len(reported) == 3:
                proc.kill()  # a crash, as far as the files can tell
                break
    proc.wait(30)
    on_disk = [p for p in captions if p.exists()]
    assert set(reported) <= set(on_disk) and len(on_disk) < 150
    assert all(p.read_text() == BLUE_TAGS for p in on_disk)  # whole, never cut
