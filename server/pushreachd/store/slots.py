"""How a store answers statistics_by_slot from its per-slot counters: which whole slots to read
from the counters and which pieces of accepted_at to scan (the range's ends are rarely on a slot
boundary), and the sums per slot. The same plan for SQLite and PostgreSQL."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..model import SmsStatus, Statistics
from .base import STATISTICS_SLOT


def slot_of(accepted_at: float) -> int:
    """The slot of a push as the stores' triggers compute it (CAST(accepted_at / 900 AS INTEGER),
    trunc(accepted_at / 900))."""
    return int(accepted_at / STATISTICS_SLOT)


def event_delta(deltas: dict[int, list[int]], slot: int, before: tuple[float | None, float | None],
                after: tuple[float | None, float | None]) -> None:
    """Add one target's change of (arrived_at, clicked_at) to `deltas` (slot -> [arrived, clicked]):
    it counts as arrived once either time is set, as clicked once clicked_at is."""
    arrived = (after[0] is not None or after[1] is not None) - (before[0] is not None or before[1] is not None)
    clicked = (after[1] is not None) - (before[1] is not None)
    if arrived or clicked:
        d = deltas.setdefault(slot, [0, 0])
        d[0] += arrived
        d[1] += clicked


def by_slot(slot_of_push: dict[int, int], arrived: dict[int, int], clicked: dict[int, int]) -> dict[int, list[int]]:
    """Per-push counts of newly arrived / clicked targets as slot -> [arrived, clicked]."""
    deltas: dict[int, list[int]] = {}
    for push, n in arrived.items():
        deltas.setdefault(slot_of_push[push], [0, 0])[0] += n
    for push, n in clicked.items():
        deltas.setdefault(slot_of_push[push], [0, 0])[1] += n
    return deltas


@dataclass(frozen=True)
class Plan:
    counted: tuple[int, int]  # slots first <= k < last come from the counters (empty when first >= last)
    add: tuple[tuple[float, float], ...]  # [lo, hi) ranges of accepted_at scanned and added
    subtract: tuple[tuple[float, float], ...]  # scanned and taken off a counted slot


def plan(start: float, end: float) -> Plan:
    """Whole slots come from the counters. The slot holding `start`: the shorter of its two parts
    is scanned (the part in range added, or the part before taken off the slot's counters). The
    slot holding `end`: its counters minus the part from `end` on, which is empty when the range
    ends now (the console's ranges do); at most one slot of pushes otherwise."""
    s = STATISTICS_SLOT
    first, last = math.ceil(start / s), math.floor(end / s)
    if first > last:  # start and end inside one slot
        return Plan((0, 0), ((start, end),), ())
    lo, hi = first, last
    add: list[tuple[float, float]] = []
    subtract: list[tuple[float, float]] = []
    if start < first * s:
        if first * s - start <= start - (first - 1) * s:
            add.append((start, first * s))
        else:
            lo = first - 1
            subtract.append(((first - 1) * s, start))
    if end > last * s:
        hi = last + 1
        subtract.append((end, (last + 1) * s))
    return Plan((lo, hi), tuple(add), tuple(subtract))


# One slot's sums, a list for speed (a month holds 2,880 slots):
# [pushes, targets, pending, arrived, clicked, {status: records}, fee].
Sums = list


def new_sums() -> Sums:
    return [0, 0, 0, 0, 0, {}, 0]


def add_pushes(s: Sums, pushes: int, targets: int, pending: int, sign: int = 1) -> None:
    s[0] += sign * pushes
    s[1] += sign * targets
    s[2] += sign * pending


def add_events(s: Sums, arrived: int, clicked: int, sign: int = 1) -> None:
    s[3] += sign * arrived
    s[4] += sign * clicked


def add_sms(s: Sums, status: int, records: int, fee: int, sign: int = 1) -> None:
    by = s[5]
    by[status] = by.get(status, 0) + sign * records
    s[6] += sign * fee


def statistics(slots: dict[int, Sums], start: float, end: float) -> list[Statistics]:
    """One Statistics per slot with a push in range, oldest first, bounds clipped to the range."""
    n = STATISTICS_SLOT
    return [
        Statistics(
            max(start, k * n), min(end, (k + 1) * n), s[0], s[1], s[3], s[4],
            {SmsStatus(status): records for status, records in s[5].items() if records}, s[6], s[2],
        )
        for k, s in sorted(slots.items())
        if s[0] > 0
    ]


def total(slots: list[Statistics], start: float, end: float) -> Statistics:
    """The sum of statistics_by_slot's answer over [start, end)."""
    by: dict[SmsStatus, int] = {}
    for s in slots:
        for status, n in s.sms_by_status.items():
            by[status] = by.get(status, 0) + n
    return Statistics(
        start_time=start,
        end_time=end,
        push_count=sum(s.push_count for s in slots),
        target_count=sum(s.target_count for s in slots),
        arrived_count=sum(s.arrived_count for s in slots),
        clicked_count=sum(s.clicked_count for s in slots),
        sms_by_status=by,
        sms_fee=sum(s.sms_fee for s in slots),
        pending_fallback_count=sum(s.pending_fallback_count for s in slots),
    )
