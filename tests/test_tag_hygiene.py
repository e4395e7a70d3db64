"""Tag hygiene: a booru tag list (a1111-tagcomplete's CSV) completes tags after the
dataset's own, and each caption's CLIP tokens are counted against the 75 the text
encoder reads, with the captions training will cut listed in Health."""
import os
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from lora_studio.data.booru_tags import (BooruListError, complete_tags, load_booru_tags,
                                         parse_booru_csv)
from lora_studio.data.clip_tokens import CLIP_WINDOW, CaptionTokens, estimate_tokens

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "resources"))
import make_tiny_sd  # noqa: E402

DANBOORU = ('1girl,0,4114588,"1girls,sole_female"\r\n'
            'long_hair,0,2973452,"/lh,longhair"\r\n'
            'solo,0,3426446,"solo_female"\r\n'
            'looking_at_viewer,0,2248215,"/lav"\r\n'
            '^_^,0,10000,\r\n'
            'long_sleeves,0,1200000,\r\n'
            'hatsune_miku,4,120000,"miku"\r\n'
            'broken row without numbers,x,y\r\n'
            'solo,0,5,\r\n')


def write(path: Path, text: str, bom: bool = False) -> Path:
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8"))
    return path


def test_a_danbooru_list_reads_with_crlf_aliases_and_no_header(tmp_path):
    tags = parse_booru_csv(write(tmp_path / "danbooru.csv", DANBOORU))
    assert len(tags) == 7 and tags.skipped == 1  # the second 'solo' is the same tag
    assert tags.complete("long") == ["long hair", "long sleeves"]  # most used first
    assert tags.complete("LOOK") == ["looking at viewer"]
    assert tags.complete("^_") == ["^_^"]                # an emoticon keeps its underscore
    assert tags.complete("miku") == ["hatsune miku"]     # an alias completes to its tag
    assert tags.complete("sole f") == ["1girl"]
    assert tags.complete("") == [] and tags.complete("zzz") == []


def test_a_list_with_a_header_and_a_bom_reads_the_same(tmp_path):
    text = "name,category,count,aliases\n" + DANBOORU.replace("\r\n", "\n")
    tags = parse_booru_csv(write(tmp_path / "with header.csv", text, bom=True))
    assert len(tags) == 7 and tags.complete("1") == ["1girl"]
    names_only = parse_booru_csv(write(tmp_path / "names.csv", "tag\nblue_sky\ncloud\n"))
    assert names_only.complete("b") == ["blue sky"]


def test_a_file_without_tags_is_refused_by_name(tmp_path):
    for name, text in (("empty.csv", ""), ("junk.csv", "a,b,c\nd,e,f\n")):
        with pytest.raises(BooruListError) as info:
            parse_booru_csv(write(tmp_path / name, text))
        assert name in info.value.message and "danbooru.csv" in info.value.hint
    with pytest.raises(BooruListError):
        load_booru_tags(tmp_path / "missing.csv")


def test_a_big_list_is_read_once_and_again_when_it_changes(tmp_path):
    rows = "".join(f"tag_{i:06d},0,{i},\n" for i in range(120_000))
    path = write(tmp_path / "big.csv", rows)
    first = load_booru_tags(path)
    assert load_booru_tags(path) is first
    assert first.complete("tag 11999", limit=3) == ["tag 119999", "tag 119998", "tag 119997"]
    write(path, "other,0,1,\n")
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert len(load_booru_tags(path)) == 1


def test_the_datasets_own_tags_come_before_the_lists(tmp_path):
    tags = parse_booru_csv(write(tmp_path / "danbooru.csv", DANBOORU))
    own = Counter({"long coat": 3, "sks": 9})
    assert complete_tags("long", own, tags) == ["long coat", "long hair", "long sleeves"]
    assert complete_tags("long", own, None) == ["long coat"]
    assert complete_tags("long", own, tags, limit=2) == ["long coat", "long hair"]


# --- CLIP tokens ------------------------------------------------------------------

@pytest.fixture(scope="module")
def vocab_model(tmp_path_factory):
    """A diffusers-like folder whose tokenizer/ holds vocab.json + merges.txt only."""
    model = tmp_path_factory.mktemp("model ü")
    make_tiny_sd.write_tokenizer_files(model / "tokenizer")
    return model


LONG = ", ".join(["red circle on a white background"] * 13)  # 90 tokens with CLIP's own vocabulary
SHORT = "sks, red circle, white background"


def test_the_count_is_the_tokenizers_and_flags_only_the_long_caption(vocab_model):
    from transformers import CLIPTokenizer
    reference = CLIPTokenizer(str(vocab_model / "tokenizer" / "vocab.json"),
                              str(vocab_model / "tokenizer" / "merges.txt"))
    tokens = CaptionTokens.for_model(vocab_model)
    assert tokens.exact and tokens.source == str(vocab_model)
    for caption in (SHORT, LONG, "Purple STAR,  tiny\nshape 42", "日本語, émoji 🙂"):
        want = len(reference(caption, add_special_tokens=False).input_ids)
        assert tokens.count(caption).tokens == want, caption
    assert tokens.count(LONG).tokens > CLIP_WINDOW >= tokens.count(SHORT).tokens
    assert tokens.count(LONG).over and not tokens.count(SHORT).over
    assert tokens.count(SHORT).label == f"{tokens.count(SHORT).tokens} / 75 tokens"
    batched = CaptionTokens.for_model(vocab_model)
    batched.prefill([SHORT, LONG, SHORT])
    assert batched.count(LONG) == tokens.count(LONG) and batched.count(SHORT) == tokens.count(SHORT)


