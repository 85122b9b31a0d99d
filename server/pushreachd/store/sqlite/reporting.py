"""Reporting aggregates: one push's funnel, an app's statistics over a period."""

from __future__ import annotations

import sqlite3

from ...model import (
    FallbackState,
    Funnel,
    PushListItem,
    PushOutcome,
    SmsCounts,
    SmsStatus,
    Statistics,
)
from ..base import STATISTICS_SLOT


def funnel(c: sqlite3.Connection, push: int) -> Funnel:
    targets, arrived, clicked = c.execute(
        "SELECT count(*), count(coalesce(arrived_at, clicked_at)), count(clicked_at) FROM targets WHERE push=?",
        (push,),
    ).fetchone()
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

    by_outcome = dict(c.execute("SELECT outcome, count(*) FROM targets WHERE push=? GROUP BY outcome", (push,)))
    sms = SmsCounts.of({SmsStatus(status): count for status, count in by_status.items()})
    return Funnel(
        push_accepted_count=by_outcome.get(int(PushOutcome.ACCEPTED), 0),
        push_invalid_token_count=by_outcome.get(int(PushOutcome.INVALID_TOKEN), 0),
        push_failed_count=by_outcome.get(int(PushOutcome.FAILED), 0),
        push_expired_count=by_outcome.get(int(PushOutcome.EXPIRED), 0),
        push_no_channel_count=by_outcome.get(int(PushOutcome.NO_CHANNEL), 0),
        push_pending_count=by_outcome.get(None, 0) + by_outcome.get(int(PushOutcome.PENDING), 0),
        target_count=targets,
        arrived_count=arrived,
        clicked_count=clicked,
        sms_sent_count=sms.sent,
        sms_delivered_count=sms.delivered,
        sms_failed_count=sms.failed,
        sms_rate_limited_count=sms.rate_limited,
        no_phone_count=no_phone,
        arrived_after_sms_count=after_sms,
        sms_unknown_count=sms.unknown,
        sms_undelivered_count=sms.undelivered,
        sms_pending_count=sms.pending,
    )


def statistics(c: sqlite3.Connection, app_id: int, start: float, end: float) -> Statistics:
    pushes, targets, pending = c.execute(
        "SELECT count(*), coalesce(sum(target_count), 0), "
        f"coalesce(sum(fallback_state = {int(FallbackState.PENDING)}), 0) "
        "FROM pushes WHERE app_id=? AND accepted_at >= ? AND accepted_at < ?",
        (app_id, start, end),
    ).fetchone()
    arrived, clicked = c.execute(
        "SELECT count(coalesce(t.arrived_at, t.clicked_at)), count(t.clicked_at) FROM pushes p "
        "JOIN targets t ON t.push = p.id WHERE p.app_id=? AND p.accepted_at >= ? AND p.accepted_at < ?",
        (app_id, start, end),
    ).fetchone()
    by_status: dict[SmsStatus, int] = {}
    fee = 0
    for status, count, fees in c.execute(
        "SELECT r.status, count(*), coalesce(sum(r.fee), 0) FROM pushes p JOIN sms_records r ON r.push = p.id "
        "WHERE p.app_id=? AND p.accepted_at >= ? AND p.accepted_at < ? GROUP BY r.status",
        (app_id, start, end),
    ):
        by_status[SmsStatus(status)] = count
        fee += fees
    return Statistics(
        start_time=start,
        end_time=end,
        push_count=pushes,
        target_count=targets,
        arrived_count=arrived,
        clicked_count=clicked,
        sms_by_status=by_status,
        sms_fee=fee,
        pending_fallback_count=pending,
    )


def statistics_by_slot(c: sqlite3.Connection, app_id: int, start: float, end: float) -> list[Statistics]:
    """The same sums as `statistics`, grouped by STATISTICS_SLOT-second slot of accepted_at."""
    slot = f"CAST(p.accepted_at / {STATISTICS_SLOT} AS INTEGER)"
    where = "p.app_id=? AND p.accepted_at >= ? AND p.accepted_at < ?"
    args = (app_id, start, end)
    slots: dict[int, dict] = {}

    def of(k: int) -> dict:
        return slots.setdefault(k, {"pushes": 0, "targets": 0, "pending": 0, "arrived": 0, "clicked": 0,
                                    "by_status": {}, "fee": 0})

    for k, pushes, targets, pending in c.execute(
        f"SELECT {slot}, count(*), coalesce(sum(p.target_count), 0), "
        f"coalesce(sum(p.fallback_state = {int(FallbackState.PENDING)}), 0) "
        f"FROM pushes p WHERE {where} GROUP BY 1",
        args,
    ):
        s = of(k)
        s["pushes"], s["targets"], s["pending"] = pushes, targets, pending
    for k, arrived, clicked in c.execute(
        f"SELECT {slot}, count(coalesce(t.arrived_at, t.clicked_at)), count(t.clicked_at) "
        f"FROM pushes p JOIN targets t ON t.push = p.id WHERE {where} GROUP BY 1",
        args,
    ):
        s = of(k)
        s["arrived"], s["clicked"] = arrived, clicked
    for k, status, count, fees in c.execute(
        f"SELECT {slot}, r.status, count(*), coalesce(sum(r.fee), 0) "
        f"FROM pushes p JOIN sms_records r ON r.push = p.id WHERE {where} GROUP BY 1, 2",
        args,
    ):
        s = of(k)
        s["by_status"][SmsStatus(status)] = count
        s["fee"] += fees
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


def list_pushes(
    c: sqlite3.Connection, app_id: int, query: str, before: tuple[float, int] | None, limit: int
) -> list[PushListItem]:
    sql = (
        "SELECT id, push_id, json_extract(spec, '$.title'), accepted_at, target_count, fallback_state, "
        "fallback_due_at FROM pushes WHERE app_id=?"
    )
    args: list[object] = [app_id]
    if before is not None:
        sql += " AND (accepted_at < ? OR (accepted_at = ? AND id < ?))"
        args += [before[0], before[0], before[1]]
    if query:
        sql += " AND (push_id LIKE ? ESCAPE '\\' OR json_extract(spec, '$.title') LIKE ? ESCAPE '\\')"
        args += [_like(query) + "%", "%" + _like(query) + "%"]
    sql += " ORDER BY accepted_at DESC, id DESC LIMIT ?"
    args.append(limit)
    return [
        PushListItem(r[0], r[1], r[2] or "", r[3], r[4], FallbackState(r[5]), r[6])
        for r in c.execute(sql, args)
    ]
