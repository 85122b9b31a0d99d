"""Pushes and their targets: accept (with idempotency), read, deliver, redeliver, cancel."""

from __future__ import annotations

import sqlite3
from dataclasses import replace

from ...engine.states import FALLBACK_TRANSITIONS, check_transition
from ...errors import AlreadyExists, FailedPrecondition
from ...model import (
    Channel,
    FallbackState,
    NewPush,
    Push,
    PushOutcome,
    PushReceipt,
    PushSpec,
    SmsStatus,
    TargetView,
)
from . import channels, rows
from .rows import PUSH_COLUMNS


def tokens_of_accounts(conn: sqlite3.Connection, app_id: int, accounts: list[str]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for account in accounts:
        tokens = conn.execute(
            "SELECT token FROM account_tokens WHERE app_id=? AND account=? ORDER BY bound_at, token",
            (app_id, account),
        ).fetchall()
        found[account] = [r[0] for r in tokens]
    return found


def create(conn: sqlite3.Connection, push: NewPush, fingerprint: str) -> tuple[PushReceipt, int | None]:
    if push.request_id:
        prior = conn.execute(
            "SELECT fingerprint, response FROM idempotency WHERE app_id=? AND method='Push' AND request_id=?",
            (push.app_id, push.request_id),
        ).fetchone()
        if prior is not None:
            if prior[0] != fingerprint:
                raise AlreadyExists("request_id was already used for a different push")
            return rows.receipt_from_json(prior[1]), None
    spec = push.spec
    # A token push's tokens are kept once, in the targets table.
    spec_json = spec.to_json(tokens=spec.audience_type.by_account)
    state = FallbackState.PENDING if push.fallback_due_at is not None else FallbackState.NONE
    cur = conn.execute(
        "INSERT INTO pushes (app_id, push_id, request_id, spec, title, accepted_at, target_count, "
        "fallback_state, fallback_due_at) VALUES (?,?,?,?,?,?,?,?,?)",
        (
            push.app_id,
            push.push_id,
            push.request_id,
            spec_json,
            spec.title,  # the console's search reads it from the index pushes_by_app_time
            push.accepted_at,
            len(push.targets),
            int(state),
            push.fallback_due_at,
        ),
    )
    row_id = cur.lastrowid
    if spec.audience_type.broadcast:  # targets are found after acceptance (audiences.py)
        conn.execute("INSERT INTO broadcasts (push, app_id) VALUES (?,?)", (row_id, push.app_id))
    conn.executemany(
        "INSERT INTO targets (push, token, seq, account) VALUES (?,?,?,?)",
        [(row_id, t.token, i, t.account) for i, t in enumerate(push.targets)],
    )
    if push.request_id:
        conn.execute(
            "INSERT INTO idempotency (app_id, method, request_id, fingerprint, response, created_at) "
            "VALUES (?, 'Push', ?, ?, ?, ?)",
            (push.app_id, push.request_id, fingerprint, rows.receipt_to_json(push.receipt), push.accepted_at),
        )
    return push.receipt, row_id


def _tokens(conn: sqlite3.Connection, push: int) -> list[str]:
    return [r[0] for r in conn.execute("SELECT token FROM targets WHERE push=? ORDER BY seq", (push,))]


def get(conn: sqlite3.Connection, app_id: int, push_id: str) -> Push | None:
    row = conn.execute(
        f"SELECT {PUSH_COLUMNS} FROM pushes p WHERE p.push_id=? AND p.app_id=?", (push_id, app_id)
    ).fetchone()
    if row is None:
        return None
    spec = PushSpec.from_json(row[4])
    if spec.audience_type.broadcast:
        pending = conn.execute("SELECT done = 0 FROM broadcasts WHERE push=?", (row[0],)).fetchone()
        found = rows.push(row)
        return replace(found, targets_pending=bool(pending and pending[0])) if found else None
    if not spec.audience_type.by_token:
        return rows.push(row)  # targets found from accounts: not the request's
    return rows.push(row, _tokens(conn, row[0]))


def mark_delivered(conn: sqlite3.Connection, marks: list[tuple[float, int]]) -> None:
    """(delivered_at, push row id) pairs, one statement."""
    conn.executemany("UPDATE pushes SET delivered_at=? WHERE id=?", marks)


def last_row(conn: sqlite3.Connection) -> int:
    return conn.execute("SELECT coalesce(max(id), 0) FROM pushes").fetchone()[0]


def expire_undelivered(conn: sqlite3.Connection, through: int, now: float) -> int:
    return conn.execute(
        # `+id`: walk the (small) partial index of undelivered pushes, not the table.
        "UPDATE pushes SET delivered_at=? WHERE delivered_at IS NULL AND accepted_at <= ? AND +id <= ? "
        "AND accepted_at + json_extract(spec, '$.expire_time') <= ? "
        "AND id NOT IN (SELECT push FROM broadcasts)",  # their resolver delivers them
        (now, now, through, now),
    ).rowcount


def undelivered(
    conn: sqlite3.Connection,
    through: int,
    now: float,
    after: tuple[float, int] | None,
    limit: int,
    max_targets: int,
) -> tuple[list[tuple[str, Push, tuple[str, ...]]], tuple[float, int] | None]:
    a_at, a_id = after if after is not None else (float("-inf"), 0)
    found_rows = conn.execute(
        f"SELECT {PUSH_COLUMNS}, a.access_id FROM pushes p "
        "JOIN apps a ON a.id = p.app_id WHERE p.delivered_at IS NULL AND (p.accepted_at, p.id) > (?, ?) "
        "AND p.id <= ? AND p.accepted_at + json_extract(p.spec, '$.expire_time') > ? "
        "AND p.id NOT IN (SELECT push FROM broadcasts) "  # their resolver delivers them
        "ORDER BY p.accepted_at, p.id LIMIT ?",
        (a_at, a_id, through, now, limit),
    ).fetchall()
    found: list[tuple[str, Push, tuple[str, ...]]] = []
    targets = 0
    for row in found_rows:
        if found and targets + row[6] > max_targets:  # bounded by tokens too, not only pushes
            break
        targets += row[6]
        tokens = _tokens(conn, row[0])
        push = rows.push(row[:10], tokens)
        assert push is not None
        # Only the targets not yet answered: one accepted before the crash is not sent again.
        found.append((row[10], push, tuple(channels.pending_tokens(conn, row[0]))))
    more = len(found) < len(found_rows) or len(found_rows) == limit
    cursor = (found[-1][1].accepted_at, found[-1][1].id) if found and more else None
    return found, cursor


def targets(conn: sqlite3.Connection, push: int, offset: int, limit: int) -> list[TargetView]:
    found = conn.execute(
        "SELECT t.token, t.account, coalesce(d.phone, ''), t.arrived_at, t.clicked_at, r.status, "
        "coalesce(t.channel, d.channel), t.outcome, t.outcome_code, t.outcome_at "
        "FROM targets t JOIN pushes p ON p.id = t.push "
        "LEFT JOIN devices d ON d.app_id = p.app_id AND d.token = t.token "
        "LEFT JOIN sms_records r ON r.push = t.push AND r.phone = d.phone "
        "WHERE t.push=? ORDER BY t.seq LIMIT ? OFFSET ?",
        (push, limit, offset),
    ).fetchall()
    return [
        TargetView(
            token=r[0],
            account=r[1],
            phone_number=r[2],
            arrived_at=r[3],
            clicked_at=r[4],
            sms_status=SmsStatus(r[5]) if r[5] is not None else None,
            channel=Channel(r[6]) if r[6] is not None else None,
            push_outcome=PushOutcome(r[7]) if r[7] is not None else PushOutcome.PENDING,
            push_outcome_code=r[8],
            push_outcome_at=r[9],
        )
        for r in found
    ]


def cancel_fallback(conn: sqlite3.Connection, app_id: int, push_id: str, now: float) -> tuple[int, FallbackState] | None:
    row = conn.execute("SELECT id, fallback_state FROM pushes WHERE push_id=? AND app_id=?", (push_id, app_id)).fetchone()
    if row is None:
        return None
    state = FallbackState(row[1])
    if state in (FallbackState.CANCELLED, FallbackState.NONE):
        return row[0], state
    if state is not FallbackState.PENDING:
        raise FailedPrecondition(f"the fallback has already fired ({state.name})")
    check_transition(FALLBACK_TRANSITIONS, state, FallbackState.CANCELLED)
    conn.execute(
        "UPDATE pushes SET fallback_state=?, fallback_ended_at=? WHERE id=? AND fallback_state=?",
        (int(FallbackState.CANCELLED), now, row[0], int(FallbackState.PENDING)),
    )
    return row[0], FallbackState.CANCELLED
