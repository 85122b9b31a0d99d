"""The scheduler on a fake clock, a fake SMS provider and a real SQLite store in tmp_path.

Time moves only through FakeClock.advance; the short real waits in `until` and `settle`
are for the store's threads to finish I/O, never for time to pass.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from pushreachd.channels.log import LogPushChannel
from pushreachd.engine.ratelimit import (
    DAILY_LIMIT_RULE,
    PROVIDER_RULE,
    SAME_CONTENT_RULE,
    RateLimiter,
)
from pushreachd.engine.scheduler import FireReport, Scheduler
from pushreachd.errors import FailedPrecondition
from pushreachd.model import (
    App,
    EventIn,
    EventType,
    FallbackState,
    Push,
    PushReceipt,
    SmsRecord,
    SmsRecordFilter,
    SmsStatus,
    TriggerCondition,
)
from pushreachd.phone import is_mainland
from pushreachd.services.pushes import PushService
from pushreachd.errors import Unavailable
from pushreachd.sms.provider import SendOutcome, SmsErrorKind, SmsProviderError
from pushreachd.sms.sender import SmsSender
from pushreachd.store import make_store
from pushreachd.store.sqlite import SqliteStore

from tests.builders import sms_push_draft
from tests.fakes import FakeClock, FakeSmsProvider

DELAY = 300
TICK = 0.1
PHONES = ["+8613800000001", "+8613800000002", "+8613800000003"]


@dataclass
class Engine:
    store: SqliteStore
    clock: FakeClock
    provider: FakeSmsProvider
    app: App
    scheduler: Scheduler = field(init=False)
    pushes: PushService = field(init=False)
    reports: list[FireReport] = field(default_factory=list)
    options: dict[str, int] = field(default_factory=dict)  # Scheduler keyword arguments
    sender_options: dict[str, int] = field(default_factory=dict)  # SmsSender keyword arguments

    def new_scheduler(self) -> Scheduler:
        """A scheduler as a fresh process would build it, over the same store."""
        self.scheduler = Scheduler(
            self.store,
            SmsSender(self.provider, self.clock, **self.sender_options),
            self.clock,
            limiter=RateLimiter("Asia/Shanghai"),
            credentials=lambda access_id, blob: None,
            tick_ms=int(TICK * 1000),
            **self.options,
        )
        self.scheduler.observers.append(self.reports.append)
        self.pushes = PushService(self.store, LogPushChannel(), self.scheduler, self.clock, min_delay_seconds=DELAY)
        return self.scheduler

    async def push(
        self,
        tokens: list[str],
        condition: TriggerCondition = TriggerCondition.NOT_ARRIVED,
        delay: int = DELAY,
        params: tuple[str, ...] = ("42", "Alice"),
    ) -> PushReceipt:
        return await self.pushes.push(
            self.app,
            sms_push_draft(tokens, delay, trigger_condition=int(condition), sms_template_params=list(params)),
        )

    async def bind(self, token: str, phone: str) -> None:
        await self.store.bind_phone(self.app.id, token, phone, self.clock.time())

    async def report(self, push_id: str, token: str, event_type: EventType) -> None:
        await self.store.record_events(
            self.app.id, [EventIn(push_id, token, event_type, self.clock.time())], self.clock.time()
        )

    async def get(self, push_id: str) -> Push:
        push = await self.store.get_push(self.app.id, push_id)
        assert push is not None
        return push

    async def records(self, push_id: str = "") -> list[SmsRecord]:
        return await self.store.list_sms_records(self.app.id, SmsRecordFilter(push_id=push_id), None, 10_000)

    async def until(self, predicate: Callable[[], object], what: str = "condition", timeout: float = 20.0) -> None:
        """Wait (bounded) for the store's threads and the workers to reach a state."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            result = predicate()
            if asyncio.iscoroutine(result):
                result = await result
            if result:
                return
            assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
            await asyncio.sleep(0.002)

    async def done(self, push_id: str) -> Push:
        async def is_done() -> bool:
            return (await self.get(push_id)).fallback_state is FallbackState.DONE

        await self.until(is_done, f"fallback of {push_id} DONE")
        await self.settle()
        return await self.get(push_id)

    async def settle(self) -> None:
        """Let due fallbacks be picked up and every fire under way finish."""
        for _ in range(20):
            await asyncio.sleep(0)
        await self.until(lambda: self.scheduler.backlog == 0, "an idle scheduler")


