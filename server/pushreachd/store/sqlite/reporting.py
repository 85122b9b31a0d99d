"""Reporting aggregates: one push's funnel, an app's statistics over a period."""

from __future__ import annotations

import sqlite3

from ...model import FallbackState, Funnel, SmsStatus, Statistics


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

    def n(*statuses: SmsStatus) -> int:
        return sum(by_status.get(int(s), 0) for s in statuses)

    return Funnel(
        target_count=targets,
        arrived_count=arrived,
        clicked_count=clicked,
        sms_sent_count=n(SmsStatus.SENT, SmsStatus.DELIVERED, SmsStatus.UNDELIVERED),
        sms_delivered_count=n(SmsStatus.DELIVERED),
        sms_failed_count=n(SmsStatus.FAILED, SmsStatus.UNDELIVERED),
        sms_rate_limited_count=n(SmsStatus.RATE_LIMITED),
        no_phone_count=no_phone,
        arrived_after_sms_count=after_sms,
        sms_unknown_count=n(SmsStatus.UNKNOWN, SmsStatus.SENDING),
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
