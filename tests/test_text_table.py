import json
import shutil

import pytest

from lora_studio.data.text_table import TextTable, TextTableError


def test_jsonl_rows_problems_edit_and_save(tmp_path):
    p = tmp_path / "données chat.jsonl"
    lines = ['{"prompt": "Hi", "response": "Hello"}',
             '{"prompt": "broken",',
             '',
             '{"prompt": "Q2", "response": "A2"}',
             '{"prompt": "Q3"}']
    p.write_bytes("\r\n".join(lines).encode() + b"\r\n")
    t = TextTable(p)
    assert t.format == "prompt_response"
    assert [r.line for r in t.rows] == [1, 4, 5]
    assert {pr.line for pr in t.problems} == {2, 5}
    assert t.rows[2].error and not t.rows[0].error
    assert t.rows[1].obj["response"] == "A2"
    assert t.set_field(1, ("response",), "Ä2 — edited") == ""
    assert t.set_field(0, ("response",), "") != ""  # empty response would be skipped
    t.set_field(0, ("response",), "Hello")
    t.save()
    out = p.read_bytes().decode()
    back = out.split("\r\n")
    assert back[1] == '{"prompt": "broken",' and back[2] == ""  # bad line kept verbatim
    assert json.loads(back[3]) == {"prompt": "Q2", "response": "Ä2 — edited"}
    assert back[0] == lines[0] and out.endswith("\r\n")
    assert not t.dirty


def test_missing_field_can_be_filled_in(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_text('{"prompt": "Q1", "response": "A1"}\n{"question": "Q2"}\n')
    t = TextTable(p)
    assert t.rows[1].error
    assert (("response",), "") in t.fields(1)
    assert (("prompt",), "") not in t.fields(1)  # "question" is a prompt alias
    assert t.set_field(1, ("response",), "") == t.rows[1].error and not t.dirty
    assert t.set_field(1, ("response",), "A2") == ""
    t.save()
    assert p.read_text().splitlines()[1] == '{"question": "Q2", "response": "A2"}'


def test_json_messages_edit_nested_field(tmp_path):
    p = tmp_path / "chat.json"
    data = {"data": [{"messages": [{"role": "user", "content": "a"},
                                   {"role": "assistant", "content": "b"}]},
                     {"messages": [{"role": "user", "content": "c"}]}]}
    p.write_text(json.dumps(data, indent=1))
    t = TextTable(p)
    assert t.format == "messages" and len(t.rows) == 2
    assert t.rows[1].error  # no assistant turn
    fields = t.fields(0)
    assert (("messages", 1, "content"), "b") in fields
    t.set_field(0, ("messages", 1, "content"), "B!")
    t.save()
    assert json.loads(p.read_text())["data"][0]["messages"][1]["content"] == "B!"
    assert t.rows[1].line > t.rows[0].line


def test_unsupported_and_unreadable(tmp_path):
    with pytest.raises(TextTableError, match="only .jsonl and .json"):
        TextTable(tmp_path / "x.txt")
    bad = tmp_path / "x.jsonl"
    bad.write_bytes(b"\xff\xfe garbage")
    with pytest.raises(TextTableError, match="not UTF-8"):
        TextTable(bad)
    whole = tmp_path / "w.json"
    whole.write_text("[{")
    t = TextTable(whole)
    assert t.rows == [] and t.problems
    t.save()
    assert whole.read_text() == "[{"


def test_unsaved_summary_and_a_failed_save_that_keeps_the_edits(tmp_path):
    folder = tmp_path / "clé usb"
    folder.mkdir()
    p = folder / "d.jsonl"
    p.write_text('{"prompt": "Q1", "response": "A1"}\n')
    t = TextTable(p)
    assert t.unsaved_summary() == "" and t.try_save() == ""
    t.set_field(0, ("response",), "A1, edited")
    assert t.unsaved_summary() == f"1 edited record(s) in {p} are not saved."
    shutil.rmtree(folder)  # the drive was unplugged
    error = t.try_save()
    assert error.startswith(f"Cannot save {p}: ") and "Nothing was changed on disk" in error
    assert t.dirty and not folder.exists()
    folder.mkdir()
    assert t.try_save() == "" and not t.dirty and t.unsaved_summary() == ""
    assert json.loads(p.read_text())["response"] == "A1, edited"


def test_line_separators_inside_strings_survive_an_edit(tmp_path):
    p = tmp_path / "sep.jsonl"
    first = '{"prompt": "a\u2028b", "response": "c\u0085d"}'
    p.write_text(first + '\n{"prompt": "Q", "response": "A"}\n', encoding="utf-8")
    t = TextTable(p)
    assert [r.line for r in t.rows] == [1, 2] and not t.problems
    t.set_field(1, ("response",), "A2")
    t.save()
    lines = p.read_text(encoding="utf-8").split("\n")
    assert lines[0] == first and json.loads(lines[1])["response"] == "A2"
