"""The token view's scan and record rendering (engine/text/token_view.py) against the
engine's own encoding, and what the view gathers from it (data/token_lengths.py)."""
import io
import json
from pathlib import Path

import pytest

from lora_studio.data.text_records import TextRecord, Turn
from lora_studio.data.token_lengths import TokenLengths
from lora_studio.engine.text import model as text_model, tokens
from lora_studio.engine.text import token_view
from lora_studio.engine.text.token_view import Settings, record_tokens, scan, serve

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "resources" / "tiny-text-model"


@pytest.fixture(scope="module")
def tokenizer():
    return text_model.load_tokenizer(MODEL)


def record(*turns, line=1, fmt="messages"):
    return TextRecord(tuple(Turn(r, c) for r, c in turns), Path("x.jsonl"), line, fmt)


CHAT = record(("system", "Talk like a pirate."), ("user", "What colour is a plum? Ça va?"),
              ("assistant", "Arr, purple it be — 日本."), ("user", "And a lime?"),
              ("assistant", "Green, matey."))
PAIR = record(("user", "Name a sea."), ("assistant", "The Caribbean, arr."), fmt="prompt_response")
PLAIN = record(("text", "Once upon a tide the ship sailed."), fmt="text")


def trained_ids(encoded):
    return [i for i, label in zip(encoded.input_ids, encoded.labels) if label != tokens.IGNORE]


def shown(view):
    """(ids, ids highlighted as carrying the loss, ids shown beyond the cut)."""
    ids = [i for _t, group, *_ in view["tokens"] for i in group]
    loss = [i for _t, group, is_loss, *_ in view["tokens"] if is_loss for i in group]
    cut = [i for _t, group, _l, _s, is_cut in view["tokens"] if is_cut for i in group]
    return ids, loss, cut


@pytest.mark.parametrize("rec, use_template, responses_only", [
    (CHAT, True, True), (CHAT, True, False), (PAIR, False, True), (PAIR, False, False),
    (PLAIN, True, True)])
def test_highlighted_tokens_are_the_labels_the_engine_trains_on(tokenizer, rec, use_template,
                                                                 responses_only):
    settings = Settings(use_template, responses_only, 512)
    encoded, cut = tokens.encode_record(rec, tokenizer, use_template=use_template,
                                        responses_only=responses_only, max_length=512)
    view = record_tokens(rec, tokenizer, settings)
    ids, loss, beyond = shown(view)
    assert ids == encoded.input_ids and not cut and not beyond
    assert loss == trained_ids(encoded)
    if responses_only and not rec.is_plain_text:
        assert 0 < len(loss) < len(ids)  # the prompt is there and not highlighted
    # Every token is shown once, as text: the groups spell the record.
    assert "".join(t for t, *_ in view["tokens"]) == tokenizer.decode(ids)


def test_special_tokens_are_marked_and_the_cut_is_shown(tokenizer, monkeypatch):
    full, _ = tokens.encode_record(CHAT, tokenizer, use_template=True, responses_only=True,
                                   max_length=10_000)
    limit = len(full.input_ids) - 8  # the second answer's last tokens fall beyond the cut
    encoded, cut = tokens.encode_record(CHAT, tokenizer, use_template=True, responses_only=True,
                                        max_length=limit)
    view = record_tokens(CHAT, tokenizer, Settings(True, True, limit))
    ids, loss, beyond = shown(view)
    assert cut and view["truncated"] and ids == full.input_ids
    assert loss == trained_ids(encoded)
    assert beyond == full.input_ids[limit:]
    monkeypatch.setattr(token_view, "SHOWN_BEYOND_CUT", 3)
    view = record_tokens(CHAT, tokenizer, Settings(True, True, limit))
    assert shown(view)[0] == full.input_ids[:limit + 3] and view["hidden"] == 5
    specials = {t for t, _g, _l, special, _c in view["tokens"] if special}
    assert {"<s>", "<|user|>", "<|assistant|>", "<|end|>"} <= specials
    assert "\n" not in specials


def test_the_fallback_format_shows_its_added_text(tokenizer):
    view = record_tokens(PAIR, tokenizer, Settings(False, True, 512))
    text = "".join(t for t, *_ in view["tokens"])
    assert text == "<s>User: Name a sea.\nAssistant: The Caribbean, arr.<|end|>\n"
    assert "".join(t for t, _g, loss, *_ in view["tokens"] if loss) == "The Caribbean, arr.<|end|>"


def long_and_dropped(max_length):
    """Records of which one is longer than max_length, one whose response starts beyond
    it (dropped), one the template cannot render, and short ones."""
    short = [record(("user", f"Q{i}?"), ("assistant", f"A{i}."), line=i + 1) for i in range(5)]
    long = record(("user", "Hi"), ("assistant", "word " * max_length), line=6)
    late = record(("user", "blah " * max_length), ("assistant", "Late."), line=7)
    return short + [long, late]


