"""Campaigns: the file is checked before any work; Ray and local runs give the same tables.

The Ray tests start a real local cluster (``ray start --head`` on 127.0.0.1, two worker
processes) and run the CLI as a driver process; they skip when Ray is not installed.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pytest

from precompute.cli import main
from precompute.results.campaign import CampaignError, load_campaign, plan
from precompute.results.store import build

ROOT = Path(__file__).resolve().parent.parent
TOML = """
name = "tiny"
retries = 5
models = ["tiny-gpt2", "tiny-neox", "tiny-llama"]
[resources]
cpus = 1
[methods.logit_lens]
datasets = {wikitext = 16}
set = {max_tokens = 24}
[methods.component_norms]
datasets = {wikitext = 16}
set = {max_tokens = 24}
after = ["logit_lens"]
[methods.component_norms.models.tiny-llama]
set = {max_tokens = 16}
"""
IGNORED = {"started_at", "finished_at", "code_version"}  # when, not what


def _env() -> dict:
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "RAY_USAGE_STATS_ENABLED": "0",
    }


def _cli(*args: str, **kw) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "precompute", "campaign", *args, "--quiet"]
    return subprocess.Popen(
        cmd, cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw
    )


def _run(*args: str, ok: bool = True) -> tuple[int, str, str]:
    proc = _cli(*args)
    out, err = proc.communicate(timeout=300)
    if ok:
        assert proc.returncode == 0, err[-3000:]
    return proc.returncode, out, err


def _tables(work: Path, out: Path) -> dict[str, pd.DataFrame]:
    build(work, out)
    tables = {}
    for path in sorted((out / "tables").glob("*.parquet")):
        table = path.stem
        frame = pd.read_parquet(path)
        frame = frame.drop(columns=[c for c in IGNORED if c in frame.columns])
        tables[table] = frame.sort_values(list(frame.columns), ignore_index=True)
    return tables


def _assert_same(a: dict[str, pd.DataFrame], b: dict[str, pd.DataFrame]) -> None:
    assert a.keys() == b.keys()
    for table in a:
        pd.testing.assert_frame_equal(a[table], b[table], check_exact=True, obj=table)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A campaign file, a synthetic WikiText folder, and the local (reference) run's tables."""
    base = tmp_path_factory.mktemp("campaign")
    (base / "tiny.toml").write_text(TOML)
    lines = [" = Heading = "]
    words = [
        "the",
        "cat",
        "sat",
        "on",
        "the",
        "mat",
        "near",
        "Paris",
        "in",
        "France",
        "and",
        "the",
        "dog",
        "sat",
        "on",
        "the",
        "log",
    ]
    for i in range(40):
        lines.append(
            f" Paragraph {i} : " + " ".join(words[(i + j) % len(words)] for j in range(60))
        )
    (base / "data").mkdir()
    (base / "data" / "wikitext-2-raw-test.txt").write_text("\n".join(lines))
    args = ("--data-dir", str(base / "data"))
    _run(str(base / "tiny.toml"), "--work-dir", str(base / "local"), *args)
    return base, args, _tables(base / "local", base / "local_out")


def test_plan_and_local_run(setup):
    base, args, ref = setup
    campaign = load_campaign(base / "tiny.toml")
    jobs = plan(campaign, base / "data")
    assert len(jobs) == 3 * 2 and all(j.n_total == 16 and len(j.starts) == 2 for j in jobs)
    llama = [j for j in jobs if j.model == "tiny-llama" and j.method == "component_norms"]
    assert llama[0].config.max_tokens == 16  # per-model override on top of the method's
    assert set(ref["metrics"]["model"]) == {"tiny-gpt2", "tiny-neox", "tiny-llama"}
    assert len(ref["runs"]) == 6 and not ref["metrics"].duplicated().any()
    order = [(j.model, j.method) for j in jobs]
    assert order.index(("tiny-neox", "logit_lens")) < order.index(("tiny-neox", "component_norms"))
    code, out, _ = _run("status", str(base / "tiny.toml"), "--work-dir", str(base / "local"), *args)
    assert "12/12 chunks done" in out and "0 failed" in out


@pytest.mark.parametrize(
    "edit, message",
    [
        (("tiny-neox", "tiny-nope"), "Unknown model 'tiny-nope'"),
        (("[methods.component_norms]\n", "[methods.no_such]\n"), "unknown method(s) ['no_such']"),
        (("max_tokens = 24", "max_tokenz = 24"), "Unknown option 'max_tokenz'"),
        (
            ("[methods.logit_lens]\n", "[methods.logit_lens]\nmodels = 3\n"),
            "[methods.logit_lens] models must be a table",
        ),
        (
            ("[methods.logit_lens]\n", '[methods.logit_lens]\nafter = ["component_norms"]\n'),
            "methods wait on each other: logit_lens -> component_norms -> logit_lens",
        ),
    ],
)
def test_bad_file_fails_before_work(tmp_path, capsys, edit, message):
    path = tmp_path / "bad.toml"
    path.write_text(TOML.replace(*edit, 1))
    code = main(["campaign", str(path), "--work-dir", str(tmp_path / "work")])
    assert code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "work").exists()
    with pytest.raises(CampaignError):
        load_campaign(path)


