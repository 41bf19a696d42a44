"""Executors of a campaign plan: ``local`` (sequential, no Ray) and ``ray`` (one task per chunk).

Both hand every chunk to ``jobs.run_job(..., only={start})``, the one writer of results, so a run
killed at any moment (driver or worker, even ``kill -9``) and rerun skips the chunks already
written and writes each missing chunk once. A failed chunk is retried ``campaign.retries`` times,
then reported with its error while the other chunks finish.

On Ray, a chunk is a task asking for its model's CPUs, GPUs and memory. A worker process keeps the
last model it loaded, and chunks are submitted model by model, so a worker loads a model once and
serves many chunks. Workers write ``WORK/campaigns/NAME/workers/HOST-PID.json`` (the chunk they
hold), which ``status`` and the tests read. The work folder must be one path that every node sees
(a shared filesystem such as NFS); object-store URLs (fsspec) are not supported.
"""

from __future__ import annotations

import gc
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from precompute.results.campaign import Campaign, CampaignError, JobPlan
from precompute.results.jobs import write_json_atomic
from precompute.results.progress import Progress, campaign_dir, chunk_rows

log = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parents[2]
FORWARD_ENV = ("HF_HUB_OFFLINE", "HF_HOME", "TOKENIZERS_PARALLELISM", "STAGESCOPE_CACHE")
Event = Callable[[str, JobPlan | None, int, dict], None]


def run_chunk(lm, job: JobPlan, start: int, work_dir: Path, data_dir: Path | None) -> int:
    """Compute one chunk of a job through ``jobs.run_job`` and return its row count."""
    from precompute.methods import get_method
    from precompute.results.jobs import run_job

    method = get_method(job.method)
    run_job(lm, method, job.dataset, job.config, work_dir, data_dir, job.n, False, only={start})
    chunk = job.chunk_dir(work_dir, start)
    if not chunk.exists():
        raise RuntimeError(f"chunk {chunk} was not written")
    return chunk_rows(chunk)


def _todo(jobs: list[JobPlan], work_dir: Path) -> list[tuple[JobPlan, int]]:
    return [(j, s) for j in jobs for s in j.starts if not j.chunk_dir(work_dir, s).exists()]


def _deps(jobs: list[JobPlan]) -> dict[str, list[JobPlan]]:
    """The jobs each job waits on: its ``after`` methods on the same model."""
    return {j.key: [d for d in jobs if d.model == j.model and d.method in j.after] for j in jobs}


def _gate(job: JobPlan, deps: dict[str, list[JobPlan]], progress: Progress) -> str:
    """Whether a job may start: ``""`` (yes), ``"wait"``, or why it never will.

    A job waits while its ``after`` jobs have chunks to do, and fails when one of them failed.
    """
    for dep in deps[job.key]:
        entry = progress.job(dep)
        if entry["failed"]:
            return f"waits on {dep.method} ({dep.dataset}), which failed"
        if len(entry["done"]) < entry["chunks"]:
            return "wait"
    return ""


def _error_text(err: BaseException) -> str:
    cause = getattr(err, "cause", None) or err
    text = f"{type(cause).__name__}: {cause}".strip()
    return text.splitlines()[0][:500] if "\n" in text and len(text) > 500 else text[-500:]


def run_local(
    campaign: Campaign,
    jobs: list[JobPlan],
    work_dir: Path,
    data_dir: Path | None,
    on_event: Event | None = None,
) -> dict:
    """Run the plan here, model by model, chunk by chunk. Returns the progress summary."""
    from precompute.model.load import load_model

    emit = on_event or (lambda *a: None)
    progress = Progress(campaign, jobs, work_dir, "local")
    emit("start", None, 0, progress.summary())
    todo, deps = _todo(jobs, work_dir), _deps(jobs)
    for model in dict.fromkeys(j.model for j, _ in todo):
        chunks = [(j, s) for j, s in todo if j.model == model]
        try:
            lm = load_model(model, device=campaign.device)
        except Exception as err:  # a model that cannot load fails its chunks, not the campaign
            for job, start in chunks:
                progress.failed(job, start, _error_text(err), final=True)
                emit("failed", job, start, {"error": _error_text(err)})
            continue
        for job, start in chunks:
            gate = _gate(job, deps, progress)  # plan order puts `after` jobs first
            if gate:
                progress.failed(job, start, gate, final=True)
                emit("failed", job, start, {"error": gate})
                continue
            for attempt in range(campaign.retries + 1):
                progress.started(job, start)
                t0 = time.perf_counter()
                try:
                    rows = run_chunk(lm, job, start, work_dir, data_dir)
                except Exception as err:
                    final = attempt == campaign.retries
                    progress.failed(job, start, _error_text(err), final)
                    emit("failed" if final else "retry", job, start, {"error": _error_text(err)})
                    continue
                progress.finished(job, start, rows, time.perf_counter() - t0)
                emit("done", job, start, {"chunk_rows": rows, **progress.summary()})
                break
        del lm
        gc.collect()
    return progress.summary()