def test_scan_lengths_truncated_and_dropped_match_the_engine(tokenizer):
    records = long_and_dropped(40)
    settings = Settings(True, True, 40)
    msgs = list(scan(records, tokenizer, settings, batch=3))
    assert [m["start"] for m in msgs] == [0, 3, 6]  # progressive, batch by batch
    found = TokenLengths(40, total=len(records))
    for m in msgs:
        found.add(m)
    for i, rec in enumerate(records):
        whole, _ = tokens.encode_record(rec, tokenizer, use_template=True, responses_only=True,
                                        max_length=100_000)
        cut, truncated = tokens.encode_record(rec, tokenizer, use_template=True,
                                              responses_only=True, max_length=40)
        assert found.lengths[i] == len(whole.input_ids)
        assert (i in found.truncated) == truncated
        assert (i in found.dropped) == (not tokens.has_target(cut.labels))
    assert found.truncated == [5, 6] and found.dropped == [6]
    assert found.lines == [1, 2, 3, 4, 5, 6, 7]


def test_histogram_counts_and_lists():
    found = TokenLengths(64, total=6)
    found.add({"lengths": [10, 12, 30, 63, 64, 200], "lines": [1, 2, 3, 5, 8, 9],
               "truncated": [5], "dropped": [], "errors": {}})
    hist = found.histogram()
    assert hist.edges[0] == 0 and 64 in hist.edges.tolist()  # the limit is a bar's edge
    assert int(hist.counts.sum()) == 6
    assert int(hist.counts[hist.edges[1:] <= 64].sum()) == 4   # 10, 12, 30, 63
    assert int(hist.counts[hist.edges[:-1] >= 64].sum()) == 2  # 64, 200
    assert "1 of 6 record(s) (16.7%) are longer than max_seq_length 64" in found.summary()
    assert found.listed() == [(5, "line 9: truncated, 200 tokens")]


def test_histogram_of_very_long_records_has_a_last_bar_for_the_rest():
    found = TokenLengths(32, total=3)
    found.add({"lengths": [5, 40, 100_000], "lines": [1, 2, 3], "truncated": [1, 2],
               "dropped": [2], "errors": {"0": "boom"}})
    hist = found.histogram()
    assert len(hist.counts) == 64 and hist.overflow and hist.counts[-1] == 1
    assert int(hist.counts.sum()) == 2  # the failed record is not measured
    assert [i for i, _ in found.listed()] == [0, 2, 1]
    assert "the chat template failed on 1" in found.summary()


def test_serve_answers_records_between_batches_and_stops_when_stdin_ends(tokenizer, tmp_path,
                                                                         monkeypatch):
    data = tmp_path / "chat données.jsonl"
    data.write_text("".join(json.dumps({"messages": [{"role": "user", "content": f"Q{i}"},
                                                     {"role": "assistant", "content": f"A{i}"}]})
                            + "\n" for i in range(7)) + "not json\n", encoding="utf-8")
    monkeypatch.setattr(token_view, "BATCH", 3)
    request = {"tokenizer": str(MODEL), "path": str(data), "max_seq_length": 64}
    out = io.StringIO()
    serve(io.StringIO(json.dumps(request) + "\n" + json.dumps({"line": 2}) + "\n"
                      + json.dumps({"line": 8}) + "\n"), out)
    msgs = [json.loads(line) for line in out.getvalue().splitlines()]
    # The requests are answered after the first batch; then stdin has ended: the scan stops.
    assert [m["type"] for m in msgs] == ["loaded", "lengths", "record", "record"]
    assert msgs[0]["records"] == 7 and msgs[0]["skipped"] == 1
    assert msgs[2]["line"] == 2 and "Q1" in "".join(t for t, *_ in msgs[2]["tokens"])
    assert msgs[3]["line"] == 8 and "no record" in msgs[3]["error"]

    out = io.StringIO()
    serve(io.StringIO(json.dumps({**request, "path": str(tmp_path / "missing.jsonl")}) + "\n"), out)
    error = json.loads(out.getvalue())
    assert error["type"] == "error" and "missing.jsonl" in error["message"]


