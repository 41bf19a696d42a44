"""The results store: build the tables and the DuckDB file from finished jobs.

``build`` reads every finished job under a work folder, merges it with the results already in the
output folder (rows of a rebuilt run replace that run's old rows), derives ``metrics_agg``,
``models`` and ``runs``, and writes::

    OUT/tables/<table>.parquet   (one file per table; what the Hub dataset viewer shows)
    OUT/stagescope.duckdb        (the same tables, for the app)
    OUT/manifest.json            (schema version, row counts)

One run per (model, method, dataset): the newest finished run of a key supersedes every other run
of that key, in the work folder and in the results already built, so a rerun at a new size or with
fixed code replaces the old rows instead of being averaged with them (``keep_superseded=True``, or
``build --keep-superseded``, keeps all).

Everything is written to a staging folder first and swapped in by renames behind a journal file,
so a build killed at any moment leaves either the old or the new results once :func:`recover` has
run (every build starts with it).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import duckdb
import pandas as pd

from precompute import schema
from precompute.results.jobs import finished_jobs, job_chunks, job_lock, write_json_atomic

log = logging.getLogger(__name__)

DB_NAME = schema.DB_NAME  # defined in the schema so the app can read it without torch


def _read_existing(out_dir: Path, table: str) -> pd.DataFrame | None:
    path = out_dir / "tables" / f"{table}.parquet"
    if not path.exists():
        return None
    return _read_table(path).to_pandas()


def _job_tables(job: Path) -> dict[str, pd.DataFrame]:
    frames: dict[str, list[pd.DataFrame]] = {}
    for part in sorted(p for c in job_chunks(job) for p in c.glob("*.parquet")):
        frames.setdefault(part.stem, []).append(pd.read_parquet(part))
    return {t: pd.concat(f, ignore_index=True) for t, f in frames.items()}


AGG_SQL = """
SELECT model, method, variant, dataset, layer, layer_kind, n_layers, rel_depth, grp, metric, unit,
       count(value) AS n,
       avg(value) AS mean,
       coalesce(stddev_samp(value) / sqrt(count(value)), 0) AS sem,
       avg(value) - 1.96 * coalesce(stddev_samp(value) / sqrt(count(value)), 0) AS ci_lo,
       avg(value) + 1.96 * coalesce(stddev_samp(value) / sqrt(count(value)), 0) AS ci_hi
FROM metrics
WHERE position = -1 AND value IS NOT NULL AND NOT isnan(value)
GROUP BY ALL
ORDER BY model, method, variant, dataset, grp, metric, layer
"""


def build(work_dir: Path, out_dir: Path, keep_superseded: bool = False) -> dict[str, int]:
    """Merge finished jobs into the results folder.

    Args:
        work_dir: Folder holding ``runs/`` of jobs.
        out_dir: Results folder (e.g. ``data/results``).
        keep_superseded: Keep older runs of a (model, method, dataset) beside the newest one.

    Returns:
        Row count per table.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with job_lock(out_dir / ".build.lock", "build", out_dir):
        recover(out_dir)
        return _build(work_dir, out_dir, keep_superseded)


def _key(row) -> tuple[str, str, str]:
    return (row["model"], row["method"], row["dataset"])


def _newest(jobs: list[Path], metas: list[dict]) -> tuple[list[Path], list[dict]]:
    """Keep the newest finished job of each (model, method, dataset), logging the others."""
    best: dict[tuple[str, str, str], int] = {}
    for i, m in enumerate(metas):
        j = best.get(_key(m))
        if j is None or m["finished_at"] > metas[j]["finished_at"]:
            best[_key(m)] = i
    keep = sorted(best.values())
    for i, m in enumerate(metas):
        if i not in keep:
            log.warning("superseded in the work folder, not built: %s", m["run_id"])
    return [jobs[i] for i in keep], [metas[i] for i in keep]


