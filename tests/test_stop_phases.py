"""Stop and SIGTERM are honoured in every phase before the first step (loading,
scanning, checking images, caching, tokenising), not only between steps; each phase is
announced with a ``phase`` event and its n/N (issue 12 point 1, issue 13 point 3)."""
import _thread
import os
import signal
import sys
import threading
import time

import pytest

from lora_studio.engine.core import trainer
from lora_studio.engine.core.control import Cancelled, Phases, StopRequest
from lora_studio.engine.run import run
from lora_studio.runs.layout import new_run_dir
from test_engine_text import Recorder, make_job
from test_sd_engine import TINY_SD
from test_sd_engine import make_job as make_image_job

posix_only = pytest.mark.skipif(sys.platform == "win32", reason="os.kill with SIGTERM")
LONG = 60  # seconds a blocking call would take if the stop did not reach it


def later(action, delay=0.3):
    timer = threading.Timer(delay, action)
    timer.start()
    return timer


def test_a_stop_file_interrupts_a_blocking_call(tmp_path):
    stop = StopRequest(None, tmp_path)
    timer = later(lambda: (tmp_path / "STOP").write_text("stop"))
    reached_the_end = False
    started = time.monotonic()
    with pytest.raises(Cancelled):
        with stop.interrupting(poll_s=0.05):
            time.sleep(LONG)  # stands for a weights load that polls nothing
            reached_the_end = True
    timer.join()
    assert not reached_the_end and stop()
    # the sleep itself was cut short, not merely followed by the exception
    assert time.monotonic() - started < LONG / 2


@posix_only
def test_sigterm_interrupts_a_blocking_call_and_is_a_plain_request_afterwards(tmp_path):
    stop = StopRequest()
    with stop.handling_signals():
        timer = later(lambda: os.kill(os.getpid(), signal.SIGTERM))
        with pytest.raises(Cancelled):
            with stop.interrupting():
                time.sleep(LONG)
        timer.join()
        assert stop()
        # A simulated signal that lands after the block (the watcher's) only asks again.
        _thread.interrupt_main(signal.SIGTERM)
        time.sleep(0.05)  # the handler runs here: no exception
    assert stop()


def test_the_handlers_are_restored_after_the_block():
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    with StopRequest().interrupting():
        assert signal.getsignal(signal.SIGTERM) is not before[signal.SIGTERM]
    assert {s: signal.getsignal(s) for s in before} == before


def test_phases_are_throttled_but_first_and_last_always_sent():
    events, now = [], [0.0]
    phase = Phases(events.append, interval=0.25, clock=lambda: now[0])
    for done in range(1000):
        now[0] = done * 0.001   # a second in all
        phase("tokenising", done, 1000)
    phase("tokenising", 1000, 1000)
    phase("loading the model")
    counts = [(e["phase"], e.get("done")) for e in events]
    assert counts[0] == ("tokenising", 0) and counts[-2:] == [("tokenising", 1000),
                                                              ("loading the model", None)]
    assert 4 <= len(counts) <= 8  # about four a second, not a thousand
    assert all(e["type"] == "phase" for e in events)


def test_phases_check_the_stop_even_off_the_main_thread():
    asked = []
    phase = Phases(lambda ev: None, stop=lambda: bool(asked))
    phase("scanning the dataset")
    asked.append(1)
    with pytest.raises(Cancelled):
        phase("checking images", 1, 10)


def _stop_at(events: Recorder, folder, wanted: str):
    """An emit that writes the STOP file when the phase `wanted` starts."""
    def emit(ev):
        events(ev)
        if ev["type"] == "phase" and ev["phase"] == wanted:
            folder.stop_file.write_text("stop")
    return emit


@pytest.fixture
def fresh_token_cache(tmp_path, monkeypatch):
    """Tokenising is a phase only when the records are not in the token cache yet."""
    monkeypatch.setenv("LORA_STUDIO_CACHE_DIR", str(tmp_path / "cache"))


def test_text_run_announces_its_phases_before_the_first_step(tmp_path, fresh_token_cache):
    events = Recorder()
    run(make_job(training={"max_steps": 1}), new_run_dir(tmp_path, "phases").root, events)
    order = [e["phase"] if e["type"] == "phase" else e["type"] for e in events
             if e["type"] in ("phase", "started", "progress")]
    first = order.index("progress")
    assert order[:first] == ["loading libraries", "loading the tokenizer", "reading the dataset",
                             "tokenising", "tokenising", "loading the model",
                             "preparing the optimizer", "started", "first step"]
    tokenising = [e for e in events.of("phase") if e["phase"] == "tokenising"]
    assert tokenising[-1]["done"] == tokenising[-1]["total"] > 0


@pytest.mark.parametrize("wanted", ["loading the tokenizer", "tokenising", "loading the model"])
def test_text_run_stops_in_any_phase_before_the_first_step(tmp_path, fresh_token_cache, wanted):
    folder = new_run_dir(tmp_path, "stop")
    events = Recorder()
    run(make_job(), folder.root, _stop_at(events, folder, wanted))
    assert not events.of("started") and not events.of("progress")
    finished = events.of("finished")[-1]
    assert finished["status"] == "cancelled" and finished["checkpoint"] is None
    assert events.of("phase")[-1]["phase"] == wanted
    assert not any(folder.checkpoints.iterdir())


@pytest.mark.parametrize("wanted", ["scanning the dataset", "checking images", "caching latents"])
def test_image_run_stops_while_scanning_checking_or_caching(tmp_path, wanted):
    folder = new_run_dir(tmp_path, "stop")
    images = tmp_path / "images"
    images.mkdir()
    from PIL import Image
    for i in range(3):
        Image.new("RGB", (64, 64), ("red", "green", "blue")[i]).save(images / f"{i}.png")
    job = make_image_job(TINY_SD, dataset={"path": str(images), "resolution": 64,
                                           "cache_latents": True})
    events = Recorder()
    run(job, folder.root, _stop_at(events, folder, wanted))
    assert not events.of("started")
    assert events.of("finished")[-1]["status"] == "cancelled"
    assert events.of("phase")[-1]["phase"] == wanted


@posix_only
def test_sigterm_during_a_long_load_ends_the_run_before_any_step(tmp_path):
    """A prepare that blocks (a big model from a slow disk) still stops on SIGTERM."""
    loaded = []

    def prepare(job, ctx):
        ctx.phase("loading the model")
        time.sleep(LONG)
        loaded.append(1)
    stop = StopRequest()
    with stop.handling_signals():
        timer = later(lambda: os.kill(os.getpid(), signal.SIGTERM))
        with pytest.raises(Cancelled):
            trainer.train(make_job(), new_run_dir(tmp_path, "slow"), Recorder(), stop, prepare)
        timer.join()
    assert not loaded
