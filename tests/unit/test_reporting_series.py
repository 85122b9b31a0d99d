"""Statistics per hour or per local day (GetStatistics buckets) and the console's push list,
on the real SQLite store."""

from __future__ import annotations

import datetime
import itertools
import zoneinfo
from collections.abc import AsyncIterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pushreachd.errors import InvalidArgument
from pushreachd.model import (
    App,
    AudienceType,
    NewPush,
    PushReceipt,
    PushSpec,
    StatisticsInterval,
    Target,
)
from pushreachd.services.reporting import ReportingService
from pushreachd.store import Store, make_store

from tests.fakes import FakeClock

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
