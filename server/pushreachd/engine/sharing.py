"""Several instances on one store: what reaches this instance's wheel that it did not arm.

Each instance arms the pushes it accepts. Every `interval` seconds it also asks the store's due
index for the live fallbacks due within `horizon` and arms those it does not know, `takeover`
seconds after their due time: normally the instance that accepted a push fires it on time and
the others find it done; if that instance died, another fires it `takeover` late. Fires whose
owner's lease expired (the owner died mid-fire) are armed at once: the claim takes them over.
The store stays the truth: a push armed on two instances is claimed by one (SKIP LOCKED, a lease).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

from ..clock import Clock

log = logging.getLogger(__name__)


class SharedDueIndex(Protocol):
    async def due_fallbacks(
        self, through: float, after: tuple[float, int] | None, limit: int
    ) -> list[tuple[int, float]]: ...
    async def expired_leases(self, limit: int) -> list[int]: ...


class Armable(Protocol):
    def arm(self, push: int, due_at: float) -> None: ...
    def knows(self, push: int) -> bool: ...


class DueWatcher:
    def __init__(
        self,
        store: SharedDueIndex,
        scheduler: Armable,
        clock: Clock,
        *,
        interval: float = 1.0,
        horizon: float = 60.0,
        takeover: float = 1.0,
        page: int = 5000,
    ) -> None:
        self._store = store
        self._scheduler = scheduler
        self._clock = clock
        self._interval = interval
        self._horizon = horizon
        self._takeover = takeover
        self._page = page
        self.armed = 0  # pushes this watcher armed so far (metrics, tests)

    async def run(self) -> None:
        """Poll until cancelled. A failed poll (the database away) is logged and retried."""
        while True:
            try:
                await self.poll_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("due-index poll failed (%s); retrying in %ss", exc, self._interval)
            await self._clock.sleep(self._interval)

    async def poll_once(self) -> int:
        """Arm what is due within the horizon and unknown here, and every expired lease."""
        now = self._clock.time()
        armed = 0
        after: tuple[float, int] | None = None
        while True:
            page = await self._store.due_fallbacks(now + self._horizon, after, self._page)
            for push, due_at in page:
                if not self._scheduler.knows(push):
                    self._scheduler.arm(push, due_at + self._takeover)
                    armed += 1
            if len(page) < self._page:
                break
            after = (page[-1][1], page[-1][0])
        for push in await self._store.expired_leases(self._page):
            if not self._scheduler.knows(push):
                self._scheduler.arm(push, now)
                armed += 1
        self.armed += armed
        return armed
