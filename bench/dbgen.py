"""Build a store quickly: direct SQL inserts into a schema made by the store's migrations.

The app itself is created through the CLI first (so its secret verifier and the master key
file are real); the pushes, targets and devices are then inserted in one transaction.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from pushreachd.api.convert import push_draft
from pushreachd.model import FallbackState
from pushreachd.services.validation import validate_push
from pushreachd.store.sqlite.migrations import migrate

from .load import push_request


def spec_json(delay: int) -> str:
    """The stored spec of a single-token push, as the store writes it (tokens live in targets)."""
    spec = validate_push(push_draft(push_request(["tok"], delay)), 1)
    return replace(spec, token_list=()).to_json()


def phone(i: int) -> str:
    return f"+86138{i:08d}"


def add_pending(db: Path, n: int, due_at: Callable[[int], float], *, accepted_at: float,
                delay: int, phones: bool = False, spread_seconds: float = 0.0) -> None:
    """n single-target pushes with a PENDING fallback; target i is token tok-i (bound to a
    distinct phone when `phones`). With `spread_seconds`, push i is accepted at
    accepted_at + i * spread_seconds / n (else all at accepted_at)."""
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=OFF")
        migrate(conn)
        (app_id,) = conn.execute("SELECT min(id) FROM apps").fetchone()
        (base,) = conn.execute("SELECT coalesce(max(id), 0) FROM pushes").fetchone()
        spec = spec_json(delay)
        pending = int(FallbackState.PENDING)
        # Already handed to the push channel (when the schema tracks it): a restart only arms.
        columns = {r[1] for r in conn.execute("PRAGMA table_info(pushes)")}
        delivered = ", delivered_at" if "delivered_at" in columns else ""
        title = ", title" if "title" in columns else ""  # the title column (SQLite migration 8)
        extra = (accepted_at,) if delivered else ()
        extra += (json.loads(spec)["title"],) if title else ()
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO pushes (id, app_id, push_id, request_id, spec, accepted_at, target_count, "
            f"fallback_state, fallback_due_at{delivered}{title}) VALUES (?,?,?,'',?,?,1,?,?{',?' * len(extra)})",
            ((base + i + 1, app_id, f"b{base + i + 1:019x}", spec, accepted_at + i * spread_seconds / n, pending,
              due_at(i), *extra) for i in range(n)),
        )
        conn.executemany(
            "INSERT INTO targets (push, token, seq, account) VALUES (?,?,0,'')",
            ((base + i + 1, f"tok-{i}") for i in range(n)),
        )
        if phones:
            conn.executemany(
                "INSERT INTO devices (app_id, token, phone, updated_at) VALUES (?,?,?,?)",
                ((app_id, f"tok-{i}", phone(i), accepted_at) for i in range(n)),
            )
        conn.execute("COMMIT")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()


def add_history(db: Path, *, arrived_every: int = 2, clicked_every: int = 5, sms_every: int = 3) -> None:
    """Give the single-target pushes of `add_pending(..., phones=True)` a past: every
    `arrived_every`-th target arrived, every `clicked_every`-th clicked, every `sms_every`-th push's
    fallback fired (DONE) with one SMS record (SENT, DELIVERED or FAILED in turn) to its phone.
    The stores' reporting counters (when the schema has them) are recounted afterwards."""
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        conn.execute("PRAGMA synchronous=OFF")
        done = int(FallbackState.DONE)
        conn.execute("BEGIN")
        conn.execute(f"UPDATE targets SET arrived_at = (SELECT accepted_at + 5 FROM pushes WHERE id = push) "
                     f"WHERE push % {arrived_every} = 0")
        conn.execute(f"UPDATE targets SET clicked_at = (SELECT accepted_at + 9 FROM pushes WHERE id = push), "
                     f"arrived_at = coalesce(arrived_at, (SELECT accepted_at + 9 FROM pushes WHERE id = push)) "
                     f"WHERE push % {clicked_every} = 0")
        conn.execute(
            "INSERT INTO sms_records (app_id, push, phone, status, content_key, sms_app_id, template_id, sign_name, "
            "params, serial_no, fee, created_at, sent_at) "
            "SELECT p.app_id, p.id, d.phone, CASE p.id % 3 WHEN 0 THEN 2 WHEN 1 THEN 3 ELSE 4 END, 'k', "
            "'1400000001', '123456', 'Pushreach', '[]', 'sn-' || p.id, CASE p.id % 3 WHEN 2 THEN 0 ELSE 1 END, "
            "p.accepted_at + 3600, p.accepted_at + 3601 "
            "FROM pushes p JOIN targets t ON t.push = p.id JOIN devices d ON d.app_id = p.app_id AND d.token = t.token "
            f"WHERE p.id % {sms_every} = 0"
        )
        conn.execute(f"UPDATE pushes SET fallback_state = {done}, fallback_ended_at = accepted_at + 3601 "
                     f"WHERE id % {sms_every} = 0")
        if conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'push_stats'").fetchone():
            from pushreachd.store.sqlite import stats  # only in schemas that have the counters

            stats.rebuild(conn)
        conn.execute("COMMIT")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()


def add_pending_fanout(db: Path, pushes: int, targets: int, due_at: float, *, accepted_at: float, delay: int) -> None:
    """`pushes` pushes of `targets` targets each, every target bound to its own phone, with a
    PENDING fallback due at `due_at` (push ids b..., tokens tok-P-T)."""
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=OFF")
        migrate(conn)
        (app_id,) = conn.execute("SELECT min(id) FROM apps").fetchone()
        (base,) = conn.execute("SELECT coalesce(max(id), 0) FROM pushes").fetchone()
        spec = spec_json(delay)
        pending = int(FallbackState.PENDING)
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO pushes (id, app_id, push_id, request_id, spec, accepted_at, target_count, "
            "fallback_state, fallback_due_at, delivered_at) VALUES (?,?,?,'',?,?,?,?,?,?)",
            ((base + p + 1, app_id, f"b{base + p + 1:019x}", spec, accepted_at, targets, pending, due_at, accepted_at)
             for p in range(pushes)),
        )
        conn.executemany(
            "INSERT INTO targets (push, token, seq, account) VALUES (?,?,?,'')",
            ((base + p + 1, f"tok-{p}-{t}", t) for p in range(pushes) for t in range(targets)),
        )
        conn.executemany(
            "INSERT INTO devices (app_id, token, phone, updated_at) VALUES (?,?,?,?)",
            ((app_id, f"tok-{p}-{t}", phone(p * targets + t), accepted_at) for p in range(pushes) for t in range(targets)),
        )
        conn.execute("COMMIT")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