def test_the_scan_child_uses_the_tokenizer_without_torch(tmp_path):
    """The token view loads the tokenizer class its config names, as AutoTokenizer would,
    without AutoTokenizer's model registry that imports torch (issue 16: never torch)."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    code = (
        "import json, sys\n"
        "from lora_studio.engine.text.token_view import _load\n"
        "from lora_studio.engine.text.tokens import tokenise_pieces\n"
        f"tok, settings, [(_, loaded)] = _load({{'tokenizer': {str(root / 'resources' / 'tiny-text-model')!r},"
        f" 'path': {str(root / 'resources' / 'demo-text' / 'chat.jsonl')!r}, 'max_seq_length': 128}})\n"
        "ids = tok('Ahoy, matey!', add_special_tokens=False)['input_ids']\n"
        "print(json.dumps({'torch': 'torch' in sys.modules, 'ids': ids,"
        " 'template': tok.chat_template, 'records': len(loaded.records)}))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    import json
    result = json.loads(out.stdout.strip().splitlines()[-1])
    from lora_studio.engine.text.model import load_tokenizer
    engine = load_tokenizer(root / "resources" / "tiny-text-model")  # what training uses
    assert not result["torch"] and result["records"] == 34
    assert result["ids"] == engine("Ahoy, matey!", add_special_tokens=False)["input_ids"]
    assert result["template"] == engine.chat_template


def test_serve_scans_the_mix_after_the_file_and_names_each_records_source(tmp_path):
    """The records of dataset.mix follow the file's, weighted as training takes them
    (load_mixed), and a mixed-in record is asked for by its place in the scan."""
    from lora_studio.data.text_sources import load_mixed

    def lines(path, prefix, n):
        path.write_text("".join(json.dumps({"prompt": f"{prefix}{i}", "response": "ok"}) + "\n"
                                for i in range(n)), encoding="utf-8")
        return path

    main = lines(tmp_path / "main.jsonl", "main", 3)
    lines(tmp_path / "more.jsonl", "more", 2)
    lines(tmp_path / "half.jsonl", "half", 4)
    mix = ["more.jsonl @ 2", "half.jsonl @ 0.5"]
    request = {"tokenizer": str(MODEL), "path": str(main), "max_seq_length": 64, "mix": mix,
               "base_dir": str(tmp_path), "seed": 7}
    asks = [{"index": 4}, {"line": 1}, {"index": 99}]
    out = io.StringIO()
    serve(io.StringIO("".join(json.dumps(m) + "\n" for m in [request, *asks])), out)
    msgs = [json.loads(line) for line in out.getvalue().splitlines()]
    loaded = msgs[0]
    assert loaded["records"] == 3 + 4 + 2
    assert loaded["sources"] == [{"name": "main.jsonl", "weight": 1.0, "records": 3},
                                 {"name": "more.jsonl", "weight": 2.0, "records": 4},
                                 {"name": "half.jsonl", "weight": 0.5, "records": 2}]
    found = TokenLengths(64, total=loaded["records"], sources=loaded["sources"])
    for m in msgs:
        if m["type"] == "lengths":
            found.add(m)
    trained = load_mixed(str(main), mix, seed=7, base_dir=tmp_path).records
    assert found.lines == [r.line for r in trained]   # training's records, in its order
    assert [found.label(i) for i in (0, 3, 7)] == ["main.jsonl line 1", "more.jsonl line 1",
                                                  "half.jsonl line " + str(trained[7].line)]
    records = {(m.get("index"), m.get("line")): m for m in msgs if m["type"] == "record"}
    mixed = records[(4, 2)]   # the 5th record: more.jsonl's second line
    assert mixed["source"] == "more.jsonl" and "more1" in "".join(t for t, *_ in mixed["tokens"])
    assert "main0" in "".join(t for t, *_ in records[(None, 1)]["tokens"])   # the file's line 1
    assert "no record" in next(m for m in msgs if m.get("index") == 99)["error"]


def test_the_sources_of_a_mixed_scan_are_named_in_the_list_and_summary():
    found = TokenLengths(8, total=3, sources=[{"name": "a.jsonl", "weight": 1.0, "records": 1},
                                              {"name": "b.jsonl", "weight": 2.0, "records": 2}])
    found.add({"lengths": [3, 20, 20], "lines": [1, 5, 5], "truncated": [1, 2], "dropped": [],
               "errors": {}})
    assert [found.source_of(i) for i in range(3)] == [0, 1, 1]
    assert [text for _i, text in found.listed()] == ["b.jsonl line 5: truncated, 20 tokens"] * 2
    assert found.sources_note() == "Records from a.jsonl (1) and the mix: b.jsonl ×2 (2)."
    alone = TokenLengths(8, total=1, sources=[{"name": "a.jsonl", "weight": 1.0, "records": 1}])
    alone.add({"lengths": [20], "lines": [4], "truncated": [0], "dropped": [], "errors": {}})
    assert alone.listed() == [(0, "line 4: truncated, 20 tokens")] and not alone.sources_note()
