import asyncio
import random

import pytest
from pushreachd.sms.provider import (
    SendOutcome,
    SmsBatch,
    SmsCredentials,
    SmsErrorKind,
    SmsProviderError,
    SmsResult,
)
from pushreachd.sms.sender import SmsSender

from tests.fakes import FakeClock

PHONES = ("+8613800000001", "+8613800000002")


def batch(app: str = "app-a", phones: tuple[str, ...] = PHONES) -> SmsBatch:
    return SmsBatch(app, SmsCredentials("id", "key"), "1400000001", "Sign", "T1", ("1",), phones)


class RecordingClock(FakeClock):
    def __init__(self) -> None:
        super().__init__()
        self.sleeps: list[float] = []

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        await super().sleep(seconds)


class MaxRandom(random.Random):
    """Full jitter's upper bound, to see the cap itself."""

    def uniform(self, a: float, b: float) -> float:
        return b


class ScriptedProvider:
    """Raises the scripted errors in order, then answers every number Ok."""

    name = "scripted"
    max_batch_size = 200

    def __init__(self, *errors: SmsProviderError, drop: str | None = None) -> None:
        self.errors = list(errors)
        self.drop = drop
        self.calls = 0

    async def send(self, b: SmsBatch) -> list[SmsResult]:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return [
            SmsResult(n, SendOutcome.SENT, code="Ok", serial_no=f"s-{n}", fee=1)
            for n in reversed(b.phone_numbers)  # order must not matter
            if n != self.drop
        ]

    async def close(self) -> None:
        pass


def transient() -> SmsProviderError:
    return SmsProviderError(SmsErrorKind.TRANSIENT, "InternalError", "boom")


async def run_to_end(clock: FakeClock, coro):  # type: ignore[no-untyped-def]
    task = asyncio.ensure_future(coro)
    while not task.done():
        await clock.advance(100)
    return task.result()


async def test_transient_then_success() -> None:
    clock = RecordingClock()
    provider = ScriptedProvider(transient(), transient())
    sender = SmsSender(provider, clock, rng=random.Random(1))
    results = await run_to_end(clock, sender.send(batch()))
    assert [(r.phone_number, r.outcome) for r in results] == [(p, SendOutcome.SENT) for p in PHONES]
    assert provider.calls == 3 and sender.attempts == 3 and sender.retries == 2
    assert len(clock.sleeps) == 2


async def test_backoff_is_exponential_and_capped() -> None:
    clock = RecordingClock()
    provider = ScriptedProvider(*[transient() for _ in range(10)])
    sender = SmsSender(provider, clock, max_attempts=7, base_delay=0.5, max_delay=3.0, rng=MaxRandom())
    results = await run_to_end(clock, sender.send(batch()))
    assert clock.sleeps == [0.5, 1.0, 2.0, 3.0, 3.0, 3.0]
    assert provider.calls == 7 and sender.exhausted == 1
    assert all(r.outcome is SendOutcome.FAILED and r.code == "InternalError" for r in results)
    assert all(r.message == "boom" for r in results)


async def test_jittered_delays_stay_under_the_cap() -> None:
    clock = RecordingClock()
    provider = ScriptedProvider(*[transient() for _ in range(20)])
    sender = SmsSender(provider, clock, max_attempts=20, base_delay=0.5, max_delay=2.0, rng=random.Random(7))
    await run_to_end(clock, sender.send(batch()))
    assert len(clock.sleeps) == 19
    assert all(0 <= s <= min(2.0, 0.5 * 2**i) for i, s in enumerate(clock.sleeps))
    assert len(set(clock.sleeps)) > 1  # jittered, not constant


@pytest.mark.parametrize(
    ("kind", "outcome"),
    [
        (SmsErrorKind.PERMANENT, SendOutcome.FAILED),
        (SmsErrorKind.RATE_LIMITED, SendOutcome.RATE_LIMITED),
        (SmsErrorKind.UNKNOWN, SendOutcome.UNKNOWN),  # may have been sent: a retry could double it
    ],
)
async def test_non_transient_errors_are_not_retried(kind: SmsErrorKind, outcome: SendOutcome) -> None:
    clock = RecordingClock()
    provider = ScriptedProvider(SmsProviderError(kind, "Some.Code", "no"))
    results = await SmsSender(provider, clock).send(batch())
    assert provider.calls == 1 and clock.sleeps == []
    assert [(r.phone_number, r.outcome, r.code) for r in results] == [(p, outcome, "Some.Code") for p in PHONES]


async def test_missing_result_is_unknown() -> None:
    provider = ScriptedProvider(drop=PHONES[1])
    results = await SmsSender(provider, FakeClock()).send(batch())
    assert results[0].outcome is SendOutcome.SENT
    assert (results[1].phone_number, results[1].outcome, results[1].code) == (
        PHONES[1], SendOutcome.UNKNOWN, "MissingResult",
    )
    assert provider.calls == 1


async def test_unexpected_exception_does_not_escape() -> None:
    class Broken(ScriptedProvider):
        async def send(self, b: SmsBatch) -> list[SmsResult]:
            raise RuntimeError("bug")

    results = await SmsSender(Broken(), FakeClock()).send(batch())
    assert all(r.outcome is SendOutcome.UNKNOWN and r.code == "ProviderError" for r in results)


class GatedProvider(ScriptedProvider):
    """App "slow" blocks until released; others answer at once."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.in_flight: dict[str, int] = {}
        self.peak: dict[str, int] = {}

    async def send(self, b: SmsBatch) -> list[SmsResult]:
        app = b.app_access_id
        self.in_flight[app] = self.in_flight.get(app, 0) + 1
        self.peak[app] = max(self.peak.get(app, 0), self.in_flight[app])
        try:
            if app == "slow":
                await self.gate.wait()
            return await super().send(b)
        finally:
            self.in_flight[app] -= 1


async def test_a_blocked_app_does_not_block_another() -> None:
    provider = GatedProvider()
    sender = SmsSender(provider, FakeClock(), per_app_concurrency=2)
    slow = [asyncio.create_task(sender.send(batch("slow"))) for _ in range(5)]
    await asyncio.sleep(0)
    fast = await asyncio.wait_for(sender.send(batch("fast")), timeout=2)
    assert all(r.outcome is SendOutcome.SENT for r in fast)
    assert not any(t.done() for t in slow)
    assert provider.in_flight["slow"] == 2  # bounded: the other three wait for a slot
    provider.gate.set()
    await asyncio.gather(*slow)
    assert provider.peak["slow"] == 2
