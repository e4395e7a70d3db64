import json

import pytest

from lora_studio.data.text_records import (RecordError, TextDataError, Turn, detect_format,
                                           json_items, load_text_records, read_file)


def _jsonl(path, rows, newline="\n", bom=False):
    text = newline.join(r if isinstance(r, str) else json.dumps(r) for r in rows) + newline
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8"))
    return path


def test_prompt_response_aliases_and_system(tmp_path):
    path = _jsonl(tmp_path / "qa.jsonl", [
        {"prompt": "Hi", "response": "Hello", "system": "Be brief."},
        {"question": "2+2?", "answer": "4"},
        {"input": "ping", "output": "pong"},
    ], newline="\r\n", bom=True)
    result = load_text_records(path)
    assert result.skipped == 0 and result.formats == {"prompt_response": 3}
    assert result.records[0].turns == (Turn("system", "Be brief."), Turn("user", "Hi"),
                                       Turn("assistant", "Hello"))
    assert result.records[1].turns == (Turn("user", "2+2?"), Turn("assistant", "4"))
    assert [r.line for r in result.records] == [1, 2, 3]


def test_alpaca_with_and_without_input(tmp_path):
    path = _jsonl(tmp_path / "alpaca.jsonl", [
        {"instruction": "Translate", "input": "chat", "output": "cat"},
        {"instruction": "Say hi", "input": "", "output": "hi"},
    ])
    records = load_text_records(path).records
    assert records[0].format == "alpaca"
    assert records[0].turns == (Turn("user", "Translate\n\nchat"), Turn("assistant", "cat"))
    assert records[1].turns == (Turn("user", "Say hi"), Turn("assistant", "hi"))


def test_messages_and_sharegpt(tmp_path):
    path = _jsonl(tmp_path / "chat.jsonl", [
        {"messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "U"},
                      {"role": "assistant", "content": "A"}]},
        {"conversations": [{"from": "human", "value": "Q"}, {"from": "gpt", "value": "R"}]},
    ])
    records = load_text_records(path).records
    assert [t.role for t in records[0].turns] == ["system", "user", "assistant"]
    assert records[1].turns == (Turn("user", "Q"), Turn("assistant", "R"))


def test_plain_text_jsonl_and_txt_blocks(tmp_path):
    _jsonl(tmp_path / "a.jsonl", [{"text": "one record"}])
    (tmp_path / "b.txt").write_bytes(b"first block\r\nstill first\r\n\r\n\r\nsecond block\r\n")
    (tmp_path / "c.txt").write_text("a whole file", encoding="utf-8")
    result = load_text_records(tmp_path)
    assert [(r.source.name, r.line, r.turns[0].content) for r in result.records] == [
        ("a.jsonl", 1, "one record"), ("b.txt", 1, "first block\nstill first"),
        ("b.txt", 5, "second block"), ("c.txt", 1, "a whole file")]
    assert all(r.is_plain_text for r in result.records)


def test_json_list_and_data_key_keep_line_numbers(tmp_path):
    listed = tmp_path / "list.json"
    listed.write_text('[\n  {"prompt": "a", "response": "b"},\n  {"prompt": "c"},\n'
                      '  {"prompt": "e",\n   "response": "f"}\n]\n', encoding="utf-8")
    result = read_file(listed)
    assert [r.line for r in result.records] == [2, 4]
    assert [(p.line, "response" in p.message) for p in result.problems] == [(3, True)]
    wrapped = tmp_path / "wrapped.json"
    wrapped.write_text('{"name": "x", "meta": {"data": 1},\n "data": [\n'
                       '  {"text": "t1"},\n  {"text": "t2"}]}', encoding="utf-8")
    assert [r.line for r in read_file(wrapped).records] == [3, 4]
    broken = tmp_path / "broken.json"
    broken.write_text('[{"text": "a"},\n {"text": }]', encoding="utf-8")
    problems = read_file(broken).problems
    assert len(problems) == 1 and problems[0].line == 2 and "invalid JSON" in problems[0].message


