"""Reporting counters per (app, STATISTICS_SLOT of accepted_at): tables push_stats and sms_stats
(migration 8). Pushes and SMS records keep them by trigger; arrivals and clicks are added here by
the event writes, one statement per slot a batch touches (a trigger per target row would cost the
event stream a third of its store time)."""

from __future__ import annotations

import sqlite3

from ..base import STATISTICS_SLOT

assert STATISTICS_SLOT == 900, "migration 8's triggers compute slots of 900 s"


def add_events(conn: sqlite3.Connection, app_id: int, deltas: dict[int, list[int]]) -> None:
    """Count newly arrived / clicked targets: slot -> [arrived, clicked]."""
    rows = [(app_id, slot, a, c) for slot, (a, c) in deltas.items() if a or c]
    if rows:
        conn.executemany(
            "INSERT INTO push_stats (app_id, slot, arrived, clicked) VALUES (?,?,?,?) "
            "ON CONFLICT (app_id, slot) DO UPDATE SET arrived = arrived + excluded.arrived, "
            "clicked = clicked + excluded.clicked",
            rows,
        )


def rebuild(conn: sqlite3.Connection) -> None:
    """Recount every counter from the rows (for stores filled by direct SQL, and to check them)."""
    conn.execute("DELETE FROM push_stats")
    conn.execute("DELETE FROM sms_stats")
    conn.execute(
        "INSERT INTO push_stats (app_id, slot, pushes, targets, pending) "
        "SELECT app_id, CAST(accepted_at / 900 AS INTEGER), count(*), sum(target_count), sum(fallback_state = 2) "
        "FROM pushes GROUP BY 1, 2"
    )
    conn.execute(
        "INSERT INTO push_stats (app_id, slot, arrived, clicked) "
        "SELECT p.app_id, CAST(p.accepted_at / 900 AS INTEGER), count(coalesce(t.arrived_at, t.clicked_at)), "
        "count(t.clicked_at) FROM pushes p JOIN targets t ON t.push = p.id WHERE true GROUP BY 1, 2 "
        "ON CONFLICT (app_id, slot) DO UPDATE SET arrived = excluded.arrived, clicked = excluded.clicked"
    )
    conn.execute(
        "INSERT INTO sms_stats (app_id, slot, status, records, fee) "
        "SELECT p.app_id, CAST(p.accepted_at / 900 AS INTEGER), r.status, count(*), sum(r.fee) "
        "FROM pushes p JOIN sms_records r ON r.push = p.id GROUP BY 1, 2, 3"
    )