# --- Ray ----------------------------------------------------------------------------------------

_CACHE: dict = {}


def _worker_chunk(
    job: JobPlan, start: int, work_dir: str, data_dir: str | None, device: str, markers: str
) -> dict:
    """Ray task body: one chunk, with the worker's cached model."""
    host, pid = socket.gethostname(), os.getpid()
    if not Path(work_dir).is_dir():
        raise CampaignError(
            f"work folder {work_dir} is not visible on node {host}: use a shared path"
        )
    marker = Path(markers) / f"{host}-{pid}.json"
    marker.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(marker, {"host": host, "pid": pid, "job": job.key, "start": start})
    try:
        t0 = time.perf_counter()
        lm = _CACHE.get(job.model)
        if lm is None:
            from precompute.model.load import load_model

            _CACHE.clear()
            gc.collect()
            dev = "cuda" if job.resources.gpus else device
            lm = _CACHE[job.model] = load_model(job.model, device=dev)
        t1 = time.perf_counter()
        rows = run_chunk(lm, job, start, Path(work_dir), Path(data_dir) if data_dir else None)
        t2 = time.perf_counter()
    finally:
        write_json_atomic(marker, {"host": host, "pid": pid, "job": None, "start": None})
    return {"rows": rows, "load_s": t1 - t0, "compute_s": t2 - t1, "host": host, "pid": pid}


def check_address(address: str, timeout: float = 3.0) -> None:
    """Fail fast if a ``HOST:PORT`` (or ``ray://HOST:PORT``) Ray address does not answer."""
    if address in ("auto", "local"):
        return
    hostport = address.removeprefix("ray://")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise CampaignError(f"Ray address {address!r} is not HOST:PORT (or 'auto').")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as err:
        raise CampaignError(
            f"Ray address {address} does not answer ({err}). Start the head node with "
            "`ray start --head --port PORT`, or pass --address auto on a cluster node."
        ) from None


def connect(address: str = "auto", num_cpus: int | None = None) -> None:
    """Connect to a Ray cluster (``auto``: the one this machine is in; ``local``: a private one)."""
    try:
        import ray
    except ImportError:
        raise CampaignError(
            "Ray is not installed: pip install -r requirements-ray.txt (or use --executor local)."
        ) from None
    check_address(address)
    env = {k: os.environ[k] for k in FORWARD_ENV if k in os.environ}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).strip(":")
    kwargs = {"num_cpus": num_cpus} if address == "local" else {"address": address}
    try:
        ray.init(
            **kwargs,
            runtime_env={"env_vars": env},
            logging_level=logging.WARNING,
            log_to_driver=False,
            include_dashboard=False if address == "local" else None,
        )
    except (ConnectionError, RuntimeError) as err:
        raise CampaignError(
            f"No Ray cluster at {address!r}: {str(err).rstrip('.')}. "
            "Start one with `ray start --head`."
        ) from None


def check_resources(campaign: Campaign) -> None:
    """Fail before any work if some model's chunk asks for more than any node has."""
    import ray

    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    bad = []
    for model, res in campaign.models.items():
        need = {"CPU": res.cpus, "GPU": res.gpus, "memory": res.memory_gb * 1e9}
        if not any(all(n.get(k, 0.0) >= v for k, v in need.items() if v) for n in nodes):
            bad.append(
                f"{model} (cpus={res.cpus:g}, gpus={res.gpus:g}, memory={res.memory_gb:g} GB)"
            )
    if bad:
        largest = [
            f"cpus={n.get('CPU', 0):g}, gpus={n.get('GPU', 0):g}, "
            f"memory={n.get('memory', 0) / 1e9:.1f} GB"
            for n in nodes
        ]
        raise CampaignError(
            f"No node of the cluster has the resources for: {'; '.join(bad)}. Nodes: "
            f"{' | '.join(largest) or 'none'}. Lower [resources] in the campaign file or add nodes."
        )


