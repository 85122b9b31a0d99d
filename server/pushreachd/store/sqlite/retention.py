"""Retention: delete what is over and old, in bounded slices."""

from __future__ import annotations

import sqlite3

from ...model import FallbackState
from ..base import PurgeCounts
from .rows import in_list

_OVER = in_list((FallbackState.DONE, FallbackState.CANCELLED, FallbackState.NONE))


def purge(conn: sqlite3.Connection, finished_before: float | None, idempotency_before: float, limit: int) -> PurgeCounts:
    pushes = targets = records = 0
    if finished_before is not None:
        # ended_at >= accepted_at, so the accepted_at bound only narrows the index range.
        ids = [
            r[0]
            for r in conn.execute(
                f"SELECT id FROM pushes WHERE accepted_at < ? AND fallback_state IN ({_OVER}) "
                "AND coalesce(fallback_ended_at, accepted_at) < ? "
                "AND id NOT IN (SELECT push FROM broadcasts WHERE done = 0) LIMIT ?",
                (finished_before, finished_before, limit),
            )
        ]
        if ids:
            marks = ",".join("?" * len(ids))
            records = conn.execute(f"DELETE FROM sms_records WHERE push IN ({marks})", ids).rowcount
            targets = conn.execute(f"DELETE FROM targets WHERE push IN ({marks})", ids).rowcount
            pushes = conn.execute(f"DELETE FROM pushes WHERE id IN ({marks})", ids).rowcount
            conn.execute(f"DELETE FROM broadcasts WHERE push IN ({marks})", ids)
    idempotency = conn.execute("DELETE FROM idempotency WHERE created_at < ?", (idempotency_before,)).rowcount
    # Receipts kept for a serial number that never came (not ours, or its record is gone).
    conn.execute("DELETE FROM pending_receipts WHERE receive_time < ?", (idempotency_before,))
    return PurgeCounts(pushes, targets, records, idempotency)