@pytest.fixture
async def engine(tmp_path: Path, store_db: str) -> AsyncIterator[Engine]:
    """The engine on each store (the `store_db` backends): firing is persistence too."""
    async for e in _engine(tmp_path, FakeClock(), db=store_db):
        yield e


async def _engine(
    tmp_path: Path,
    clock: FakeClock,
    provider: FakeSmsProvider | None = None,
    sender_options: dict[str, int] | None = None,
    *,
    db: str = "",
    **options: int,
) -> AsyncIterator[Engine]:
    store = make_store(db or str(tmp_path / "unit.db"))
    await store.open()
    app = await store.create_app("app-1", "app", "verifier", clock.time())
    e = Engine(store, clock, provider or FakeSmsProvider(), app, options=options, sender_options=sender_options or {})
    e.new_scheduler()
    await e.scheduler.start()
    try:
        yield e
    finally:
        e.provider.release()
        await e.scheduler.stop(grace=1)
        await store.close()


async def three_phones(e: Engine) -> list[str]:
    for i, phone in enumerate(PHONES):
        await e.bind(f"tok{i}", phone)
    return ["tok0", "tok1", "tok2"]


# -- when it fires ---------------------------------------------------------------------------


async def test_fires_at_due_time_and_not_before(engine: Engine) -> None:
    await engine.bind("tok0", PHONES[0])
    receipt = await engine.push(["tok0"])
    assert receipt.fallback_due_at == engine.clock.time() + DELAY

    await engine.clock.advance(DELAY - 0.05)
    await engine.settle()
    assert (await engine.get(receipt.push_id)).fallback_state is FallbackState.PENDING
    assert engine.provider.batches == []

    await engine.clock.advance(0.05)
    await engine.done(receipt.push_id)
    assert engine.provider.numbers == [PHONES[0]]
    (report,) = engine.reports
    assert report.lateness < TICK, "fires within one tick of the deadline"


# -- the three conditions, per phone ------------------------------------------------------------


@pytest.mark.parametrize(
    ("condition", "events", "expected"),
    [
        # NOT_ARRIVED: the device that reported arrival gets no SMS.
        (TriggerCondition.NOT_ARRIVED, [("tok0", EventType.ARRIVED)], PHONES[1:]),
        # A click implies arrival, even with no arrival report.
        (TriggerCondition.NOT_ARRIVED, [("tok2", EventType.CLICKED)], PHONES[:2]),
        # NOT_CLICKED: arrival is not enough; only the clicking device is spared.
        (
            TriggerCondition.NOT_CLICKED,
            [("tok0", EventType.ARRIVED), ("tok1", EventType.CLICKED)],
            [PHONES[0], PHONES[2]],
        ),
        # NOTIFICATION_DISABLED: only a device whose latest report is "enabled" is spared;
        # disabled and never-reported devices get the SMS.
        (
            TriggerCondition.NOTIFICATION_DISABLED,
            [("tok0", EventType.NOTIFICATION_ENABLED), ("tok1", EventType.NOTIFICATION_DISABLED)],
            PHONES[1:],
        ),
    ],
)
async def test_each_condition_sends_to_exactly_the_phones_that_need_it(
    engine: Engine, condition: TriggerCondition, events: list[tuple[str, EventType]], expected: list[str]
) -> None:
    tokens = await three_phones(engine)
    receipt = await engine.push(tokens, condition)
    for token, event_type in events:
        await engine.report(receipt.push_id, token, event_type)
    await engine.clock.advance(DELAY)
    await engine.done(receipt.push_id)

    assert sorted(engine.provider.numbers) == sorted(expected)
    (batch,) = engine.provider.batches
    assert (batch.sms_app_id, batch.sign_name, batch.template_id) == ("1400000001", "Pushreach", "123456")
    assert batch.template_params == ("42", "Alice")
    assert batch.session_context == receipt.push_id
    records = await engine.records(receipt.push_id)
    assert sorted(r.phone_number for r in records) == sorted(expected)
    assert {r.status for r in records} == {SmsStatus.SENT}


