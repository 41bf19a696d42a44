import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from precompute import schema
from precompute.methods import get_method
from precompute.methods.logit_lens import LogitLensConfig
from precompute.results.jobs import run_job
from precompute.results.store import build, list_results

ROOT = Path(__file__).resolve().parent.parent


def _run(tiny_models, work, data_dir, n=12):
    lm = tiny_models["tiny-gpt2"]
    cfg = LogitLensConfig(max_tokens=24)
    method = get_method("logit_lens")
    run_job(lm, method, "wikitext", cfg, work, data_dir, n_items=n, progress=False)
    run_job(lm, method, "examples", cfg, work, None, progress=False)


def test_build_list_and_aggregates(tiny_models, tmp_path, wikitext_dir):
    work, out = tmp_path / "work", tmp_path / "results"
    _run(tiny_models, work, wikitext_dir)
    counts = build(work, out)
    assert counts["metrics"] > 0 and counts["lens_topk"] > 0 and counts["runs"] == 2
    listed = list_results(out)
    assert listed == [{"model": "tiny-gpt2", "method": "logit_lens", "rows": listed[0]["rows"]}]
    con = duckdb.connect(str(out / "stagescope.duckdb"), read_only=True)
    agg = con.execute(
        "SELECT * FROM metrics_agg WHERE dataset='wikitext' AND metric='kl_to_final'"
    ).df()
    assert len(agg) == tiny_models["tiny-gpt2"].n_layers + 1
    assert (agg["n"] == 12).all()
    assert (agg["ci_lo"] <= agg["mean"]).all() and (agg["mean"] <= agg["ci_hi"]).all()
    last = agg[agg.layer == agg.layer.max()]
    assert last["mean"].abs().max() < 1e-5  # KL is 0 at the last state
    runs = con.execute("SELECT * FROM runs").df()
    prov = json.loads(runs["provenance_json"].iloc[0])
    assert {"source", "dtype", "device", "torch", "transformers"} <= set(prov)
    assert runs["dataset_sha256"].str.len().eq(64).all()
    # Every metric row says how it was made.
    m = con.execute("SELECT DISTINCT run_id FROM metrics").df()
    assert set(m["run_id"]) <= set(runs["run_id"])


def test_rebuild_does_not_duplicate(tiny_models, tmp_path, wikitext_dir):
    work, out = tmp_path / "work", tmp_path / "results"
    _run(tiny_models, work, wikitext_dir)
    first = build(work, out)
    second = build(work, out)
    assert first == second


def test_results_from_other_runs_survive_a_build(tiny_models, tmp_path, wikitext_dir):
    out = tmp_path / "results"
    _run(tiny_models, tmp_path / "w1", wikitext_dir, n=4)
    build(tmp_path / "w1", out)
    lm = tiny_models["tiny-llama"]
    run_job(
        lm, get_method("logit_lens"), "examples", LogitLensConfig(), tmp_path / "w2", progress=False
    )
    build(tmp_path / "w2", out)
    models = {r["model"] for r in list_results(out)}
    assert models == {"tiny-gpt2", "tiny-llama"}


def _rows(folder: Path) -> pd.DataFrame:
    parts = sorted(folder.glob("runs/*/*/*/chunks/[0-9]*/metrics.parquet"))
    return pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True)


