"""Test doubles that stand behind the same protocols as the real parts."""

from __future__ import annotations

import asyncio
import heapq
import itertools


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
