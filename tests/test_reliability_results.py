"""Reliability: a results folder from elsewhere is data; no code in it runs, no local file is read.

A hostile ``stagescope.duckdb`` whose views call ``read_text``/``read_csv`` on local files must
fail cleanly (and never show the file), a corrupt DuckDB file or parquet gets a clear message,
and a folder whose path has an apostrophe still opens.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import duckdb
import pytest

from app import data
from app.config import EMBEDDED_RESULTS
from precompute.schema import DB_NAME

SECRET = "HF_TOKEN=hf_secret_do_not_show"


@pytest.fixture
def secret_file(tmp_path):
    path = tmp_path / "environ"
    path.write_text(SECRET + "\n")
    return path


def _hostile(folder: Path, secret_file: Path) -> Path:
    folder.mkdir(parents=True)
    con = duckdb.connect(str(folder / DB_NAME))
    con.execute("CREATE TABLE metrics AS SELECT 1 AS value")
    con.execute(f"CREATE VIEW metrics_agg AS SELECT * FROM read_text('{secret_file}')")
    con.execute(f"CREATE VIEW runs AS SELECT * FROM read_csv('{secret_file}', header=false)")
    con.execute("CREATE MACRO leak() AS TABLE SELECT * FROM read_text('/etc/hostname')")
    con.close()
    return folder


def test_views_in_a_downloaded_file_cannot_read_local_files(tmp_path, secret_file):
    con = data._open(_hostile(tmp_path / "results", secret_file))
    for sql in ("SELECT * FROM metrics_agg", "SELECT * FROM runs", "SELECT * FROM leak()"):
        with pytest.raises(duckdb.Error) as err:
            con.execute(sql).fetchall()
        assert SECRET not in str(err.value)
    assert con.execute("SELECT value FROM metrics").fetchall() == [(1,)]  # data still reads


def test_the_settings_cannot_be_turned_back_on(tmp_path, secret_file):
    con = data._open(_hostile(tmp_path / "results", secret_file))
    for sql in ("SET enable_external_access = true", "INSTALL httpfs", "LOAD httpfs"):
        with pytest.raises(duckdb.Error):
            con.execute(sql)


def test_the_app_shows_a_clear_message_not_the_file(tmp_path, secret_file, monkeypatch):
    folder = _hostile(tmp_path / "results", secret_file)
    monkeypatch.setenv("STAGESCOPE_RESULTS_DIR", str(folder))
    monkeypatch.delenv("STAGESCOPE_HF_REPO", raising=False)
    message = data.health()
    assert "cannot be read" in message and SECRET not in message


def test_corrupt_duckdb_and_parquet_get_a_clear_message(tmp_path):
    folder = tmp_path / "results"
    (folder / "tables").mkdir(parents=True)
    (folder / DB_NAME).write_bytes(b"not a database at all" * 100)
    (folder / "tables" / "metrics.parquet").write_bytes(b"PAR1 truncated")
    with pytest.raises(data.ResultsUnavailable, match="not a readable parquet file"):
        data._open(folder)


def test_parquet_tables_in_a_path_with_an_apostrophe(tmp_path):
    folder = tmp_path / "it's results"
    shutil.copytree(EMBEDDED_RESULTS / "tables", folder / "tables")
    con = data._open(folder)
    assert con.execute("SELECT count(*) FROM metrics_agg").fetchone()[0] > 0
    with pytest.raises(duckdb.Error):
        con.execute("SELECT * FROM read_parquet(?)", [str(folder / "tables" / "runs.parquet")])


def test_pinned_results_come_from_the_cache_when_the_hub_is_down(monkeypatch, tmp_path):
    import huggingface_hub

    from precompute.model import catalog
    from precompute.results.publish import fetch

    asked = []

    def download(**kw):
        asked.append(kw)
        return str(tmp_path)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", download)
    monkeypatch.setattr(catalog, "hub_reachable", lambda: False)
    assert fetch("org/results", "abc123") == tmp_path
    assert asked[0]["local_files_only"] is True and asked[0]["revision"] == "abc123"
