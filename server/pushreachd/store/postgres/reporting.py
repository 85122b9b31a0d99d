"""Reporting on PostgreSQL: statistics per 15-minute slot (from the counters of migration 5) and the
app's push list (the same answers as store/sqlite/reporting.py)."""

from __future__ import annotations

from collections.abc import Callable

import psycopg

from ...model import FallbackState, PushListItem, Statistics
from .. import slots
from ..base import STATISTICS_SLOT

Conn = psycopg.AsyncConnection


async def statistics(c: Conn, app_id: int, start: float, end: float) -> Statistics:
    return slots.total(await statistics_by_slot(c, app_id, start, end), start, end)


async def statistics_by_slot(c: Conn, app_id: int, start: float, end: float) -> list[Statistics]:
    """Whole slots from the counters (push_stats, sms_stats: one row per backend that wrote, summed
    here), the range's ends scanned (slots.plan)."""
    plan = slots.plan(start, end)
    found: dict[int, slots.Sums] = {}

    def of(k: int) -> slots.Sums:
        return found.setdefault(k, slots.new_sums())

    first, last = plan.counted
    if first < last:
        cur = await c.execute(
            "SELECT slot, sum(pushes), sum(targets), sum(pending), sum(arrived), sum(clicked) FROM push_stats "
            "WHERE app_id=%s AND slot >= %s AND slot < %s GROUP BY slot",
            (app_id, first, last),
        )
        found = {int(r[0]): [int(r[1]), int(r[2]), int(r[3]), int(r[4]), int(r[5]), {}, 0] for r in await cur.fetchall()}
        cur = await c.execute(
            "SELECT slot, status, sum(records), sum(fee) FROM sms_stats "
            "WHERE app_id=%s AND slot >= %s AND slot < %s GROUP BY slot, status",
            (app_id, first, last),
        )
        for k, status, records, fee in await cur.fetchall():
            slots.add_sms(of(int(k)), status, int(records), int(fee))
    for sign, ranges in ((1, plan.add), (-1, plan.subtract)):
        for lo, hi in ranges:
            await _scan(c, app_id, lo, hi, of, sign)
    return slots.statistics(found, start, end)


async def _scan(c: Conn, app_id: int, start: float, end: float, of: Callable[[int], slots.Sums], sign: int) -> None:
    """The pushes accepted in [start, end), by slot, read from the rows."""
    slot = f"trunc(p.accepted_at / {STATISTICS_SLOT})::bigint"
    where = "p.app_id=%s AND p.accepted_at >= %s AND p.accepted_at < %s"
    args = (app_id, start, end)
    cur = await c.execute(
        f"SELECT {slot}, count(*), coalesce(sum(p.target_count), 0), "
        f"count(*) FILTER (WHERE p.fallback_state = {int(FallbackState.PENDING)}) "
        f"FROM pushes p WHERE {where} GROUP BY 1",
        args,
    )
    for k, pushes, targets, pending in await cur.fetchall():
        slots.add_pushes(of(k), pushes, int(targets), pending, sign)
    cur = await c.execute(
        f"SELECT {slot}, count(coalesce(t.arrived_at, t.clicked_at)), count(t.clicked_at) "
        f"FROM pushes p JOIN targets t ON t.push = p.id WHERE {where} GROUP BY 1",
        args,
    )
    for k, arrived, clicked in await cur.fetchall():
        slots.add_events(of(k), arrived, clicked, sign)
    cur = await c.execute(
        f"SELECT {slot}, r.status, count(*), coalesce(sum(r.fee), 0) "
        f"FROM pushes p JOIN sms_records r ON r.push = p.id WHERE {where} GROUP BY 1, 2",
        args,
    )
    for k, status, count, fees in await cur.fetchall():
        slots.add_sms(of(k), status, count, int(fees), sign)


async def add_events(c: Conn, app_id: int, deltas: dict[int, list[int]]) -> None:
    """Count newly arrived / clicked targets (slot -> [arrived, clicked]) in this backend's rows."""
    rows = [(app_id, slot, a, cl) for slot, (a, cl) in sorted(deltas.items()) if a or cl]
    if rows:
        async with c.cursor() as cur:
            await cur.executemany(
                "INSERT INTO push_stats AS s (app_id, slot, shard, arrived, clicked) "
                "VALUES (%s, %s, pg_backend_pid(), %s, %s) ON CONFLICT (app_id, slot, shard) DO UPDATE SET "
                "arrived = s.arrived + excluded.arrived, clicked = s.clicked + excluded.clicked",
                rows,
            )


def _like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


async def list_pushes(
    c: Conn, app_id: int, query: str, before: tuple[float, int] | None, limit: int
) -> list[PushListItem]:
    title = "title"  # a column since the console migration (in pushes_by_app_time with push_id)
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
        PushListItem(r[0], r[1], r[2], r[3], r[4], FallbackState(r[5]), r[6])
        for r in await cur.fetchall()
    ]
