"""Retention: finished pushes older than retention_days go, with their targets and SMS records;
idempotency rows go after a day; a live (PENDING/FIRING) fallback is never touched."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from pushreachd.engine.ratelimit import Window
from pushreachd.model import (
    App,
    AudienceType,
    FallbackState,
    NewPush,
    PushReceipt,
    PushSpec,
    SmsInfo,
    SmsStatus,
    Target,
    TriggerCondition,
)
from pushreachd.services.retention import RetentionPurger
from pushreachd.store import Store, make_store
from pushreachd.store.base import SmsOutcome

from tests.fakes import FakeClock
from tests.stores import query

DAY = 86400.0
NOW = 1_750_000_000.0
INFO = SmsInfo(300, TriggerCondition.NOT_ARRIVED, "Pushreach", "123456", "1400000001", ("42",))
OPEN = Window(day_start=0, same_content_since=NOW * 2, daily_limit=1000)


@pytest.fixture
async def store(store_db: str) -> AsyncIterator[Store]:
    s = make_store(store_db)
    await s.open()
    try:
        yield s
    finally:
        await s.close()


async def push(store: Store, app: App, push_id: str, at: float, *, sms: bool = True, request_id: str = "") -> int:
    tokens = ("t1", "t2")
    due = at + 300 if sms else None
    spec = PushSpec(AudienceType.TOKEN_LIST, tokens, (), "t", "c", resend_by_sms=sms, sms_info=INFO if sms else None)
    receipt = PushReceipt(push_id, 2, (), at, due)
    new = NewPush(push_id, app.id, spec, tuple(Target(t) for t in tokens), at, due, request_id, receipt)
    _, row = await store.create_push(new, spec.fingerprint())
    assert row is not None
    return row


async def fire(store: Store, row: int, at: float, *, finish: bool = True) -> None:
    (job,) = await store.claim_fallbacks([row], at)
    assert job is not None
    await store.reserve_sms_many([(job, ("+8613800000001",), OPEN)], at)
    await store.finish_sms_many([(job.push, SmsOutcome("+8613800000001", SmsStatus.SENT))], at)
    if finish:
        await store.finish_fallbacks([(job, 0)], at)


def rows(db: str) -> dict[str, list[str]]:
    return {
        "pushes": sorted(r[0] for r in query(db, "SELECT push_id FROM pushes")),
        "targets": sorted(str(r[0]) for r in query(db, "SELECT DISTINCT p.push_id FROM targets t JOIN pushes p ON p.id = t.push")),
        "orphan_targets": [str(r[0]) for r in query(db, "SELECT push FROM targets WHERE push NOT IN (SELECT id FROM pushes)")],
        "sms": sorted(r[0] for r in query(db, "SELECT p.push_id FROM sms_records r JOIN pushes p ON p.id = r.push")),
        "orphan_sms": [str(r[0]) for r in query(db, "SELECT push FROM sms_records WHERE push NOT IN (SELECT id FROM pushes)")],
        "idempotency": sorted(r[0] for r in query(db, "SELECT request_id FROM idempotency")),
    }


async def test_purge_keeps_live_fallbacks_and_recent_data(store: Store, store_db: str) -> None:
    app = await store.create_app("1000000001", "a", "verifier", NOW - 400 * DAY)
    old = NOW - 100 * DAY
    await push(store, app, "old-none", old, sms=False)
    await fire(store, await push(store, app, "old-done", old), old + 300)
    await push(store, app, "old-cancelled", old)
    await store.cancel_fallback(app.id, "old-cancelled", old + 10)
    await push(store, app, "old-pending", old)  # e.g. the service was down for months
    await fire(store, await push(store, app, "old-firing", old), old + 300, finish=False)
    # Accepted long ago but finished recently: kept until retention after the end.
    await fire(store, await push(store, app, "late-done", old), NOW - 10 * DAY)
    await fire(store, await push(store, app, "new-done", NOW - 2 * DAY, request_id="req-new"), NOW - 2 * DAY + 300)
    await push(store, app, "new-none", NOW - 2 * 3600, sms=False, request_id="req-fresh")

    clock = FakeClock(NOW)
    counts = await RetentionPurger(store, clock, retention_days=90, batch=2).purge_once()
    assert (counts.pushes, counts.targets, counts.sms_records, counts.idempotency) == (3, 6, 1, 1)
    left = rows(store_db)
    assert left["pushes"] == ["late-done", "new-done", "new-none", "old-firing", "old-pending"]
    assert left["targets"] == left["pushes"]
    assert left["sms"] == ["late-done", "new-done", "old-firing"]
    assert left["orphan_targets"] == left["orphan_sms"] == []
    assert left["idempotency"] == ["req-fresh"]  # a day old: gone
    live = dict(await store.live_fallbacks())
    assert len(live) == 2  # the PENDING and the FIRING one are still armed on the next start
    # The engine reads what is left as before.
    got = await store.get_push(app.id, "old-pending")
    assert got is not None and got.fallback_state is FallbackState.PENDING


async def test_retention_zero_keeps_every_push(store: Store, store_db: str) -> None:
    app = await store.create_app("1000000001", "a", "verifier", NOW)
    await push(store, app, "ancient", NOW - 3000 * DAY, sms=False, request_id="r")
    counts = await RetentionPurger(store, FakeClock(NOW), retention_days=0).purge_once()
    assert counts.pushes == 0 and counts.idempotency == 1
    assert rows(store_db)["pushes"] == ["ancient"]


async def test_the_purge_runs_periodically_on_the_clock(store: Store, store_db: str) -> None:
    app = await store.create_app("1000000001", "a", "verifier", NOW)
    clock = FakeClock(NOW)
    purger = RetentionPurger(store, clock, retention_days=1, interval=3600)
    task = asyncio.create_task(purger.run())
    try:
        await clock.advance(0)
        await push(store, app, "p", NOW, sms=False)
        await clock.advance(3600)
        await asyncio.sleep(0.05)
        assert rows(store_db)["pushes"] == ["p"]  # not a day old yet
        # Hour by hour (each purge does real I/O on worker threads): gone once a day old.
        while rows(store_db)["pushes"]:
            assert clock.time() < NOW + DAY + 3 * 3600, "not purged within the hours after it expired"
            await clock.sleeping()  # the last purge (real I/O on worker threads) is over
            await clock.advance(3600)
            await asyncio.sleep(0.02)
        assert clock.time() > NOW + DAY
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
