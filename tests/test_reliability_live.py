"""Reliability: live work is bounded and sessions do not wait on or stop each other wrongly.

The gate of ``app.live``: a FIFO queue with a visible position and a bound, a per-request time
limit enforced inside the forward pass (the model lock is free afterwards), one request per
session, and a model that failed to load answers at once the next time.
"""

from __future__ import annotations

import threading
import time

import pandas as pd
import pytest

from app import live
from precompute.methods.logit_lens import LogitLensConfig, run_one


@pytest.fixture
def gate(monkeypatch):
    """A fresh gate: 1 slot, 3 waiting places."""
    g = live.Gate(1, 3)
    monkeypatch.setattr(live, "_GATE", g)
    return g


def _spin(lm, stop: threading.Event | None = None, started: threading.Event | None = None):
    """A long request: forward passes, one per lock hold, until stopped."""
    ids = lm.tokenize("The cat sat on the mat")
    while stop is None or not stop.is_set():
        with lm.lock:
            lm.bridge(ids)
        if started is not None:
            started.set()
    return "finished"


def test_queue_positions_and_bound(gate):
    first = gate.enter("a")
    assert gate.wait(first, 0.01)
    waiting = [gate.enter(s) for s in ("b", "c", "d")]
    assert [gate.position(t) for t in waiting] == [1, 2, 3]  # "N students ahead of you"
    with pytest.raises(live.LiveBusy, match="busy"):
        gate.enter("e")
    gate.leave(first)
    assert gate.wait(waiting[0], 0.5)
    assert [gate.position(t) for t in waiting[1:]] == [1, 2]


def test_waiting_students_see_their_position(gate, tiny_models):
    lm = tiny_models["tiny-gpt2"]
    stop, started = threading.Event(), threading.Event()
    long = threading.Thread(target=live.run, args=(lambda: _spin(lm, stop, started),), daemon=True)
    long.start()
    started.wait(30)

    class Shown:
        messages: list[str] = []

        def info(self, text):
            self.messages.append(text)

        def empty(self):
            pass

    shown = Shown()
    t = threading.Thread(
        target=live.run, args=(lambda: "ok",), kwargs={"placeholder": shown}, daemon=True
    )
    t.start()
    while not shown.messages:
        time.sleep(0.01)
    stop.set()
    t.join(30)
    long.join(30)
    assert shown.messages[0] == "Waiting for the live model: 1 student ahead of you ..."


def test_time_limit_stops_the_request_and_frees_the_model(gate, tiny_models):
    lm = tiny_models["tiny-gpt2"]
    with pytest.raises(live.LiveTimeout, match="time limit of 0.5 s"):
        live.run(lambda: _spin(lm), limit_s=0.5)
    assert lm.lock.acquire(blocking=False)  # the stopped pass released the lock
    lm.lock.release()
    assert gate.stats() == {"running": 0, "waiting": 0}
    assert live.run(lambda: run_one(lm, "Hello", LogitLensConfig()), limit_s=30) is not None


def test_a_new_request_of_the_same_session_replaces_the_old(gate, tiny_models):
    lm = tiny_models["tiny-gpt2"]
    started, errors = threading.Event(), []

    def old():
        try:
            live.run(lambda: _spin(lm, started=started), session="tab-1", limit_s=60)
        except live.LiveTimeout as err:
            errors.append(str(err))

    t = threading.Thread(target=old, daemon=True)
    t.start()
    started.wait(30)
    assert live.run(lambda: "new", session="tab-1") == "new"
    t.join(30)
    assert errors and "newer request" in errors[0]


def test_a_short_request_is_not_stuck_behind_a_long_one(monkeypatch, tiny_models):
    """Two slots and a lock held per pass: a lens runs while a long trace keeps going."""
    monkeypatch.setattr(live, "_GATE", live.Gate(2, 4))
    lm = tiny_models["tiny-gpt2"]
    stop, started = threading.Event(), threading.Event()
    long = threading.Thread(target=live.run, args=(lambda: _spin(lm, stop, started),), daemon=True)
    long.start()
    started.wait(30)
    df = live.run(lambda: run_one(lm, "Paris is the capital of", LogitLensConfig()))
    assert long.is_alive() and len(df)  # the lens finished while the long request still ran
    stop.set()
    long.join(30)


def test_twenty_sessions_get_their_own_numbers(monkeypatch, tiny_models):
    monkeypatch.setattr(live, "_GATE", live.Gate(2, 40))
    lm = tiny_models["tiny-gpt2"]
    prompts = [f"Student {i} asks about the number {i * 7}" for i in range(20)]
    alone = {p: run_one(lm, p, LogitLensConfig()) for p in prompts}
    results: dict[str, pd.DataFrame] = {}

    def student(p):
        results[p] = live.run(lambda: run_one(lm, p, LogitLensConfig()), session=p)

    threads = [threading.Thread(target=student, args=(p,)) for p in prompts]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    mismatches = [p for p in prompts if not results[p].equals(alone[p])]
    assert mismatches == []


def test_a_model_that_fails_to_load_fails_fast_next_time(monkeypatch):
    calls = []

    def broken(name):
        calls.append(name)
        raise OSError("We couldn't connect to 'https://huggingface.co'\nmany more lines")

    monkeypatch.setattr(live, "_load", broken)
    monkeypatch.setattr(live, "_FAILED", {})
    for _ in range(3):
        with pytest.raises(live.LiveUnavailable, match="cannot be loaded here") as err:
            live.get_model("gpt2")
        assert "\n" not in str(err.value)
    assert calls == ["gpt2"]  # remembered: no second 54 s wait


def test_an_uncached_hub_model_offline_is_refused_at_once(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(live, "_FAILED", {})
    with pytest.raises(live.LiveUnavailable, match="cannot be reached"):
        live.get_model("nobody/not-cached")


def test_list_sizes_are_limited(monkeypatch):
    monkeypatch.setenv("STAGESCOPE_LIVE_MAX_ITEMS", "24")
    assert live.check_count(list(range(24)), "sentences")
    with pytest.raises(live.PromptError, match="75 sentences; the live panel takes at most 24"):
        live.check_count(list(range(75)), "sentences")


def test_long_traces_leave_a_slot_for_short_requests():
    g = live.Gate(2, 4)
    trace1 = g.enter("a", heavy=True)
    assert g.wait(trace1, 0.01)
    trace2 = g.enter("b", heavy=True)
    assert not g.wait(trace2, 0.01)  # the last slot is kept for short requests
    lens = g.enter("c")
    assert g.wait(lens, 0.01)  # passes the waiting trace
    g.leave(lens)
    assert not g.wait(trace2, 0.01)
    g.leave(trace1)
    assert g.wait(trace2, 0.5)
