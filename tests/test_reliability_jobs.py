"""Reliability: kills at every step of ``run`` and ``build``, and resumes with changed sizes.

A kill is simulated by raising from the fault-injection point between two file-system steps
(``jobs._fault`` / ``store._fault``): no handler runs, so the folders are left exactly as a
``kill -9`` there would leave them. After a rerun, every table must equal the uninterrupted run's.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pandas as pd
import pytest

from precompute import schema
from precompute.methods import get_method
from precompute.methods.logit_lens import LogitLensConfig
from precompute.results import jobs, store
from precompute.results.jobs import JobBusyError, job_lock, run_job
from precompute.results.store import build

CFG = LogitLensConfig(max_tokens=12, k=3)


class Killed(BaseException):
    """The simulated kill (a BaseException, like a signal: no ``except Exception`` catches it)."""


def _method(chunk_size=2):
    return dataclasses.replace(get_method("logit_lens"), chunk_size=chunk_size)


def _run(lm, work, data_dir, n, chunk_size=2):
    return run_job(lm, _method(chunk_size), "wikitext", CFG, work, data_dir, n, progress=False)


def _tables(out: Path) -> dict[str, pd.DataFrame]:
    """Every results table, sorted, without the columns that name times or paths."""
    drop = {"started_at", "finished_at", "code_version"}
    out_tables = {}
    for table in schema.ALL_TABLES:
        df = pd.read_parquet(out / "tables" / f"{table}.parquet")
        df = df.drop(columns=[c for c in df.columns if c in drop])
        out_tables[table] = df.sort_values(list(df.columns)).reset_index(drop=True)
    return out_tables


def _assert_same(a: Path, b: Path) -> None:
    ta, tb = _tables(a), _tables(b)
    for table in ta:
        pd.testing.assert_frame_equal(ta[table], tb[table], check_dtype=False, obj=table)


def _steps(module, monkeypatch, action) -> list[str]:
    seen: list[str] = []
    monkeypatch.setattr(module, "_fault", seen.append)
    action()
    monkeypatch.setattr(module, "_fault", lambda step: None)
    return seen


def _kill_at(module, monkeypatch, target: str) -> None:
    def fault(step):
        if step == target:
            raise Killed(step)

    monkeypatch.setattr(module, "_fault", fault)


@pytest.fixture(scope="module")
def lm(tiny_models):
    return tiny_models["tiny-gpt2"]


@pytest.fixture
def reference(lm, tmp_path, wikitext_dir):
    """The uninterrupted run of 7 items in chunks of 2, built."""
    _run(lm, tmp_path / "ref-work", wikitext_dir, 7)
    build(tmp_path / "ref-work", tmp_path / "ref")
    return tmp_path / "ref"


@pytest.mark.parametrize("first", [3, 4, 12])
def test_resume_with_another_item_count(lm, tmp_path, wikitext_dir, reference, first):
    work = tmp_path / "work"
    _run(lm, work, wikitext_dir, first)
    _run(lm, work, wikitext_dir, 7)
    build(work, tmp_path / "out")
    _assert_same(tmp_path / "out", reference)


def test_resume_with_another_chunk_size(lm, tmp_path, wikitext_dir, reference):
    work = tmp_path / "work"
    _run(lm, work, wikitext_dir, 5, chunk_size=3)
    _run(lm, work, wikitext_dir, 7)
    build(work, tmp_path / "out")
    _assert_same(tmp_path / "out", reference)


def test_a_kill_at_any_step_of_run_then_rerun(lm, tmp_path, wikitext_dir, reference, monkeypatch):
    steps = _steps(jobs, monkeypatch, lambda: _run(lm, tmp_path / "probe", wikitext_dir, 7))
    assert len(steps) >= 9  # plan, 4 chunks x (compute, rename), done
    for i, step in enumerate(steps):
        work = tmp_path / f"work{i}"
        _kill_at(jobs, monkeypatch, step)
        with pytest.raises(Killed):
            _run(lm, work, wikitext_dir, 7)
        monkeypatch.setattr(jobs, "_fault", lambda step: None)
        assert not build(work, tmp_path / f"early{i}").get("metrics")  # not done: not built
        _run(lm, work, wikitext_dir, 7)
        build(work, tmp_path / f"out{i}")
        _assert_same(tmp_path / f"out{i}", reference)


def test_a_kill_at_any_step_of_build_then_rebuild(lm, tmp_path, wikitext_dir, monkeypatch):
    """Old results in place, a second model's job built on top, killed at each step."""
    first, second = tmp_path / "w1", tmp_path / "w2"
    _run(lm, first, wikitext_dir, 4)
    run_job(lm, _method(), "wikitext", LogitLensConfig(max_tokens=8, k=3), second, wikitext_dir, 3)
    clean = tmp_path / "clean"
    build(first, clean)
    steps = _steps(store, monkeypatch, lambda: build(second, clean))
    assert any(s.startswith("swap:") for s in steps) and "stage:done" in steps
    staging = [s for s in steps if s.startswith("stage:")]
    # Kills while staging all leave the results untouched: the first and last stand for them.
    steps = [s for s in steps if s not in staging or s in (staging[0], staging[-1])]
    for i, step in enumerate(steps):
        out = tmp_path / f"out{i}"
        build(first, out)
        _kill_at(store, monkeypatch, step)
        with pytest.raises(Killed):
            build(second, out)
        monkeypatch.setattr(store, "_fault", lambda step: None)
        build(second, out)  # starts by recovering the interrupted swap
        _assert_same(out, clean)
        assert not (out / store.JOURNAL).exists() and not (out / ".swap-trash").exists()
        assert not store._stage_dir(out).exists()


def test_tables_left_aside_by_an_older_build_are_recovered(lm, tmp_path, wikitext_dir):
    work = tmp_path / "work"
    _run(lm, work, wikitext_dir, 4)
    out = tmp_path / "out"
    build(work, out)
    before = _tables(out)
    (out / "tables").rename(out / ".tables.1234.old")  # the old swap's gap
    assert store.recover(out) == "restored the tables of an interrupted build"
    after = _tables(out)
    for t in before:
        pd.testing.assert_frame_equal(before[t], after[t])


def test_two_builds_at_once(lm, tmp_path, wikitext_dir):
    out = tmp_path / "out"
    out.mkdir()
    with job_lock(out / ".build.lock", "build", out), pytest.raises(JobBusyError, match="build"):
        build(tmp_path / "nowork", out)
