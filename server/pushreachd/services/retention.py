"""Retention: records do not live forever. A periodic purge on the injected clock deletes
finished pushes (with their targets and SMS records) once they are older than
`retention_days`, and idempotency rows after a day. Live fallbacks are never touched."""

from __future__ import annotations

import asyncio
import logging

from ..clock import Clock
from ..store.base import PurgeCounts, Store

log = logging.getLogger(__name__)

DAY = 86400.0
IDEMPOTENCY_SECONDS = DAY  # a request_id retry is honoured for 24 h (AIP-155 allows expiry)
PURGE_INTERVAL = 3600.0
PURGE_BATCH = 500  # pushes per transaction, so the writer is never held long


class RetentionPurger:
    def __init__(
        self,
        store: Store,
        clock: Clock,
        retention_days: int,
        *,
        interval: float = PURGE_INTERVAL,
        batch: int = PURGE_BATCH,
    ) -> None:
        self._store = store
        self._clock = clock
        self.retention_days = retention_days
        self.interval = interval
        self.batch = batch

    async def purge_once(self) -> PurgeCounts:
        """Delete everything expired now, in batches; the summed counts."""
        now = self._clock.time()
        finished_before = now - self.retention_days * DAY if self.retention_days > 0 else None
        total = PurgeCounts()
        while True:
            got = await self._store.purge_expired(finished_before, now - IDEMPOTENCY_SECONDS, self.batch)
            total = PurgeCounts(
                total.pushes + got.pushes,
                total.targets + got.targets,
                total.sms_records + got.sms_records,
                total.idempotency + got.idempotency,
            )
            if got.pushes < self.batch:
                break
            await asyncio.sleep(0)  # let queued RPC writes in between batches
        if total.pushes or total.idempotency:
            log.info(
                "retention: purged %d push(es) with %d target(s) and %d SMS record(s), %d idempotency row(s)",
                total.pushes,
                total.targets,
                total.sms_records,
                total.idempotency,
            )
        return total

    async def run(self) -> None:
        """Purge now and then every `interval` seconds, until cancelled."""
        while True:
            try:
                await self.purge_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("retention purge failed; trying again in %ss", self.interval)
            await self._clock.sleep(self.interval)
