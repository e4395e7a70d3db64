"""Text data through Hugging Face `datasets` (issue 16, point 2): CSV, Parquet and Arrow
files or folders, a dataset in the local Hub cache, a column map, weighted mixing, and
tokenised records cached by content so a second run skips tokenising."""
import json

import pyarrow as pa
import pyarrow.ipc
import pyarrow.parquet
import pytest

from lora_studio.config.validate import check
from lora_studio.data.scan import count_text_records
from lora_studio.data.text_records import TextDataError
from lora_studio.data.text_sources import (SourceError, load_mixed, load_source, parse_columns,
                                           parse_mix, weighted)
from test_engine_text import MODEL, Recorder, make_job

ROWS = [{"q": f"question {i}", "a": f"answer {i}"} for i in range(6)]
RENAME = {"q": "prompt", "a": "response"}


def write_tables(folder):
    folder.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pylist(ROWS)
    pyarrow.parquet.write_table(table, folder / "d.parquet")
    with pyarrow.ipc.new_file(str(folder / "f.arrow"), table.schema) as w:
        w.write_table(table)
    with pyarrow.ipc.new_stream(str(folder / "s.arrow"), table.schema) as w:
        w.write_table(table)  # the streaming format `datasets` itself writes
    (folder / "d.csv").write_text("q,a\n" + "".join(f'"{r["q"]}","{r["a"]}, ok"\n' for r in ROWS),
                                  encoding="utf-8")
    return folder


@pytest.mark.parametrize("name", ["d.parquet", "f.arrow", "s.arrow", "d.csv"])
def test_table_files_load_through_datasets_with_a_column_map(tmp_path, name):
    path = write_tables(tmp_path) / name
    result = load_source(str(path), columns=RENAME)
    assert [r.turns[0].content for r in result.records] == [r["q"] for r in ROWS]
    assert result.records[0].turns[1].content.startswith("answer 0")
    assert result.records[0].line == (2 if name.endswith(".csv") else 1)  # a CSV's header is line 1
    assert count_text_records(path) == 6


def test_without_the_map_unknown_columns_are_named(tmp_path):
    result = load_source(str(write_tables(tmp_path) / "d.parquet"))
    assert not result.records and "dataset.columns" in str(result.problems[0])


def test_a_damaged_table_is_one_named_problem(tmp_path):
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"PAR1 not really")
    result = load_source(str(bad))
    assert not result.records and "bad.parquet: cannot be read as parquet" in str(result.problems[0])


def test_a_folder_mixes_tables_and_record_files(tmp_path):
    write_tables(tmp_path)
    (tmp_path / "more.jsonl").write_text(json.dumps({"q": "x", "a": "y"}) + "\n", encoding="utf-8")
    result = load_source(str(tmp_path), columns=RENAME)
    assert len(result.records) == 4 * 6 + 1


def test_nested_messages_columns_load(tmp_path):
    table = pa.Table.from_pylist([{"dialogue": [{"role": "user", "content": "hi"},
                                                {"role": "assistant", "content": "ahoy"}]}])
    pyarrow.parquet.write_table(table, tmp_path / "chat.parquet")
    result = load_source(str(tmp_path / "chat.parquet"), columns=parse_columns(["messages=dialogue"]))
    assert [t.content for t in result.records[0].turns] == ["hi", "ahoy"]


@pytest.mark.parametrize("lines,message", [(["prompt"], "role=column"),
                                           (["speaker=q"], "role from")])
def test_column_map_errors_name_the_line(lines, message):
    with pytest.raises(SourceError, match=message):
        parse_columns(lines)


def test_mix_lines_and_weights():
    assert [(s.where, s.weight) for s in parse_mix(["a.jsonl @ 0.5", "user/set", ""])] == \
        [("a.jsonl", 0.5), ("user/set", 1.0)]
    with pytest.raises(SourceError, match="not a number"):
        parse_mix(["a.jsonl @ lots"])
    with pytest.raises(SourceError, match="above 0"):
        parse_mix(["a.jsonl @ 0"])
    items = list(range(10))
    assert weighted(items, 2, seed=1) == items + items
    half = weighted(items, 0.5, seed=1)
    assert len(half) == 5 and set(half) <= set(items) and half == weighted(items, 0.5, seed=1)


def fake_hub_dataset(tmp_path, monkeypatch, repo_id, files_from):
    import shutil

    import huggingface_hub.constants
    hub = tmp_path / "hub"
    repo = hub / ("datasets--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / ("0" * 40)
    shutil.copytree(files_from, snapshot / "data")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(hub))
    return snapshot


