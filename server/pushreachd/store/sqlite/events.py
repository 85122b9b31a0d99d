"""Events: arrivals and clicks on a push's targets, and a device's notification state."""

from __future__ import annotations

import json
import sqlite3

from ...model import EventIn, EventOutcome, EventType
from .. import slots as slot_sums
from . import stats


def record(conn: sqlite3.Connection, app_id: int, events: list[EventIn], now: float) -> list[EventOutcome]:
    """Each event's outcome, in order; a later event sees the effect of an earlier one."""
    about_push = [i for i, e in enumerate(events) if e.event_type in _PUSH_EVENTS]
    if len(about_push) >= _SET_BASED_FROM:
        outcomes: list[EventOutcome | None] = [None] * len(events)
        for i, outcome in zip(about_push, _record_push_events(conn, app_id, [events[i] for i in about_push])):
            outcomes[i] = outcome
        for i, e in enumerate(events):
            if outcomes[i] is None:
                outcomes[i] = _record_notification_state(conn, app_id, e, now)
        return outcomes  # type: ignore[return-value]
    push_rows: dict[str, tuple[int, int] | None] = {}
    deltas: dict[int, list[int]] = {}
    found = []
    for e in events:
        if e.event_type.about_push:
            if e.push_id not in push_rows:
                row = conn.execute(
                    "SELECT id, accepted_at FROM pushes WHERE push_id=? AND app_id=?", (e.push_id, app_id)
                ).fetchone()
                push_rows[e.push_id] = (row[0], slot_sums.slot_of(row[1])) if row else None
            push = push_rows[e.push_id]
            found.append(EventOutcome.UNKNOWN_PUSH if push is None else _record_push_event(conn, *push, e, deltas))
        else:
            found.append(_record_notification_state(conn, app_id, e, now))
    stats.add_events(conn, app_id, deltas)
    return found


def _record_push_event(
    conn: sqlite3.Connection, push: int, slot: int, e: EventIn, deltas: dict[int, list[int]]
) -> EventOutcome:
    row = conn.execute("SELECT arrived_at, clicked_at FROM targets WHERE push=? AND token=?", (push, e.token)).fetchone()
    if row is None:
        return EventOutcome.UNKNOWN_TOKEN
    arrived_at, clicked_at = row
    if e.event_type is EventType.ARRIVED:
        if arrived_at is not None and arrived_at <= e.event_time:
            return EventOutcome.DUPLICATE
        conn.execute("UPDATE targets SET arrived_at=? WHERE push=? AND token=?", (e.event_time, push, e.token))
        slot_sums.event_delta(deltas, slot, (arrived_at, clicked_at), (e.event_time, clicked_at))
        return EventOutcome.ACCEPTED if arrived_at is None else EventOutcome.DUPLICATE
    if clicked_at is not None and clicked_at <= e.event_time:
        return EventOutcome.DUPLICATE
    # A click implies arrival: record the arrival too if none came first.
    conn.execute(
        "UPDATE targets SET clicked_at=?, arrived_at=min(coalesce(arrived_at, ?), ?) WHERE push=? AND token=?",
        (e.event_time, e.event_time, e.event_time, push, e.token),
    )
    slot_sums.event_delta(deltas, slot, (arrived_at, clicked_at), (e.event_time, e.event_time))
    return EventOutcome.ACCEPTED if clicked_at is None else EventOutcome.DUPLICATE


_PUSH_EVENTS = frozenset((EventType.ARRIVED, EventType.CLICKED))
# From this many arrival/click events in one call, they are recorded in sets (below); fewer
# (the unary RPC) take the per-event statements, which are cheaper for one or two.
_SET_BASED_FROM = 4


