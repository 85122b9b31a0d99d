"""Reading back what happened: SMS records (filtered, paged) and an app's statistics."""

from __future__ import annotations

from ..clock import Clock
from ..model import App, SmsRecord, SmsRecordFilter, Statistics
from ..store.base import Store
from .pagination import decode_token, encode_token
from .validation import Violations, page_size, validate_phone

DEFAULT_STATISTICS_DAYS = 7
EARLIEST = -62135596800  # 0001-01-01T00:00:00Z


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
        end = self._clock.time() if end is None else end
        if start is None:  # the default window, never before year 1 (what a Timestamp can say)
            start = max(end - DEFAULT_STATISTICS_DAYS * 86400, EARLIEST)
        if end <= start:
            v = Violations()
            v.add("end_time", "must be after start_time")
            v.raise_if_any()
        return await self._store.statistics(app.id, start, end)
