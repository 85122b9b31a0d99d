"""Statistics per hour or per local day (GetStatistics buckets), the per-slot counters behind
them, and the console's push list, on both real stores."""

from __future__ import annotations

import datetime
import itertools
import zoneinfo
from collections.abc import AsyncIterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pushreachd.errors import InvalidArgument
from pushreachd.engine.ratelimit import RateLimiter
from pushreachd.model import (
    App,
    AudienceType,
    EventIn,
    EventType,
    NewPush,
    PushReceipt,
    PushSpec,
    SmsStatus,
    Statistics,
    StatisticsInterval,
    Target,
)
from pushreachd.services.reporting import ReportingService
from pushreachd.sms.provider import DeliveryReceipt
from pushreachd.store import Store, make_store, slots
from pushreachd.store.base import STATISTICS_SLOT, SmsOutcome
from pushreachd.store.postgres import reporting as pg_reporting
from pushreachd.store.sqlite import SqliteStore
from pushreachd.store.sqlite import reporting as sqlite_reporting

from tests.fakes import FakeClock
from tests.unit.test_store import INFO

START = 1_750_000_000.0  # 2025-06-15T15:06:40Z: not on an hour
ZONES = ["", "UTC", "Asia/Shanghai", "Asia/Kolkata", "America/New_York", "Australia/Adelaide"]
_ids = itertools.count()


@pytest.fixture
async def store(store_db: str) -> AsyncIterator[Store]:
    s = make_store(store_db)
    await s.open()
    try:
        yield s
    finally:
        await s.close()


async def add_push(store: Store, app: App, at: float, targets: int, title: str = "t") -> str:
    push_id = f"p{next(_ids):08d}"
    tokens = tuple(f"tok{i}" for i in range(targets))
    spec = PushSpec(AudienceType.TOKEN_LIST, tokens, (), title, "c")
    receipt = PushReceipt(push_id, targets, (), at, None)
    await store.create_push(NewPush(push_id, app.id, spec, tuple(Target(t) for t in tokens), at, None, "", receipt), "")
    return push_id


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    offsets=st.lists(st.tuples(st.floats(0, 3 * 86400 - 1), st.integers(1, 3)), max_size=25),
    interval=st.sampled_from(list(StatisticsInterval)),
    zone=st.sampled_from(ZONES),
)
async def test_buckets_partition_the_range_and_each_push_counts_in_its_own_bucket(
    store: Store, offsets: list[tuple[float, int]], interval: StatisticsInterval, zone: str
) -> None:
    app = await store.create_app(f"app{next(_ids)}", "series", "verifier", START)
    end = START + 3 * 86400
    accepted = []
    for offset, targets in offsets:
        await add_push(store, app, START + offset, targets)
        accepted.append((START + offset, targets))
    reporting = ReportingService(store, FakeClock(end))
    total, buckets = await reporting.statistics_series(app, START, end, interval, zone)

    assert buckets[0].start_time == START and buckets[-1].end_time == end
    for a, b in zip(buckets, buckets[1:]):
        assert a.end_time == b.start_time  # contiguous, no gap, no overlap
    tz = zoneinfo.ZoneInfo(zone) if zone else datetime.timezone.utc
    for b in buckets[1:]:  # every inner edge is a local hour or a local midnight
        local = datetime.datetime.fromtimestamp(b.start_time, tz)
        assert (local.minute, local.second) == (0, 0)
        if interval is StatisticsInterval.DAY:
            assert local.hour == 0
    for b in buckets:
        inside = [n for at, n in accepted if b.start_time <= at < b.end_time]
        assert (b.push_count, b.target_count) == (len(inside), sum(inside))
    assert total.push_count == sum(b.push_count for b in buckets) == len(accepted)


async def test_a_range_too_long_for_hourly_buckets_is_refused_naming_the_field(store: Store) -> None:
    app = await store.create_app("app-long", "series", "verifier", START)
    reporting = ReportingService(store, FakeClock(START))
    with pytest.raises(InvalidArgument) as e:
        await reporting.statistics_series(app, START, START + 40 * 86400, StatisticsInterval.HOUR)
    assert [v.field for v in e.value.violations] == ["end_time"]
    with pytest.raises(InvalidArgument) as e:
        await reporting.statistics_series(app, START, START + 86400, StatisticsInterval.DAY, "Mars/Olympus")
    assert [v.field for v in e.value.violations] == ["time_zone"]


async def test_push_list_is_newest_first_paged_and_searchable(store: Store) -> None:
    app = await store.create_app("app-list", "list", "verifier", START)
    other = await store.create_app("app-other", "other", "verifier", START)
    ids = [await add_push(store, app, START + i, 1, title=f"Approval #{i}" if i % 2 else f"Order {i}") for i in range(7)]
    await add_push(store, other, START + 100, 1, title="Approval of another app")
    reporting = ReportingService(store, FakeClock(START))

    seen, token = [], ""
    while True:
        page, token = await reporting.list_pushes(app, "", 3, token)
        seen += [p.push_id for p in page]
        if not token:
            break
    assert seen == ids[::-1]

    found, _ = await reporting.list_pushes(app, "approval", 10, "")
    assert [p.title for p in found] == ["Approval #5", "Approval #3", "Approval #1"]  # the other app's is not there
    by_id, _ = await reporting.list_pushes(app, ids[2], 10, "")
    assert [p.push_id for p in by_id] == [ids[2]]
    assert (await reporting.list_pushes(app, "100%_", 10, ""))[0] == []  # LIKE wildcards are literal

    with pytest.raises(InvalidArgument) as e:
        await reporting.list_pushes(app, "order", 3, (await reporting.list_pushes(app, "", 3, ""))[1])
    assert [v.field for v in e.value.violations] == ["page_token"]  # a token of another query