def test_kill_minus_nine_then_resume_loses_and_duplicates_nothing(tmp_path, wikitext_dir):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [
        sys.executable,
        "-m",
        "precompute",
        "run",
        "--model",
        "tiny-gpt2",
        "--methods",
        "logit_lens",
        "--data-dir",
        str(wikitext_dir),
        "--n",
        "120",
        "--quiet",
        "--set",
        "max_tokens=48",
    ]
    killed = tmp_path / "killed"
    proc = subprocess.Popen([*cmd, "--work-dir", str(killed)], env=env, cwd=ROOT)
    deadline = time.time() + 120
    chunks = killed / "runs" / "tiny-gpt2" / "logit_lens"
    while time.time() < deadline and not list(chunks.glob("wikitext-*/chunks/000016-*")):
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    meta = json.loads(next(chunks.glob("wikitext-*/job.json")).read_text())
    assert meta["status"] == "running", "the job finished before it could be killed"
    subprocess.run([*cmd, "--work-dir", str(killed)], env=env, cwd=ROOT, check=True)
    clean = tmp_path / "clean"
    subprocess.run([*cmd, "--work-dir", str(clean)], env=env, cwd=ROOT, check=True)
    a = _rows(killed).drop(columns=["run_id"]).sort_values(list(schema.METRIC_COLUMNS)[:-3])
    b = _rows(clean).drop(columns=["run_id"]).sort_values(list(schema.METRIC_COLUMNS)[:-3])
    assert len(a) == len(b)
    assert not a.duplicated(
        ["dataset", "prompt_id", "position", "layer", "metric", "variant"]
    ).any()
    pd.testing.assert_frame_equal(a.reset_index(drop=True), b.reset_index(drop=True))


def test_schema_rejects_unknown_units():
    df = schema.empty("metrics")
    df.loc[0] = ["m", "x", "", "d", "p", -1, 0, "resid", 1, 0.0, "", "kl", 1.0, "furlongs", 0, "r"]
    with pytest.raises(schema.SchemaError, match="unknown units"):
        schema.conform("metrics", df)


def test_newer_run_of_same_key_replaces_the_older(tiny_models, tmp_path, wikitext_dir):
    lm, method = tiny_models["tiny-gpt2"], get_method("logit_lens")
    out = tmp_path / "results"
    run_job(
        lm,
        method,
        "wikitext",
        LogitLensConfig(max_tokens=16),
        tmp_path / "w1",
        wikitext_dir,
        n_items=3,
        progress=False,
    )
    build(tmp_path / "w1", out)
    run_job(
        lm,
        method,
        "wikitext",
        LogitLensConfig(max_tokens=24),
        tmp_path / "w2",
        wikitext_dir,
        n_items=5,
        progress=False,
    )
    kept = tmp_path / "kept"
    import shutil

    shutil.copytree(out, kept)
    build(tmp_path / "w2", out)
    con = duckdb.connect(str(out / "stagescope.duckdb"), read_only=True)
    runs = con.execute("SELECT run_id, n_items FROM runs").df()
    assert runs["n_items"].tolist() == [5]  # the 3-document run is gone, not averaged in
    in_metrics = set(con.execute("SELECT DISTINCT run_id FROM metrics").df()["run_id"])
    assert in_metrics == set(runs["run_id"])
    n = con.execute("SELECT max(n) FROM metrics_agg WHERE metric='kl_to_final'").fetchone()[0]
    assert n == 5
    build(tmp_path / "w2", kept, keep_superseded=True)
    con = duckdb.connect(str(kept / "stagescope.duckdb"), read_only=True)
    assert sorted(con.execute("SELECT n_items FROM runs").df()["n_items"]) == [3, 5]


def test_rebuilding_an_older_work_folder_keeps_the_newer_results(
    tiny_models, tmp_path, wikitext_dir
):
    lm, method = tiny_models["tiny-gpt2"], get_method("logit_lens")
    out = tmp_path / "results"
    for work, n, tokens in (("w1", 3, 16), ("w2", 5, 24)):
        time.sleep(1.1)  # finished_at has one-second resolution
        run_job(
            lm,
            method,
            "wikitext",
            LogitLensConfig(max_tokens=tokens),
            tmp_path / work,
            wikitext_dir,
            n_items=n,
            progress=False,
        )
    build(tmp_path / "w2", out)
    build(tmp_path / "w1", out)  # the older run must not replace the newer one
    con = duckdb.connect(str(out / "stagescope.duckdb"), read_only=True)
    assert con.execute("SELECT n_items FROM runs").df()["n_items"].tolist() == [5]
