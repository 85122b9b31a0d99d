"""The PostgreSQL store: shared by any number of `pushreach serve` instances."""

from .store import PostgresStore

__all__ = ["PostgresStore"]