def _superseded(out_dir: Path, jobs: list[Path], metas: list[dict]):
    """Split on the runs already built: (their run ids the new jobs replace, jobs kept, metas kept).

    A new job older than a built run of its (model, method, dataset) is not built (rebuilding an
    old work folder never drops newer results).
    """
    runs = _read_existing(out_dir, "runs")
    if runs is None or not len(runs):
        return set(), jobs, metas
    new_ids = {m["run_id"] for m in metas}
    built = {}
    for _, r in runs[~runs["run_id"].isin(new_ids)].iterrows():
        built[_key(r)] = max(built.get(_key(r), ""), r["finished_at"])
    keep = [i for i, m in enumerate(metas) if m["finished_at"] >= built.get(_key(m), "")]
    for i in sorted(set(range(len(metas))) - set(keep)):
        log.warning("older than the built run of its key, not built: %s", metas[i]["run_id"])
    jobs, metas = [jobs[i] for i in keep], [metas[i] for i in keep]
    keys, new_ids = {_key(m) for m in metas}, {m["run_id"] for m in metas}
    old = runs[[(_key(r) in keys) and r["run_id"] not in new_ids for _, r in runs.iterrows()]]
    for run_id in old["run_id"]:
        log.warning("superseded by a newer run, dropped: %s", run_id)
    return set(old["run_id"]), jobs, metas


def _build(work_dir: Path, out_dir: Path, keep_superseded: bool = False) -> dict[str, int]:
    jobs = finished_jobs(work_dir)
    metas = [json.loads((j / "job.json").read_text()) for j in jobs]
    superseded: set[str] = set()
    if not keep_superseded:
        jobs, metas = _newest(jobs, metas)
        superseded, jobs, metas = _superseded(out_dir, jobs, metas)
    new_ids = {m["run_id"] for m in metas}
    dropped = new_ids | superseded
    tables: dict[str, pd.DataFrame] = {}
    for table in schema.TABLES:
        parts = []
        old = _read_existing(out_dir, table)
        if old is not None and len(old):
            parts.append(old[~old["run_id"].isin(dropped)])
        for job in jobs:
            frame = _job_tables(job).get(table)
            if frame is not None:
                parts.append(frame)
        parts = [p for p in parts if len(p)]
        tables[table] = (
            schema.conform(table, pd.concat(parts, ignore_index=True))
            if parts
            else schema.empty(table)
        )

    runs_old = _read_existing(out_dir, "runs")
    run_rows = [
        dict(
            run_id=m["run_id"],
            model=m["model"],
            method=m["method"],
            dataset=m["dataset"],
            dataset_sha256=m["dataset_sha256"],
            config_json=json.dumps(m["config"], sort_keys=True),
            config_hash=m["config_hash"],
            provenance_json=json.dumps(m["provenance"], sort_keys=True),
            code_version=m["code_version"],
            schema_version=m["schema_version"],
            started_at=m["started_at"],
            finished_at=m["finished_at"],
            n_items=m["n_items"],
        )
        for m in metas
    ]
    runs = pd.DataFrame(run_rows) if run_rows else schema.empty("runs")
    if runs_old is not None:
        runs = pd.concat([runs_old[~runs_old["run_id"].isin(dropped)], runs], ignore_index=True)
    tables["runs"] = schema.conform("runs", runs)

    models_old = _read_existing(out_dir, "models")
    model_rows = {}
    for m in metas:
        info, prov = m["model_info"], m["provenance"]
        model_rows[m["model"]] = dict(
            model=m["model"],
            source=prov.get("source", ""),
            provenance_json=json.dumps(prov, sort_keys=True),
            **info,
        )
    models = pd.DataFrame(list(model_rows.values())) if model_rows else schema.empty("models")
    if models_old is not None:
        models = pd.concat(
            [models_old[~models_old["model"].isin(model_rows)], models], ignore_index=True
        )
    tables["models"] = schema.conform("models", models)

    con = duckdb.connect()
    con.register("metrics", tables["metrics"])
    tables["metrics_agg"] = schema.conform("metrics_agg", con.execute(AGG_SQL).df())
    con.close()
    return write_tables(tables, out_dir)


#: The entries of a results folder that ``build`` replaces, in swap order.
SWAPPED = ("tables", DB_NAME, "manifest.json")
JOURNAL = ".swap.json"


class ResultsError(ValueError):
    """A results folder cannot be read or written; the message says what to do."""


def _fault(step: str) -> None:
    """Fault-injection point (tests replace it to simulate a kill between two steps)."""


def _stage_dir(out_dir: Path) -> Path:
    return out_dir.with_name(f".{out_dir.name}.stage")