async def test_a_notification_state_reported_after_the_push_still_counts(engine: Engine) -> None:
    """The condition is judged when the timer fires, not when the push is accepted."""
    tokens = await three_phones(engine)
    await engine.report("", "tok0", EventType.NOTIFICATION_DISABLED)
    receipt = await engine.push(tokens, TriggerCondition.NOTIFICATION_DISABLED)
    await engine.clock.advance(DELAY / 2)
    await engine.report("", "tok0", EventType.NOTIFICATION_ENABLED)
    await engine.clock.advance(DELAY / 2)
    await engine.done(receipt.push_id)
    assert sorted(engine.provider.numbers) == PHONES[1:]


@pytest.mark.parametrize(
    ("events", "sms"),
    [([], 1), ([("a", EventType.ARRIVED)], 0), ([("b", EventType.ARRIVED)], 0), ([("b", EventType.CLICKED)], 0)],
)
async def test_two_tokens_sharing_a_phone_get_one_sms_and_none_if_either_satisfied(
    engine: Engine, events: list[tuple[str, EventType]], sms: int
) -> None:
    await engine.bind("a", PHONES[0])
    await engine.bind("b", PHONES[0])
    receipt = await engine.push(["a", "b"], TriggerCondition.NOT_ARRIVED)
    for token, event_type in events:
        await engine.report(receipt.push_id, token, event_type)
    await engine.clock.advance(DELAY)
    await engine.done(receipt.push_id)
    assert engine.provider.numbers == [PHONES[0]] * sms
    assert len(await engine.records(receipt.push_id)) == sms


async def test_targets_without_phone_are_counted_not_sent(engine: Engine) -> None:
    await engine.bind("with", PHONES[0])
    await engine.bind("unbound", PHONES[1])
    await engine.store.unbind_phone(engine.app.id, "unbound", engine.clock.time())
    receipt = await engine.push(["with", "unbound", "never-seen"])
    await engine.clock.advance(DELAY)
    await engine.done(receipt.push_id)
    assert engine.provider.numbers == [PHONES[0]]
    assert engine.reports[-1].no_phone == 2
    push = await engine.get(receipt.push_id)
    assert (await engine.store.push_funnel(push.id)).no_phone_count == 2


async def test_a_phone_rebound_before_the_fire_gets_the_sms_at_its_new_number(engine: Engine) -> None:
    await engine.bind("tok0", PHONES[0])
    receipt = await engine.push(["tok0"])
    await engine.bind("tok0", PHONES[2])  # rebinding replaces
    await engine.clock.advance(DELAY)
    await engine.done(receipt.push_id)
    assert engine.provider.numbers == [PHONES[2]]


# -- cancel, repeat, burst -----------------------------------------------------------------------


async def test_cancel_fallback_stops_it(engine: Engine) -> None:
    tokens = await three_phones(engine)
    receipt = await engine.push(tokens)
    assert await engine.pushes.cancel_fallback(engine.app, receipt.push_id) is FallbackState.CANCELLED
    assert engine.scheduler.pending_count == 0, "disarmed from the wheel"
    await engine.clock.advance(DELAY * 2)
    await engine.settle()
    assert (await engine.get(receipt.push_id)).fallback_state is FallbackState.CANCELLED
    assert engine.provider.batches == []
    # Even if the wheel still held it, the store refuses to fire a cancelled fallback.
    assert await engine.scheduler.fire((await engine.get(receipt.push_id)).id) is None
    assert engine.provider.batches == []
    # Cancelling again is harmless; cancelling a fallback that already fired is refused.
    assert await engine.pushes.cancel_fallback(engine.app, receipt.push_id) is FallbackState.CANCELLED
    fired = await engine.push(tokens)
    await engine.clock.advance(DELAY)
    await engine.done(fired.push_id)
    with pytest.raises(FailedPrecondition):
        await engine.pushes.cancel_fallback(engine.app, fired.push_id)


