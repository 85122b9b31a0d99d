"""SQLite-only internals: the query plans and the writer thread. Behaviour shared with
PostgreSQL is in test_store.py, which runs on both."""

from __future__ import annotations

import asyncio
import re
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pushreachd.engine.ratelimit import RateLimiter
from pushreachd.model import (
    App,
    AudienceType,
    DeliveryReceipt,
    NewPush,
    PushReceipt,
    PushSpec,
    SmsInfo,
    SmsRecordFilter,
    SmsStatus,
    Target,
    TriggerCondition,
)
from pushreachd.store.base import SmsOutcome
from pushreachd.store.sqlite import SqliteStore
from pushreachd.store.sqlite.migrations import MIGRATIONS

from tests.unit.test_store import exercise

NOW = 1_750_000_000.0
INFO = SmsInfo(300, TriggerCondition.NOT_ARRIVED, "Pushreach", "123456", "1400000001", ("42",))


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    s = SqliteStore(str(tmp_path / "unit.db"))
    await s.open()
    try:
        yield s
    finally:
        await s.close()


async def app_of(store: SqliteStore, access_id: str = "app-1") -> App:
    return await store.create_app(access_id, access_id, "verifier", NOW)


async def add_push(
    store: SqliteStore, app: App, push_id: str, tokens: list[str], *, request_id: str = "", sms: bool = True
) -> int:
    due = NOW + 300 if sms else None
    spec = PushSpec(
        AudienceType.TOKEN_LIST, tuple(tokens), (), "t", "c", resend_by_sms=sms, sms_info=INFO if sms else None
    )
    receipt = PushReceipt(push_id, len(tokens), (), NOW, due)
    new = NewPush(push_id, app.id, spec, tuple(Target(t) for t in tokens), NOW, due, request_id, receipt)
    _, row = await store.create_push(new, spec.fingerprint())
    assert row is not None
    return row


# -- indexes for every query the engine makes --------------------------------------------------------

# Full scans that are by design (the receipt poller's occasional list of sources).
ALLOWED_SCANS = {"SELECT DISTINCT a.access_id, a.sms_credentials, r.sms_app_id FROM sms_records r"}
BIG_TABLES = {"pushes", "targets", "devices", "account_tokens", "sms_records", "idempotency"}


async def test_every_engine_query_uses_an_index(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    statements: list[str] = []
    real_connect = sqlite3.connect

    def traced(*args, **kwargs):  # type: ignore[no-untyped-def]
        conn = real_connect(*args, **kwargs)
        conn.set_trace_callback(statements.append)
        return conn

    monkeypatch.setattr(sqlite3, "connect", traced)
    path = str(tmp_path / "unit.db")
    store = SqliteStore(path)
    await store.open()
    try:
        await exercise(store)  # type: ignore[arg-type]
    finally:
        await store.close()
    monkeypatch.undo()

    conn = sqlite3.connect(path)
    try:
        offenders = []
        for sql in set(statements):
            if not re.match(r"\s*(SELECT|UPDATE|DELETE|INSERT)", sql, re.I) or "schema_version" in sql:
                continue
            if any(sql.strip() in m for m in MIGRATIONS):  # a migration's backfill reads every row once
                continue
            if any(sql.startswith(a) for a in ALLOWED_SCANS):
                continue
            for *_, detail in conn.execute("EXPLAIN QUERY PLAN " + sql):
                m = re.match(r"SCAN (\w+)(?: AS \w+)?(.*)", detail)
                if m is not None:
                    table = _table_of(sql, m.group(1))
                    if table in BIG_TABLES and "pushes_live_fallbacks" not in m.group(2):
                        offenders.append(f"{detail}: {sql}")
                # Reading all of an app's devices or SMS to find one push's or token's rows
                # is a scan in all but name.
                m = re.match(r"SEARCH (\w+) USING .*\(app_id=\?\)$", detail)
                if m is not None and re.search(r"push_id=|\.push=|token=|phone=", sql):
                    offenders.append(f"{detail}: {sql}")
    finally:
        conn.close()
    assert offenders == []


def _table_of(sql: str, name: str) -> str:
    """`SCAN r` names an alias; find the table it stands for."""
    m = re.search(rf"(\w+)\s+(?:AS\s+)?{name}\b", sql)
    if name in BIG_TABLES or m is None:
        return name
    return m.group(1)


async def test_cancelling_the_writer_ends_it_and_cancels_its_waiters(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import threading

    from pushreachd.store.sqlite import SqliteStore

    store = SqliteStore(str(tmp_path / "w.db"))
    await store.open()
    entered, release = threading.Event(), threading.Event()

    def slow(conn):  # type: ignore[no-untyped-def]
        entered.set()
        release.wait(5)

    waiter = asyncio.ensure_future(store._write(slow))
    await asyncio.to_thread(entered.wait, 5)
    writer = store.writer.task
    assert writer is not None
    writer.cancel()
    release.set()
    await asyncio.wait_for(asyncio.gather(writer, return_exceptions=True), timeout=5)
    assert writer.cancelled()
    assert waiter.cancelled()


# -- joined reads -----------------------------------------------------------------------------------


async def test_routes_asked_at_once_share_one_trip_and_each_caller_gets_its_own(store: SqliteStore) -> None:
    from pushreachd.model import Channel, Route

    app = await store.create_app("AID1", "a", "verifier", NOW)
    other = await store.create_app("AID2", "b", "verifier", NOW)
    await store.register_device(app.id, "tok-a", Channel.FCM, "", NOW)
    await store.register_device(other.id, "tok-a", Channel.APNS, "", NOW)
    trips: list[int] = []
    real = store._readers._pool.submit

    def counted(*args, **kwargs):  # type: ignore[no-untyped-def]
        trips.append(1)
        return real(*args, **kwargs)

    store._readers._pool.submit = counted  # type: ignore[method-assign]
    got = await asyncio.gather(*(
        store.device_routes(a.id, toks) for a, toks in [(app, ["tok-a"]), (other, ["tok-a", "tok-b"]), (app, ["tok-b"])] * 10
    ))
    assert got == [{"tok-a": Route(Channel.FCM, False)}, {"tok-a": Route(Channel.APNS, False)}, {}] * 10
    assert len(trips) == 1
    assert await store.device_routes(app.id, ["tok-a"]) == {"tok-a": Route(Channel.FCM, False)}  # alone
    assert len(trips) == 2


async def test_a_joined_read_that_fails_fails_its_callers_and_the_next_trip_still_runs(store: SqliteStore) -> None:
    def broken(conn: sqlite3.Connection, args: list[int]) -> list[int]:
        raise sqlite3.OperationalError("disk I/O error")

    results = await asyncio.gather(*(store._readers.join("x", i, broken) for i in range(3)), return_exceptions=True)
    assert all(isinstance(r, sqlite3.OperationalError) for r in results)
    doubled = await asyncio.gather(*(store._readers.join("x", i, lambda c, a: [2 * x for x in a]) for i in range(3)))
    assert doubled == [0, 2, 4]


async def test_a_cancelled_caller_of_a_joined_read_leaves_the_others_their_answer(store: SqliteStore) -> None:
    slow = [store._readers.join("y", i, lambda c, a: [x + 1 for x in a]) for i in range(3)]
    tasks = [asyncio.ensure_future(s) for s in slow]
    await asyncio.sleep(0)
    tasks[1].cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert results[0] == 1 and results[2] == 3 and isinstance(results[1], asyncio.CancelledError)
