"""PostgreSQL-only: several instances on one database. The behaviour every store shares is
in test_store.py; here, what only sharing adds: concurrent migrations, claims that never
overlap, leases that expire, rate limits seen across instances, a lost connection, broadcasts
resolved by one instance at a time and never stored twice, receipts that beat their serial
number on another instance."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import psycopg
import pytest
from pushreachd.channels.base import PushDelivery
from pushreachd.engine.ratelimit import RateLimiter
from pushreachd.errors import FailedPrecondition, Unavailable
from pushreachd.model import FallbackState, RateLimitPolicy, SmsRecordFilter, SmsStatus
from pushreachd.services.broadcasts import BroadcastResolver
from pushreachd.sms.provider import DeliveryReceipt
from pushreachd.store.base import SmsOutcome
from pushreachd.store.postgres import PostgresStore
from pushreachd.store.postgres.migrations import MIGRATIONS

from tests.fakes import FakeClock
from tests.stores import reset_schema
from tests.unit.test_store import NOW, add_broadcast, add_push, app_of


@pytest.fixture
def pg(postgres_module_db: str) -> str:
    reset_schema(postgres_module_db)
    return postgres_module_db


@pytest.fixture
async def pair(pg: str) -> AsyncIterator[tuple[PostgresStore, PostgresStore]]:
    a, b = PostgresStore(pg, owner="a"), PostgresStore(pg, owner="b")
    await a.open()
    await b.open()
    try:
        yield a, b
    finally:
        await a.close()
        await b.close()


def _sql(dsn: str, sql: str, args: tuple = ()) -> list[tuple]:  # type: ignore[type-arg]
    with psycopg.connect(dsn, autocommit=True) as conn:
        cur = conn.execute(sql, args)
        return cur.fetchall() if cur.description else []


async def test_instances_starting_together_apply_each_migration_once(pg: str) -> None:
    stores = [PostgresStore(pg, owner=str(i)) for i in range(4)]
    await asyncio.gather(*(s.open() for s in stores))
    try:
        versions = [v for (v,) in _sql(pg, "SELECT version FROM schema_version ORDER BY version")]
        assert versions == list(range(1, len(MIGRATIONS) + 1)), "each version once"
    finally:
        await asyncio.gather(*(s.close() for s in stores))


async def test_two_instances_claiming_the_same_due_pushes_never_both_get_one(
    pair: tuple[PostgresStore, PostgresStore],
) -> None:
    a, b = pair
    app = await app_of(a)
    rows = [await add_push(a, app, f"p{i}", [f"t{i}"]) for i in range(60)]
    got_a, got_b = await asyncio.gather(a.claim_fallbacks(rows, NOW), b.claim_fallbacks(rows, NOW))
    ids_a, ids_b = {j.push for j in got_a}, {j.push for j in got_b}
    assert not ids_a & ids_b
    # What one skipped because the other held it is FIRING under the other's live lease.
    assert await b.claim_fallbacks(sorted(ids_a), NOW) == []
    assert await a.claim_fallbacks(sorted(ids_b), NOW) == []
    assert ids_a | ids_b <= set(rows)
    owners = dict(_sql(a._db._dsn, "SELECT id, fire_owner FROM pushes WHERE fallback_state = %s",
                       (int(FallbackState.FIRING),)))
    assert {owners[i] for i in ids_a} <= {"a"} and {owners[i] for i in ids_b} <= {"b"}


async def test_an_expired_lease_is_taken_over_dispatched_records_become_unknown_reserved_ones_go_once(
    pair: tuple[PostgresStore, PostgresStore], pg: str,
) -> None:
    a, b = pair
    app = await app_of(a)
    row = await add_push(a, app, "p", ["t"])
    (job,) = await a.claim_fallbacks([row], NOW)
    window = RateLimiter().window(job.policy, NOW)
    phones = ("+8613800000001", "+8613800000002", "+8613800000003")
    assert await a.reserve_sms_many([(job, phones, window)], NOW) == [(list(phones), 0)]
    assert await a.dispatch_sms([(row, phones[0]), (row, phones[1])], NOW) == [True, True]
    await a.finish_sms_many([(row, SmsOutcome(phones[0], SmsStatus.SENT, serial_no="s1"))], NOW)
    # a's lease is live: b can neither claim it nor recover its records.
    assert await b.claim_fallbacks([row], NOW) == []
    assert await b.recover_interrupted_sms(NOW) == 0
    assert await b.expired_leases(10) == []
    # a stalls; its lease runs out on the database's clock.
    _sql(pg, "UPDATE pushes SET lease_until = extract(epoch FROM clock_timestamp()) - 1 WHERE id = %s", (row,))
    assert await b.expired_leases(10) == [row]
    (taken,) = await b.claim_fallbacks([row], NOW)
    assert taken.push == row
    records = {r.phone_number: r.status for r in await b.list_sms_records(app.id, SmsRecordFilter(), None, 10)}
    assert records == {
        phones[0]: SmsStatus.SENT,
        phones[1]: SmsStatus.UNKNOWN,  # dispatched, never answered: maybe sent, never again
        phones[2]: SmsStatus.RESERVED,  # never dispatched: the new owner sends it
    }
    assert await b.reserve_sms_many([(taken, phones, window)], NOW) == [([phones[2]], 0)]
    # Both think they may send phones[2]; the guarded dispatch lets exactly one call the provider.
    assert await b.dispatch_sms([(row, phones[2])], NOW) == [True]
    assert await a.dispatch_sms([(row, phones[2])], NOW) == [False]
    # a, back from its pause, can no longer renew what b holds.
    assert await a.renew_leases([row]) == 0
    assert await b.renew_leases([row]) == 1
    await b.finish_sms_many([(row, SmsOutcome(phones[2], SmsStatus.SENT, serial_no="s3"))], NOW)
    await b.finish_fallbacks([(taken, 0)], NOW)
    assert await b.live_fallbacks() == []


async def test_the_daily_limit_holds_across_instances_reserving_at_once(
    pair: tuple[PostgresStore, PostgresStore],
) -> None:
    a, b = pair
    app = await app_of(a)
    await a.set_rate_limit_policy(app.id, RateLimitPolicy(30, 1, "Asia/Shanghai"))
    phone = "+8613800000009"
    rows = [await add_push(a, app, f"p{i}", ["t"]) for i in range(2)]
    (ja,) = await a.claim_fallbacks([rows[0]], NOW)
    (jb,) = await b.claim_fallbacks([rows[1]], NOW)
    window = RateLimiter().window(ja.policy, NOW)
    # The two reservations race; whichever comes second sees the first's record.
    ra, rb = await asyncio.gather(
        a.reserve_sms_many([(ja, (phone,), window)], NOW), b.reserve_sms_many([(jb, (phone,), window)], NOW)
    )
    sent = [r for r in (ra, rb) if r == [([phone], 0)]]
    limited = [r for r in (ra, rb) if r == [([], 1)]]
    assert len(sent) == 1 and len(limited) == 1
    statuses = sorted(r.status for r in await a.list_sms_records(app.id, SmsRecordFilter(), None, 10))
    assert statuses == sorted([SmsStatus.RESERVED, SmsStatus.RATE_LIMITED])


async def test_a_lost_connection_answers_unavailable_then_recovers_by_itself(pair: tuple[PostgresStore, PostgresStore],
                                                                          pg: str) -> None:
    a, _ = pair
    app = await app_of(a)
    changes: list[bool] = []
    a.database.on_health = changes.append
    # Every connection of this database but the test's own is cut, as a server restart would.
    _sql(pg, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() "
             "AND pid != pg_backend_pid()")
    outcomes = []
    for i in range(3):  # the first call on each dead connection fails; later ones reconnect
        try:
            outcomes.append(await a.bind_phone(app.id, f"t{i}", "+8613800000001", NOW))
        except Unavailable:
            outcomes.append(None)
    assert outcomes.count(None) <= 1 and outcomes[-1] is not None, "one call on the dead connection at most"
    for _ in range(3):
        try:
            assert await a.get_app("app-1") is not None
            break
        except Unavailable:
            continue
    else:
        pytest.fail("reads did not recover")
    assert a.database.healthy
    assert changes in ([], [False, True]) or changes[-1] is True, "health turned back on by itself"


# -- broadcasts (TAG / ALL pushes) shared by instances ---------------------------------------------


class _Arming:
    def __init__(self) -> None:
        self.armed: dict[int, float] = {}

    def arm(self, push: int, due_at: float) -> None:
        self.armed[push] = due_at


def _resolver(store: PostgresStore, handed: list[str], arming: _Arming, clock: FakeClock) -> BroadcastResolver:
    async def deliver(push: int, app_id: int, delivery: PushDelivery) -> bool:
        handed.extend(delivery.tokens)
        await asyncio.sleep(0.005)  # a channel call: let the other instance run
        return True

    return BroadcastResolver(store, deliver, arming, clock, page=3)


async def test_a_broadcast_is_resolved_by_the_instance_holding_it_and_freed_when_it_stops(pg: str) -> None:
    # Leases of 1.5 s, renewed every 0.5 s: long enough that a loaded machine's late renewal
    # does not let the lease lapse (0.3 s did, under CI's load).
    a, b = PostgresStore(pg, owner="a", lease_seconds=1.5), PostgresStore(pg, owner="b", lease_seconds=1.5)
    await a.open()
    await b.open()
    try:
        app = await app_of(a)
        row = await add_broadcast(a, app, "b1")
        await asyncio.sleep(2.0)  # longer than a lease: a renews it
        assert await b.open_broadcasts() == []
        with pytest.raises(FailedPrecondition):
            await b.store_broadcast_page(row, "", ["t1"], "t1")
        with pytest.raises(FailedPrecondition):
            await b.broadcast_tokens(row, 0, 1)
        assert [x.push for x in await a.open_broadcasts()] == [row]  # its own
        await a.close()  # a stops: what it held is free at once
        (taken,) = await b.open_broadcasts()
        assert taken.push == row and _sql(pg, "SELECT owner FROM broadcasts") == [("b",)]
        # b crashes (its lease is not renewed any more, and runs out): a new instance takes over.
        b._resolving.clear()
        await asyncio.sleep(2.0)
        c = PostgresStore(pg, owner="c")
        await c.open()
        try:
            assert [x.push for x in await c.open_broadcasts()] == [row]
        finally:
            await c.close()
    finally:
        await b.close()


async def test_two_instances_resuming_the_same_broadcast_store_every_target_once(pg: str) -> None:
    origin = PostgresStore(pg, owner="origin")
    await origin.open()
    app = await app_of(origin)
    tokens = [f"tok{i:03}" for i in range(40)]
    for t in tokens:
        await origin.bind_phone(app.id, t, "+86138" + t[3:].rjust(8, "0"), NOW)
    row = await add_broadcast(origin, app, "b1")
    (b,) = await origin.open_broadcasts()
    await origin.close()  # stopped before resolving it
    # Both resume it at once and leases do not keep them apart (here: two instances given one
    # instance_id, so each takes the other's lease for its own): the cursor's compare-and-set
    # alone keeps every target unique.
    x, y = PostgresStore(pg, owner="same"), PostgresStore(pg, owner="same")
    await x.open()
    await y.open()
    clock, arming = FakeClock(), _Arming()
    handed_x: list[str] = []
    handed_y: list[str] = []
    try:
        # First, the plain race on one page: one store wins, the other is told it moved on.
        got = await asyncio.gather(
            x.store_broadcast_page(row, "", tokens[:3], tokens[2]),
            y.store_broadcast_page(row, "", tokens[:3], tokens[2]),
            return_exceptions=True,
        )
        assert sorted(type(g).__name__ for g in got) == ["FailedPrecondition", "int"]
        rx, ry = _resolver(x, handed_x, arming, clock), _resolver(y, handed_y, arming, clock)
        rx.submit(b)  # from the start: its first page is already stored, so this one is refused
        ry.submit(b)
        for _ in range(2000):  # bounded; a resolver that lost a race retries after a (fake) wait
            if not rx.running and not ry.running:
                break
            await asyncio.sleep(0.002)
            await clock.advance(30)
        assert not rx.running and not ry.running
    finally:
        await x.close()
        await y.close()
    stored = _sql(pg, "SELECT token, seq FROM targets WHERE push = %s ORDER BY seq", (row,))
    assert [t for t, _ in stored] == tokens  # every device once, in token order
    assert [s for _, s in stored] == list(range(len(tokens)))
    assert _sql(pg, "SELECT target_count FROM pushes WHERE id = %s", (row,)) == [(len(tokens),)]
    assert _sql(pg, "SELECT done, next_seq FROM broadcasts WHERE push = %s", (row,)) == [(True, len(tokens))]
    assert set(handed_x) | set(handed_y) >= set(tokens[3:])  # handed over at least once
    assert arming.armed == {row: b.fallback_due_at}


async def test_a_receipt_that_beats_its_serial_number_on_another_instance_is_applied(
    pair: tuple[PostgresStore, PostgresStore], pg: str,
) -> None:
    a, b = pair
    app = await app_of(a)
    row = await add_push(a, app, "p", ["t"])
    (job,) = await a.claim_fallbacks([row], NOW)
    window = RateLimiter().window(job.policy, NOW)
    phones = tuple(f"+86138000000{i:02}" for i in range(30))
    await a.reserve_sms_many([(job, phones, window)], NOW)
    await a.dispatch_sms([(row, p) for p in phones], NOW)
    # The first phone's receipt reaches b before a has recorded the answer: kept.
    assert await b.apply_receipts([DeliveryReceipt(phones[0], "s-0", True, NOW + 1, "DELIVRD")]) == 0
    assert _sql(pg, "SELECT serial_no FROM pending_receipts") == [("s-0",)]
    await a.finish_sms_many([(row, SmsOutcome(phones[0], SmsStatus.SENT, serial_no="s-0"))], NOW + 2)
    # The others' receipts reach b while a records their answers: applied whichever commits first.
    await asyncio.gather(
        *(b.apply_receipts([DeliveryReceipt(p, f"s-{i}", True, NOW + 1)]) for i, p in enumerate(phones) if i),
        *(a.finish_sms_many([(row, SmsOutcome(p, SmsStatus.SENT, serial_no=f"s-{i}"))], NOW + 2)
          for i, p in enumerate(phones) if i),
    )
    statuses = {r.phone_number: r.status for r in await a.list_sms_records(app.id, SmsRecordFilter(), None, 100)}
    assert statuses == {p: SmsStatus.DELIVERED for p in phones}
    assert _sql(pg, "SELECT count(*) FROM pending_receipts") == [(0,)]
