"""Every ``--json`` command prints only JSON on stdout (issue 9): its whole stdout parses.

Each command runs in a subprocess, as a user or a script would call it; library chatter (e.g.
TransformerLens's "Moving model to device") must go to stderr.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _run(args: list[str], timeout: int = 300) -> object:
    env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-m", "precompute", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    try:
        return json.loads(proc.stdout)
    except json.JSONDecodeError as err:
        raise AssertionError(f"stdout is not one JSON document:\n{proc.stdout[:500]!r}") from err


def test_list_json():
    rows = _run(["list", "--json"])
    assert isinstance(rows, list)
    assert all({"model", "method", "rows"} <= set(r) for r in rows)


def test_models_json():
    rows = _run(["models"])
    assert isinstance(rows, list) and rows and all("hf_id" in r for r in rows)


def test_build_json(tmp_path):
    counts = _run(["build", "--work-dir", str(tmp_path / "work"), "--results", str(tmp_path / "r")])
    assert isinstance(counts, dict)


def test_run_one_json():
    prompt = "The Eiffel Tower is in Paris"
    args = ["run-one", "--model", "tiny-gpt2", "--method", "logit_lens", "--prompt", prompt]
    rows = _run([*args, "--device", "cpu", "--json"])
    assert rows and {"layer", "position", "metric", "value"} <= set(rows[0])


@pytest.mark.parametrize(
    "name, extra",
    [
        ("live-logit-lens", []),
        ("tuned-lens-train", ["--data-dir", "WIKITEXT"]),
        ("representations", ["--n", "12"]),
        # The intervention benchmarks take ~30 s each even on a tiny model: slow tier.
        pytest.param("layer-sweep", ["--n", "2"], marks=pytest.mark.slow),
        pytest.param("causal-tracing", ["--n", "2"], marks=pytest.mark.slow),
        pytest.param("attention-knockout", ["--n", "2"], marks=pytest.mark.slow),
    ],
)
def test_bench_json(name, extra, wikitext_dir):
    extra = [str(wikitext_dir) if a == "WIKITEXT" else a for a in extra]
    figures = _run(["bench", name, "--model", "tiny-gpt2", "--json", *extra])
    assert isinstance(figures, dict) and figures["model"] == "tiny-gpt2"
