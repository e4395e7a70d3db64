"""Datasets larger than memory (issue 16, point 2): JSON Lines and tables are read a
record at a time, tokenised into a store on disk and trained from memory maps."""
import json
import tracemalloc

import pytest

from lora_studio.data.text_records import read_file, stream_file
from lora_studio.data.text_sources import stream_source
from lora_studio.engine.text.token_store import (Subset, TokenStore, is_complete, lengths_of,
                                                 write_store)
from lora_studio.engine.text.tokens import Encoded, EncodeStats
from test_engine_text import DATA, Recorder, make_job


def test_a_streamed_file_gives_what_the_whole_file_reader_gives(tmp_path):
    path = tmp_path / "mixed.jsonl"
    lines = [json.dumps({"prompt": f"q{i}\u2028still q{i}", "response": f"a{i}"}).encode()
             for i in range(2500)]
    lines[3] = b'{"prompt": "broken'
    lines[7] = b'{"prompt": "\xff bad byte", "response": "x"}'
    path.write_bytes(b"\xef\xbb\xbf" + b"\r\n".join(lines) + b"\n")
    problems = []
    streamed = list(stream_file(path, "auto", None, problems))
    whole = read_file(path)
    assert streamed == whole.records and len(streamed) == 2498
    assert [(p.line, p.message) for p in problems] == [(p.line, p.message) for p in whole.problems]


def test_streaming_holds_a_little_of_the_file_at_a_time(tmp_path):
    path = tmp_path / "big.jsonl"
    record = json.dumps({"prompt": "p" * 90, "response": "r" * 90})
    path.write_text("\n".join([record] * 60_000) + "\n", encoding="utf-8")  # about 12 MB
    tracemalloc.start()
    count = sum(1 for _ in stream_file(path))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert count == 60_000
    assert peak < 4 * 2**20, f"peak {peak / 2**20:.1f} MiB: the file was read whole"


def test_a_streamed_folder_gives_records_in_load_order(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet
    pyarrow.parquet.write_table(pa.Table.from_pylist([{"q": "t1", "a": "x"}]), tmp_path / "t.parquet")
    (tmp_path / "b.jsonl").write_text(json.dumps({"q": "j1", "a": "y"}) + "\n", encoding="utf-8")
    problems = []
    got = [r.turns[0].content for r in stream_source(str(tmp_path), "auto",
                                                     {"q": "prompt", "a": "response"}, problems)]
    assert got == ["t1", "j1"] and not problems


def test_a_store_gives_back_what_was_written(tmp_path):
    items = [Encoded([1, 2, 3], [-100, 2, 3]), Encoded([4], [4]), Encoded([5, 6], [-100, -100])]
    stats = EncodeStats(truncated=1, no_target=2, template_errors=["x:1: no"])
    store = write_store(tmp_path / "store", iter(items), stats, chunk=2)
    assert is_complete(tmp_path / "store") and list(store) == items and len(store) == 3
    assert store[1] == items[1] and store[0:2] == items[:2] and lengths_of(store) == [3, 1, 2]
    assert TokenStore(tmp_path / "store").stats == stats
    view = Subset(store, [2, 0])
    assert list(view) == [items[2], items[0]] and lengths_of(view) == [2, 3]


def test_an_interrupted_store_leaves_no_folder(tmp_path):
    def failing():
        yield Encoded([1], [1])
        raise RuntimeError("killed")
    with pytest.raises(RuntimeError):
        write_store(tmp_path / "store", failing(), EncodeStats())
    assert not list(tmp_path.iterdir())


def test_a_streamed_run_trains_and_the_next_reuses_its_store(tmp_path, monkeypatch):
    from lora_studio.engine.run import run
    from lora_studio.runs.layout import new_run_dir
    monkeypatch.setenv("LORA_STUDIO_CACHE_DIR", str(tmp_path / "cache"))
    job = make_job(dataset={"streaming": True, "eval_split": 0.1, "packing": True},
                   output={"eval_every_n_steps": 2}, training={"max_steps": 2})
    first, second = Recorder(), Recorder()
    run(job, new_run_dir(tmp_path, "one").root, first)
    assert first.of("finished")[-1]["status"] == "completed", first.of("error")
    assert any(e.get("streamed") for e in first.of("log"))
    assert [e["phase"] for e in first.of("phase")].count("tokenising") >= 2
    stores = [p for p in (tmp_path / "cache" / "tokenized").iterdir() if p.is_dir()]
    assert len(stores) == 1 and len(TokenStore(stores[0])) == 34
    run(job, new_run_dir(tmp_path, "two").root, second)
    assert any(e.get("cached") for e in second.of("log"))
    assert [e["loss"] for e in second.of("progress")] == [e["loss"] for e in first.of("progress")]


def test_streaming_with_a_mix_is_a_config_error(tmp_path):
    from lora_studio.engine.run import run
    from lora_studio.runs.layout import new_run_dir
    events = Recorder()
    run(make_job(dataset={"streaming": True, "mix": [str(DATA)]}),
        new_run_dir(tmp_path, "mix").root, events)
    [error] = events.of("error")
    assert error["kind"] == "config" and "dataset.mix cannot be used" in error["message"]
