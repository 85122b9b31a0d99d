"""The ingest paths made cheaper for speed keep their meaning: the stored spec and fingerprint,
delivery marks shared by one commit, events recorded in sets, redelivery on start in pages."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import asdict

import pytest
from pushreachd.model import (
    AccountPushType,
    App,
    AudienceType,
    NewPush,
    PushReceipt,
    PushSpec,
    SmsInfo,
    Target,
    TriggerCondition,
)
from pushreachd.store import Store, make_store

NOW = 1_750_000_000.0
INFO = SmsInfo(300, TriggerCondition.NOT_ARRIVED, "签名", "123456", "1400000001", ("42", "Ünïcode"))


@pytest.fixture
async def store(store_db: str) -> AsyncIterator[Store]:
    s = make_store(store_db)
    await s.open()
    try:
        yield s
    finally:
        await s.close()


async def add_push(store: Store, app: App, push_id: str, tokens: list[str], *, at: float = NOW,
                   expire: int = 259200) -> int:
    spec = PushSpec(AudienceType.TOKEN_LIST, tuple(tokens), (), "t", "c", expire_time=expire)
    receipt = PushReceipt(push_id, len(tokens), (), at, None)
    new = NewPush(push_id, app.id, spec, tuple(Target(t) for t in tokens), at, None, "", receipt)
    _, row = await store.create_push(new, "")
    assert row is not None
    return row


# -- the stored spec and the fingerprint ----------------------------------------------------------


@pytest.mark.parametrize("info", [None, INFO])
def test_spec_json_is_byte_for_byte_what_asdict_made(info: SmsInfo | None) -> None:
    """Fingerprints already stored for idempotent retries must still match after an upgrade."""
    spec = PushSpec(AudienceType.TOKEN_LIST, ("a", "b"), (), "标题", "c\n", resend_by_sms=info is not None, sms_info=info)
    made = asdict(spec)
    # Later fields, written only when given, so stored fingerprints still match.
    assert made.pop("vendor") is None and made.pop("tag_rules") == ()
    assert made.pop("account_push_type") == AccountPushType.ALL_DEVICES
    assert made.pop("collapse_id") == ""
    if made["sms_info"] is not None:
        assert made["sms_info"].pop("early_on_push_failure") is False
    old = json.dumps(made, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert spec.to_json() == old
    assert PushSpec.from_json(spec.to_json()) == spec
    assert json.loads(spec.to_json(tokens=False))["token_list"] == []


# -- delivery marks -------------------------------------------------------------------------------


async def test_delivery_marks_made_together_share_one_write_and_all_land(store: Store, store_db: str) -> None:
    app = await store.create_app("app-1", "app", "verifier", NOW)
    rows = [await add_push(store, app, f"p{i}", [f"t{i}"]) for i in range(300)]
    writes_before = store.stats.writes
    await asyncio.gather(*(store.mark_delivered(r, NOW + i) for i, r in enumerate(rows)))
    assert store.stats.writes - writes_before == 1, "300 marks queued together are one write"
    # and a later mark starts a new group rather than joining one already committed
    late = await add_push(store, app, "late", ["x"])
    await store.mark_delivered(late, NOW + 1000)
    got = dict(query(store_db, "SELECT id, delivered_at FROM pushes"))
    assert got == {**{r: NOW + i for i, r in enumerate(rows)}, late: NOW + 1000}


async def test_a_cancelled_waiter_does_not_cancel_the_others_marks(store: Store, store_db: str) -> None:
    app = await store.create_app("app-1", "app", "verifier", NOW)
    a, b = await add_push(store, app, "a", ["t"]), await add_push(store, app, "b", ["t"])
    first = asyncio.create_task(store.mark_delivered(a, NOW))
    second = asyncio.create_task(store.mark_delivered(b, NOW))
    await asyncio.sleep(0)
    first.cancel()
    await second  # still answered once committed
    assert query(store_db, "SELECT count(*) FROM pushes WHERE delivered_at IS NULL") == [(0,)]


# -- events in sets -------------------------------------------------------------------------------

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from pushreachd.model import EventIn, EventOutcome, EventType  # noqa: E402
from pushreachd.store import slots as slot_sums  # noqa: E402
from pushreachd.store.sqlite import events as sqlite_store  # noqa: E402
from pushreachd.store.sqlite import stats as sqlite_stats  # noqa: E402

_event = st.builds(
    EventIn,
    push_id=st.sampled_from(["p1", "p2", "nope"]),
    token=st.sampled_from(["a", "b", "c", "zz"]),
    event_type=st.sampled_from([EventType.ARRIVED, EventType.CLICKED]),
    event_time=st.sampled_from([NOW - 30, NOW - 20, NOW - 20.000001, NOW - 10, NOW]),
)


def _apply(conn: sqlite3.Connection, app_id: int, messages: list[list[EventIn]], set_based: bool) -> list:  # type: ignore[type-arg]
    outcomes = []
    for events in messages:
        if set_based:
            outcomes.extend(sqlite_store._record_push_events(conn, app_id, events))
        else:  # the per-event statements, the reference
            deltas: dict[int, list[int]] = {}
            for e in events:
                row = conn.execute(
                    "SELECT id, accepted_at FROM pushes WHERE push_id=? AND app_id=?", (e.push_id, app_id)
                ).fetchone()
                if row is None:
                    outcomes.append(EventOutcome.UNKNOWN_PUSH)
                else:
                    slot = slot_sums.slot_of(row[1])
                    outcomes.append(sqlite_store._record_push_event(conn, row[0], slot, e, deltas))
            sqlite_stats.add_events(conn, app_id, deltas)
    return outcomes


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(messages=st.lists(st.lists(_event, max_size=12), max_size=4))
def test_events_in_sets_answer_and_store_what_one_by_one_would(tmp_path_factory: pytest.TempPathFactory,
                                                               messages: list[list[EventIn]]) -> None:
    """Outcomes (ACCEPTED / DUPLICATE / UNKNOWN_PUSH / UNKNOWN_TOKEN) and the stored times, for
    repeats, earlier times reported late, clicks before arrivals and repeats within a message."""
    results = []
    for set_based in (False, True):
        conn = sqlite3.connect(":memory:", isolation_level=None)
        from pushreachd.store.sqlite.migrations import migrate

        migrate(conn)
        conn.execute("INSERT INTO apps (id, access_id, name, secret_verifier, created_at) VALUES (1,'a','a','v',0)")
        conn.execute("INSERT INTO apps (id, access_id, name, secret_verifier, created_at) VALUES (2,'b','b','v',0)")
        for row, (push_id, app) in enumerate([("p1", 1), ("p2", 1), ("nope", 2)], start=1):
            conn.execute(
                "INSERT INTO pushes (id, app_id, push_id, spec, accepted_at, target_count, fallback_state) "
                "VALUES (?,?,?,'{}',0,2,1)", (row, app, push_id))
            for seq, token in enumerate(("a", "b")):
                conn.execute("INSERT INTO targets (push, token, seq) VALUES (?,?,?)", (row, token, seq))
        outcomes = _apply(conn, 1, messages, set_based)
        stored = conn.execute("SELECT push, token, arrived_at, clicked_at FROM targets ORDER BY push, token").fetchall()
        counted = conn.execute(  # the console's counters agree with the rows either way
            "SELECT app_id, slot, sum(arrived), sum(clicked) FROM push_stats GROUP BY app_id, slot ORDER BY 1, 2"
        ).fetchall()
        results.append((outcomes, stored, counted))
        conn.close()
    assert results[0] == results[1]


# -- redelivery on start, in pages ----------------------------------------------------------------

from pushreachd.channels.log import LogPushChannel  # noqa: E402
from pushreachd.services.pushes import PushService  # noqa: E402

from tests.fakes import FakeClock  # noqa: E402
from tests.stores import query  # noqa: E402


class _NoFallbacks:
    def arm(self, push: int, due_at: float) -> None: ...
    def disarm(self, push: int) -> None: ...


class _CountingChannel(LogPushChannel):
    def __init__(self) -> None:
        super().__init__(keep=10_000)
        self.busy = self.most_busy = 0

    async def send(self, delivery):  # type: ignore[no-untyped-def]
        self.busy += 1
        self.most_busy = max(self.most_busy, self.busy)
        await asyncio.sleep(0)
        self.busy -= 1
        return await super().send(delivery)


async def test_redelivery_pages_through_undelivered_pushes_skipping_expired_and_later_ones(store: Store) -> None:
    clock = FakeClock(NOW + 100)
    app = await store.create_app("app-1", "app", "verifier", NOW)
    live = [await add_push(store, app, f"live{i}", [f"t{i}", "shared"], at=NOW + i * 0.001) for i in range(23)]
    await add_push(store, app, "expired", ["x"], at=NOW - 1000, expire=60)
    await store.mark_delivered(live[3], NOW)  # delivered before the crash
    pages = []
    real = store.undelivered_pushes

    async def spy(*args, **kwargs):  # type: ignore[no-untyped-def]
        found, after = await real(*args, **kwargs)
        pages.append(len(found))
        return found, after

    store.undelivered_pushes = spy  # type: ignore[method-assign]
    channel = _CountingChannel()
    pushes = PushService(store, channel, _NoFallbacks(), clock)
    through = await store.last_push_row()
    await add_push(store, app, "after-start", ["y"], at=NOW + 50)  # push() delivers this one itself
    assert await pushes.resume_deliveries(through, page=5, concurrency=3) == 22
    await pushes.drain()
    # Handed out oldest first, at most 3 at a time; each reaches the channel once (concurrent
    # deliveries may overtake each other on the way: each reads its devices' routes first).
    delivered = [d.push_id for d in channel.deliveries]
    assert sorted(delivered) == sorted(f"live{i}" for i in range(23) if i != 3) and len(set(delivered)) == 22
    assert next(d for d in channel.deliveries if d.push_id == "live0").tokens == ("t0", "shared")
    assert max(pages) <= 5 and channel.most_busy <= 3
    # expired: marked delivered in SQL, never handed over; the rest marked as they went
    remaining = await real(through + 1, NOW + 100, None, 1000)
    assert [p.push_id for _, p, _ in remaining[0]] == ["after-start"]


async def test_a_page_is_bounded_by_tokens_too(store: Store) -> None:
    app = await store.create_app("app-1", "app", "verifier", NOW)
    for i in range(4):
        await add_push(store, app, f"p{i}", [f"t{j}" for j in range(10)], at=NOW + i)
    through = await store.last_push_row()
    found, after = await store.undelivered_pushes(through, NOW, None, 100, max_targets=25)
    assert [p.push_id for _, p, _ in found] == ["p0", "p1"] and after is not None
    found, after = await store.undelivered_pushes(through, NOW, after, 100, max_targets=25)
    assert [p.push_id for _, p, _ in found] == ["p2", "p3"] and after is None
