"""Per-app receipt keys (services/receipts.py), kept sealed: the store never sees a key."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg

from ...model import ReceiptKey

Conn = psycopg.AsyncConnection
_COLUMNS = "key_id, blob, created_at, retire_at"


def _row(r: tuple[Any, ...]) -> ReceiptKey:
    return ReceiptKey(r[0], bytes(r[1]), r[2], r[3])


async def of_app(c: Conn, app_id: int) -> list[ReceiptKey]:
    cur = await c.execute(f"SELECT {_COLUMNS} FROM receipt_keys WHERE app_id=%s ORDER BY key_id", (app_id,))
    return [_row(r) for r in await cur.fetchall()]


async def add(
    c: Conn, app_id: int, seal: Callable[[int], bytes], now: float, retire_others_at: float | None, only_if_none: bool
) -> ReceiptKey:
    # The app's row locked: two instances adding a key at once take turns (key ids stay dense,
    # `only_if_none` adds one key, not two).
    await c.execute("SELECT 1 FROM apps WHERE id=%s FOR UPDATE", (app_id,))
    cur = await c.execute("SELECT max(key_id) FROM receipt_keys WHERE app_id=%s", (app_id,))
    row = await cur.fetchone()
    top = row[0] if row else None
    if top is not None and only_if_none:
        cur = await c.execute(f"SELECT {_COLUMNS} FROM receipt_keys WHERE app_id=%s AND key_id=%s", (app_id, top))
        found = await cur.fetchone()
        assert found is not None
        return _row(found)
    if retire_others_at is not None:
        await c.execute(
            "UPDATE receipt_keys SET retire_at=%s WHERE app_id=%s AND (retire_at IS NULL OR retire_at > %s)",
            (retire_others_at, app_id, retire_others_at),
        )
    key_id = (top or 0) + 1
    blob = seal(key_id)
    await c.execute(
        "INSERT INTO receipt_keys (app_id, key_id, blob, created_at) VALUES (%s,%s,%s,%s)", (app_id, key_id, blob, now)
    )
    return ReceiptKey(key_id, blob, now, None)


async def reseal(c: Conn, fn: Callable[[int, int, bytes], bytes]) -> int:
    cur = await c.execute("SELECT app_id, key_id, blob FROM receipt_keys ORDER BY app_id, key_id FOR UPDATE")
    changed = 0
    for app_id, key_id, blob in await cur.fetchall():
        old = bytes(blob)
        new = fn(app_id, key_id, old)
        if new != old:
            await c.execute("UPDATE receipt_keys SET blob=%s WHERE app_id=%s AND key_id=%s", (new, app_id, key_id))
            changed += 1
    return changed
