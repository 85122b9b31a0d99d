"""The clock seam: everything that waits or reads the time takes a Clock.

Production code gets SystemClock; tests get tests.fakes.FakeClock and move time by hand.
Times are float seconds since the Unix epoch (wall time), because deadlines are stored
in the database and must mean the same thing after a restart.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol


class Clock(Protocol):
    def time(self) -> float:
        """Seconds since the Unix epoch."""

    async def sleep(self, seconds: float) -> None:
        """Wait `seconds` of this clock's time (returns at once for seconds <= 0)."""


class SystemClock:
    def time(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))
