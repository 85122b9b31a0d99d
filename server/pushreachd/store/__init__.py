"""Persistence. The engine depends on the Store protocol (base.py) only; `make_store` picks
the implementation from the `db` setting: a postgresql:// URL, else an SQLite path."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import FireJob, SmsOutcome, Store

if TYPE_CHECKING:
    from ..supervisor import Supervisor


def is_postgres_url(db: str) -> bool:
    return db.startswith(("postgresql://", "postgres://"))


def make_store(
    db: str,
    *,
    supervisor: Supervisor | None = None,
    owner: str = "",
    lease_seconds: float = 30.0,
    pool_size: int = 8,
    prepare_threshold: int = 5,
) -> Store:
    """The store `db` names, its background tasks under `supervisor`. PostgreSQL only: `owner`
    names this instance in fire leases, `lease_seconds` is how long another instance waits
    before finishing its fires, `pool_size` bounds the connections besides the writers', and
    `prepare_threshold` is how often a statement runs before it is prepared on the server
    (0: never)."""
    if is_postgres_url(db):
        from .postgres import PostgresStore

        return PostgresStore(
            db,
            owner=owner,
            lease_seconds=lease_seconds,
            pool_size=pool_size,
            prepare_threshold=prepare_threshold or None,
            supervisor=supervisor,
        )
    from .sqlite import SqliteStore

    return SqliteStore(db, supervisor=supervisor)


__all__ = ["FireJob", "SmsOutcome", "Store", "is_postgres_url", "make_store"]
