"""Apps: credentials, secrets, rate-limit policies."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

from ...errors import AlreadyExists, NotFound
from ...model import App, RateLimitPolicy
from . import rows
from .rows import APP_COLUMNS


def by_id(conn: sqlite3.Connection, app_id: int) -> App:
    found = rows.app(conn.execute(f"SELECT {APP_COLUMNS} FROM apps WHERE id=?", (app_id,)).fetchone())
    if found is None:
        raise NotFound("app not found")
    return found


def by_access_id(conn: sqlite3.Connection, access_id: str) -> App | None:
    return rows.app(conn.execute(f"SELECT {APP_COLUMNS} FROM apps WHERE access_id=?", (access_id,)).fetchone())


def create(
    conn: sqlite3.Connection, access_id: str, name: str, verifier: str, now: float, sealed: bytes | None = None
) -> App:
    try:
        cur = conn.execute(
            "INSERT INTO apps (access_id, name, secret_verifier, created_at, secret_sealed) VALUES (?,?,?,?,?)",
            (access_id, name, verifier, now, sealed),
        )
    except sqlite3.IntegrityError:
        raise AlreadyExists("an app with this access id exists") from None
    return by_id(conn, int(cur.lastrowid or 0))


def page(conn: sqlite3.Connection, after_id: int, limit: int) -> list[App]:
    found = conn.execute(
        f"SELECT {APP_COLUMNS} FROM apps WHERE id > ? ORDER BY id LIMIT ?", (after_id, limit)
    ).fetchall()
    return [a for a in map(rows.app, found) if a is not None]


def set_secret(conn: sqlite3.Connection, app_id: int, verifier: str, sealed: bytes | None = None) -> None:
    conn.execute("UPDATE apps SET secret_verifier=?, secret_sealed=? WHERE id=?", (verifier, sealed, app_id))


def set_sms_credentials(conn: sqlite3.Connection, app_id: int, blob: bytes) -> App:
    conn.execute("UPDATE apps SET sms_credentials=? WHERE id=?", (blob, app_id))
    return by_id(conn, app_id)


def reseal_sms_credentials(
    conn: sqlite3.Connection,
    reseal: Callable[[str, bytes], bytes],
    reseal_secret: Callable[[str, bytes], bytes] | None = None,
) -> int:
    if reseal_secret is not None:  # the sealed app secrets (TPNS signatures), same transaction
        for app_id, access_id, blob in conn.execute(
            "SELECT id, access_id, secret_sealed FROM apps WHERE secret_sealed IS NOT NULL ORDER BY id"
        ).fetchall():
            new = reseal_secret(access_id, bytes(blob))
            if new != blob:
                conn.execute("UPDATE apps SET secret_sealed=? WHERE id=?", (new, app_id))
    found = conn.execute(
        "SELECT id, access_id, sms_credentials FROM apps WHERE sms_credentials IS NOT NULL ORDER BY id"
    ).fetchall()
    changed = 0
    for app_id, access_id, blob in found:
        new = reseal(access_id, bytes(blob))
        if new != blob:
            conn.execute("UPDATE apps SET sms_credentials=? WHERE id=?", (new, app_id))
            changed += 1
    return changed


def set_rate_limit_policy(conn: sqlite3.Connection, app_id: int, policy: RateLimitPolicy) -> App:
    conn.execute(
        "UPDATE apps SET same_content_interval=?, daily_limit=?, time_zone=? WHERE id=?",
        (policy.same_content_interval_seconds, policy.daily_limit, policy.time_zone, app_id),
    )
    return by_id(conn, app_id)