def test_json_items_lines_and_bad_top_level():
    text = '{"meta": {"a": [1, 2]},\n "data": [\n  {"text": "one"},\n\n  {"text": "two"}\n]}'
    assert json_items(text) == [(3, {"text": "one"}), (5, {"text": "two"})]
    assert json_items('[\n"x", 3]') == [(2, "x"), (2, 3)]
    for bad in ('5', '"text"', '{"rows": []}', ''):
        with pytest.raises(RecordError, match="list of records"):
            json_items(bad)


def test_bad_records_reported_with_file_and_line(tmp_path):
    path = _jsonl(tmp_path / "mixed.jsonl", [
        {"messages": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}]},
        '{"messages": [ not json',
        "",
        {"messages": [{"role": "narrator", "content": "x"}, {"role": "assistant", "content": "y"}]},
        {"messages": [{"role": "user", "content": "only a question"}]},
        {"other": 1},
    ])
    result = load_text_records(path)
    assert len(result.records) == 1 and result.skipped == 4
    by_line = {p.line: p for p in result.problems}
    assert sorted(by_line) == [2, 4, 5, 6]
    assert "invalid JSON" in by_line[2].message
    assert "narrator" in by_line[4].message
    assert "assistant" in by_line[5].message
    assert str(by_line[4]).startswith(f"{path}:4: ")


def test_forced_format_and_unusable_paths(tmp_path):
    path = _jsonl(tmp_path / "t.jsonl", [{"text": "x", "prompt": "p", "response": "r"}])
    assert detect_format({"text": "x", "prompt": "p", "response": "r"}) == "prompt_response"
    assert load_text_records(path, "text").records[0].turns == (Turn("text", "x"),)
    with pytest.raises(TextDataError, match="no such file"):
        load_text_records(tmp_path / "nope.jsonl")
    latin = tmp_path / "latin.jsonl"
    latin.write_bytes(b'{"text": "ok"}\n{"text": "caf\xe9"}\n')
    problem = read_file(latin).problems[0]
    assert problem.line == 2 and "UTF-8" in problem.message


# --- hostile files: nothing dropped silently, nothing mis-numbered -----------------------

def test_line_separators_inside_strings_load_and_keep_line_numbers(tmp_path):
    path = tmp_path / "odd.jsonl"
    path.write_text('{"prompt": "a\u2028b", "response": "c\u0085d"}\n'
                    '{"prompt": "x\u2029y", "response": "z"}\n', encoding="utf-8")
    result = load_text_records(path)
    assert not result.problems and [r.line for r in result.records] == [1, 2]
    assert result.records[0].turns[0].content == "a\u2028b"
    assert result.records[0].turns[1].content == "c\u0085d"


def test_one_bad_byte_skips_its_line_only(tmp_path):
    path = tmp_path / "bytes.jsonl"
    path.write_bytes(b'{"text": "one"}\r\n{"text": "caf\xe9"}\r\n{"text": "three"}\r\n')
    result = load_text_records(path)
    assert [r.turns[0].content for r in result.records] == ["one", "three"]
    assert [r.line for r in result.records] == [1, 3]
    (problem,) = result.problems
    assert problem.line == 2 and "not UTF-8" in problem.message and "0xe9" in problem.message


def test_the_format_is_the_files_not_its_first_records(tmp_path):
    path = tmp_path / "mostly chat.jsonl"
    lines = ['{"text": "a stray plain record first"}']
    lines += ['{"messages": [{"role": "user", "content": "q%d"}, '
              '{"role": "assistant", "content": "a%d"}]}' % (i, i) for i in range(4)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = load_text_records(path)
    assert result.formats == {"messages": 4}
    (problem,) = result.problems
    assert problem.line == 1 and "messages format" in problem.message


@pytest.mark.parametrize("suffix", [".jsonl", ".json"])
def test_deeply_nested_json_is_a_named_problem_not_a_recursion_error(tmp_path, suffix):
    path = tmp_path / f"deep{suffix}"
    deep = "[" * 200_000 + "]" * 200_000
    good = '{"text": "fine"}'
    path.write_text(f"{good}\n{deep}\n" if suffix == ".jsonl" else deep, encoding="utf-8")
    result = load_text_records(path)
    assert any("nested too deeply" in p.message for p in result.problems)
    if suffix == ".jsonl":
        assert [r.turns[0].content for r in result.records] == ["fine"]
        assert [p.line for p in result.problems] == [2]