async def test_a_second_fire_of_the_same_push_sends_nothing_new(engine: Engine) -> None:
    tokens = await three_phones(engine)
    receipt = await engine.push(tokens)
    await engine.clock.advance(DELAY)
    push = await engine.done(receipt.push_id)
    assert len(engine.provider.numbers) == 3
    assert await engine.scheduler.fire(push.id) is None
    engine.scheduler.arm(push.id, engine.clock.time())  # a stale wheel entry
    await engine.clock.advance(TICK)
    await engine.settle()
    assert len(engine.provider.numbers) == 3


async def test_two_concurrent_fires_of_one_push_send_each_phone_once(engine: Engine) -> None:
    """FIRING -> FIRING is allowed (to resume after a crash), so two fires may both claim;
    the per-(push, phone) record must still stop the second SMS."""
    tokens = await three_phones(engine)
    receipt = await engine.push(tokens)
    engine.scheduler.disarm((await engine.get(receipt.push_id)).id)
    await engine.clock.advance(DELAY)
    push = await engine.get(receipt.push_id)
    await asyncio.gather(engine.scheduler.fire(push.id), engine.scheduler.fire(push.id))
    assert sorted(engine.provider.numbers) == PHONES
    assert len(await engine.records(receipt.push_id)) == 3
    assert (await engine.get(receipt.push_id)).fallback_state is FallbackState.DONE


async def test_a_burst_of_2000_due_pushes_is_worked_through(engine: Engine) -> None:
    n = 2000
    phones = [f"+86139{i:08d}" for i in range(n)]
    await asyncio.gather(*(engine.bind(f"burst{i}", p) for i, p in enumerate(phones)))
    receipts = await asyncio.gather(*(engine.push([f"burst{i}"]) for i in range(n)))
    assert engine.scheduler.pending_count == n
    await engine.clock.advance(DELAY)
    # While the burst is worked through, the store still answers new calls.
    await engine.bind("late", PHONES[0])
    late = await engine.push(["late"])
    await engine.until(lambda: len(engine.reports) >= n, "every burst push fired", timeout=60)
    await engine.settle()
    assert sorted(engine.provider.numbers) == sorted(phones), "each phone exactly once"
    states = {(await engine.get(r.push_id)).fallback_state for r in receipts}
    assert states == {FallbackState.DONE}
    assert (await engine.get(late.push_id)).fallback_state is FallbackState.PENDING
    # Same template and parameters: the pushes' numbers share provider calls of up to 200.
    assert all(len(b.phone_numbers) <= 200 for b in engine.provider.batches)
    assert len(engine.provider.batches) <= n / 50, "coalesced, not one call per push"


async def test_batches_respect_the_provider_size_and_never_mix_mainland_and_international(
    tmp_path: Path,
) -> None:
    async for e in _engine(tmp_path, FakeClock(), FakeSmsProvider(max_batch_size=2)):
        phones = [*PHONES, "+14155550100", "+8613800000005", "+447700900123"]
        for i, p in enumerate(phones):
            await e.bind(f"t{i}", p)
        receipt = await e.push([f"t{i}" for i in range(len(phones))])
        await e.clock.advance(DELAY)
        await e.done(receipt.push_id)
        assert sorted(e.provider.numbers) == sorted(phones)
        for batch in e.provider.batches:
            assert len(batch.phone_numbers) <= 2
            assert len({is_mainland(p) for p in batch.phone_numbers}) == 1


# -- provider answers ------------------------------------------------------------------------------