def recover(out_dir: Path) -> str:
    """Finish or undo a swap that a killed ``build`` left half done; return what was done.

    The swap's commit point is the journal file: with no journal, ``out_dir`` was never touched
    and a leftover staging folder is dropped; with a journal, the swap is rolled forward (each
    step is idempotent). Also restores the ``.tables.<pid>.old`` folder of older builds.
    """
    out_dir = Path(out_dir)
    stage = _stage_dir(out_dir)
    journal = out_dir / JOURNAL
    done = ""
    if journal.exists():
        _roll_forward(out_dir, stage)
        done = "finished an interrupted swap"
    elif stage.exists():
        shutil.rmtree(stage)
        done = "dropped an unfinished staging folder"
    for old in sorted(out_dir.glob(".tables.*.old")) if out_dir.exists() else []:
        if not (out_dir / "tables").exists():
            os.replace(old, out_dir / "tables")  # pre-journal builds killed mid-swap
            done = "restored the tables of an interrupted build"
        else:
            shutil.rmtree(old, ignore_errors=True)
    trash = out_dir / ".swap-trash"
    if trash.exists():
        shutil.rmtree(trash)
    if done:
        log.warning("%s: %s", out_dir, done)
    return done


def _roll_forward(out_dir: Path, stage: Path) -> None:
    trash = out_dir / ".swap-trash"
    trash.mkdir(exist_ok=True)
    for name in SWAPPED:
        if not (stage / name).exists():
            continue  # already moved in
        if (out_dir / name).exists():
            _fault(f"swap:{name}:out")
            os.replace(out_dir / name, trash / name)
        _fault(f"swap:{name}:in")
        os.replace(stage / name, out_dir / name)
    _fault("swap:journal")
    os.remove(out_dir / JOURNAL)
    _fault("swap:cleanup")
    shutil.rmtree(trash)
    shutil.rmtree(stage, ignore_errors=True)


def write_tables(tables: dict[str, pd.DataFrame], out_dir: Path) -> dict[str, int]:
    """Write parquet files, the DuckDB file and a manifest, swapping them in atomically.

    Everything is written to a staging folder next to ``out_dir``; a journal file in ``out_dir``
    then commits the swap, which :func:`recover` finishes if the process dies part way. Other
    entries of ``out_dir`` (e.g. ``lenses/``) are left alone.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    recover(out_dir)
    stage = _stage_dir(out_dir)
    (stage / "tables").mkdir(parents=True)
    con = duckdb.connect(str(stage / DB_NAME))
    counts = {}
    for name, frame in tables.items():
        frame.to_parquet(stage / "tables" / f"{name}.parquet", index=False)
        _fault(f"stage:{name}")
        con.register("frame", frame)
        con.execute(f'CREATE TABLE "{name}" AS SELECT * FROM frame')  # name from the schema
        con.unregister("frame")
        counts[name] = len(frame)
    con.execute("CREATE INDEX metrics_idx ON metrics (model, method, metric)")
    con.close()
    write_json_atomic(
        stage / "manifest.json", {"schema_version": schema.SCHEMA_VERSION, "rows": counts}
    )
    _fault("stage:done")
    write_json_atomic(out_dir / JOURNAL, {"stage": stage.name})  # the commit point
    _roll_forward(out_dir, stage)
    return counts


def _read_table(path: Path):
    import pyarrow.parquet as pq

    try:
        return pq.read_table(path)
    except Exception as err:  # corrupt, truncated, not parquet at all
        raise ResultsError(
            f"{path} is not a readable parquet file ({type(err).__name__}); rebuild the results "
            "with `python -m precompute build`."
        ) from err


def list_results(out_dir: Path) -> list[dict]:
    """One entry per (model, method) present in the results, with its row count (all tables).

    Raises:
        ResultsError: A table file is corrupt (the message names it).
    """
    path = Path(out_dir) / "tables"
    counts: dict[tuple[str, str], int] = {}
    for t, cols in schema.TABLES.items():
        f = path / f"{t}.parquet"
        if "method" not in cols or not f.exists():
            continue
        frame = _read_table(f).select(["model", "method"]).to_pandas()
        for (model, method), n in frame.value_counts().items():
            counts[(model, method)] = counts.get((model, method), 0) + int(n)
    return [{"model": m, "method": me, "rows": n} for (m, me), n in sorted(counts.items())]
