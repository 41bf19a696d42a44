"""Resumable precompute jobs: one job per (model, method, dataset, config hash).

A job processes its items in chunks. Each finished chunk is written to a temporary folder and
renamed into place (an atomic rename), so a job killed at any moment -- even ``kill -9`` -- leaves
only whole chunks behind; rerun, it skips them and computes the rest: no lost and no duplicated
rows. ``job.json`` records the provenance; ``status: done`` marks a finished job. Jobs share
nothing, so a distributed engine can run them anywhere and ``build`` merges their folders.

A job's plan (item count, chunk size, dataset hash) is part of its identity: chunks are named
by their item range (``000008-000016``) and ``job.json`` lists the chunks of the current plan, so
rerunning with another item count keeps the chunks that still apply, recomputes the others and
never counts a chunk of another plan. A lock file stops two processes running one job at once.

Layout::

    WORK/runs/<model>/<method>/<dataset>-<config hash>/
        job.json
        .lock
        chunks/000000-000008/<table>.parquet ...
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import logging
import os
import re
import shutil
import subprocess
from collections.abc import Collection, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from precompute import schema
from precompute.datasets import check_dataset_name, load_dataset
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


class JobBusyError(ValueError):
    """Another process holds the job (or the results folder)."""


def _fault(step: str) -> None:
    """Fault-injection point (tests replace it to simulate a kill between two steps)."""


@contextlib.contextmanager
def job_lock(
    path: Path, what: str, target: Path, shared: bool = False, wait: bool = False
) -> Iterator[None]:
    """Hold a lock file for the duration (released by the OS if the process dies).

    Args:
        path: The lock file.
        what: The command, for the message.
        target: The folder it protects, for the message.
        shared: Take a shared lock (many holders; excludes only exclusive ones).
        wait: Block until the lock is free instead of failing.

    Raises:
        JobBusyError: Another process holds it; the message gives its pid.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            mode = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
            fcntl.flock(fd, mode if wait else mode | fcntl.LOCK_NB)
        except BlockingIOError:
            other = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            raise JobBusyError(
                f"Another `{what}` (pid {other}) is already working on {target}; wait for it to "
                "finish or stop it, then run again."
            ) from None
        if not shared and not wait:
            os.ftruncate(fd, 0)
            os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)  # closing releases the lock


_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def safe_name(kind: str, name: str) -> str:
    """Check that ``name`` can be a folder name (no ``/``, ``..`` or odd characters)."""
    if not _SAFE_NAME.match(name or "") or ".." in name:
        raise ValueError(
            f"Invalid {kind} name {name!r}: use letters, digits, '.', '_' and '-' only."
        )
    return name


def chunk_names(n_items: int, size: int) -> list[str]:
    """Names of the chunks of a plan: item ranges ``start-end`` (one empty chunk for no items)."""
    size = max(size, 1)
    return [f"{s:06d}-{min(s + size, n_items):06d}" for s in range(0, max(n_items, 1), size)]


def job_chunks(folder: Path) -> list[Path]:
    """The chunk folders of a job's current plan (all numbered chunks for older jobs)."""
    meta = json.loads((folder / "job.json").read_text())
    if "chunks" in meta:
        return [folder / "chunks" / c for c in meta["chunks"] if (folder / "chunks" / c).is_dir()]
    return sorted(p for p in folder.glob("chunks/[0-9]*") if p.is_dir())


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
        safe_model = safe_name("model", self.model.replace("/", "__"))
        safe_name("method", self.method)
        safe_name("dataset", self.dataset)
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
    _fault(f"chunk:{chunk_dir.name}:rename")
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
    check_dataset_name(dataset)
    spec = JobSpec(lm.name, method.name, dataset, config)
    folder = spec.folder(work_dir)  # checks the names before anything is created
    items, data_hash = load_dataset(dataset, data_dir, n_items)
    folder.mkdir(parents=True, exist_ok=True)
    # A full run holds the job alone; campaign workers (``only``) share it with each other.
    with job_lock(folder / ".lock", "run", folder, shared=only is not None):
        return _run_locked(lm, method, spec, folder, items, data_hash, progress, only)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _run_locked(lm, method, spec, folder, items, data_hash, progress, only) -> Path:
    chunks = folder / "chunks"
    chunks.mkdir(parents=True, exist_ok=True)
    for stale in chunks.glob(".*.tmp"):  # left by a killed run; never counted
        pid = stale.name.split(".")[-2]
        if not (pid.isdigit() and int(pid) != os.getpid() and _pid_alive(int(pid))):
            shutil.rmtree(stale, ignore_errors=True)
    size = method.chunk_size or max(len(items), 1)
    plan = {"n_items": len(items), "chunk_size": size, "dataset_sha256": data_hash}
    names = chunk_names(len(items), size)
    with job_lock(folder / ".meta.lock", "run", folder, wait=True):
        meta = _start_plan(lm, method, spec, folder, plan, names)
    if meta is None:
        log.info("%s already done", spec.run_id)
        return folder
    ctx = RunContext(lm.name, method.name, spec.dataset, spec.run_id, seed=0)
    desc = f"{lm.name} {method.name} {spec.dataset}"
    bar = tqdm(total=len(items), desc=desc, disable=not progress)
    for name in names:
        start, end = (int(x) for x in name.split("-"))
        chunk_dir = chunks / name
        batch = items[start:end]
        if not chunk_dir.exists() and (only is None or start in only):
            _fault(f"chunk:{name}:process")
            chunk_ctx = replace(ctx, offset=start)  # items[::stride] over the whole dataset
            _write_chunk(chunk_dir, method.process(lm, batch, spec.config, chunk_ctx))
        bar.update(len(batch))
    bar.close()
    if all((chunks / name).exists() for name in names):
        _fault("meta:done")
        meta.update(status="done", finished_at=_now())
        write_json_atomic(folder / "job.json", meta)
    return folder


def _start_plan(lm, method, spec, folder, plan, names) -> dict | None:
    """Record the plan in ``job.json`` and drop chunks of another plan; ``None`` if done."""
    chunks, meta_path = folder / "chunks", folder / "job.json"
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    if meta.get("status") == "done" and (
        meta.get("plan") == plan or ("plan" not in meta and meta.get("n_items") == plan["n_items"])
    ):
        return None
    if meta.get("plan", {}).get("dataset_sha256") != plan["dataset_sha256"]:
        # Other data (or an older job with unnamed ranges): no chunk can be trusted.
        for old in chunks.iterdir():
            if not old.name.startswith("."):
                shutil.rmtree(old)
    config = spec.config
    meta.update(
        run_id=spec.run_id,
        model=lm.name,
        method=method.name,
        dataset=spec.dataset,
        dataset_sha256=plan["dataset_sha256"],
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
        n_items=plan["n_items"],
        plan=plan,
        chunks=names,
        status="running",
    )
    meta.setdefault("started_at", _now())
    write_json_atomic(meta_path, meta)
    _fault("meta:running")
    for old in chunks.iterdir():  # chunks of another plan (another item count or chunk size)
        if old.name not in names and not old.name.startswith("."):
            shutil.rmtree(old)
    return meta


def chunk_starts(n_items: int, chunk_size: int | None) -> list[int]:
    """Start indices of a job's chunks (chunk folders are named ``start-end``).

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
