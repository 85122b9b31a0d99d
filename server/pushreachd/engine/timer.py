"""The asyncio driver of the timing wheel: sleeps on the injected clock, hands out due keys.

The wheel (pushreachd.engine.wheel) decides what is due; this module only decides when to ask.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
from collections.abc import Awaitable, Callable

from pushreachd.clock import Clock
from pushreachd.engine.wheel import TimingWheel
from pushreachd.supervisor import Supervisor

logger = logging.getLogger(__name__)

# Epoch seconds as floats carry rounding error (~0.24 us at today's epoch), so a deadline
# exactly on a tick could round to the ms after it (one tick late) and a wake-up exactly on
# a tick to the ms before it (a wasted extra sleep). 1 us of tolerance absorbs both.
_EPS_MS = 1e-3


def _floor_ms(seconds: float) -> int:
    return math.floor(seconds * 1000 + _EPS_MS)


def _ceil_ms(seconds: float) -> int:
    return math.ceil(seconds * 1000 - _EPS_MS)


class WheelTimer:
    """Runs a TimingWheel against a Clock and passes expired keys to `on_expired`.

    `on_expired` gets one list per advance (possibly large) and may be sync or async; it runs
    on the timer's task, so the next advance waits for it. An exception is logged and the
    loop keeps going: the store is the truth, so a lost batch is found again on restart.
    """

    def __init__(
        self,
        clock: Clock,
        on_expired: Callable[[list[int]], Awaitable[None] | None],
        tick_ms: int = 100,
        supervisor: Supervisor | None = None,
    ) -> None:
        self._clock = clock
        self._supervisor = supervisor or Supervisor()
        self._on_expired = on_expired
        self._wheel = TimingWheel(tick_ms=tick_ms, start_ms=_floor_ms(clock.time()))
        self._wake = asyncio.Event()  # set by add() when the loop must re-plan its sleep
        self._sleeping_until_ms: int | None = None  # None: not sleeping on a deadline
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self.last_advance_at: float | None = None  # clock time of the latest advance

    def __len__(self) -> int:
        return len(self._wheel)

    @property
    def pending_count(self) -> int:
        return len(self._wheel)

    def __contains__(self, key: int) -> bool:
        return key in self._wheel

    def add(self, deadline: float, key: int) -> None:
        """Fire `key` at `deadline` (epoch seconds); re-adding a key replaces its deadline."""
        deadline_ms = _ceil_ms(deadline)
        self._wheel.add(deadline_ms, key)
        if self._sleeping_until_ms is None or deadline_ms < self._sleeping_until_ms:
            self._wake.set()

    def cancel(self, key: int) -> bool:
        # No wake-up: at worst the loop wakes once for nothing at the old deadline.
        return self._wheel.cancel(key)

    def start(self) -> None:
        if self._task is not None:
            raise RuntimeError("WheelTimer already started")
        self._task = self._supervisor.spawn(self._run(), name="pushreach-wheel-timer", forever=True)

    async def stop(self) -> None:
        """End the loop; a batch being handed to `on_expired` is finished first."""
        if self._task is None:
            return
        self._stopping = True
        self._supervisor.release(self._task)
        self._wake.set()
        await asyncio.gather(self._task, return_exceptions=True)  # a death is the supervisor's

    async def _run(self) -> None:
        while not self._stopping:
            now = self._clock.time()
            self.last_advance_at = now
            expired = self._wheel.advance(_floor_ms(now))
            if expired:
                await self._deliver(expired)
                continue  # time moved while delivering: advance again before sleeping
            # clear() and planning happen with no await in between, so an add() that runs
            # after this point sees the new _sleeping_until_ms and sets the event if needed.
            self._wake.clear()
            self._sleeping_until_ms = self._wheel.next_expiry_ms()
            try:
                await self._sleep_until(self._sleeping_until_ms)
            finally:
                self._sleeping_until_ms = None

    async def _deliver(self, keys: list[int]) -> None:
        try:
            result = self._on_expired(keys)
            if inspect.isawaitable(result):
                await result
        except Exception:
            logger.exception("on_expired failed for %d expired keys", len(keys))

    async def _sleep_until(self, until_ms: int | None) -> None:
        """Sleep on the clock until `until_ms`, or until add()/stop() sets the event."""
        if until_ms is None:
            await self._wake.wait()
            return
        sleeper = asyncio.ensure_future(self._clock.sleep(until_ms / 1000 - self._clock.time()))
        waker = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait((sleeper, waker), return_when=asyncio.FIRST_COMPLETED)
        finally:
            # Cancel the loser (or both, if we are cancelled) and reap them so no task is
            # left pending; their CancelledError is expected and swallowed here.
            for task in (sleeper, waker):
                task.cancel()
            await asyncio.gather(sleeper, waker, return_exceptions=True)
        if sleeper.done() and not sleeper.cancelled() and sleeper.exception() is not None:
            raise sleeper.exception()  # type: ignore[misc]  # a broken clock is the timer's death