async def test_provider_outcomes_are_recorded_per_phone(engine: Engine) -> None:
    tokens = await three_phones(engine)
    engine.provider.outcomes = {PHONES[1]: SendOutcome.FAILED, PHONES[2]: SendOutcome.RATE_LIMITED}
    receipt = await engine.push(tokens)
    await engine.clock.advance(DELAY)
    await engine.done(receipt.push_id)
    by_phone = {r.phone_number: r for r in await engine.records(receipt.push_id)}
    assert by_phone[PHONES[0]].status is SmsStatus.SENT
    assert by_phone[PHONES[1]].status is SmsStatus.FAILED
    assert by_phone[PHONES[2]].status is SmsStatus.RATE_LIMITED
    assert by_phone[PHONES[2]].rate_limit_rule == PROVIDER_RULE
    report = engine.reports[-1]
    assert (report.sent, report.failed, report.rate_limited) == (1, 1, 1)


async def test_answers_are_written_once_the_store_is_back_not_left_sending(engine: Engine) -> None:
    """A busy or briefly unreachable store (PostgreSQL's pool exhausted by a burst) must not
    turn sent SMS into UNKNOWN: the answers are written when it is back."""
    tokens = await three_phones(engine)
    real = engine.store.finish_sms_many
    failures, calls = 3, 0

    async def flaky(outcomes, now):  # type: ignore[no-untyped-def]
        nonlocal failures, calls
        calls += 1
        if failures:
            failures -= 1
            raise Unavailable("the database is unreachable: PoolTimeout")
        return await real(outcomes, now)

    engine.store.finish_sms_many = flaky  # type: ignore[method-assign]
    receipt = await engine.push(tokens)
    await engine.clock.advance(DELAY)
    for _ in range(500):  # bounded: the retries wait 0.5 + 1 + 2 s on the fake clock
        if calls > 3:
            break
        await engine.clock.advance(0.5)
        await asyncio.sleep(0.01)
    await engine.done(receipt.push_id)
    assert calls == 4
    assert [r.status for r in await engine.records(receipt.push_id)] == [SmsStatus.SENT] * 3
    assert engine.provider.calls == 1, "the SMS were sent once; only their answers waited"


async def test_a_permanent_provider_error_fails_the_records_and_ends_the_fallback(engine: Engine) -> None:
    tokens = await three_phones(engine)
    engine.provider.fail_with = SmsProviderError(SmsErrorKind.PERMANENT, "FailedOperation.TemplateIncorrect", "no")
    receipt = await engine.push(tokens)
    await engine.clock.advance(DELAY)
    await engine.done(receipt.push_id)
    records = await engine.records(receipt.push_id)
    assert [r.status for r in records] == [SmsStatus.FAILED] * 3
    assert {r.provider_code for r in records} == {"FailedOperation.TemplateIncorrect"}
    assert engine.provider.calls == 1, "a permanent error is not retried"


# -- restart --------------------------------------------------------------------------------------


async def test_a_new_scheduler_re_arms_pending_fallbacks_and_fires_overdue_ones_at_once(engine: Engine) -> None:
    tokens = await three_phones(engine)
    early = await engine.push(tokens[:1], delay=DELAY)
    later = await engine.push(tokens[1:], delay=DELAY * 3)
    await engine.scheduler.stop()

    await engine.clock.advance(DELAY * 2)  # the process is down while the first comes due
    assert engine.provider.batches == []
    engine.new_scheduler()
    assert await engine.scheduler.start() == 2
    await engine.done(early.push_id)
    assert engine.provider.numbers == [PHONES[0]]
    assert engine.reports[-1].lateness == pytest.approx(DELAY)
    await engine.settle()
    assert (await engine.get(later.push_id)).fallback_state is FallbackState.PENDING

    await engine.clock.advance(DELAY - 0.05)
    await engine.settle()
    assert (await engine.get(later.push_id)).fallback_state is FallbackState.PENDING
    await engine.clock.advance(DELAY)
    await engine.done(later.push_id)
    assert sorted(engine.provider.numbers) == PHONES


