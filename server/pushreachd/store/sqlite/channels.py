"""Push channels: each app's sealed channel credentials, device routes and token state, and
each target's push outcome."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

from ...model import Channel, PushOutcome, Route, TargetOutcome
from . import apps, pushes
from .rows import CHUNK


def set_credentials(conn: sqlite3.Connection, app_id: int, channel: Channel, blob: bytes, now: float) -> None:
    conn.execute(
        "INSERT INTO channel_credentials (app_id, channel, blob, updated_at) VALUES (?,?,?,?) "
        "ON CONFLICT (app_id, channel) DO UPDATE SET blob=excluded.blob, updated_at=excluded.updated_at",
        (app_id, int(channel), blob, now),
    )
    apps.by_id(conn, app_id)  # NotFound for an unknown app (the foreign key would say less)


def credentials(conn: sqlite3.Connection, app_id: int) -> dict[Channel, bytes]:
    return {
        Channel(c): bytes(blob)
        for c, blob in conn.execute("SELECT channel, blob FROM channel_credentials WHERE app_id=?", (app_id,))
    }


def reseal(conn: sqlite3.Connection, reseal_blob: Callable[[str, Channel, bytes], bytes]) -> int:
    changed = 0
    for app_id, access_id, channel, blob in conn.execute(
        "SELECT c.app_id, a.access_id, c.channel, c.blob FROM channel_credentials c JOIN apps a ON a.id = c.app_id "
        "ORDER BY c.app_id, c.channel"
    ).fetchall():
        new = reseal_blob(access_id, Channel(channel), bytes(blob))
        if new != blob:
            conn.execute("UPDATE channel_credentials SET blob=? WHERE app_id=? AND channel=?", (new, app_id, channel))
            changed += 1
    return changed


def register(conn: sqlite3.Connection, app_id: int, token: str, channel: Channel) -> None:
    """The device's channel; registering makes an invalid token valid again."""
    conn.execute(
        "UPDATE devices SET channel=?, invalid_at=NULL, invalid_reason='' WHERE app_id=? AND token=?",
        (int(channel), app_id, token),
    )


def routes(conn: sqlite3.Connection, app_id: int, tokens: list[str]) -> dict[str, Route]:
    """The route of each token that has a device row (the others take the app's default)."""
    found: dict[str, Route] = {}
    for lo in range(0, len(tokens), CHUNK):
        chunk = tokens[lo : lo + CHUNK]
        marks = ",".join("?" * len(chunk))
        for token, channel, invalid_at in conn.execute(
            f"SELECT token, channel, invalid_at FROM devices WHERE app_id=? AND token IN ({marks}) "
            "AND (channel IS NOT NULL OR invalid_at IS NOT NULL)",
            (app_id, *chunk),
        ):
            found[token] = Route(None if channel is None else Channel(channel), invalid_at is not None)
    return found


def routes_many(conn: sqlite3.Connection, asked: list[tuple[int, list[str]]]) -> list[dict[str, Route]]:
    """`routes` for each (app, tokens) asked, in order."""
    return [routes(conn, app_id, tokens) for app_id, tokens in asked]


def record_many(conn: sqlite3.Connection, rows: list[tuple[int, int, list[TargetOutcome], float | None]]) -> None:
    """Several deliveries' outcomes (push, app, outcomes, delivered_at or None), one write:
    each target's outcome once (a redelivery never overwrites an answer: the first wins), one
    statement for all of them; tokens the channel called invalid are marked on their device,
    which later pushes then skip."""
    conn.executemany(
        "UPDATE targets SET channel=?, outcome=?, outcome_code=?, outcome_at=? WHERE push=? AND token=? "
        "AND outcome IS NULL",
        [(int(o.channel), int(o.outcome), o.code, o.at, push, o.token) for push, _, outcomes, _ in rows for o in outcomes],
    )
    invalid = [(app_id, o) for _, app_id, outcomes, _ in rows for o in outcomes if o.outcome is PushOutcome.INVALID_TOKEN]
    if invalid:
        # Only while the device is still on the channel that answered: a device registered
        # again meanwhile (a fresh token, another channel) stays valid.
        conn.executemany(
            "INSERT INTO devices (app_id, token, updated_at, channel, invalid_at, invalid_reason) "
            "VALUES (?,?,?,?,?,?) ON CONFLICT (app_id, token) DO UPDATE SET invalid_at=excluded.invalid_at, "
            "invalid_reason=excluded.invalid_reason, updated_at=excluded.updated_at "
            "WHERE coalesce(devices.channel, excluded.channel) = excluded.channel AND devices.updated_at <= excluded.updated_at",
            [(app_id, o.token, o.at, int(o.channel), o.at, o.code) for app_id, o in invalid],
        )
    pushes.mark_delivered(conn, [(at, push) for push, _, _, at in rows if at is not None])


def pending_tokens(conn: sqlite3.Connection, push: int) -> list[str]:
    """The push's targets its channel has not answered, in request order."""
    return [r[0] for r in conn.execute("SELECT token FROM targets WHERE push=? AND outcome IS NULL ORDER BY seq", (push,))]
