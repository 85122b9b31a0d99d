"""Per-app receipt keys (services/receipts.py), kept sealed: the store never sees a key."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

from ...model import ReceiptKey

_COLUMNS = "key_id, blob, created_at, retire_at"


def _row(r: tuple[int, bytes, float, float | None]) -> ReceiptKey:
    return ReceiptKey(r[0], bytes(r[1]), r[2], r[3])


def of_app(conn: sqlite3.Connection, app_id: int) -> list[ReceiptKey]:
    found = conn.execute(f"SELECT {_COLUMNS} FROM receipt_keys WHERE app_id=? ORDER BY key_id", (app_id,))
    return [_row(r) for r in found.fetchall()]


def add(
    conn: sqlite3.Connection,
    app_id: int,
    seal: Callable[[int], bytes],
    now: float,
    retire_others_at: float | None,
    only_if_none: bool,
) -> ReceiptKey:
    top = conn.execute("SELECT max(key_id) FROM receipt_keys WHERE app_id=?", (app_id,)).fetchone()[0]
    if top is not None and only_if_none:
        found = conn.execute(
            f"SELECT {_COLUMNS} FROM receipt_keys WHERE app_id=? AND key_id=?", (app_id, top)
        ).fetchone()
        return _row(found)
    if retire_others_at is not None:
        conn.execute(
            "UPDATE receipt_keys SET retire_at=? WHERE app_id=? AND (retire_at IS NULL OR retire_at > ?)",
            (retire_others_at, app_id, retire_others_at),
        )
    key_id = (top or 0) + 1
    blob = seal(key_id)
    conn.execute(
        "INSERT INTO receipt_keys (app_id, key_id, blob, created_at) VALUES (?,?,?,?)", (app_id, key_id, blob, now)
    )
    return ReceiptKey(key_id, blob, now, None)


def reseal(conn: sqlite3.Connection, fn: Callable[[int, int, bytes], bytes]) -> int:
    found = conn.execute("SELECT app_id, key_id, blob FROM receipt_keys ORDER BY app_id, key_id").fetchall()
    changed = 0
    for app_id, key_id, blob in found:
        new = fn(app_id, key_id, bytes(blob))
        if new != blob:
            conn.execute("UPDATE receipt_keys SET blob=? WHERE app_id=? AND key_id=?", (new, app_id, key_id))
            changed += 1
    return changed
