"""Test doubles that stand behind the same protocols as the real parts."""

from __future__ import annotations

import asyncio
import heapq
import itertools

from pushreachd.sms.provider import SendOutcome, SmsBatch, SmsProviderError, SmsResult


class FakeClock:
    """A Clock whose time moves only when a test calls advance().

    sleep() parks the caller until advance() moves time past its wake-up point, so tests
    never sleep for real.
    """

    def __init__(self, start: float = 1_750_000_000.0) -> None:
        self._now = start
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def time(self) -> float:
        return self._now

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._now + seconds, next(self._seq), fut))
        await fut

    async def sleeping(self, timeout: float = 10.0) -> None:
        """Wait (bounded, in real time) until some task sleeps on this clock: the point where
        advancing it wakes that task rather than running past work still under way."""
        deadline = asyncio.get_running_loop().time() + timeout
        while not any(not fut.done() for _, _, fut in self._sleepers):
            assert asyncio.get_running_loop().time() < deadline, "nothing went to sleep on the fake clock"
            await asyncio.sleep(0.005)

    async def advance(self, seconds: float) -> None:
        """Move time forward, waking sleepers in deadline order, and let them run."""
        target = self._now + seconds
        while self._sleepers and self._sleepers[0][0] <= target:
            wake_at, _, fut = heapq.heappop(self._sleepers)
            self._now = max(self._now, wake_at)
            if not fut.done():
                fut.set_result(None)
            await _settle()
        self._now = target
        await _settle()


async def _settle(rounds: int = 20) -> None:
    """Give woken tasks a few loop iterations to reach their next await."""
    for _ in range(rounds):
        await asyncio.sleep(0)


class FakeSmsProvider:
    """An SmsProvider that records every batch and answers SENT, unless told otherwise.

    - `outcomes[phone]` answers that number with another SendOutcome;
    - `fail_with` makes every call raise that SmsProviderError;
    - `hold()` parks every send until `release()`, so a test can stop the world mid-send.
    """

    name = "fake"

    def __init__(self, max_batch_size: int = 200) -> None:
        self.max_batch_size = max_batch_size
        self.batches: list[SmsBatch] = []
        self.outcomes: dict[str, SendOutcome] = {}
        self.fail_with: SmsProviderError | None = None
        self.calls = 0
        self._gate: asyncio.Event | None = None
        self.closed = False

    @property
    def numbers(self) -> list[str]:
        """Every number handed to the provider, in order (repeats kept: a repeat is a bug)."""
        return [n for b in self.batches for n in b.phone_numbers]

    def hold(self) -> None:
        self._gate = asyncio.Event()

    def release(self) -> None:
        if self._gate is not None:
            self._gate.set()
            self._gate = None

    async def send(self, batch: SmsBatch) -> list[SmsResult]:
        self.calls += 1
        if self._gate is not None:
            await self._gate.wait()
        if self.fail_with is not None:
            raise self.fail_with
        self.batches.append(batch)
        return [
            SmsResult(
                phone_number=n,
                outcome=self.outcomes.get(n, SendOutcome.SENT),
                code="Ok",
                serial_no=f"fake-{len(self.batches)}-{i}",
                fee=1,
            )
            for i, n in enumerate(batch.phone_numbers)
        ]

    async def close(self) -> None:
        self.closed = True
