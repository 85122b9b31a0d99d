"""Devices: phone and account bindings, and the latest notification state."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

from ...errors import FailedPrecondition
from ...model import Channel, Device


def get(conn: sqlite3.Connection, app_id: int, token: str) -> Device | None:
    row = conn.execute(
        "SELECT phone, notifications_enabled, notification_time, updated_at, channel, invalid_at, invalid_reason "
        "FROM devices WHERE app_id=? AND token=?",
        (app_id, token),
    ).fetchone()
    if row is None:
        return None
    accounts = tuple(
        r[0]
        for r in conn.execute(
            # Left to itself the planner walks every binding of the app (primary key
            # prefix app_id) instead of this token's few.
            "SELECT account FROM account_tokens INDEXED BY account_tokens_by_token "
            "WHERE app_id=? AND token=? ORDER BY bound_at, account",
            (app_id, token),
        )
    )
    tags = tuple(
        r[0]
        for r in conn.execute(
            "SELECT tag FROM device_tags WHERE app_id=? AND token=? ORDER BY added_at, tag", (app_id, token)
        )
    )
    return Device(
        token=token,
        phone_number=row[0],
        accounts=accounts,
        tags=tags,
        notifications_enabled=None if row[1] is None else bool(row[1]),
        notification_state_time=row[2],
        updated_at=row[3],
        channel=None if row[4] is None else Channel(row[4]),
        invalid_at=row[5],
        invalid_reason=row[6],
    )


def change(
    conn: sqlite3.Connection, app_id: int, token: str, now: float, how: Callable[[sqlite3.Connection], None]
) -> Device:
    """Create or touch the device, apply `how`, return the device as it now is."""
    conn.execute(
        "INSERT INTO devices (app_id, token, updated_at) VALUES (?,?,?) "
        "ON CONFLICT (app_id, token) DO UPDATE SET updated_at=excluded.updated_at",
        (app_id, token, now),
    )
    how(conn)
    device = get(conn, app_id, token)
    assert device is not None
    return device


def set_phone(conn: sqlite3.Connection, app_id: int, token: str, phone: str) -> None:
    conn.execute("UPDATE devices SET phone=? WHERE app_id=? AND token=?", (phone, app_id, token))


def bind_account(conn: sqlite3.Connection, app_id: int, token: str, account: str, now: float, max_tokens: int) -> None:
    bound = conn.execute(
        "SELECT 1 FROM account_tokens WHERE app_id=? AND account=? AND token=?", (app_id, account, token)
    ).fetchone()
    if bound:
        return
    (count,) = conn.execute(
        "SELECT count(*) FROM account_tokens WHERE app_id=? AND account=?", (app_id, account)
    ).fetchone()
    if count >= max_tokens:
        raise FailedPrecondition(f"account already has {max_tokens} tokens, the most it may have")
    conn.execute(
        "INSERT INTO account_tokens (app_id, account, token, bound_at) VALUES (?,?,?,?)",
        (app_id, account, token, now),
    )


def unbind_account(conn: sqlite3.Connection, app_id: int, token: str, account: str) -> None:
    conn.execute("DELETE FROM account_tokens WHERE app_id=? AND account=? AND token=?", (app_id, account, token))
