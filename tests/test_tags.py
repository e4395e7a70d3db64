import pytest

from lora_studio.data.tags import (add_tag, batch_preview, complete, current_fragment,
                                   find_replace_preview, keep_tokens_split, remove_tag,
                                   replace_tag, split_tags, tag_counts)


def test_split_and_counts():
    assert split_tags(" a,b , ,c,") == ["a", "b", "c"]
    counts = tag_counts(["a, b", "b, c, b", ""])
    assert counts == {"a": 1, "b": 2, "c": 1}


def test_add_remove_replace():
    assert add_tag("a, b", "c") == "a, b, c"
    assert add_tag("a, b", "trigger", at_start=True) == "trigger, a, b"
    assert add_tag("a,b", "b") == "a,b"  # untouched when nothing changes
    assert add_tag("", "x, y") == "x, y"
    assert remove_tag("a, b, c", "b") == "a, c"
    assert remove_tag("a,  b", "zz") == "a,  b"
    assert replace_tag("a, b, c", "b", "d") == "a, d, c"
    assert replace_tag("a, b, c", "b", "c") == "a, c"  # no duplicate
    assert replace_tag("a, b, c", "b", "x, y") == "a, x, y, c"
    assert replace_tag("a, b, c", "b", "") == "a, c"


def test_batch_preview_lists_only_changes():
    caps = [(1, "a, b"), (2, "c"), (3, "b")]
    changes = batch_preview(caps, remove_tag, "b")
    assert [(c.key, c.old, c.new) for c in changes] == [(1, "a, b", "a"), (3, "b", "")]


def test_find_replace_plain_is_literal():
    caps = [(1, "a.b (c)"), (2, "axb")]
    ch = find_replace_preview(caps, "a.b", r"\1")
    assert [(c.key, c.new) for c in ch] == [(1, r"\1 (c)")]


def test_find_replace_regex_with_groups_and_case():
    caps = [("x", "Red hair, blue eyes"), ("y", "red HAIR"), ("z", "green")]
    ch = find_replace_preview(caps, r"(\w+) hair", r"\1_hair", regex=True, case_sensitive=False)
    assert [(c.key, c.new) for c in ch] == [("x", "Red_hair, blue eyes"), ("y", "red_hair")]
    assert [c.key for c in find_replace_preview(caps, "red", "R")] == ["y"]


def test_find_replace_bad_regex_is_a_clear_error():
    with pytest.raises(ValueError, match="Invalid regular expression"):
        find_replace_preview([(1, "a")], "(", "", regex=True)
    with pytest.raises(ValueError, match="Invalid replacement"):
        find_replace_preview([(1, "a")], "a", r"\2", regex=True)


def test_complete_prefers_prefix_then_frequency():
    counts = tag_counts(["blue eyes, blonde hair", "blue eyes, long hair", "black hair",
                         "sky blue"])
    assert complete("bl", counts) == ["blue eyes", "black hair", "blonde hair", "sky blue"]
    assert complete("", counts) == []
    assert complete("HAIR", counts, limit=2) == ["black hair", "blonde hair"]


def test_current_fragment_and_keep_tokens():
    text = "trigger, blue ey"
    assert current_fragment(text, len(text)) == (9, "blue ey")
    assert current_fragment("ab", 2) == (0, "ab")
    assert keep_tokens_split("t, a, b", 1) == (["t"], ["a", "b"])
