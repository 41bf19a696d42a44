"""Resumable precompute jobs: one job per (model, method, dataset, config hash).

A job processes its items in chunks. Each finished chunk is written to a temporary folder and
renamed into place (an atomic rename), so a job killed at any moment -- even ``kill -9`` -- leaves
only whole chunks behind; rerun, it skips them and computes the rest: no lost and no duplicated
rows. ``job.json`` records the provenance; ``status: done`` marks a finished job. Jobs share
nothing, so a distributed engine can run them anywhere and ``build`` merges their folders.

Layout::

    WORK/runs/<model>/<method>/<dataset>-<config hash>/
        job.json
        chunks/000000/<table>.parquet ...
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import shutil
import subprocess
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from precompute import schema
from precompute.datasets import load_dataset
from precompute.methods import Method
from precompute.model.load import LoadedModel
from precompute.types import BaseConfig, RunContext

log = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parents[2]


def code_version() -> str:
    """Git commit of the code (with ``+dirty`` when the tree has changes), or ``unknown``."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "precompute"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def write_json_atomic(path: Path, obj: dict) -> None:
    """Write JSON to ``path`` through a temporary file and a rename."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str))
    os.replace(tmp, path)


@dataclass(frozen=True)
class JobSpec:
    """What identifies a job."""

    model: str
    method: str
    dataset: str
    config: BaseConfig

    @property
    def run_id(self) -> str:
        """Stable id: model, method, dataset and config hash."""
        return f"{self.model}:{self.method}:{self.dataset}:{self.config.config_hash()}"

    def folder(self, work_dir: Path) -> Path:
        """The job's folder under ``work_dir``."""
        safe_model = self.model.replace("/", "__")
        return (
            Path(work_dir)
            / "runs"
            / safe_model
            / self.method
            / f"{self.dataset}-{self.config.config_hash()}"
        )


def _write_chunk(chunk_dir: Path, tables: dict[str, pd.DataFrame]) -> int:
    """Write a chunk's tables atomically (temporary folder, then rename). Returns rows written."""
    tmp = chunk_dir.with_name(f".{chunk_dir.name}.{os.getpid()}.tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    rows = 0
    for table, frame in tables.items():
        if table not in schema.TABLES:
            raise schema.SchemaError(f"Method wrote unknown table {table!r}")
        frame = schema.conform(table, frame)
        frame.to_parquet(tmp / f"{table}.parquet", index=False)
        rows += len(frame)
    os.replace(tmp, chunk_dir)
    return rows


def run_job(
    lm: LoadedModel,
    method: Method,
    dataset: str,
    config: BaseConfig,
    work_dir: Path,
    data_dir: Path | None = None,
    n_items: int | None = None,
    progress: bool = True,
    only: Collection[int] | None = None,
) -> Path:
    """Run (or resume) one job and return its folder.

    Args:
        lm: The loaded model.
        method: The registered method.
        dataset: Dataset name.
        config: The method's config.
        work_dir: Root of the job folders.
        data_dir: Folder with local copies of datasets.
        n_items: Number of items to take (``None``: the dataset's default for this method).
        progress: Show a progress bar.
        only: Start indices of the chunks to compute (see ``chunk_starts``); ``None``: all. The
            job is marked done once every chunk exists, whoever wrote it (campaign workers run
            one chunk each).

    Returns:
        The job folder; ``job.json`` in it says ``status: done`` once every chunk exists.
    """
    spec = JobSpec(lm.name, method.name, dataset, config)
    folder = spec.folder(work_dir)
    chunks = folder / "chunks"
    chunks.mkdir(parents=True, exist_ok=True)
    for stale in chunks.glob(".*.tmp"):  # left by a killed run; never counted
        shutil.rmtree(stale, ignore_errors=True)
    items, data_hash = load_dataset(dataset, data_dir, n_items)
    meta_path = folder / "job.json"
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    if meta.get("status") == "done" and meta.get("n_items") == len(items):
        log.info("%s already done", spec.run_id)
        return folder
    meta.update(
        run_id=spec.run_id,
        model=lm.name,
        method=method.name,
        dataset=dataset,
        dataset_sha256=data_hash,
        config=config.to_dict(),
        config_hash=config.config_hash(),
        provenance=lm.provenance,
        model_info={
            "hf_id": lm.spec.hf_id,
            "family": lm.spec.family,
            "n_params": lm.provenance.get("n_params", lm.spec.n_params),
            "n_layers": lm.n_layers,
            "d_model": lm.d_model,
            "d_vocab": lm.d_vocab,
        },
        code_version=code_version(),
        schema_version=schema.SCHEMA_VERSION,
        n_items=len(items),
        status="running",
    )
    meta.setdefault("started_at", _now())
    write_json_atomic(meta_path, meta)
    size = method.chunk_size or max(len(items), 1)
    ctx = RunContext(lm.name, method.name, dataset, spec.run_id, seed=0)
    starts = chunk_starts(len(items), method.chunk_size)
    bar = tqdm(total=len(items), desc=f"{lm.name} {method.name} {dataset}", disable=not progress)
    for start in starts:
        chunk_dir = chunks / f"{start:06d}"
        batch = items[start : start + size]
        if not chunk_dir.exists() and (only is None or start in only):
            _write_chunk(chunk_dir, method.process(lm, batch, config, ctx))
        bar.update(len(batch))
    bar.close()
    if all((chunks / f"{start:06d}").exists() for start in starts):
        meta.update(status="done", finished_at=_now())
        write_json_atomic(meta_path, meta)
    return folder


def chunk_starts(n_items: int, chunk_size: int | None) -> list[int]:
    """Start indices of a job's chunks (chunk folders are named by them).

    Example:
        >>> chunk_starts(20, 8)
        [0, 8, 16]
    """
    size = chunk_size or max(n_items, 1)
    return list(range(0, max(n_items, 1), size))


def finished_jobs(work_dir: Path) -> list[Path]:
    """Folders of finished jobs under ``work_dir``."""
    out = []
    for meta in sorted(Path(work_dir).glob("runs/*/*/*/job.json")):
        try:
            if json.loads(meta.read_text()).get("status") == "done":
                out.append(meta.parent)
        except (OSError, json.JSONDecodeError):
            log.warning("Skipping unreadable %s", meta)
    return out
