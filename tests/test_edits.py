from lora_studio.data.edits import UndoStack


def test_undo_redo_across_keys():
    s = UndoStack()
    s.push("edit a", [("a", "1", "2")])
    s.push("batch", [("a", "2", "3"), ("b", "x", "y"), ("c", "same", "same")])
    assert s.undo_label() == "batch"
    assert s.undo() == {"a": "2", "b": "x"}
    assert s.undo() == {"a": "1"}
    assert s.undo() == {} and not s.can_undo()
    assert s.redo() == {"a": "2"}
    assert s.redo_label() == "batch"
    # a new command drops the redo history
    s.push("other", [("b", "x", "z")])
    assert not s.can_redo() and s.redo() == {}


def test_noop_and_limit():
    s = UndoStack(limit=2)
    assert s.push("noop", [("a", "1", "1")]) is None
    for i in range(5):
        s.push(str(i), [("a", str(i), str(i + 1))])
    assert s.undo() == {"a": "4"} and s.undo() == {"a": "3"} and s.undo() == {}
