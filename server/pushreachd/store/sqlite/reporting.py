"""Reporting aggregates: one push's funnel, an app's statistics over a period."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

from ...model import (
    FallbackState,
    Funnel,
    PushListItem,
    Statistics,
)
from .. import slots
from ..base import STATISTICS_SLOT, funnel_of


def funnel(c: sqlite3.Connection, push: int) -> Funnel:
    by_outcome = c.execute(
        "SELECT outcome, count(*), count(coalesce(arrived_at, clicked_at)), count(clicked_at) FROM targets "
        "WHERE push=? GROUP BY outcome",
        (push,),
    ).fetchall()
    by_status = dict(c.execute("SELECT status, count(*) FROM sms_records WHERE push=? GROUP BY status", (push,)).fetchall())
    no_phone = c.execute("SELECT no_phone_count FROM pushes WHERE id=?", (push,)).fetchone()[0]
    (after_sms,) = c.execute(
        # CROSS JOIN fixes the order (the push's targets first): left to the planner,
        # it reads every device of the app.
        "SELECT count(*) FROM targets t CROSS JOIN pushes p ON p.id = t.push "
        "CROSS JOIN devices d ON d.app_id = p.app_id AND d.token = t.token "
        "JOIN sms_records r ON r.push = t.push AND r.phone = d.phone "
        "WHERE t.push=? AND r.sent_at IS NOT NULL "
        "AND coalesce(t.arrived_at, t.clicked_at) > r.sent_at",
        (push,),
    ).fetchone()
    return funnel_of(by_outcome, by_status, no_phone, after_sms)


def statistics(c: sqlite3.Connection, app_id: int, start: float, end: float) -> Statistics:
    return slots.total(statistics_by_slot(c, app_id, start, end), start, end)


def statistics_by_slot(c: sqlite3.Connection, app_id: int, start: float, end: float) -> list[Statistics]:
    """Whole slots from the counters (push_stats, sms_stats), the range's ends scanned (slots.plan)."""
    plan = slots.plan(start, end)
    found: dict[int, slots.Sums] = {}

    def of(k: int) -> slots.Sums:
        return found.setdefault(k, slots.new_sums())

    first, last = plan.counted
    if first < last:
        found = {
            k: [pushes, targets, pending, arrived, clicked, {}, 0]
            for k, pushes, targets, pending, arrived, clicked in c.execute(
                "SELECT slot, pushes, targets, pending, arrived, clicked FROM push_stats "
                "WHERE app_id=? AND slot >= ? AND slot < ?",
                (app_id, first, last),
            )
        }
        for k, status, records, fee in c.execute(
            "SELECT slot, status, records, fee FROM sms_stats WHERE app_id=? AND slot >= ? AND slot < ? AND records != 0",
            (app_id, first, last),
        ):
            slots.add_sms(of(k), status, records, fee)
    for sign, ranges in ((1, plan.add), (-1, plan.subtract)):
        for lo, hi in ranges:
            _scan(c, app_id, lo, hi, of, sign)
    return slots.statistics(found, start, end)


def _scan(c: sqlite3.Connection, app_id: int, start: float, end: float, of: Callable[[int], slots.Sums],
          sign: int) -> None:
    """The pushes accepted in [start, end), by slot, read from the rows."""
    slot = f"CAST(p.accepted_at / {STATISTICS_SLOT} AS INTEGER)"
    where = "p.app_id=? AND p.accepted_at >= ? AND p.accepted_at < ?"
    args = (app_id, start, end)
    for k, pushes, targets, pending in c.execute(
        f"SELECT {slot}, count(*), coalesce(sum(p.target_count), 0), "
        f"coalesce(sum(p.fallback_state = {int(FallbackState.PENDING)}), 0) "
        f"FROM pushes p WHERE {where} GROUP BY 1",
        args,
    ):
        slots.add_pushes(of(k), pushes, targets, pending, sign)
    for k, arrived, clicked in c.execute(
        f"SELECT {slot}, count(coalesce(t.arrived_at, t.clicked_at)), count(t.clicked_at) "
        f"FROM pushes p JOIN targets t ON t.push = p.id WHERE {where} GROUP BY 1",
        args,
    ):
        slots.add_events(of(k), arrived, clicked, sign)
    for k, status, count, fees in c.execute(
        f"SELECT {slot}, r.status, count(*), coalesce(sum(r.fee), 0) "
        f"FROM pushes p JOIN sms_records r ON r.push = p.id WHERE {where} GROUP BY 1, 2",
        args,
    ):
        slots.add_sms(of(k), status, count, fees, sign)


def _like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def list_pushes(
    c: sqlite3.Connection, app_id: int, query: str, before: tuple[float, int] | None, limit: int
) -> list[PushListItem]:
    # The filter reads pushes_by_app_time (app_id, accepted_at, push_id, title) newest first and
    # fetches a row only for what it keeps, so a search matching nothing reads the index only.
    sql = (
        "SELECT id, push_id, title, accepted_at, target_count, fallback_state, "
        "fallback_due_at FROM pushes WHERE app_id=?"
    )
    args: list[object] = [app_id]
    if before is not None:
        sql += " AND (accepted_at < ? OR (accepted_at = ? AND id < ?))"
        args += [before[0], before[0], before[1]]
    if query:
        sql += " AND (push_id LIKE ? ESCAPE '\\' OR title LIKE ? ESCAPE '\\')"
        args += [_like(query) + "%", "%" + _like(query) + "%"]
    sql += " ORDER BY accepted_at DESC, id DESC LIMIT ?"
    args.append(limit)
    return [
        PushListItem(r[0], r[1], r[2], r[3], r[4], FallbackState(r[5]), r[6])
        for r in c.execute(sql, args)
    ]