@pytest.mark.parametrize("page", [1, 2, 5, 100])
async def test_a_start_arms_exactly_the_live_fallbacks_a_page_at_a_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, page: int
) -> None:
    clock = FakeClock()
    async for e in _engine(tmp_path, clock, live_page=page):
        tokens = await three_phones(e)
        sent = [await e.push(tokens[i % 3 : i % 3 + 1], delay=DELAY * (i + 1)) for i in range(6)]
        await e.store.cancel_fallback(e.app.id, sent[2].push_id, clock.time())  # no longer live
        rows = {r.push_id: (await e.get(r.push_id)).id for r in sent}
        live = {rows[r.push_id] for i, r in enumerate(sent) if i != 2}
        await e.scheduler.stop()
        await clock.advance(DELAY * 2.5)  # the process is down while the first two come due

        calls: list[tuple[int, int, list[tuple[int, float]]]] = []
        real = e.store.live_fallbacks

        async def spy(after: int, limit: int) -> list[tuple[int, float]]:
            found = await real(after, limit)
            calls.append((after, limit, found))
            return found

        monkeypatch.setattr(e.store, "live_fallbacks", spy)
        e.new_scheduler()
        assert await e.scheduler.start() == len(live)

        # Pages of at most `page` rows, each after the last id of the one before, the last short.
        assert [limit for _, limit, _ in calls] == [page] * len(calls)
        assert all(len(found) <= page for *_, found in calls)
        assert len(calls[-1][2]) < page
        assert [after for after, *_ in calls] == [0] + [found[-1][0] for *_, found in calls[:-1]]
        walked = [push for *_, found in calls for push, _ in found]
        assert walked == sorted(live)

        # The two overdue fire at once; the others stay armed until they are due.
        await e.done(sent[0].push_id)
        await e.done(sent[1].push_id)
        assert sorted(e.provider.numbers) == PHONES[:2]
        assert e.scheduler.pending_count == 3
        for r in sent[3:]:
            assert (await e.get(r.push_id)).fallback_state is FallbackState.PENDING
        assert (await e.get(sent[2].push_id)).fallback_state is FallbackState.CANCELLED


async def test_sending_records_left_by_a_stop_become_unknown_and_are_never_resent(engine: Engine) -> None:
    tokens = await three_phones(engine)
    receipt = await engine.push(tokens)
    engine.provider.hold()  # the provider call never returns: a crash mid-send
    await engine.clock.advance(DELAY)
    await engine.until(lambda: engine.provider.calls == 1, "the provider call")
    await engine.scheduler.stop(grace=0)
    assert {r.status for r in await engine.records(receipt.push_id)} == {SmsStatus.SENDING}
    assert (await engine.get(receipt.push_id)).fallback_state is FallbackState.FIRING
    engine.provider.release()

    engine.new_scheduler()
    assert await engine.scheduler.start() == 1  # the FIRING fallback is resumed
    await engine.done(receipt.push_id)
    records = await engine.records(receipt.push_id)
    assert sorted(r.phone_number for r in records) == PHONES
    assert {r.status for r in records} == {SmsStatus.UNKNOWN}
    assert engine.provider.numbers == [], "never sent a second time"


async def test_after_a_crash_reserved_records_are_sent_dispatched_ones_unknown_the_rest_judged(engine: Engine) -> None:
    tokens = await three_phones(engine)
    receipt = await engine.push(tokens)
    await engine.scheduler.stop()
    await engine.clock.advance(DELAY)
    # The crashed process had claimed the fallback, reserved two phones and dispatched the
    # call carrying one of them, then died before the answer; the third phone was not judged.
    push = await engine.get(receipt.push_id)
    (job,) = await engine.store.claim_fallbacks([push.id], engine.clock.time())
    window = RateLimiter().window(job.policy, engine.clock.time())
    reserved = await engine.store.reserve_sms_many([(job, tuple(PHONES[:2]), window)], engine.clock.time())
    assert reserved == [(PHONES[:2], 0)]
    assert await engine.store.dispatch_sms([(push.id, PHONES[1])], engine.clock.time()) == [True]
    assert await engine.store.dispatch_sms([(push.id, PHONES[1])], engine.clock.time()) == [False], "once"

    engine.new_scheduler()
    await engine.scheduler.start()
    await engine.done(receipt.push_id)
    by_phone = {r.phone_number: r.status for r in await engine.records(receipt.push_id)}
    assert by_phone == {PHONES[0]: SmsStatus.SENT, PHONES[1]: SmsStatus.UNKNOWN, PHONES[2]: SmsStatus.SENT}
    assert sorted(engine.provider.numbers) == [PHONES[0], PHONES[2]], "the dispatched one is never sent again"


