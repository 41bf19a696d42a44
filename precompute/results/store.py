"""The results store: build the tables and the DuckDB file from finished jobs.

``build`` reads every finished job under a work folder, merges it with the results already in the
output folder (rows of a rebuilt run replace that run's old rows), derives ``metrics_agg``,
``models`` and ``runs``, and writes::

    OUT/tables/<table>.parquet   (one file per table; what the Hub dataset viewer shows)
    OUT/stagescope.duckdb        (the same tables, for the app)
    OUT/manifest.json            (schema version, row counts)

Everything is written to a temporary folder first and swapped in by renames, so a failed build
never leaves half-written results.
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
from precompute.results.jobs import finished_jobs, write_json_atomic

log = logging.getLogger(__name__)

DB_NAME = schema.DB_NAME  # defined in the schema so the app can read it without torch


def _read_existing(out_dir: Path, table: str) -> pd.DataFrame | None:
    path = out_dir / "tables" / f"{table}.parquet"
    if not path.exists():
        return None
    return pd.read_parquet(path)


def _job_tables(job: Path) -> dict[str, pd.DataFrame]:
    frames: dict[str, list[pd.DataFrame]] = {}
    for part in sorted(job.glob("chunks/[0-9]*/*.parquet")):
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


def build(work_dir: Path, out_dir: Path) -> dict[str, int]:
    """Merge finished jobs into the results folder.

    Args:
        work_dir: Folder holding ``runs/`` of jobs.
        out_dir: Results folder (e.g. ``data/results``).

    Returns:
        Row count per table.
    """
    out_dir = Path(out_dir)
    jobs = finished_jobs(work_dir)
    metas = [json.loads((j / "job.json").read_text()) for j in jobs]
    new_ids = {m["run_id"] for m in metas}
    tables: dict[str, pd.DataFrame] = {}
    for table in schema.TABLES:
        parts = []
        old = _read_existing(out_dir, table)
        if old is not None and len(old):
            parts.append(old[~old["run_id"].isin(new_ids)])
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
        runs = pd.concat([runs_old[~runs_old["run_id"].isin(new_ids)], runs], ignore_index=True)
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


def write_tables(tables: dict[str, pd.DataFrame], out_dir: Path) -> dict[str, int]:
    """Write parquet files, the DuckDB file and a manifest, swapping them in atomically."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stage = out_dir.with_name(f".{out_dir.name}.{os.getpid()}.stage")
    if stage.exists():
        shutil.rmtree(stage)
    (stage / "tables").mkdir(parents=True)
    con = duckdb.connect(str(stage / DB_NAME))
    counts = {}
    for name, frame in tables.items():
        frame.to_parquet(stage / "tables" / f"{name}.parquet", index=False)
        con.register("frame", frame)
        con.execute(f'CREATE TABLE "{name}" AS SELECT * FROM frame')  # name from the schema
        con.unregister("frame")
        counts[name] = len(frame)
    con.execute("CREATE INDEX metrics_idx ON metrics (model, method, metric)")
    con.close()
    write_json_atomic(
        stage / "manifest.json", {"schema_version": schema.SCHEMA_VERSION, "rows": counts}
    )
    # Swap in: tables folder, then the DuckDB file, then the manifest.
    old_tables = out_dir / "tables"
    if old_tables.exists():
        trash = out_dir / f".tables.{os.getpid()}.old"
        os.replace(old_tables, trash)
        os.replace(stage / "tables", old_tables)
        shutil.rmtree(trash)
    else:
        os.replace(stage / "tables", old_tables)
    os.replace(stage / DB_NAME, out_dir / DB_NAME)
    os.replace(stage / "manifest.json", out_dir / "manifest.json")
    shutil.rmtree(stage)
    return counts


def list_results(out_dir: Path) -> list[dict]:
    """One entry per (model, method) present in the results, with its row count (all tables)."""
    path = Path(out_dir) / "tables"
    files = [
        str(path / f"{t}.parquet")
        for t, cols in schema.TABLES.items()
        if "method" in cols and (path / f"{t}.parquet").exists()
    ]
    if not files:
        return []
    con = duckdb.connect()
    union = " UNION ALL ".join(
        "SELECT model, method, count(*) AS rows FROM read_parquet(?) GROUP BY ALL" for _ in files
    )
    rows = con.execute(
        f"SELECT model, method, sum(rows)::BIGINT FROM ({union}) GROUP BY ALL ORDER BY ALL",
        files,
    ).fetchall()
    con.close()
    return [{"model": m, "method": me, "rows": int(r)} for m, me, r in rows]