def _slots(res) -> int:
    import ray

    total = ray.cluster_resources()
    cap = total.get("CPU", 1.0) / max(res.cpus, 1e-9)
    if res.gpus:
        cap = min(cap, total.get("GPU", 0.0) / res.gpus)
    return max(int(cap), 1)


def run_ray(
    campaign: Campaign,
    jobs: list[JobPlan],
    work_dir: Path,
    data_dir: Path | None,
    on_event: Event | None = None,
) -> dict:
    """Run the plan on the connected Ray cluster. Returns the progress summary."""
    import ray

    emit = on_event or (lambda *a: None)
    progress = Progress(campaign, jobs, work_dir, "ray")
    emit("start", None, 0, progress.summary())
    markers = str(campaign_dir(work_dir, campaign) / "workers")
    task = ray.remote(_worker_chunk)
    queue = list(reversed(_todo(jobs, work_dir)))  # pop() from the end: model-major order
    retry: list[tuple[JobPlan, int, int]] = []
    pending: dict = {}
    data = str(data_dir) if data_dir else None

    def submit(job: JobPlan, start: int, attempt: int) -> None:
        res = job.resources
        ref = task.options(
            num_cpus=res.cpus,
            num_gpus=res.gpus,
            memory=int(res.memory_gb * 1e9),
            max_retries=0,
            name=f"{job.model}/{job.method}/{job.dataset}@{start}",
        ).remote(job, start, str(work_dir), data, campaign.device, markers)
        pending[ref] = (job, start, attempt)
        progress.started(job, start)

    deps = _deps(jobs)
    cap = max(_slots(r) for r in campaign.models.values()) + 1  # queued in Ray: one more

    def pick(items: list) -> tuple | None:
        for i in range(len(items) - 1, -1, -1):
            gate = _gate(items[i][0], deps, progress)
            if gate != "wait":
                return (*items.pop(i), gate)
        return None

    while queue or retry or pending:
        while len(pending) < cap and (item := pick(retry) or pick(queue)):
            job, start, attempt, gate = item if len(item) == 4 else (*item[:2], 1, item[2])
            if gate:
                progress.failed(job, start, gate, final=True)
                emit("failed", job, start, {"error": gate})
            else:
                submit(job, start, attempt)
        if not pending:  # the rest waits on chunks that will not come
            for job, start, *_ in [*retry, *queue]:
                progress.failed(job, start, "waits on chunks that did not finish", final=True)
            break
        ready, _ = ray.wait(list(pending), num_returns=1)
        job, start, attempt = pending.pop(ready[0])
        try:
            out = ray.get(ready[0])
        except Exception as err:  # task error or a dead worker: retry, then report
            final = attempt > campaign.retries
            progress.failed(job, start, _error_text(err), final)
            emit("failed" if final else "retry", job, start, {"error": _error_text(err)})
            if not final:
                retry.append((job, start, attempt + 1))
            continue
        progress.finished(job, start, out["rows"], out["load_s"] + out["compute_s"])
        emit("done", job, start, {"chunk_rows": out["rows"], **out, **progress.summary()})
    return progress.summary()


def start_local_cluster(temp_dir: Path, num_cpus: int = 2, port: int = 0) -> tuple[str, object]:
    """``ray start --head`` on 127.0.0.1 in its own process group (for tests and benchmarks).

    Returns:
        The cluster address and the process handle to give to ``stop_local_cluster``.
    """
    if not port:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
    ray_bin = shutil.which("ray") or str(Path(sys.executable).with_name("ray"))
    cmd = [
        ray_bin, "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(port),
        "--num-cpus", str(num_cpus), "--num-gpus", "0", "--include-dashboard=false",
        "--disable-usage-stats", "--temp-dir", str(temp_dir),
    ]  # fmt: skip
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    proc = subprocess.Popen(
        cmd, start_new_session=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    if proc.wait(timeout=120) != 0:
        raise RuntimeError(f"ray start failed: {proc.stderr.read().decode()[-2000:]}")
    return f"127.0.0.1:{port}", proc


def stop_local_cluster(proc) -> None:
    """Stop a cluster from ``start_local_cluster``: its process group only."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        time.sleep(2)