def _record_push_events(conn: sqlite3.Connection, app_id: int, events: list[EventIn]) -> list[EventOutcome]:
    """Arrivals and clicks, in sets: one query for the pushes they name, one per push for its
    targets' current times, one executemany for the targets that change. (Times stay bound
    parameters, never JSON: SQLite writes a REAL to JSON with 15 digits, which would lose
    precision.)

    Each event's outcome is what `_record_push_event` would have answered taking the events
    one by one in order (an event for the same target as an earlier one sees its effect)."""
    pushes: dict[str, int] = {}
    slots: dict[int, int] = {}
    for push_id, push, accepted_at in conn.execute(
        # CROSS JOIN: the named pushes first, each found by its unique push_id.
        "SELECT j.value, p.id, p.accepted_at FROM json_each(?) j CROSS JOIN pushes p ON p.push_id = j.value "
        "WHERE p.app_id = ?",
        (json.dumps(list({e.push_id for e in events})), app_id),
    ):
        pushes[push_id] = push
        slots[push] = slot_sums.slot_of(accepted_at)
    tokens_of: dict[int, set[str]] = {}
    for e in events:
        if e.push_id in pushes:
            tokens_of.setdefault(pushes[e.push_id], set()).add(e.token)
    times: dict[tuple[int, str], list[float | None]] = {}
    for push, tokens in tokens_of.items():  # one query per push (a message is mostly about few)
        for token, arrived_at, clicked_at in conn.execute(
            "SELECT t.token, t.arrived_at, t.clicked_at FROM json_each(?) j CROSS JOIN targets t "
            "ON t.push = ? AND t.token = j.value",
            (json.dumps(list(tokens)), push),
        ):
            times[(push, token)] = [arrived_at, clicked_at]
    # Newly arrived / clicked targets per push, counted as the outcomes are decided.
    arrived_new: dict[int, int] = {}
    clicked_new: dict[int, int] = {}
    changed: dict[tuple[int, str], list[float | None]] = {}
    outcomes = []
    for e in events:
        push = pushes.get(e.push_id)
        if push is None:
            outcomes.append(EventOutcome.UNKNOWN_PUSH)
            continue
        key = (push, e.token)
        t = times.get(key)
        if t is None:
            outcomes.append(EventOutcome.UNKNOWN_TOKEN)
            continue
        arrived_at, clicked_at = t
        at = e.event_time
        if e.event_type is EventType.ARRIVED:
            if arrived_at is not None and arrived_at <= at:
                outcomes.append(EventOutcome.DUPLICATE)
                continue
            t[0] = at
            if arrived_at is None and clicked_at is None:
                arrived_new[push] = arrived_new.get(push, 0) + 1
            outcomes.append(EventOutcome.ACCEPTED if arrived_at is None else EventOutcome.DUPLICATE)
        else:
            if clicked_at is not None and clicked_at <= at:
                outcomes.append(EventOutcome.DUPLICATE)
                continue
            # A click implies arrival: record the arrival too if none came first.
            t[0] = at if arrived_at is None else min(arrived_at, at)
            t[1] = at
            if clicked_at is None:
                clicked_new[push] = clicked_new.get(push, 0) + 1
                if arrived_at is None:
                    arrived_new[push] = arrived_new.get(push, 0) + 1
            outcomes.append(EventOutcome.ACCEPTED if clicked_at is None else EventOutcome.DUPLICATE)
        changed[key] = t
    if changed:
        conn.executemany(
            "UPDATE targets SET arrived_at=?, clicked_at=? WHERE push=? AND token=?",
            [(t[0], t[1], push, token) for (push, token), t in changed.items()],
        )
        stats.add_events(conn, app_id, slot_sums.by_slot(slots, arrived_new, clicked_new))
    return outcomes


def _record_notification_state(conn: sqlite3.Connection, app_id: int, e: EventIn, now: float) -> EventOutcome:
    enabled = 1 if e.event_type is EventType.NOTIFICATION_ENABLED else 0
    row = conn.execute(
        "SELECT notifications_enabled, notification_time FROM devices WHERE app_id=? AND token=?",
        (app_id, e.token),
    ).fetchone()
    if row is not None and row[1] is not None:
        if row[1] > e.event_time:
            return EventOutcome.DUPLICATE  # an older report than the one we hold: latest wins
        if row[1] == e.event_time and row[0] == enabled:
            return EventOutcome.DUPLICATE
    conn.execute(
        "INSERT INTO devices (app_id, token, notifications_enabled, notification_time, updated_at) "
        "VALUES (?,?,?,?,?) ON CONFLICT (app_id, token) DO UPDATE SET "
        "notifications_enabled=excluded.notifications_enabled, notification_time=excluded.notification_time, "
        "updated_at=excluded.updated_at",
        (app_id, e.token, enabled, e.event_time, now),
    )
    return EventOutcome.ACCEPTED
