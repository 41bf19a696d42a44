"""Read-only access to the results: one cached DuckDB connection, a cursor per query.

The results come from the Hub at a pinned revision when ``STAGESCOPE_HF_REPO`` is set, and from
the embedded folder otherwise -- or when the Hub cannot be reached, with a notice for the page to
show. Queries take bound parameters only; table names are checked against the schema.

Example (in a page)::

    from app import data
    df = data.query("SELECT * FROM metrics_agg WHERE method = ?", ["logit_lens"])
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pandas as pd
import streamlit as st

from app.config import EMBEDDED_RESULTS, AppConfig
from precompute.schema import ALL_TABLES, DB_NAME

log = logging.getLogger(__name__)


class ResultsUnavailable(RuntimeError):
    """No readable results were found; the message says where we looked."""


@dataclass(frozen=True)
class Source:
    """Where the loaded results came from."""

    path: Path
    label: str  # "embedded", "hub ORG/NAME@rev", or a folder
    notice: str = ""  # shown on every page when set (e.g. "Hub unreachable, using embedded")


#: Results folders are data, never code: a view in a downloaded DuckDB file must not read local
#: files (``read_text('/proc/self/environ')``), load extensions or change these settings.
SAFE_DUCKDB = {
    "enable_external_access": False,
    "autoload_known_extensions": False,
    "autoinstall_known_extensions": False,
    "lock_configuration": True,
}


def _open(path: Path) -> duckdb.DuckDBPyConnection:
    db = path / DB_NAME
    if db.exists():
        try:
            return duckdb.connect(str(db), read_only=True, config=SAFE_DUCKDB)
        except duckdb.Error as err:
            log.warning("Cannot open %s (%s); falling back to the parquet tables", db, err)
    tables = path / "tables"
    if not (tables / "metrics.parquet").exists():
        raise ResultsUnavailable(f"No results in {path}: expected {DB_NAME} or tables/*.parquet.")
    import pyarrow.parquet as pq

    con = duckdb.connect(":memory:", config=SAFE_DUCKDB)
    for name in ALL_TABLES:
        f = tables / f"{name}.parquet"
        if not f.exists():
            continue
        try:  # read by pyarrow: the connection itself never touches the file system
            table = pq.read_table(f)
        except Exception as err:  # corrupt or truncated file
            raise ResultsUnavailable(
                f"{f} is not a readable parquet file ({type(err).__name__}); rebuild the results."
            ) from err
        con.register("_incoming", table)
        con.execute(f'CREATE TABLE "{name}" AS SELECT * FROM _incoming')  # name from the schema
        con.unregister("_incoming")
    return con


def resolve_source(cfg: AppConfig, fetcher=None) -> Source:
    """Pick the results folder: Hub (pinned) if configured and reachable, else the local one."""
    if cfg.hf_repo:
        try:
            from precompute.results.publish import fetch

            path = fetch(cfg.hf_repo, cfg.hf_revision, downloader=fetcher)
            return Source(path, f"hub {cfg.hf_repo}@{cfg.hf_revision[:12]}")
        except Exception as err:  # offline, wrong repo, auth: all fall back visibly
            return Source(
                EMBEDDED_RESULTS,
                "embedded",
                notice=f"Could not load {cfg.hf_repo}@{cfg.hf_revision} from the Hugging Face Hub "
                f"({type(err).__name__}); showing the embedded results instead.",
            )
    label = "embedded" if cfg.results_dir == EMBEDDED_RESULTS else str(cfg.results_dir)
    return Source(cfg.results_dir, label)


@st.cache_resource(show_spinner="Opening the results ...")
def _connection(path: str) -> duckdb.DuckDBPyConnection:
    return _open(Path(path))


@st.cache_resource
def source() -> Source:
    """The results source of this process (resolved once)."""
    return resolve_source(AppConfig.from_env())


def connection() -> duckdb.DuckDBPyConnection:
    """The shared read-only connection (take a cursor per query)."""
    return _connection(str(source().path))


@st.cache_data(show_spinner=False, max_entries=512)
def query(sql: str, params: tuple | list | None = None) -> pd.DataFrame:
    """Run a read-only query with bound parameters; results are cached per (sql, params)."""
    cur = connection().cursor()
    try:
        return cur.execute(sql, list(params or [])).df()
    finally:
        cur.close()


def health() -> str:
    """Empty when the results can be queried; otherwise a message saying what is wrong."""
    try:
        query("SELECT count(*) AS n FROM metrics_agg")
        query("SELECT count(*) AS n FROM runs")
    except Exception as err:  # missing folder, corrupt file: explain instead of crashing
        return (
            f"The results in {source().path} cannot be read ({type(err).__name__}: {err}). "
            "Rebuild them with `python -m precompute build`, or unset STAGESCOPE_RESULTS_DIR / "
            "STAGESCOPE_HF_REPO to use the embedded results."
        )
    return ""


def table_exists(name: str) -> bool:
    """Whether a schema table is present in the loaded results."""
    if name not in ALL_TABLES:
        raise ValueError(f"Unknown table {name!r}")
    df = query("SELECT count(*) AS n FROM information_schema.tables WHERE table_name = ?", [name])
    return bool(df["n"].iloc[0])


def models_for(method: str, table: str = "metrics_agg") -> list[str]:
    """Models with results for a method, ordered by family then size."""
    if table not in ALL_TABLES:
        raise ValueError(f"Unknown table {table!r}")
    df = query(
        f"""SELECT DISTINCT t.model, coalesce(m.n_params, 0) AS n
            FROM "{table}" t LEFT JOIN models m USING (model)
            WHERE t.method = ? ORDER BY n, t.model""",
        [method],
    )
    return df["model"].tolist()


def runs_for(method: str, models: list[str] | None = None) -> pd.DataFrame:
    """The ``runs`` rows (provenance) of a method, optionally for some models."""
    df = query("SELECT * FROM runs WHERE method = ? ORDER BY model, dataset", [method])
    if models:
        df = df[df["model"].isin(models)]
    return df


def models_table() -> pd.DataFrame:
    """The ``models`` table with provenance expanded to a few readable columns."""
    df = query("SELECT * FROM models ORDER BY n_params")
    prov = df["provenance_json"].map(json.loads)
    df["weights"] = prov.map(
        lambda p: p.get("quantization") or p.get("revision") or p.get("source")
    )
    return df.drop(columns=["provenance_json"])


def methods_present() -> pd.DataFrame:
    """Each method in the loaded results with its number of models (``method, models``)."""
    return query(
        "SELECT method, count(DISTINCT model) AS models FROM runs GROUP BY ALL ORDER BY method"
    )
