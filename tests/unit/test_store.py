"""The persistence suite: every store behaviour the engine relies on, run unchanged against
SQLite and PostgreSQL (the `store_db` fixture is parametrised by backend, as Temporal does for
its SQL plugins). SQLite-only internals are in test_store_sqlite.py, PostgreSQL-only ones
(several instances on one database) in test_store_postgres.py."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from pushreachd.engine.ratelimit import RateLimiter
from pushreachd.errors import AlreadyExists, FailedPrecondition
from pushreachd.model import (
    App,
    AudienceType,
    Channel,
    EventIn,
    EventOutcome,
    EventType,
    FallbackState,
    NewPush,
    PushOutcome,
    PushReceipt,
    PushSpec,
    Route,
    SmsInfo,
    SmsRecordFilter,
    SmsStatus,
    Target,
    TargetOutcome,
    TriggerCondition,
)
from pushreachd.sms.provider import DeliveryReceipt
from pushreachd.store import Store, make_store
from pushreachd.store.base import SmsOutcome

from tests.stores import query

NOW = 1_750_000_000.0
INFO = SmsInfo(300, TriggerCondition.NOT_ARRIVED, "Pushreach", "123456", "1400000001", ("42",))


@pytest.fixture
async def store(store_db: str) -> AsyncIterator[Store]:
    s = make_store(store_db)
    await s.open()
    try:
        yield s
    finally:
        await s.close()


async def app_of(store: Store, access_id: str = "app-1") -> App:
    return await store.create_app(access_id, access_id, "verifier", NOW)


async def add_push(
    store: Store, app: App, push_id: str, tokens: list[str], *, request_id: str = "", sms: bool = True
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


# -- group commit ---------------------------------------------------------------------------------


async def test_many_concurrent_writes_all_land_in_few_commits(store: Store, store_db: str) -> None:
    app = await app_of(store)
    before = store.stats.commits
    n = 500
    devices = await asyncio.gather(
        *(store.bind_phone(app.id, f"tok{i}", f"+86138{i:08d}", NOW) for i in range(n))
    )
    assert [d.phone_number for d in devices] == [f"+86138{i:08d}" for i in range(n)]
    assert store.stats.commits - before < n / 10, "concurrent writes share commits"
    # Answered means committed: another store on the same database sees every row right away.
    other = make_store(store_db)
    await other.open()
    try:
        seen = await asyncio.gather(*(other.get_device(app.id, f"tok{i}") for i in range(n)))
    finally:
        await other.close()
    assert all(d is not None and d.phone_number == f"+86138{i:08d}" for i, d in enumerate(seen))


async def test_a_failing_write_in_a_batch_does_not_undo_the_others(store: Store) -> None:
    app = await app_of(store)
    await store.bind_account(app.id, "full-0", "full", NOW, max_tokens=1)
    sizes: list[int] = []
    store.on_commit = lambda size, _seconds: sizes.append(size)
    results = await asyncio.gather(
        store.bind_phone(app.id, "a", "+8613800000001", NOW),
        store.bind_account(app.id, "full-1", "full", NOW, max_tokens=1),  # refused: account full
        store.create_app("app-1", "duplicate", "v", NOW),  # refused: access id taken
        store.bind_phone(app.id, "b", "+8613800000002", NOW),
        return_exceptions=True,
    )
    assert sizes == [4], "all four shared one transaction"
    assert isinstance(results[1], FailedPrecondition)
    assert isinstance(results[2], AlreadyExists)
    a, b = await store.get_device(app.id, "a"), await store.get_device(app.id, "b")
    assert a is not None and a.phone_number == "+8613800000001"
    assert b is not None and b.phone_number == "+8613800000002"
    # The refused write left nothing behind, not even the device row it touched first.
    assert await store.get_device(app.id, "full-1") is None
    assert await store.tokens_of_accounts(app.id, ["full"]) == {"full": ["full-0"]}


async def test_answered_writes_survive_a_reopen(store_db: str) -> None:
    path = store_db
    s = make_store(path)
    await s.open()
    app = await app_of(s)
    await add_push(s, app, "p1", ["tok0"], request_id="r1")
    await s.close()
    s = make_store(path)
    await s.open()  # migrations already applied: a no-op
    try:
        push = await s.get_push(app.id, "p1")
        assert push is not None and push.fallback_state is FallbackState.PENDING
        assert push.spec.token_list == ("tok0",)
        assert await s.live_fallbacks() == [(push.id, NOW + 300)]
    finally:
        await s.close()


# -- guarded transitions -----------------------------------------------------------------------


async def test_a_fallback_is_claimed_only_from_pending_or_firing(store: Store) -> None:
    app = await app_of(store)
    plain = await add_push(store, app, "plain", ["t"], sms=False)
    assert await store.claim_fallbacks([plain], NOW) == [], "a push without SMS has no fallback"
    cancelled = await add_push(store, app, "cancelled", ["t"])
    assert await store.cancel_fallback(app.id, "cancelled", NOW) == (cancelled, FallbackState.CANCELLED)
    assert await store.claim_fallbacks([cancelled], NOW) == []
    row = await add_push(store, app, "live", ["t"])
    (job,) = await store.claim_fallbacks([row], NOW)
    assert job is not None and job.sms_info == INFO and job.push_id == "live"
    with pytest.raises(FailedPrecondition):
        await store.cancel_fallback(app.id, "live", NOW)
    await store.finish_fallbacks([(job, 0)], NOW)
    assert await store.claim_fallbacks([row], NOW) == []
    assert await store.live_fallbacks() == []


async def test_sms_records_are_unique_per_push_and_phone_and_only_dispatched_ones_become_unknown(
    store: Store,
) -> None:
    app = await app_of(store)
    row = await add_push(store, app, "p", ["t"])
    (job,) = await store.claim_fallbacks([row], NOW)
    assert job is not None
    window = RateLimiter().window(job.policy, NOW)
    phones = ("+8613800000001", "+8613800000002")
    assert await store.reserve_sms_many([(job, phones, window)], NOW) == [(list(phones), 0)]
    # A second reservation writes nothing, and answers the still-RESERVED phones to be sent.
    assert await store.reserve_sms_many([(job, phones, window)], NOW) == [(list(phones), 0)]
    assert await store.dispatch_sms([(job.push, p) for p in phones], NOW) == [True, True]
    assert await store.reserve_sms_many([(job, phones, window)], NOW) == [([], 0)], "dispatched: not again"
    assert await store.dispatch_sms([(job.push, phones[0])], NOW) == [False], "a record is dispatched once"
    await store.finish_sms_many([(job.push, SmsOutcome(phones[0], SmsStatus.SENT, serial_no="s-1"))], NOW)
    assert await store.recover_interrupted_sms(NOW) == 1
    records = {r.phone_number: r.status for r in await store.list_sms_records(app.id, SmsRecordFilter(), None, 10)}
    assert records == {phones[0]: SmsStatus.SENT, phones[1]: SmsStatus.UNKNOWN}
    # A late provider answer cannot turn UNKNOWN into FAILED...
    await store.finish_sms_many([(job.push, SmsOutcome(phones[1], SmsStatus.FAILED))], NOW)
    # ...but a delivery receipt may still say what became of it.
    assert await store.apply_receipts([DeliveryReceipt(phones[0], "s-1", True, NOW + 5)]) == 1
    records = {r.phone_number: r.status for r in await store.list_sms_records(app.id, SmsRecordFilter(), None, 10)}
    assert records == {phones[0]: SmsStatus.DELIVERED, phones[1]: SmsStatus.UNKNOWN}


# -- every call the engine and the API make ------------------------------------------------------


async def test_every_store_call_answers(store: Store) -> None:
    await exercise(store)


async def exercise(store: Store) -> None:
    """Every store call the engine and the API make, once."""
    app = await app_of(store)
    other = await app_of(store, "app-2")
    await store.get_app("app-1")
    await store.bind_phone(app.id, "t0", "+8613800000001", NOW)
    await store.bind_phone(app.id, "t1", "+8613800000002", NOW)
    await store.bind_account(app.id, "t0", "alice", NOW, 100)
    await store.unbind_account(app.id, "t1", "bob", NOW)
    await store.unbind_phone(other.id, "t9", NOW)
    await store.get_device(app.id, "t0")
    await store.tokens_of_accounts(app.id, ["alice"])
    row = await add_push(store, app, "p1", ["t0", "t1"], request_id="r1")
    await add_push(store, app, "p2", ["t0"])
    await store.cancel_fallback(app.id, "p2", NOW)
    await store.get_push(app.id, "p1")
    through = await store.last_push_row()
    await store.expire_undelivered(through, NOW)
    await store.undelivered_pushes(through, NOW, (NOW - 1, 0), 10)
    await store.mark_delivered(row, NOW)
    outcomes = await store.record_events(
        app.id,
        [
            EventIn("p1", "t0", EventType.ARRIVED, NOW),
            EventIn("p1", "t0", EventType.CLICKED, NOW),
            EventIn("", "t1", EventType.NOTIFICATION_ENABLED, NOW),
        ],
        NOW,
    )
    assert outcomes == [EventOutcome.ACCEPTED] * 3
    await store.live_fallbacks()
    await store.recover_interrupted_sms(NOW)
    (job,) = await store.claim_fallbacks([row], NOW)
    assert job is not None
    await store.recipients_many([job])
    await store.reserve_sms_many([(job, ("+8613800000002",), RateLimiter().window(job.policy, NOW))], NOW)
    await store.finish_sms_many([(job.push, SmsOutcome("+8613800000002", SmsStatus.SENT, serial_no="s1"))], NOW)
    await store.finish_fallbacks([(job, 0)], NOW)
    await store.apply_receipts([DeliveryReceipt("+8613800000002", "s1", True, NOW)])
    await store.push_targets(row, 0, 100)
    await store.push_funnel(row)
    await store.list_sms_records(app.id, SmsRecordFilter(push_id="p1"), None, 100)
    await store.list_sms_records(app.id, SmsRecordFilter(phone_number="+8613800000002"), (NOW + 1, 99), 100)
    await store.list_sms_records(app.id, SmsRecordFilter(statuses=(SmsStatus.SENT,), start_time=NOW - 1), None, 100)
    await store.statistics(app.id, NOW - 60, NOW + 60)
    await store.sms_sources()


# -- push channels: credentials, routes, outcomes -------------------------------------------------


async def test_channel_credentials_are_kept_per_app_and_channel_and_shown_on_the_app(store: Store) -> None:
    app, other = await app_of(store), await app_of(store, "app-2")
    updated = await store.set_channel_credentials(app.id, Channel.APNS, b"sealed-1", NOW)
    assert updated.channels == frozenset({Channel.APNS})
    await store.set_channel_credentials(app.id, Channel.APNS, b"sealed-2", NOW + 1)  # replaces
    await store.set_channel_credentials(app.id, Channel.FCM, b"sealed-3", NOW)
    assert await store.channel_credentials(app.id) == {Channel.APNS: b"sealed-2", Channel.FCM: b"sealed-3"}
    assert await store.channel_credentials(other.id) == {}
    got = await store.get_app(app.access_id)
    assert got is not None and got.channels == frozenset({Channel.APNS, Channel.FCM})
    changed = await store.reseal_sms_credentials(
        lambda a, b: b, reseal_channel=lambda access_id, channel, blob: blob + access_id.encode()
    )
    assert changed == 0
    assert (await store.channel_credentials(app.id))[Channel.FCM] == b"sealed-3app-1"


async def test_an_invalid_token_is_routed_as_invalid_until_registered_again(store: Store) -> None:
    app = await app_of(store)
    device = await store.register_device(app.id, "tok-a", Channel.FCM, "+8613800138000", NOW)
    assert device.channel is Channel.FCM and device.phone_number == "+8613800138000" and device.invalid_at is None
    await store.bind_phone(app.id, "tok-b", "+8613900139000", NOW)  # only bound: no route of its own
    assert await store.device_routes(app.id, ["tok-a", "tok-b", "tok-c"]) == {"tok-a": Route(Channel.FCM, False)}

    push = await add_push(store, app, "p1", ["tok-a", "tok-b", "tok-c"])
    await store.record_outcomes(push, app.id, [
        TargetOutcome("tok-a", Channel.FCM, PushOutcome.INVALID_TOKEN, "UNREGISTERED", NOW + 1),
        TargetOutcome("tok-c", Channel.WEBHOOK, PushOutcome.INVALID_TOKEN, "http_410", NOW + 1),
    ])
    routes = await store.device_routes(app.id, ["tok-a", "tok-b", "tok-c"])
    assert routes == {"tok-a": Route(Channel.FCM, True), "tok-c": Route(Channel.WEBHOOK, True)}
    gone = await store.get_device(app.id, "tok-a")
    assert gone is not None and gone.invalid_at == NOW + 1 and gone.invalid_reason == "UNREGISTERED"

    again = await store.register_device(app.id, "tok-a", Channel.APNS, "", NOW + 2)
    assert again.invalid_at is None and again.invalid_reason == "" and again.channel is Channel.APNS
    assert again.phone_number == "+8613800138000"  # an empty phone keeps the one bound
    # An answer about the old channel does not mark the device now on another one.
    push2 = await add_push(store, app, "p2", ["tok-a"])
    await store.record_outcomes(push2, app.id, [TargetOutcome("tok-a", Channel.FCM, PushOutcome.INVALID_TOKEN, "x", NOW + 3)])
    assert (await store.device_routes(app.id, ["tok-a"]))["tok-a"] == Route(Channel.APNS, False)


async def test_outcomes_are_kept_once_and_a_restart_redelivers_only_unanswered_targets(store: Store) -> None:
    app = await app_of(store)
    await store.bind_phone(app.id, "t1", "+8613800138000", NOW)
    push = await add_push(store, app, "p1", ["t1", "t2", "t3"])
    await store.record_outcomes(push, app.id, [
        TargetOutcome("t1", Channel.APNS, PushOutcome.FAILED, "BadTopic", NOW + 1),
        TargetOutcome("t2", Channel.APNS, PushOutcome.ACCEPTED, "", NOW + 1),
    ])
    # A second answer (a redelivery racing the first) never overwrites the first.
    await store.record_outcomes(push, app.id, [TargetOutcome("t2", Channel.APNS, PushOutcome.FAILED, "late", NOW + 2)])
    views = {v.token: v for v in await store.push_targets(push, 0, 10)}
    assert (views["t1"].push_outcome, views["t1"].push_outcome_code) == (PushOutcome.FAILED, "BadTopic")
    assert (views["t2"].push_outcome, views["t2"].channel) == (PushOutcome.ACCEPTED, Channel.APNS)
    assert views["t3"].push_outcome is PushOutcome.PENDING and views["t3"].push_outcome_at is None
    funnel = await store.push_funnel(push)
    assert (funnel.push_accepted_count, funnel.push_failed_count, funnel.push_pending_count) == (1, 1, 1)

    found, _ = await store.undelivered_pushes(push, NOW + 10, None, 10)
    assert [(p.push_id, tokens) for _, p, tokens in found] == [("p1", ("t3",))]
    # The fallback sees which devices definitely cannot get the push (early_on_push_failure).
    job = await store.pending_fallback_job(push)
    assert job is not None and job.push == push
    recipients = await store.recipients_many([job])
    assert {r.token: r.unreachable for r in recipients[push]} == {"t1": True, "t2": False, "t3": False}
    await store.claim_fallbacks([push], NOW + 300)
    assert await store.pending_fallback_job(push) is None  # claimed: no longer an early fire's


# -- early delivery receipts ----------------------------------------------------------------------


async def test_a_receipt_that_beats_its_serial_number_is_kept_and_applied_when_it_is_written(store: Store) -> None:
    app = await app_of(store)
    row = await add_push(store, app, "p", ["t"])
    (job,) = await store.claim_fallbacks([row], NOW)
    window = RateLimiter().window(job.policy, NOW)
    phones = ("+8613800000001", "+8613800000002")
    await store.reserve_sms_many([(job, phones, window)], NOW)
    await store.dispatch_sms([(job.push, p) for p in phones], NOW)
    # The provider's callback arrives before the call's answer is recorded: nothing to match yet.
    early = [DeliveryReceipt(phones[0], "s-1", True, NOW + 1, "DELIVRD"), DeliveryReceipt(phones[1], "s-2", False, NOW + 1)]
    assert await store.apply_receipts(early) == 0
    await store.finish_sms_many(
        [(job.push, SmsOutcome(p, SmsStatus.SENT, serial_no=s)) for p, s in zip(phones, ("s-1", "s-2"))], NOW + 2
    )
    records = {r.phone_number: r for r in await store.list_sms_records(app.id, SmsRecordFilter(), None, 10)}
    assert records[phones[0]].status is SmsStatus.DELIVERED and records[phones[0]].report_code == "DELIVRD"
    assert records[phones[1]].status is SmsStatus.UNDELIVERED
    # Applied once: the same receipt again changes nothing, and is not kept again.
    assert await store.apply_receipts(early) == 0


async def test_kept_receipts_of_serial_numbers_that_never_come_are_purged(store: Store, store_db: str) -> None:
    assert await store.apply_receipts([DeliveryReceipt("+8613800000001", "never", True, NOW)]) == 0
    assert query(store_db, "SELECT count(*) FROM pending_receipts") == [(1,)]
    await store.purge_expired(None, NOW - 1, 100)
    assert query(store_db, "SELECT count(*) FROM pending_receipts") == [(1,)]
    await store.purge_expired(None, NOW + 1, 100)
    assert query(store_db, "SELECT count(*) FROM pending_receipts") == [(0,)]


# -- tags and broadcasts (TAG / ALL pushes) -------------------------------------------------------


async def test_tags_are_changed_in_one_call_and_refused_whole_past_a_limit(store: Store) -> None:
    app = await app_of(store)
    await store.modify_tags(app.id, NOW, add=[("t1", "a"), ("t1", "b"), ("t2", "a")], max_per_token=2, max_per_app=3)
    assert (await store.get_device(app.id, "t1")).tags == ("a", "b")  # type: ignore[union-attr]
    with pytest.raises(FailedPrecondition, match="t1"):  # a third tag on t1
        await store.modify_tags(app.id, NOW + 1, add=[("t2", "b"), ("t1", "c")], max_per_token=2, max_per_app=3)
    assert (await store.get_device(app.id, "t2")).tags == ("a",)  # type: ignore[union-attr]  # undone whole
    await store.modify_tags(app.id, NOW + 2, add=[("t3", "c")], max_per_token=2, max_per_app=3)
    with pytest.raises(FailedPrecondition, match="distinct tags"):  # a fourth tag in the app
        await store.modify_tags(app.id, NOW + 3, add=[("t3", "d")], max_per_token=2, max_per_app=3)
    # Clear, then remove, then add, in one call; a removal frees room on the token.
    await store.modify_tags(
        app.id, NOW + 4, clear=["t2"], remove=[("t1", "a")], add=[("t1", "c")], max_per_token=2, max_per_app=3
    )
    assert (await store.get_device(app.id, "t1")).tags == ("b", "c")  # type: ignore[union-attr]
    assert (await store.get_device(app.id, "t2")).tags == ()  # type: ignore[union-attr]
    other = await app_of(store, "app-2")  # limits are per app
    await store.modify_tags(other.id, NOW, add=[("t1", "x"), ("t1", "y")], max_per_token=2, max_per_app=3)
    assert await store.broadcast_page(app.id, "", 10, with_tags=True) == [
        ("t1", frozenset({"b", "c"})),
        ("t2", frozenset()),
        ("t3", frozenset({"c"})),
    ]
    assert await store.broadcast_page(app.id, "t1", 1, with_tags=False) == [("t2", frozenset())]


async def add_broadcast(store: Store, app: App, push_id: str) -> int:
    due = NOW + 300
    spec = PushSpec(AudienceType.ALL, (), (), "t", "c", resend_by_sms=True, sms_info=INFO)
    receipt = PushReceipt(push_id, 0, (), NOW, due)
    _, row = await store.create_push(NewPush(push_id, app.id, spec, (), NOW, due, "", receipt), "")
    assert row is not None
    return row


async def test_a_broadcast_is_stored_page_by_page_and_its_fallback_waits_for_the_last(store: Store) -> None:
    app = await app_of(store)
    row = await add_broadcast(store, app, "b1")
    (b,) = await store.open_broadcasts()
    assert (b.push, b.push_id, b.cursor, b.next_seq, b.delivered_seq) == (row, "b1", "", 0, 0)
    assert (await store.get_push(app.id, "b1")).targets_pending  # type: ignore[union-attr]
    # Not redelivered on start (its resolver delivers it), not loaded, not claimable.
    assert (await store.undelivered_pushes(row, NOW + 1, None, 10))[0] == []
    assert row not in dict(await store.live_fallbacks())
    assert await store.claim_fallbacks([row], NOW + 1000) == []
    assert await store.pending_fallback_job(row) is None

    assert await store.store_broadcast_page(row, "", ["t1", "t2"], "t2") == 0
    with pytest.raises(FailedPrecondition):  # the cursor moved on: a page is stored once
        await store.store_broadcast_page(row, "", ["t1", "t2"], "t2")
    assert await store.store_broadcast_page(row, "t2", ["t4"], "t5") == 2
    assert await store.broadcast_tokens(row, 1, 3) == ["t2", "t4"]
    await store.mark_broadcast_delivered(row, 3)
    await store.mark_broadcast_delivered(row, 1)  # never backwards
    (b,) = await store.open_broadcasts()
    assert (b.cursor, b.next_seq, b.delivered_seq) == ("t5", 3, 3)
    await store.finish_broadcast(row, NOW + 5)
    assert await store.open_broadcasts() == []
    push = await store.get_push(app.id, "b1")
    assert push is not None and push.target_count == 3 and not push.targets_pending
    assert [t.token for t in await store.push_targets(row, 0, 10)] == ["t1", "t2", "t4"]
    assert row in dict(await store.live_fallbacks())
    (job,) = await store.claim_fallbacks([row], NOW + 1000)
    assert [r.token for r in (await store.recipients_many([job]))[row]] == ["t1", "t2", "t4"]
