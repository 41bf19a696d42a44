"""Benchmark: a tiny-model campaign, local executor vs Ray with two workers, and Ray's overhead.

``python -m precompute bench campaign --json`` writes a campaign of the three tiny random models
and the chunked offline methods (``logit_lens``, ``component_norms``, ``attention_locality``,
``lens_entropy``; each at its own chunk size, so the chunks are those of the default campaign),
runs it with ``--executor local`` and on a fresh local Ray cluster (``ray start --head``, two
worker CPUs; every process uses one thread), and prints both wall times, the mean chunk time and
the scheduling round trip of a no-op task with the same resources (the per-chunk overhead Ray adds
once its workers are up). ``--model`` is not used; WikiText comes from ``--data-dir`` or is
synthetic.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

NAME = "campaign"
ROOT = Path(__file__).resolve().parents[2]
TOML = """
name = "bench"
retries = 1
models = ["tiny-gpt2", "tiny-neox", "tiny-llama"]
[resources]
cpus = 1
[methods.logit_lens]
datasets = {wikitext = 32}
set = {max_tokens = 64}
[methods.component_norms]
datasets = {wikitext = 32}
set = {max_tokens = 64}
[methods.attention_locality]
datasets = {wikitext = 32}
set = {max_tokens = 64}
[methods.lens_entropy]
datasets = {wikitext = 16}
set = {max_tokens = 64}
"""


def _noop() -> int:
    return os.getpid()


def _campaign(base: Path, toml: Path, data: Path, *extra: str) -> tuple[float, dict]:
    work = base / f"work-{len(list(base.glob('work-*')))}"
    # One thread per process, as in Ray's workers: the comparison is 1 worker vs 2.
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "precompute", "campaign", str(toml), "--quiet", "--json"]
    t0 = time.perf_counter()
    proc = subprocess.run(
        [*cmd, "--work-dir", str(work), "--data-dir", str(data), *extra],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - t0
    if proc.returncode:
        raise RuntimeError(f"campaign failed: {proc.stderr[-2000:]}")
    progress = json.loads((work / "campaigns" / "bench" / "progress.json").read_text())
    return wall, progress["summary"]


def _synthetic_wikitext(folder: Path) -> Path:
    words = "the cat sat on the mat near Paris in France and the dog sat on the log".split()  # noqa: SIM905
    lines = [" = Heading = "]
    for i in range(64):
        lines.append(
            f" Paragraph {i} : " + " ".join(words[(i + j) % len(words)] for j in range(90))
        )
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "wikitext-2-raw-test.txt").write_text("\n".join(lines))
    return folder


def run(model_name: str, args) -> dict:
    """Wall times of the tiny campaign (local, Ray) and Ray's per-chunk overhead."""
    import ray

    from precompute.results.executors import connect, start_local_cluster, stop_local_cluster

    with tempfile.TemporaryDirectory(prefix="rcb", dir="/tmp") as tmp:
        base = Path(tmp)
        toml = base / "bench.toml"
        toml.write_text(TOML)
        data = Path(args.data_dir) if getattr(args, "data_dir", None) else None
        data = data or _synthetic_wikitext(base / "data")
        local_wall, local = _campaign(base, toml, data)
        t0 = time.perf_counter()
        address, proc = start_local_cluster(base / "ray", num_cpus=2)
        cluster_s = time.perf_counter() - t0
        try:
            ray_wall, on_ray = _campaign(
                base, toml, data, "--executor", "ray", "--address", address
            )
            connect(address)
            task = ray.remote(_noop).options(num_cpus=1, memory=int(2e9), max_retries=0)
            ray.get([task.remote() for _ in range(4)])  # workers up
            n = 50
            t0 = time.perf_counter()
            for _ in range(n):
                ray.get(task.remote())
            round_trip = (time.perf_counter() - t0) / n
            ray.shutdown()
        finally:
            stop_local_cluster(proc)
    chunk = local["mean_chunk_s"]
    return {
        "chunks": local["chunks"],
        "rows": local["rows"],
        "local_wall_s": round(local_wall, 2),
        "ray_wall_s": round(ray_wall, 2),
        "ray_workers": 2,
        "ray_cluster_start_s": round(cluster_s, 2),
        "mean_chunk_s_local": chunk,
        "mean_chunk_s_ray": on_ray["mean_chunk_s"],
        "ray_task_round_trip_ms": round(round_trip * 1000, 2),
        "ray_overhead_per_chunk_pct": round(100 * round_trip / chunk, 2) if chunk else None,
    }