def _ray_args(setup, address: str, work: Path, toml: Path | None = None) -> list[str]:
    base, args, _ = setup
    toml = toml or base / "tiny.toml"
    return [str(toml), "--executor", "ray", "--address", address, "--work-dir", str(work), *args]


def test_ray_address_that_does_not_answer(setup, tmp_path, capsys):
    pytest.importorskip("ray")
    work = tmp_path / "work"
    code = main(["campaign", *_ray_args(setup, "127.0.0.1:9", work)])
    assert code == 2 and "does not answer" in capsys.readouterr().err and not work.exists()


@pytest.fixture(scope="module")
def cluster():
    """A local Ray cluster with two worker CPUs, in its own process group."""
    pytest.importorskip("ray")
    from precompute.results.executors import start_local_cluster, stop_local_cluster

    temp = Path(tempfile.mkdtemp(prefix="rc", dir="/tmp"))  # Ray's socket paths must be short
    address, proc = start_local_cluster(temp, num_cpus=2)
    yield address
    stop_local_cluster(proc)


def test_resources_no_node_has(setup, cluster, tmp_path):
    path = tmp_path / "gpu.toml"
    path.write_text(TOML.replace("cpus = 1", "cpus = 1\ngpus = 1"))
    work = tmp_path / "work"
    code, _, err = _run(*_ray_args(setup, cluster, work, path), ok=False)
    assert code == 2 and "No node of the cluster has the resources" in err and "gpus=1" in err
    assert not (work / "runs").exists()


def test_ray_equals_local(setup, cluster, tmp_path):
    work = tmp_path / "work"
    _run(*_ray_args(setup, cluster, work))
    _assert_same(_tables(work, tmp_path / "out"), setup[2])


def _busy_workers(markers: Path) -> list[int]:
    pids = []
    for path in markers.glob("*.json"):
        try:
            rec = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if rec.get("job"):
            pids.append(int(rec["pid"]))
    return pids


def _retried(work: Path) -> bool:
    try:
        progress = json.loads((work / "campaigns" / "tiny" / "progress.json").read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return any(a > 1 for j in progress["jobs"].values() for a in j["attempts"].values())


def test_killed_workers_and_driver_lose_and_duplicate_nothing(setup, cluster, tmp_path):
    """Workers SIGKILLed at random moments, then the driver; the rerun skips finished chunks."""
    work = tmp_path / "work"
    cmd = _ray_args(setup, cluster, work)
    driver = _cli(*cmd)
    markers, kills, rng = work / "campaigns" / "tiny" / "workers", 0, random.Random(14)
    deadline = time.time() + 240
    while driver.poll() is None and kills < 2 and time.time() < deadline:
        busy = _busy_workers(markers)
        if busy:
            time.sleep(rng.uniform(0.0, 0.5))  # a random moment within the chunk (or just after)
            with contextlib.suppress(ProcessLookupError):
                os.kill(rng.choice(busy), signal.SIGKILL)
                kills += 1
        time.sleep(0.1)
    while driver.poll() is None and time.time() < deadline:  # a retry was scheduled; 3 chunks
        if _retried(work) and len(list(work.glob("runs/*/*/*/chunks/0*"))) >= 3:
            break
        time.sleep(0.1)
    assert kills == 2 and _retried(work)  # some chunk ran again after its worker died
    assert driver.poll() is None, "the campaign ended before the driver could be killed"
    driver.kill()
    driver.communicate()
    before = {p: p.stat().st_ino for p in work.glob("runs/*/*/*/chunks/0*")}
    assert len(before) >= 3
    _run(*cmd)
    after = {p: p.stat().st_ino for p in work.glob("runs/*/*/*/chunks/0*")}
    assert all(after[p] == ino for p, ino in before.items())  # finished chunks were not redone
    progress = json.loads((work / "campaigns" / "tiny" / "progress.json").read_text())
    assert sum(j["skipped"] for j in progress["jobs"].values()) >= len(before)
    _assert_same(_tables(work, tmp_path / "out"), setup[2])  # 0 rows lost, 0 duplicated


def test_failed_chunks_are_reported_while_the_rest_finishes(setup, tmp_path, capsys):
    base, args, _ = setup
    path = tmp_path / "broken.toml"
    path.write_text(
        'name = "broken"\nretries = 1\nmodels = ["nobody/no-such-model", "tiny-gpt2"]\n'
        "[methods.component_norms]\ndatasets = {wikitext = 8}\nset = {max_tokens = 16}\n"
    )
    work = tmp_path / "work"
    code = main(["campaign", str(path), "--work-dir", str(work), "--quiet", *args])
    err = capsys.readouterr().err
    assert code == 1 and "failed: nobody/no-such-model:component_norms" in err
    assert len(list(work.glob("runs/tiny-gpt2/component_norms/*/chunks/0*"))) == 1
    code = main(["campaign-status", str(path), "--work-dir", str(work), "--json", *args])
    report = json.loads(capsys.readouterr().out)
    assert report["summary"]["done"] == 1 and report["summary"]["failed"] == 1


@pytest.mark.parametrize("path", sorted((ROOT / "data" / "campaigns").glob("*.toml")), ids=str)
def test_shipped_campaign_files_load_and_name_real_methods(path):
    from precompute.methods import get_method

    campaign = load_campaign(path)
    assert campaign.models
    for name in campaign.methods:
        assert get_method(name).name == name