def test_a_dataset_in_the_hub_cache_loads_and_a_missing_one_says_how_to_get_it(tmp_path,
                                                                              monkeypatch):
    source = tmp_path / "src"
    source.mkdir()
    pyarrow.parquet.write_table(pa.Table.from_pylist(ROWS), source / "train.parquet")
    fake_hub_dataset(tmp_path, monkeypatch, "someone/pirates", source)
    assert len(load_source("someone/pirates", columns=RENAME).records) == 6
    with pytest.raises(TextDataError, match="hf download someone/absent --repo-type dataset"):
        load_source("someone/absent")
    data = {"model": {"path": str(MODEL), "family": "text"},
            "dataset": {"path": "someone/pirates", "columns": ["prompt=q", "response=a"]}}
    _, findings = check(data)
    assert not [f for f in findings if f.level == "error"], findings
    data["dataset"]["mix"] = ["someone/absent @ 2"]
    _, findings = check(data)
    assert [f.rule for f in findings if f.level == "error"] == ["dataset-mix-invalid"]


def test_mixing_takes_each_source_by_its_weight(tmp_path):
    main = tmp_path / "main.jsonl"
    main.write_text("".join(json.dumps({"prompt": f"m{i}", "response": "r"}) + "\n"
                            for i in range(4)), encoding="utf-8")
    write_tables(tmp_path / "t")
    result = load_mixed(str(main), [f"{tmp_path / 't' / 'd.parquet'} @ 0.5",
                                    f"{tmp_path / 't' / 'd.csv'} @ 2"], columns=["prompt=q",
                                                                                  "response=a"])
    assert len(result.records) == 4 + 3 + 12


def test_a_second_run_reads_its_tokens_from_the_cache(tmp_path, monkeypatch):
    from lora_studio.engine.text import data as text_data, model as text_model, token_cache
    monkeypatch.setenv("LORA_STUDIO_CACHE_DIR", str(tmp_path / "cache"))
    tokenizer = text_model.load_tokenizer(MODEL)
    job = make_job()
    calls = []
    real = token_cache.encode_records
    monkeypatch.setattr(token_cache, "encode_records",
                        lambda *a, **k: calls.append(1) or real(*a, **k))
    first, second = Recorder(), Recorder()
    a = text_data.load_dataset(job, tokenizer, first)
    b = text_data.load_dataset(job, tokenizer, second)
    assert calls == [1] and a == b
    assert any(e.get("cached") for e in second.of("log")) and not any(
        e.get("cached") for e in first.of("log"))
    # Another max_seq_length is another key: tokenised again.
    text_data.load_dataset(make_job(dataset={"max_seq_length": 32}), tokenizer, Recorder())
    assert calls == [1, 1]
    assert len(list((tmp_path / "cache" / "tokenized").glob("*.safetensors"))) == 2


def test_a_damaged_cache_entry_is_tokenised_again(tmp_path):
    from lora_studio.data.text_records import load_text_records
    from lora_studio.engine.text import model as text_model
    from lora_studio.engine.text.token_cache import cache_key, encode_cached
    tokenizer = text_model.load_tokenizer(MODEL)
    job = make_job()
    records = load_text_records(job.dataset.path).records
    folder = tmp_path / "tok"
    folder.mkdir()
    (folder / f"{cache_key(records, tokenizer, job)}.safetensors").write_bytes(b"torn")
    encoded, _, hit = encode_cached(records, tokenizer, job, folder=folder)
    assert not hit and len(encoded) == len(records)
    assert encode_cached(records, tokenizer, job, folder=folder)[2]


@pytest.mark.parametrize("source", ["d.parquet", "f.arrow", "d.csv", "hub"])
def test_each_kind_of_source_trains(tmp_path, monkeypatch, source):
    from lora_studio.engine.run import run
    from lora_studio.runs.layout import new_run_dir
    data = write_tables(tmp_path / "data")
    where = str(data / source)
    if source == "hub":
        only = tmp_path / "only"
        only.mkdir()
        (only / "train.parquet").write_bytes((data / "d.parquet").read_bytes())
        fake_hub_dataset(tmp_path, monkeypatch, "someone/tables", only)
        where = "someone/tables"
    job = make_job(dataset={"path": where, "columns": ["prompt=q", "response=a"]},
                   training={"max_steps": 2})
    events = Recorder()
    run(job, new_run_dir(tmp_path, "run").root, events)
    assert events.of("finished")[-1]["status"] == "completed", events.of("error")
    assert next(e for e in events.of("log") if "records" in e)["records"] == 6
