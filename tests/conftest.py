"""Fixtures every test package may use."""

from tests.stores import postgres_module_db, store_db

__all__ = ["postgres_module_db", "store_db"]
