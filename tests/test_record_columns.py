"""The record table's columns and form labels: readable headers, not raw keys."""
from lora_studio.data.record_columns import Column, cell_text, field_title, record_columns


def test_a_conversation_file_gets_a_column_per_role():
    objs = [{"messages": [{"role": "system", "content": "Be brief."},
                          {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"},
                          {"role": "user", "content": "Again"},
                          {"role": "assistant", "content": "Yo yo"}]},
            {"conversations": [{"from": "human", "value": "Q"}, {"from": "gpt", "value": "A"}],
             "id": "r2"},
            "not an object"]
    columns = record_columns(objs, "messages")
    assert [c.title for c in columns] == ["Turns", "System", "User", "Assistant", "Id"]
    turns, system, user, assistant, ident = columns
    assert cell_text(objs[0], user) == "Hi │ Again"
    assert cell_text(objs[0], assistant) == "Yo │ Yo yo" and cell_text(objs[0], turns) == "5"
    assert cell_text(objs[1], assistant) == "A" and cell_text(objs[1], system) == ""
    assert cell_text(objs[1], ident) == "r2" and cell_text(objs[2], user) == ""


def test_no_system_column_when_no_record_has_one():
    objs = [{"messages": [{"role": "user", "content": "a"}, {"role": "bot", "content": "b"}]}]
    assert [c.title for c in record_columns(objs, "messages")] == ["Turns", "User", "Assistant"]


def test_flat_records_keep_their_field_names_readable_and_in_reading_order():
    objs = [{"output": "O", "instruction": "I", "source_url": "u"},
            {"instruction": "I2", "input": "x", "output": "O2", "system": "S"}]
    columns = record_columns(objs, "alpaca")
    assert [c.title for c in columns] == ["System", "Instruction", "Input", "Output", "Source url"]
    assert cell_text(objs[0], columns[2]) == "" and cell_text(objs[1], columns[2]) == "x"
    assert [c.title for c in record_columns([{"response": "r", "prompt": "p"}], "prompt_response")] \
        == ["Prompt", "Response"]
    assert cell_text({"prompt": 3}, Column("Prompt", "prompt")) == ""  # not a string: no text


def test_form_labels():
    assert field_title(("messages", 0, "content")) == "Turn 1 text"
    assert field_title(("conversations", 3, "from")) == "Turn 4 role"
    assert field_title(("instruction",)) == "Instruction"
    assert field_title(("meta", "tags", 0)) == "Meta › tags › 1"
