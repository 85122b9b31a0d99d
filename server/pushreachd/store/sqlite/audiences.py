"""Device tags, and the resolution of TAG / ALL pushes ("broadcasts").

A broadcast's targets are found in pages of devices in token order. Each page is stored
(targets, cursor, next seq, target count) in one transaction that first checks the cursor is
still where the resolver read it, so a page is never stored twice, even by two instances.
"""

from __future__ import annotations

import sqlite3

from ...errors import FailedPrecondition
from ...model import Broadcast, PushSpec


def modify_tags(
    conn: sqlite3.Connection,
    app_id: int,
    now: float,
    clear: list[str],
    remove: list[tuple[str, str]],
    add: list[tuple[str, str]],
    max_per_token: int,
    max_per_app: int,
) -> None:
    """Drop every tag of the `clear` tokens, then the `remove` pairs, then add the `add` pairs
    (creating the devices); FailedPrecondition (the caller's savepoint undoes it all) past a limit."""
    for token in clear:
        conn.execute("DELETE FROM device_tags WHERE app_id=? AND token=?", (app_id, token))
    conn.executemany(
        "DELETE FROM device_tags WHERE app_id=? AND token=? AND tag=?", [(app_id, t, g) for t, g in remove]
    )
    if not add:
        return
    tokens = list(dict.fromkeys(t for t, _ in add))
    for token in tokens:
        conn.execute(
            "INSERT INTO devices (app_id, token, updated_at) VALUES (?,?,?) "
            "ON CONFLICT (app_id, token) DO UPDATE SET updated_at=excluded.updated_at",
            (app_id, token, now),
        )
    new_tags = [
        (app_id, tag)
        for tag in dict.fromkeys(g for _, g in add)
        if conn.execute("SELECT 1 FROM app_tags WHERE app_id=? AND tag=?", (app_id, tag)).fetchone() is None
    ]
    if new_tags:
        (known,) = conn.execute("SELECT count(*) FROM app_tags WHERE app_id=?", (app_id,)).fetchone()
        if known + len(new_tags) > max_per_app:
            raise FailedPrecondition(f"the app would have more than {max_per_app} distinct tags")
        conn.executemany("INSERT INTO app_tags (app_id, tag) VALUES (?,?)", new_tags)
    conn.executemany(
        "INSERT OR IGNORE INTO device_tags (app_id, token, tag, added_at) VALUES (?,?,?,?)",
        [(app_id, t, g, now) for t, g in add],
    )
    for token in tokens:
        (count,) = conn.execute("SELECT count(*) FROM device_tags WHERE app_id=? AND token=?", (app_id, token)).fetchone()
        if count > max_per_token:
            raise FailedPrecondition(f"token {token!r} would hold more than {max_per_token} tags")


def unbind_account_everywhere(conn: sqlite3.Connection, app_id: int, account: str, now: float) -> int:
    tokens = [
        r[0] for r in conn.execute("SELECT token FROM account_tokens WHERE app_id=? AND account=?", (app_id, account))
    ]
    conn.execute("DELETE FROM account_tokens WHERE app_id=? AND account=?", (app_id, account))
    conn.executemany("UPDATE devices SET updated_at=? WHERE app_id=? AND token=?", [(now, app_id, t) for t in tokens])
    return len(tokens)


def open_broadcasts(conn: sqlite3.Connection) -> list[Broadcast]:
    found = conn.execute(
        "SELECT b.push, p.push_id, p.app_id, a.access_id, p.spec, p.accepted_at, p.fallback_due_at, "
        "b.cursor, b.next_seq, b.delivered_seq FROM broadcasts b JOIN pushes p ON p.id = b.push "
        "JOIN apps a ON a.id = p.app_id WHERE b.done = 0 ORDER BY b.push"
    ).fetchall()
    return [Broadcast(r[0], r[1], r[2], r[3], PushSpec.from_json(r[4]), r[5], r[6], r[7], r[8], r[9]) for r in found]


def page(conn: sqlite3.Connection, app_id: int, after: str, limit: int, with_tags: bool) -> list[tuple[str, frozenset[str]]]:
    tokens = [
        r[0]
        for r in conn.execute(
            "SELECT token FROM devices WHERE app_id=? AND token > ? ORDER BY token LIMIT ?", (app_id, after, limit)
        )
    ]
    if not with_tags or not tokens:
        return [(t, frozenset()) for t in tokens]
    tags: dict[str, set[str]] = {}
    for token, tag in conn.execute(
        "SELECT token, tag FROM device_tags WHERE app_id=? AND token > ? AND token <= ?", (app_id, after, tokens[-1])
    ):
        tags.setdefault(token, set()).add(tag)
    return [(t, frozenset(tags.get(t, ()))) for t in tokens]


def store_page(conn: sqlite3.Connection, push: int, expected_cursor: str, tokens: list[str], cursor: str) -> int:
    row = conn.execute("SELECT cursor, next_seq, done FROM broadcasts WHERE push=?", (push,)).fetchone()
    if row is None or row[2] or row[0] != expected_cursor:
        raise FailedPrecondition("the broadcast moved on: another resolver stored this page")
    first = row[1]
    conn.executemany(
        "INSERT INTO targets (push, token, seq, account) VALUES (?,?,?, '')",
        [(push, t, first + i) for i, t in enumerate(tokens)],
    )
    conn.execute("UPDATE broadcasts SET cursor=?, next_seq=? WHERE push=?", (cursor, first + len(tokens), push))
    if tokens:
        conn.execute("UPDATE pushes SET target_count = target_count + ? WHERE id=?", (len(tokens), push))
    return first


def tokens(conn: sqlite3.Connection, push: int, from_seq: int, to_seq: int) -> list[str]:
    return [
        r[0]
        for r in conn.execute(
            "SELECT token FROM targets WHERE push=? AND seq >= ? AND seq < ? ORDER BY seq", (push, from_seq, to_seq)
        )
    ]


def mark_delivered(conn: sqlite3.Connection, push: int, through_seq: int) -> None:
    conn.execute("UPDATE broadcasts SET delivered_seq=max(delivered_seq, ?) WHERE push=?", (through_seq, push))


def finish(conn: sqlite3.Connection, push: int, now: float) -> None:
    conn.execute("UPDATE broadcasts SET done=1 WHERE push=?", (push,))
    conn.execute("UPDATE pushes SET delivered_at=coalesce(delivered_at, ?) WHERE id=?", (now, push))
