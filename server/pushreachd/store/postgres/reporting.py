"""Reporting reads on PostgreSQL: statistics per 15-minute slot and the app's push list
(the same answers as store/sqlite/reporting.py)."""

from __future__ import annotations

from typing import Any

import psycopg

from ...model import FallbackState, PushListItem, SmsStatus, Statistics
from ..base import STATISTICS_SLOT

Conn = psycopg.AsyncConnection


async def statistics_by_slot(c: Conn, app_id: int, start: float, end: float) -> list[Statistics]:
    slot = f"trunc(p.accepted_at / {STATISTICS_SLOT})::bigint"
    where = "p.app_id=%s AND p.accepted_at >= %s AND p.accepted_at < %s"
    args = (app_id, start, end)
    slots: dict[int, dict[str, Any]] = {}

    def of(k: int) -> dict[str, Any]:
        return slots.setdefault(k, {"pushes": 0, "targets": 0, "pending": 0, "arrived": 0, "clicked": 0,
                                    "by_status": {}, "fee": 0})

    cur = await c.execute(
        f"SELECT {slot}, count(*), coalesce(sum(p.target_count), 0), "
        f"count(*) FILTER (WHERE p.fallback_state = {int(FallbackState.PENDING)}) "
        f"FROM pushes p WHERE {where} GROUP BY 1",
        args,
    )
    for k, pushes, targets, pending in await cur.fetchall():
        s = of(k)
        s["pushes"], s["targets"], s["pending"] = pushes, int(targets), pending
    cur = await c.execute(
        f"SELECT {slot}, count(coalesce(t.arrived_at, t.clicked_at)), count(t.clicked_at) "
        f"FROM pushes p JOIN targets t ON t.push = p.id WHERE {where} GROUP BY 1",
        args,
    )
    for k, arrived, clicked in await cur.fetchall():
        s = of(k)
        s["arrived"], s["clicked"] = arrived, clicked
    cur = await c.execute(
        f"SELECT {slot}, r.status, count(*), coalesce(sum(r.fee), 0) "
        f"FROM pushes p JOIN sms_records r ON r.push = p.id WHERE {where} GROUP BY 1, 2",
        args,
    )
    for k, status, count, fees in await cur.fetchall():
        s = of(k)
        s["by_status"][SmsStatus(status)] = count
        s["fee"] += int(fees)
    return [
        Statistics(
            start_time=max(start, k * STATISTICS_SLOT),
            end_time=min(end, (k + 1) * STATISTICS_SLOT),
            push_count=s["pushes"],
            target_count=s["targets"],
            arrived_count=s["arrived"],
            clicked_count=s["clicked"],
            sms_by_status=s["by_status"],
            sms_fee=s["fee"],
            pending_fallback_count=s["pending"],
        )
        for k, s in sorted(slots.items())
    ]


def _like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


async def list_pushes(
    c: Conn, app_id: int, query: str, before: tuple[float, int] | None, limit: int
) -> list[PushListItem]:
    title = "(spec::jsonb->>'title')"
    sql = (
        f"SELECT id, push_id, {title}, accepted_at, target_count, fallback_state, fallback_due_at "
        "FROM pushes WHERE app_id=%s"
    )
    args: list[object] = [app_id]
    if before is not None:
        sql += " AND (accepted_at, id) < (%s, %s)"
        args += [before[0], before[1]]
    if query:
        # ILIKE, as SQLite's LIKE: case-insensitive (PostgreSQL's also beyond ASCII).
        sql += f" AND (push_id ILIKE %s ESCAPE '\\' OR {title} ILIKE %s ESCAPE '\\')"
        args += [_like(query) + "%", "%" + _like(query) + "%"]
    sql += " ORDER BY accepted_at DESC, id DESC LIMIT %s"
    args.append(limit)
    cur = await c.execute(sql, args)
    return [
        PushListItem(r[0], r[1], r[2] or "", r[3], r[4], FallbackState(r[5]), r[6])
        for r in await cur.fetchall()
    ]
