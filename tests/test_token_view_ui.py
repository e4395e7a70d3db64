"""The Tokens tab of a text dataset: the scan runs in a child process and fills the
histogram, the list of cut records and the selected record's tokens; a scan can be
cancelled; the main window passes the job's settings."""
import json
from pathlib import Path

from PySide6.QtCore import Qt

from lora_studio.config.parse import parse_job
from lora_studio.ui.text_dataset_view import TextDatasetView
from lora_studio.ui.token_runner import TokenViewRunner
from lora_studio.ui.token_view import scan_request, token_html
from ui_fixtures import window  # noqa: F401  (fixture)

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "resources" / "tiny-text-model"
WAIT_MS = 60_000  # the child imports transformers (and torch) before its first line


def chat(question, answer):
    return {"messages": [{"role": "user", "content": question},
                         {"role": "assistant", "content": answer}]}


def write(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def job(max_seq_length=48, **dataset):
    parsed, findings = parse_job({"model": {"path": str(MODEL), "family": "text"},
                                  "dataset": {"path": "x.jsonl", "max_seq_length": max_seq_length,
                                              **dataset},
                                  "output": {"output_name": "t"}})
    return parsed


def test_scan_request_carries_the_jobs_settings_or_says_why_not(tmp_path):
    request = scan_request(job(96, train_on_responses_only=False, chat_template="none"), None,
                           tmp_path / "a.jsonl")
    assert request["tokenizer"] == str(MODEL) and request["max_seq_length"] == 96
    assert request["responses_only"] is False and request["chat_template"] == "none"
    missing = job()
    missing.model.path = str(tmp_path / "no model here")
    assert "needs the job's tokenizer" in scan_request(missing, None, tmp_path / "a.jsonl")


def test_token_html_marks_loss_special_and_the_cut():
    page = token_html([["<s>", [0], False, True, False], ["Hi\n", [7, 8], True, False, False],
                       ["<b>", [9], False, False, True]])
    assert page.count("✂ max_seq_length") == 1 and "Hi↵\n" in page and "&lt;b&gt;" in page
    assert page.index("<s>".replace("<", "&lt;").replace(">", "&gt;")) < page.index("✂")


def test_tokens_tab_fills_from_the_child_and_lists_the_long_record(qtbot, tmp_path):
    data = write(tmp_path / "chat données.jsonl",
                 [chat(f"Q{i}?", f"A{i}.") for i in range(5)] + [chat("Hi", "arr " * 60)])
    view = TextDatasetView()
    qtbot.addWidget(view)
    view.set_job(job(48), None)
    view.resize(1100, 800)
    view.show()
    assert view.open(data)
    tokens = view.tokens
    assert not tokens.runner.running  # nothing is tokenised until the tab is seen
    view.record_tabs.setCurrentWidget(tokens)
    qtbot.waitUntil(lambda: tokens.found is not None and tokens.found.done == 6
                    and not tokens.progress.isVisible(), timeout=WAIT_MS)
    assert "1 of 6 record(s) (16.7%) are longer than max_seq_length 48" in tokens.summary.text()
    assert int(tokens.histogram.drawn.counts.sum()) == 6
    assert tokens.cut_list.count() == 1 and "line 6: truncated" in tokens.cut_list.item(0).text()
    qtbot.waitUntil(lambda: "<|assistant|>" in tokens.record.toPlainText(), timeout=WAIT_MS)
    assert "Line 1" in tokens.record_title.text()
    tokens.cut_list.itemClicked.emit(tokens.cut_list.item(0))  # the table follows the list
    assert view.view.currentIndex().row() == 5
    qtbot.waitUntil(lambda: "✂ max_seq_length" in tokens.record.toPlainText(), timeout=WAIT_MS)
    assert "truncated" in tokens.record_title.text()
    view.grab().save(str(tmp_path / "tokens.png"))

    view.set_job(job(512), None)  # a setting the scan depends on: it runs again
    qtbot.waitUntil(lambda: tokens.found is not None and tokens.found.done == 6
                    and not tokens.found.truncated and tokens.cut_list.count() == 0,
                    timeout=WAIT_MS)
    tokens.runner.shutdown()


def test_a_scan_streams_progress_and_is_cancelled_by_stop(qtbot, tmp_path):
    data = write(tmp_path / "many.jsonl", [chat(f"Question {i}?", f"Answer {i}.")
                                           for i in range(30_000)])
    got = []
    runner = TokenViewRunner(got.append, poll_ms=20)
    runner.start(scan_request(job(), None, data))
    qtbot.waitUntil(lambda: any(m["type"] == "lengths" for m in got), timeout=WAIT_MS)
    proc = runner._child.proc
    runner.stop()
    assert not runner.running and proc.poll() is not None  # the child is gone
    seen = len(got)
    qtbot.wait(300)
    assert len(got) == seen and not any(m["type"] == "done" for m in got)
    assert got[0] == {**got[0], "type": "loaded", "records": 30_000}


def test_a_child_that_dies_is_reported(qtbot, tmp_path):
    data = write(tmp_path / "a.jsonl", [chat("Q?", "A.")])
    got = []
    runner = TokenViewRunner(got.append, poll_ms=20)
    runner.start(scan_request(job(), None, data))
    runner._child.proc.kill()
    qtbot.waitUntil(lambda: not runner.running, timeout=WAIT_MS)
    assert got[-1]["type"] == "error" and "stopped" in got[-1]["message"]


def test_the_window_passes_the_jobs_model_and_length(window, qtbot, tmp_path):
    data = write(tmp_path / "chat.jsonl", [chat("Q?", "A.")])
    window.panel.apply_values({"model.path": str(MODEL), "dataset.max_seq_length": 40})
    assert window.browser.open_text_dataset(data)
    tokens = window.browser.text_view.tokens
    window.browser.text_view.record_tabs.setCurrentWidget(tokens)
    qtbot.waitUntil(lambda: tokens.request is not None, timeout=WAIT_MS)
    assert tokens.request["tokenizer"] == str(MODEL) and tokens.request["max_seq_length"] == 40
    qtbot.waitUntil(lambda: tokens.found is not None and tokens.found.done == 1, timeout=WAIT_MS)
    window.panel.apply_values({"dataset.max_seq_length": 64})
    qtbot.waitUntil(lambda: tokens.request["max_seq_length"] == 64, timeout=WAIT_MS)


def test_scan_request_takes_the_mix_only_for_the_jobs_own_file(tmp_path):
    data = write(tmp_path / "main.jsonl", [chat("Q?", "A.")])
    mixed = job(path=str(data), mix=["more.jsonl @ 2"])
    request = scan_request(mixed, tmp_path, data)
    assert request["mix"] == ["more.jsonl @ 2"] and request["base_dir"] == str(tmp_path)
    assert "seed" not in request   # whole weights take every record: the seed picks nothing
    half = job(path=str(data), mix=["more.jsonl @ 0.5"])
    assert scan_request(half, tmp_path, data)["seed"] == half.training.seed
    other = write(tmp_path / "other.jsonl", [chat("Q?", "A.")])
    assert "mix" not in scan_request(mixed, tmp_path, other)   # not what trains with the mix
    assert "cannot read the mix" in scan_request(job(path=str(data), mix=["x @ many"]),
                                                 tmp_path, data)


def test_quick_edits_restart_the_scan_once_and_unrelated_ones_not_at_all(qtbot, tmp_path,
                                                                          monkeypatch):
    from lora_studio.ui.token_view import TokenView
    data = write(tmp_path / "a.jsonl", [chat("Q?", "A.")])
    view = TokenView()
    qtbot.addWidget(view)
    started = []
    monkeypatch.setattr(view.runner, "start", started.append)   # no child: count the starts
    view.set_job(job(48), None)
    view.set_path(data)
    view.show()
    assert [r["max_seq_length"] for r in started] == [48]
    for length in (4, 40, 409, 4096):   # typing 4096
        view.set_job(job(length), None)
    assert len(started) == 1   # nothing before the edits pause
    qtbot.waitUntil(lambda: len(started) == 2, timeout=5000)
    assert not view._debounce.isActive()   # no second restart is pending
    assert started[-1]["max_seq_length"] == 4096
    unrelated = job(4096)
    unrelated.output.output_name = "other"
    unrelated.training.seed = 99          # the seed picks nothing without a fractional mix
    view.set_job(unrelated, None)
    qtbot.waitUntil(lambda: not view._debounce.isActive(), timeout=5000)
    assert len(started) == 2


def test_the_tokens_tab_scans_the_mix_and_shows_a_mixed_in_record(qtbot, tmp_path):
    data = write(tmp_path / "main.jsonl", [chat(f"Q{i}?", f"A{i}.") for i in range(3)])
    write(tmp_path / "more.jsonl", [chat("Short?", "Yes."), chat("Hi", "arr " * 60)])
    view = TextDatasetView()
    qtbot.addWidget(view)
    view.set_job(job(48, path=str(data), mix=["more.jsonl @ 2"]), tmp_path)
    view.resize(1100, 800)
    view.show()
    assert view.open(data)
    tokens = view.tokens
    view.record_tabs.setCurrentWidget(tokens)
    qtbot.waitUntil(lambda: tokens.found is not None and tokens.found.done == 3 + 4
                    and not tokens.progress.isVisible(), timeout=WAIT_MS)
    assert "Records from main.jsonl (3) and the mix: more.jsonl ×2 (4)." in tokens.summary.text()
    listed = [tokens.cut_list.item(i).text() for i in range(tokens.cut_list.count())]
    assert len(listed) == 2 and all(t.startswith("more.jsonl line 2: truncated") for t in listed)
    row = view.view.currentIndex().row()
    tokens.cut_list.itemClicked.emit(tokens.cut_list.item(0))
    assert view.view.currentIndex().row() == row   # the table has no such row: it stays
    qtbot.waitUntil(lambda: "✂ max_seq_length" in tokens.record.toPlainText(), timeout=WAIT_MS)
    assert tokens.record_title.text().startswith("more.jsonl line 2, as training tokenises it")
    view.grab().save(str(tmp_path / "mix.png"))
    tokens.runner.shutdown()