async def test_a_graceful_stop_lets_calls_in_flight_finish_and_leaves_the_rest_reserved(tmp_path: Path) -> None:
    phones = [f"+86138000001{i:02d}" for i in range(10)]
    async for e in _engine(tmp_path, FakeClock(), sender_options={"per_app_concurrency": 2}, per_app=2):
        receipts = []
        for i, phone in enumerate(phones):
            await e.bind(f"t{i}", phone)
            receipts.append(await e.push([f"t{i}"], params=(str(i),)))  # one call each
        e.provider.hold()
        await e.clock.advance(DELAY)
        await e.until(lambda: e.provider.calls == 2, "two calls in flight")
        stopping = asyncio.ensure_future(e.scheduler.stop(grace=30))
        await e.until(lambda: e.scheduler._stopping, "the stop to begin")
        e.provider.release()  # the calls in flight answer within the grace
        await asyncio.wait_for(stopping, 20)
        records = await e.records()
        assert sorted(r.status for r in records) == [SmsStatus.SENT] * 2 + [SmsStatus.RESERVED] * 8
        assert e.provider.calls == 2, "nothing was dispatched after the stop began"
        states = [(await e.get(r.push_id)).fallback_state for r in receipts]
        assert sorted(states) == [FallbackState.FIRING] * 8 + [FallbackState.DONE] * 2

        e.new_scheduler()
        await e.scheduler.start()
        for r in receipts:
            await e.done(r.push_id)
        assert {r.status for r in await e.records()} == {SmsStatus.SENT}
        assert sorted(e.provider.numbers) == phones, "every phone exactly once"


class _SlowProvider(FakeSmsProvider):
    """Answers each call after `seconds` of the fake clock."""

    def __init__(self, clock: FakeClock, seconds: float) -> None:
        super().__init__()
        self._clock = clock
        self._seconds = seconds
        self.sleeping = False

    async def send(self, batch):  # type: ignore[no-untyped-def]
        self.sleeping = True
        try:
            await self._clock.sleep(self._seconds)
        finally:
            self.sleeping = False
        return await super().send(batch)


@pytest.mark.parametrize("lanes", [1, 2], ids=["B-waits-behind-A", "B-judged-while-A-waits"])
async def test_the_30s_rule_holds_under_a_backlog(tmp_path: Path, lanes: int) -> None:
    """The issue's case: the endpoint answers in 1 s, one call at a time; 40 fallbacks come due,
    then push A to P; 33 s later push B to P with the same content. A is still waiting or was
    only just sent when B is judged: B must be rate-limited, P gets one SMS."""
    clock = FakeClock()
    provider = _SlowProvider(clock, 1.0)
    async for e in _engine(tmp_path, clock, provider, sender_options={"per_app_concurrency": 1}, per_app=lanes):
        for i in range(40):
            await e.bind(f"t{i}", f"+86138000002{i:02d}")
        await e.bind("p", PHONES[0])
        backlog = [await e.push([f"t{i}"], params=(f"other {i}",)) for i in range(40)]
        a = await e.push(["p"], params=("approve", "42"))
        await e.clock.advance(33)
        b = await e.push(["p"], params=("approve", "42"))
        await e.clock.advance(DELAY - 33)  # the 40 and A come due

        async def both_done() -> bool:
            states = {(await e.get(r.push_id)).fallback_state for r in (*backlog, a, b)}
            return states == {FallbackState.DONE}

        for _ in range(200):
            if await both_done():
                break
            await e.until(lambda: provider.sleeping or not e.scheduler.backlog, "the next provider call")
            await e.clock.advance(1.0)
        assert await both_done()
        assert e.provider.numbers.count(PHONES[0]) == 1, "P got one SMS"
        (ra,) = await e.records(a.push_id)
        (rb,) = await e.records(b.push_id)
        assert ra.status is SmsStatus.SENT
        assert (rb.status, rb.rate_limit_rule) == (SmsStatus.RATE_LIMITED, SAME_CONTENT_RULE)
        assert rb.created_at >= ra.created_at + 33, "B's record is dated when it was reserved"


