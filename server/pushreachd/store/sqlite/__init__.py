"""The SQLite store: the Store protocol (store/base.py) on one embedded database file.

- store.py      SqliteStore: routes each protocol call to one read or one group-committed write
- writer.py     the group-commit writer (a thread, a queue, a savepoint per write)
- readers.py    query-only connections for reads
- migrations.py the schema, in versioned steps
- apps.py, pushes.py, devices.py, events.py, fires.py (fallbacks and SMS records),
  reporting.py (aggregates), retention.py: the SQL, one concern each; rows.py maps rows
"""

from .store import SqliteStore
from .writer import WriteStats

__all__ = ["SqliteStore", "WriteStats"]
