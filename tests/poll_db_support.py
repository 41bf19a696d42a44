"""Shared by the poll tests: the databases the class poll runs on, each test in a fresh one.

``sqlite``: a file in the test's tmp folder (WAL mode, the app's default). ``postgresql``: a fresh
database on a real PostgreSQL server, either the one named by ``STAGESCOPE_TEST_PG_URL`` (a
SQLAlchemy URL of a role that may create databases) or a throwaway server started from the
binaries bundled in the ``pgserver`` wheel (requirements-dev.txt; run as root, pgserver runs
PostgreSQL as a ``pgserver`` system user, which it creates) and reached through ``psycopg``.
The PostgreSQL cases skip, saying why, only when no server can be started.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

BACKENDS = ["sqlite", "postgresql"]


@contextlib.contextmanager
def postgres_server() -> Iterator[str]:
    """Yield the SQLAlchemy URL of a PostgreSQL server (started here, and stopped, if need be)."""
    given = os.environ.get("STAGESCOPE_TEST_PG_URL", "").strip()
    if given:
        yield given
        return
    pytest.importorskip("psycopg", reason="psycopg is not installed (requirements-dev.txt)")
    pgserver = pytest.importorskip("pgserver", reason="pgserver is not installed")
    pgdata = tempfile.mkdtemp(prefix="stagescope-pg-")
    try:
        server = pgserver.get_server(pgdata, cleanup_mode="delete")
    except Exception as err:  # a missing binary, no user to run it as, a closed socket dir
        shutil.rmtree(pgdata, ignore_errors=True)
        pytest.skip(f"a PostgreSQL server could not be started with pgserver: {err!r}")
    try:
        yield server.get_uri().replace("postgresql://", "postgresql+psycopg://", 1)
    finally:
        server.cleanup()


@contextlib.contextmanager
def fresh_postgres_database(server_url: str) -> Iterator[str]:
    """Create an empty database on the server, yield its URL, drop it (closing its sessions)."""
    server = sa.make_url(server_url)
    name = f"poll_test_{secrets.token_hex(6)}"
    admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as con:
            con.exec_driver_sql(f'CREATE DATABASE "{name}"')
        try:
            yield server.set(database=name).render_as_string(hide_password=False)
        finally:
            with admin.connect() as con:
                con.exec_driver_sql(f'DROP DATABASE "{name}" WITH (FORCE)')
    finally:
        admin.dispose()


@contextlib.contextmanager
def poll_database(backend: str, folder: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    """Yield the URL of a fresh poll database on ``backend`` (``pg_server``: a fixture's name)."""
    if backend == "sqlite":
        yield f"sqlite:///{folder / 'poll.sqlite'}"
        return
    with fresh_postgres_database(request.getfixturevalue("pg_server")) as url:
        yield url