async def _scanned(store: Store, app_id: int, start: float, end: float) -> list[Statistics]:
    """What the rows say, read the way statistics_by_slot read them before the counters."""
    found: dict[int, slots.Sums] = {}

    def of(k: int) -> slots.Sums:
        return found.setdefault(k, slots.new_sums())

    if isinstance(store, SqliteStore):
        await store._read(lambda c: sqlite_reporting._scan(c, app_id, start, end, of, 1))
    else:
        await store._db.read(lambda c: pg_reporting._scan(c, app_id, start, end, of, 1))  # type: ignore[attr-defined]
    return slots.statistics(found, start, end)


async def test_the_counters_answer_what_the_rows_say_through_every_write_that_changes_them(store: Store) -> None:
    app = await store.create_app("app-counters", "counters", "verifier", START)
    other = await store.create_app("app-counters-2", "other", "verifier", START)
    slot = STATISTICS_SLOT
    base = (START // slot) * slot
    # Pushes on, just before and just after slot edges, and inside slots; some with an SMS fallback.
    times = [base + k * slot + d for k in range(0, 12) for d in (0.0, 0.5, slot / 2, slot - 0.25)]
    rows: list[tuple[int, str, float]] = []
    for i, at in enumerate(times):
        push_id, tokens = f"c{i:04d}", tuple(f"tok{j}" for j in range(1 + i % 3))
        due = at + 300 if i % 2 else None
        spec = PushSpec(AudienceType.TOKEN_LIST, tokens, (), "t", "c", resend_by_sms=due is not None,
                        sms_info=INFO if due is not None else None)
        receipt = PushReceipt(push_id, len(tokens), (), at, due)
        _, row = await store.create_push(
            NewPush(push_id, app.id, spec, tuple(Target(t) for t in tokens), at, due, "", receipt), spec.fingerprint()
        )
        assert row is not None
        rows.append((row, push_id, at))
    await store.create_push(  # another app's push counts only there
        NewPush("other", other.id, PushSpec(AudienceType.TOKEN_LIST, ("x",), (), "t", "c"), (Target("x"),), base + 5 * slot,
                None, "", PushReceipt("other", 1, (), base + 5 * slot, None)), "")
    # Events: a batch (set-based path) and single events (per-event path), duplicates and clicks.
    batch = [EventIn(p, "tok0", EventType.ARRIVED, at + 1) for _, p, at in rows[::2]]
    batch += [EventIn(p, "tok0", EventType.CLICKED, at + 2) for _, p, at in rows[::3]]
    batch += [EventIn(p, "tok1", EventType.CLICKED, at + 2) for _, p, at in rows[1::4]]  # click without arrival
    await store.record_events(app.id, batch, START)
    await store.record_events(app.id, batch[:10], START)  # duplicates change nothing
    for _, p, at in rows[1::5]:
        await store.record_events(app.id, [EventIn(p, "tok0", EventType.ARRIVED, at + 3)], START)
        await store.record_events(app.id, [EventIn(p, "tok0", EventType.CLICKED, at + 4)], START)
    # Fallbacks: cancelled, and fired with SMS through their life (reserved, sent with a fee,
    # failed, delivered by receipt).
    with_sms = [r for i, r in enumerate(rows) if i % 2]
    for _, p, _ in with_sms[:3]:
        await store.cancel_fallback(app.id, p, START)
    jobs = await store.claim_fallbacks([r for r, _, _ in with_sms[3:12]], START)
    window = RateLimiter().window(jobs[0].policy, START)
    phones = ("+8613800000001", "+8613800000002")
    await store.reserve_sms_many([(job, phones, window) for job in jobs], START)
    await store.dispatch_sms([(job.push, ph) for job in jobs for ph in phones], START)
    await store.finish_sms_many(
        [(job.push, SmsOutcome(phones[0], SmsStatus.SENT, serial_no=f"s{job.push}", fee=2)) for job in jobs]
        + [(job.push, SmsOutcome(phones[1], SmsStatus.FAILED)) for job in jobs[:4]],
        START,
    )
    await store.finish_fallbacks([(job, 0) for job in jobs[:6]], START)
    await store.apply_receipts([DeliveryReceipt(phones[0], f"s{job.push}", True, START) for job in jobs[:5]])
    # Retention takes some pushes (with their targets and records) away.
    await store.purge_expired(base + 3 * slot, START - 86400, 1000)

    end_all = base + 13 * slot
    edges = [base - slot, base, base + 0.25, base + slot / 3, base + slot, base + 2 * slot - 0.5, base + 5.5 * slot,
             base + 11 * slot + 0.5, end_all]
    for start, end in itertools.combinations(edges, 2):
        assert await store.statistics_by_slot(app.id, start, end) == await _scanned(store, app.id, start, end), (
            start - base, end - base)
        total = await store.statistics(app.id, start, end)
        assert total.push_count == sum(s.push_count for s in await _scanned(store, app.id, start, end))
    assert sum(s.push_count for s in await store.statistics_by_slot(other.id, base - slot, end_all)) == 1
