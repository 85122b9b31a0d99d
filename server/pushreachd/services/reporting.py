"""Reading back what happened: SMS records (filtered, paged) and an app's statistics."""

from __future__ import annotations

import datetime
import zoneinfo
from dataclasses import replace

from ..clock import Clock
from ..model import (
    App,
    PushListItem,
    SmsRecord,
    SmsRecordFilter,
    SmsStatus,
    Statistics,
    StatisticsInterval,
)
from ..store import slots as slot_sums
from ..store.base import Store
from .pagination import decode_token, encode_token
from .validation import Violations, page_size, validate_phone

DEFAULT_STATISTICS_DAYS = 7
EARLIEST = -62135596800  # 0001-01-01T00:00:00Z
# Most buckets one answer carries: a month of hours, a year and a day of days.
MAX_BUCKETS = {StatisticsInterval.HOUR: 31 * 24, StatisticsInterval.DAY: 366}
MAX_QUERY = 128  # characters of a push-list search


class ReportingService:
    def __init__(self, store: Store, clock: Clock) -> None:
        self._store = store
        self._clock = clock

    async def list_sms_records(
        self, app: App, flt: SmsRecordFilter, size: int, token: str
    ) -> tuple[list[SmsRecord], str]:
        v = Violations()
        if flt.phone_number:
            flt = SmsRecordFilter(
                push_id=flt.push_id,
                phone_number=validate_phone(v, "phone_number", flt.phone_number),
                statuses=flt.statuses,
                start_time=flt.start_time,
                end_time=flt.end_time,
            )
        if flt.start_time is not None and flt.end_time is not None and flt.end_time <= flt.start_time:
            v.add("end_time", "must be after start_time")
        limit = page_size(v, size)
        scope = repr(flt)
        position = decode_token(v, "page_token", token, scope)
        if position is not None and not (
            isinstance(position, list) and len(position) == 2 and all(isinstance(x, (int, float)) for x in position)
        ):
            v.add("page_token", "not a page token from this service")
            position = None
        v.raise_if_any()
        before = (float(position[0]), int(position[1])) if position else None
        records = await self._store.list_sms_records(app.id, flt, before, limit + 1)
        more = len(records) > limit
        records = records[:limit]
        next_token = encode_token([records[-1].created_at, records[-1].id], scope) if more else ""
        return records, next_token

    async def statistics(self, app: App, start: float | None, end: float | None) -> Statistics:
        v = Violations()
        start, end = self._range(v, start, end)
        v.raise_if_any()
        return await self._store.statistics(app.id, start, end)

    def _range(self, v: Violations, start: float | None, end: float | None) -> tuple[float, float]:
        """The range with its defaults: up to now, 7 days long, never before year 1."""
        end = self._clock.time() if end is None else end
        if start is None:
            start = max(end - DEFAULT_STATISTICS_DAYS * 86400, EARLIEST)
        if end <= start:
            v.add("end_time", "must be after start_time")
        return start, end

    async def statistics_series(
        self, app: App, start: float | None, end: float | None, interval: StatisticsInterval, time_zone: str = ""
    ) -> tuple[Statistics, list[Statistics]]:
        """The range's statistics and the same figures per hour or per calendar day of
        `time_zone` (IANA name, default UTC), oldest first; buckets with no push are included
        (at zero) so that a chart has every point. Bucket edges are clipped to the range."""
        v = Violations()
        zone = _zone(v, time_zone)
        start, end = self._range(v, start, end)
        v.raise_if_any()
        edges = _bucket_edges(start, end, interval, zone)
        if len(edges) - 1 > MAX_BUCKETS[interval]:
            v.add("end_time", f"at most {MAX_BUCKETS[interval]} buckets of this interval; narrow the range")
            v.raise_if_any()
        # One pass over the store: the totals are the sum of the buckets.
        slots = await self._store.statistics_by_slot(app.id, start, end)
        buckets: list[Statistics] = []
        total = Statistics(start_time=start, end_time=end)
        i = 0
        for lo, hi in zip(edges, edges[1:]):
            j = i
            while j < len(slots) and slots[j].start_time < hi:
                j += 1
            acc = slot_sums.total(slots[i:j], lo, hi)  # a month of hours is 2,880 slots: no object per step
            i = j
            buckets.append(acc)
            total = _add(total, acc)
        return total, buckets

    async def list_pushes(self, app: App, query: str, size: int, token: str) -> tuple[list[PushListItem], str]:
        """The app's pushes, newest first; `query` keeps those whose push id starts with it or
        whose title contains it."""
        v = Violations()
        query = query.strip()
        if len(query) > MAX_QUERY:
            v.add("query", f"at most {MAX_QUERY} characters")
        limit = page_size(v, size)
        scope = "pushes:" + query
        position = decode_token(v, "page_token", token, scope)
        if position is not None and not (
            isinstance(position, list) and len(position) == 2 and all(isinstance(x, (int, float)) for x in position)
        ):
            v.add("page_token", "not a page token from this service")
            position = None
        v.raise_if_any()
        before = (float(position[0]), int(position[1])) if position else None
        items = await self._store.list_pushes(app.id, query, before, limit + 1)
        more = len(items) > limit
        items = items[:limit]
        return items, encode_token([items[-1].accepted_at, items[-1].id], scope) if more else ""


def _zone(v: Violations, name: str) -> datetime.tzinfo:
    if not name:
        return datetime.timezone.utc
    try:
        if len(name) > 64:
            raise ValueError(name)
        return zoneinfo.ZoneInfo(name)
    except (ValueError, zoneinfo.ZoneInfoNotFoundError):
        v.add("time_zone", "not an IANA time zone name (e.g. Asia/Shanghai)")
        return datetime.timezone.utc


def _bucket_edges(start: float, end: float, interval: StatisticsInterval, zone: datetime.tzinfo) -> list[float]:
    """start, the bucket boundaries strictly inside (start, end), end."""
    edges = [start]
    if interval is StatisticsInterval.HOUR:
        # The zone's hours: its offset is a whole number of quarter hours, so edges fall on slots.
        offset = datetime.datetime.fromtimestamp(start, zone).utcoffset() or datetime.timedelta()
        off = int(offset.total_seconds())
        t = ((int(start) + off) // 3600 + 1) * 3600 - off
        while t < end and len(edges) <= MAX_BUCKETS[interval] + 1:
            edges.append(float(t))
            t += 3600
    else:
        day = datetime.datetime.fromtimestamp(start, zone).date()
        while len(edges) <= MAX_BUCKETS[interval] + 1:
            day += datetime.timedelta(days=1)
            t = datetime.datetime.combine(day, datetime.time(), zone).timestamp()
            if t >= end:
                break
            edges.append(t)
    edges.append(end)
    return edges


def _add(a: Statistics, b: Statistics) -> Statistics:
    by: dict[SmsStatus, int] = dict(a.sms_by_status)
    for status, n in b.sms_by_status.items():
        by[status] = by.get(status, 0) + n
    return replace(
        a,
        push_count=a.push_count + b.push_count,
        target_count=a.target_count + b.target_count,
        arrived_count=a.arrived_count + b.arrived_count,
        clicked_count=a.clicked_count + b.clicked_count,
        sms_by_status=by,
        sms_fee=a.sms_fee + b.sms_fee,
        pending_fallback_count=a.pending_fallback_count + b.pending_fallback_count,
    )
