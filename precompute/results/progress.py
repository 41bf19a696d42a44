"""Progress of a campaign: per job and overall (done / running / failed chunks, rows, ETA).

The driver saves ``WORK/campaigns/NAME/progress.json`` atomically after every chunk event;
``status`` reads the chunk folders themselves (so it is right even after the driver was killed)
and adds the driver's record of running and failed chunks.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

from precompute.results.campaign import Campaign, JobPlan, plan
from precompute.results.jobs import write_json_atomic


def campaign_dir(work_dir: Path, campaign: Campaign) -> Path:
    """Where a campaign keeps its progress file and worker markers."""
    return Path(work_dir) / "campaigns" / campaign.name


def chunk_rows(chunk: Path) -> int:
    """Rows in a chunk folder (from the parquet footers)."""
    import pyarrow.parquet as pq

    return sum(pq.ParquetFile(p).metadata.num_rows for p in chunk.glob("*.parquet"))


class Progress:
    """Per-job and overall progress of a running campaign, saved atomically after each event."""

    def __init__(self, campaign: Campaign, jobs: list[JobPlan], work_dir: Path, executor: str):
        """Start from what the work folder already holds (finished chunks count as done)."""
        self.path = campaign_dir(work_dir, campaign) / "progress.json"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.t0 = time.time()
        self.durations: list[float] = []
        self.state = {
            "campaign": campaign.name,
            "executor": executor,
            "driver_pid": os.getpid(),
            "driver_host": socket.gethostname(),
            "started_at": self.t0,
            "jobs": {},
        }
        for job in jobs:
            done = {s for s in job.starts if job.chunk_dir(work_dir, s).exists()}
            self.state["jobs"][job.key] = {
                "model": job.model,
                "method": job.method,
                "dataset": job.dataset,
                "chunks": len(job.starts),
                "done": sorted(done),
                "skipped": len(done),
                "running": [],
                "failed": {},
                "attempts": {},
                "rows": sum(chunk_rows(job.chunk_dir(work_dir, s)) for s in done),
            }
        self.save()

    def job(self, job: JobPlan) -> dict:
        """The state entry of one job."""
        return self.state["jobs"][job.key]

    def started(self, job: JobPlan, start: int) -> None:
        """A chunk was handed to a worker."""
        entry = self.job(job)
        entry["attempts"][str(start)] = entry["attempts"].get(str(start), 0) + 1
        if start not in entry["running"]:
            entry["running"].append(start)
        self.save()

    def finished(self, job: JobPlan, start: int, rows: int, seconds: float) -> None:
        """A chunk is written."""
        entry = self.job(job)
        entry["running"] = [s for s in entry["running"] if s != start]
        entry["failed"].pop(str(start), None)
        if start not in entry["done"]:
            entry["done"].append(start)
            entry["rows"] += rows
        self.durations.append(seconds)
        self.save()

    def failed(self, job: JobPlan, start: int, error: str, final: bool) -> None:
        """A chunk attempt failed (``final``: no retries left)."""
        entry = self.job(job)
        entry["running"] = [s for s in entry["running"] if s != start]
        if final:
            entry["failed"][str(start)] = error
        self.save()

    def summary(self) -> dict:
        """Overall counts and an ETA from the mean chunk time so far."""
        return summarise(self.state, time.time() - self.t0, self.durations)

    def save(self) -> None:
        """Write the state (and the summary) atomically."""
        self.state["updated_at"] = time.time()
        self.state["summary"] = self.summary()
        write_json_atomic(self.path, self.state)


def summarise(state: dict, elapsed: float, durations: list[float] | None = None) -> dict:
    """Overall done / running / failed chunk counts, rows and ETA of a progress state."""
    jobs = state["jobs"].values()
    total = sum(j["chunks"] for j in jobs)
    done = sum(len(j["done"]) for j in jobs)
    new = done - sum(j.get("skipped", 0) for j in jobs)
    failed = sum(len(j["failed"]) for j in jobs)
    left = total - done - failed
    rate = elapsed / new if new else None
    return {
        "jobs": len(state["jobs"]),
        "jobs_done": sum(len(j["done"]) == j["chunks"] for j in jobs),
        "chunks": total,
        "done": done,
        "running": sum(len(j["running"]) for j in jobs),
        "failed": failed,
        "rows": sum(j["rows"] for j in jobs),
        "elapsed_s": round(elapsed, 1),
        "mean_chunk_s": round(sum(durations) / len(durations), 3) if durations else None,
        "eta_s": round(rate * left, 1) if rate is not None else None,
    }


def status(campaign: Campaign, work_dir: Path, data_dir: Path | None = None) -> dict:
    """Progress read back from the work folder: chunks on disk, plus the last driver's record.

    Done chunks and rows come from the chunk folders themselves, so the answer is right even if
    the driver was killed; ``running``/``failed`` come from the driver's ``progress.json``.
    """
    jobs = plan(campaign, data_dir)
    path = campaign_dir(work_dir, campaign) / "progress.json"
    saved = json.loads(path.read_text()) if path.exists() else {"jobs": {}}
    here = saved.get("driver_host", socket.gethostname()) == socket.gethostname()
    driver_alive = _pid_alive(saved.get("driver_pid")) if here else bool(saved["jobs"])
    state = {"jobs": {}}
    for job in jobs:
        done = [s for s in job.starts if job.chunk_dir(work_dir, s).exists()]
        rec = saved["jobs"].get(job.key, {})
        state["jobs"][job.key] = {
            "model": job.model,
            "method": job.method,
            "dataset": job.dataset,
            "chunks": len(job.starts),
            "done": done,
            "skipped": 0,
            "running": rec.get("running", []) if driver_alive else [],
            "failed": {k: v for k, v in rec.get("failed", {}).items() if int(k) not in done},
            "rows": sum(chunk_rows(job.chunk_dir(work_dir, s)) for s in done),
        }
    elapsed = time.time() - saved.get("started_at", time.time())
    summary = summarise(state, elapsed)
    summary["eta_s"] = saved.get("summary", {}).get("eta_s") if driver_alive else None
    summary["driver"] = "running" if driver_alive else ("stopped" if saved["jobs"] else "none")
    if not here:
        summary["driver"] = f"on {saved['driver_host']} (last update {saved.get('updated_at')})"
    return {"summary": summary, "jobs": state["jobs"]}


def _pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(int(pid), 0)
    except (OSError, ValueError):
        return False
    return True