# -- rate limits --------------------------------------------------------------------------------------


SHANGHAI = ZoneInfo("Asia/Shanghai")


def shanghai(*args: int) -> float:
    return dt.datetime(*args, tzinfo=SHANGHAI).timestamp()


async def test_the_eleventh_sms_to_a_number_in_a_shanghai_calendar_day_is_rate_limited(tmp_path: Path) -> None:
    # 07:00 in Shanghai is 23:00 UTC the day before: a UTC day would reset within the hour.
    async for e in _engine(tmp_path, FakeClock(shanghai(2025, 6, 15, 7, 0))):
        await e.bind("tok0", PHONES[0])
        # Eleven pushes, each with its own content, all due in the same tick.
        receipts = [await e.push(["tok0"], params=(str(i),)) for i in range(11)]
        await e.clock.advance(DELAY)
        for r in receipts:
            await e.done(r.push_id)
        records = await e.records()
        assert sorted(r.status for r in records) == [SmsStatus.SENT] * 10 + [SmsStatus.RATE_LIMITED]
        (limited,) = [r for r in records if r.status is SmsStatus.RATE_LIMITED]
        assert limited.rate_limit_rule == DAILY_LIMIT_RULE
        assert len(e.provider.numbers) == 10

        # Counters live in the store: a restart does not reset them, nor does UTC midnight.
        await e.scheduler.stop()
        e.new_scheduler()
        await e.scheduler.start()
        await e.clock.advance(2 * 3600 - DELAY)  # 09:00 Shanghai, 01:00 UTC the next day
        after_utc_midnight = await e.push(["tok0"], params=("utc",))
        await e.clock.advance(DELAY)
        await e.done(after_utc_midnight.push_id)
        (record,) = await e.records(after_utc_midnight.push_id)
        assert (record.status, record.rate_limit_rule) == (SmsStatus.RATE_LIMITED, DAILY_LIMIT_RULE)

        # After midnight in Shanghai the number may be texted again.
        await e.clock.advance(shanghai(2025, 6, 16, 0, 0) - e.clock.time())
        next_day = await e.push(["tok0"], params=("next day",))
        await e.clock.advance(DELAY)
        await e.done(next_day.push_id)
        (record,) = await e.records(next_day.push_id)
        assert record.status is SmsStatus.SENT
        assert len(e.provider.numbers) == 11


async def test_the_same_content_to_a_number_within_30_seconds_is_rate_limited(engine: Engine) -> None:
    await engine.bind("a", PHONES[0])
    await engine.bind("b", PHONES[0])  # another device of the same person
    first = await engine.push(["a"])
    await engine.clock.advance(10)
    repeat = await engine.push(["b"])  # same template, sign, app and parameters
    await engine.clock.advance(5)
    other = await engine.push(["b"], params=("43", "Alice"))  # other content: not limited
    await engine.clock.advance(26)
    later = await engine.push(["b"])  # fires 41 s after the first SMS
    # Each fire finishes before the clock moves on to the next (the first SMS is sent at its
    # due time: a sent SMS counts from when it was sent).
    for r, step in ((first, DELAY - 41), (repeat, 10), (other, 5), (later, 26)):
        await engine.clock.advance(step)
        await engine.done(r.push_id)

    async def status(r: PushReceipt) -> tuple[SmsStatus, str]:
        (record,) = await engine.records(r.push_id)
        return record.status, record.rate_limit_rule

    assert await status(first) == (SmsStatus.SENT, "")
    assert await status(repeat) == (SmsStatus.RATE_LIMITED, SAME_CONTENT_RULE)
    assert await status(other) == (SmsStatus.SENT, "")
    assert await status(later) == (SmsStatus.SENT, "")
    assert engine.provider.numbers == [PHONES[0]] * 3