def test_a_tokenizer_json_folder_counts_as_the_pipeline_does():
    from transformers import CLIPTokenizerFast
    model = ROOT / "resources" / "tiny-sd"
    reference = CLIPTokenizerFast.from_pretrained(model / "tokenizer")
    tokens = CaptionTokens.for_model(model)
    assert tokens.exact
    for caption in (SHORT, LONG):
        assert tokens.count(caption).tokens == len(reference(caption,
                                                             add_special_tokens=False).input_ids)


def test_without_a_local_tokenizer_the_count_is_an_estimate(tmp_path):
    for model in (None, tmp_path, tmp_path / "model.safetensors", "org/some-model"):
        tokens = CaptionTokens.for_model(model)
        assert not tokens.exact
    tokens = CaptionTokens.for_model(None)
    assert tokens.count("a photo of a cat").label == "≈5 / 75 tokens"
    assert tokens.count(LONG).over and not tokens.count(SHORT).over
    assert estimate_tokens("masterpiece, 1girl") == 2 + 1 + 1 + 1


def test_no_ml_library_is_loaded_to_count():
    import subprocess
    code = ("import sys; from lora_studio.data.clip_tokens import CaptionTokens; "
            f"t = CaptionTokens.for_model({str(ROOT / 'resources' / 'tiny-sd')!r}); "
            "assert t.exact and t.count('red circle').tokens; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('torch', 'transformers', 'diffusers', 'onnxruntime')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_the_session_lists_a_caption_over_the_window_until_it_is_shortened(tmp_path,
                                                                            vocab_model):
    from lora_studio.data.session import CaptionSession
    images, captions = [], []
    for name, caption in (("a", LONG), ("b", SHORT)):
        (tmp_path / f"{name}.txt").write_text(caption, encoding="utf-8")
        images.append(tmp_path / f"{name}.png")
        captions.append(tmp_path / f"{name}.txt")
    session = CaptionSession(images, captions)
    assert session.filter(problem="over_clip") == []    # nothing counts without a counter
    session.tokens = CaptionTokens.for_model(vocab_model)
    assert session.filter(problem="over_clip") == [0]
    assert session.problem_counts()["over_clip"] == 1
    session.set_text(0, SHORT)
    assert "over_clip" not in session.problems(0)


# --- in the Dataset tab -------------------------------------------------------------

@pytest.fixture
def browser(qtbot, tmp_path):
    pytest.importorskip("pytestqt")
    from PIL import Image

    from tests.shown_browser import shown_browser
    root = tmp_path / "shapes ü"
    root.mkdir()
    for name, caption in (("long", LONG), ("short", SHORT)):
        Image.new("RGB", (64, 64), "red").save(root / f"{name}.png")
        (root / f"{name}.txt").write_text(caption, encoding="utf-8")
    b = shown_browser(qtbot, root, (1200, 800))
    yield b
    b.shutdown()


def select(b, name):
    key = next(k for k, p in enumerate(b.session.image_paths) if p.stem == name)
    b.grid.show_key(key)
    return key


def health_rows(b):
    return [b.health_list.item(i).text() for i in range(b.health_list.count())]


def test_captions_over_the_window_are_listed_and_counted_as_typed(browser, vocab_model, qtbot):
    b = browser
    assert "≈" in (select(b, "short"), b.caption_pane.token_label.text())[1]  # no model yet
    b.set_clip_model(vocab_model)
    assert "Over 75 CLIP tokens (cut)  (1)" in health_rows(b)
    b.set_filter(problem="over_clip")
    assert [b.session.image_paths[k].stem for k in b.shown_keys()] == ["long"]
    b.clear_filters()
    select(b, "long")
    label = b.caption_pane.token_label.text()
    assert f"{CaptionTokens.for_model(vocab_model).count(LONG).tokens} / 75 tokens" in label
    assert "cuts" in label and "≈" not in label
    select(b, "short")
    assert "cuts" not in b.caption_pane.token_label.text()
    b.editor.setFocus()
    b.editor.moveCursor(b.editor.textCursor().MoveOperation.End)
    qtbot.keyClicks(b.editor, ", " + ", ".join(["red circle"] * 40))
    assert "cuts" in b.caption_pane.token_label.text()  # the count follows the typing
    b.caption_pane.grab().save("/tmp/tag_hygiene_caption_pane.png")


def test_the_booru_list_completes_after_the_datasets_tags(browser, tmp_path, qtbot):
    b = browser
    assert not b.set_tag_list(tmp_path / "nope.csv")
    assert "nope.csv" in b.status.text()
    assert b.set_tag_list(write(tmp_path / "danbooru.csv", DANBOORU))
    assert "7 tags" in b.status.text()
    select(b, "short")
    b.editor.setFocus()
    b.editor.moveCursor(b.editor.textCursor().MoveOperation.End)
    qtbot.keyClicks(b.editor, ", lo")
    assert b.editor.completer.model().stringList() == ["long hair", "looking at viewer",
                                                      "long sleeves"]  # by use
    qtbot.keyClicks(b.editor, "ng")
    b.editor.insert_completion("long hair")
    assert b.editor.toPlainText() == SHORT + ", long hair"
    b.grab().save("/tmp/tag_hygiene_browser.png")


def test_the_job_model_gives_the_tokenizer(window):
    window.panel.apply_values({"model.family": "auto",
                               "model.path": str(ROOT / "resources" / "tiny-sd")})
    assert window.browser.tokens.exact
    assert window.browser.tokens.source == str(ROOT / "resources" / "tiny-sd")
    window.panel.apply_values({"model.path": str(ROOT / "resources" / "no such model")})
    assert not window.browser.tokens.exact
    window.panel.apply_values({"model.family": "text",
                               "model.path": str(ROOT / "resources" / "tiny-sd")})
    assert not window.browser.tokens.exact  # a text job's captions are not CLIP's


from ui_fixtures import window  # noqa: E402,F401  (fixture)
