"""The store under test, by backend: one persistence suite runs unchanged on SQLite and on
PostgreSQL (fixture `store_db`, parametrised; tests/conftest.py registers it).

PostgreSQL comes from PUSHREACH_TEST_POSTGRES_DSN (default the local server). Each test module
gets a fresh database, and each test an empty schema in it. Outside CI an unreachable server
skips the PostgreSQL cases with a message that says how to start one; with CI=true it fails.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from functools import cache

import psycopg
import pytest

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
BACKENDS = ("sqlite", "postgres")
START_HINT = (
    "start one with `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start` "
    "(Debian's postgresql package), or point PUSHREACH_TEST_POSTGRES_DSN at a server you may "
    "create databases on"
)


def admin_dsn() -> str:
    return os.environ.get("PUSHREACH_TEST_POSTGRES_DSN", DEFAULT_DSN)


def dsn_for(database: str) -> str:
    """The admin DSN with another database name."""
    base, _, tail = admin_dsn().rpartition("/")
    query = tail.partition("?")[2]
    return f"{base}/{database}" + (f"?{query}" if query else "")


@cache
def _unreachable() -> str:
    try:
        with psycopg.connect(admin_dsn(), connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        return f"PostgreSQL is not reachable ({str(exc).strip().splitlines()[0]})"
    return ""


def require_postgres() -> None:
    problem = _unreachable()
    if not problem:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{problem}; CI needs it: .ci/run starts it", pytrace=False)
    pytest.skip(f"{problem}; {START_HINT}")


def create_database(prefix: str = "pushreach_test") -> str:
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin_dsn(), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return name


def drop_database(name: str) -> None:
    with psycopg.connect(admin_dsn(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def reset_schema(dsn: str) -> None:
    """An empty database for the next test: the store's migrations run again on open."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DROP SCHEMA public CASCADE")
        conn.execute("CREATE SCHEMA public")


@pytest.fixture(scope="module")
def postgres_module_db() -> Iterator[str]:
    """A fresh PostgreSQL database for the module; its URL."""
    require_postgres()
    name = create_database()
    try:
        yield dsn_for(name)
    finally:
        drop_database(name)


@pytest.fixture(params=BACKENDS)
def store_db(request: pytest.FixtureRequest, tmp_path) -> str:  # type: ignore[no-untyped-def]
    """What `--db` would be for this backend: an SQLite path or an empty PostgreSQL database."""
    if request.param == "sqlite":
        return str(tmp_path / "store.db")
    dsn: str = request.getfixturevalue("postgres_module_db")
    reset_schema(dsn)
    return dsn


def query(db: str, sql: str) -> list[tuple]:  # type: ignore[type-arg]
    """Rows of one SELECT on the database `db` names (either backend), from outside the store."""
    if db.startswith(("postgresql://", "postgres://")):
        with psycopg.connect(db, autocommit=True) as conn:
            return conn.execute(sql).fetchall()
    import sqlite3

    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()
