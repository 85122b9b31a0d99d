"""TAG and ALL pushes: their targets are found after acceptance, durably, in the background.

Push accepts such a push with no targets and hands it here. A resolver walks the app's
devices in token order, a page at a time: it keeps the devices the push targets (all of
them, or those whose tags match `tag_rules`), stores them as targets together with the
cursor in one transaction, hands them to their channels (services/deliveries.py), then records that they were
handed over. A crash anywhere resumes from the last stored page: targets stored but not yet
handed over are handed over again (at least once, like any push redelivered on start).

The fallback waits for the resolution: a broadcast's fallback is armed only when its last
page is stored, and the store refuses to claim it before (its `broadcasts` row is open). It
is then judged per phone over every target, like any other push; when the resolution ends
after the due time, it fires at once. Devices registered while a resolution runs are
targets when the cursor has not yet passed their token.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

from .. import limits
from ..channels.base import PushDelivery, TargetPayload
from ..clock import Clock
from ..engine.audience import matches
from ..model import AudienceType, Broadcast
from ..store.base import Store
from ..supervisor import Supervisor

log = logging.getLogger(__name__)

HAND_OVER_CHUNK = 1000  # targets per delivery (each channel splits them into its own batches)
RETRY_SECONDS = 30.0  # a resolution that failed (e.g. the database was busy) resumes after this


class FallbackArming(Protocol):
    def arm(self, push: int, due_at: float) -> None: ...


class BroadcastResolver:
    def __init__(
        self,
        store: Store,
        deliver: Callable[[int, int, PushDelivery], Awaitable[bool]],
        fallbacks: FallbackArming,
        clock: Clock,
        *,
        page: int = limits.BROADCAST_PAGE,
        concurrency: int = 2,
        supervisor: Supervisor | None = None,
    ) -> None:
        self._supervisor = supervisor or Supervisor()
        self._store = store
        self._deliver = deliver  # (push row id, app row id, delivery) -> every target answered
        self._fallbacks = fallbacks
        self._clock = clock
        self._page = page
        self._slots = asyncio.Semaphore(concurrency)
        self._tasks: dict[int, asyncio.Task[None]] = {}

    @property
    def running(self) -> int:
        """Resolutions under way or waiting for a slot."""
        return len(self._tasks)

    async def start(self) -> int:
        """Resume every resolution a stop interrupted. Returns how many."""
        open_ = await self._store.open_broadcasts()
        for b in open_:
            self.submit(b)
        if open_:
            log.info("resuming the target resolution of %d TAG/ALL push(es)", len(open_))
        return len(open_)

    def submit(self, b: Broadcast) -> None:
        if b.push in self._tasks:
            return
        # Supervised: an ordinary failure is retried inside _run; what escapes is a death.
        task = self._supervisor.spawn(self._run(b), name=f"pushreach-broadcast-{b.push_id}")
        self._tasks[b.push] = task
        task.add_done_callback(lambda _: self._tasks.pop(b.push, None))

    async def drain(self) -> None:
        """Wait until every resolution under way has finished (tests, tools)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks.values()), return_exceptions=True)

    async def stop(self) -> None:
        """Cancel resolutions under way; the next start resumes them from their last page."""
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _run(self, b: Broadcast | None) -> None:
        async with self._slots:
            while b is not None:
                try:
                    await self.resolve(b)
                    return
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("resolving the targets of push %s failed; resuming in %ss", b.push_id, RETRY_SECONDS)
                await self._clock.sleep(RETRY_SECONDS)
                b = await self._reload(b.push)

    async def _reload(self, push: int) -> Broadcast | None:
        """Where the resolution stands in the store now (None: finished meanwhile)."""
        while True:
            try:
                return next((o for o in await self._store.open_broadcasts() if o.push == push), None)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("reading the open broadcasts failed; trying again in %ss", RETRY_SECONDS)
            await self._clock.sleep(RETRY_SECONDS)

    async def resolve(self, b: Broadcast) -> int:
        """Resolve, store and hand over the rest of this broadcast's targets, then arm its
        fallback. Returns the number of targets it stored."""
        spec = b.spec
        by_tag = spec.audience_type is AudienceType.TAG
        cursor, next_seq = b.cursor, b.next_seq
        if b.delivered_seq < next_seq:  # stored before a stop, never handed over
            tokens = await self._store.broadcast_tokens(b.push, b.delivered_seq, next_seq)
            await self._hand_over(b, tokens, next_seq)
        stored = 0
        while True:
            page = await self._store.broadcast_page(b.app_id, cursor, self._page, with_tags=by_tag)
            if not page:
                break
            tokens = [t for t, tags in page if not by_tag or matches(spec.tag_rules, tags)]
            first = await self._store.store_broadcast_page(b.push, cursor, tokens, page[-1][0])
            cursor = page[-1][0]
            stored += len(tokens)
            if tokens:
                await self._hand_over(b, tokens, first + len(tokens))
            if len(page) < self._page:
                break
        await self._store.finish_broadcast(b.push, self._clock.time())
        if b.fallback_due_at is not None:
            self._fallbacks.arm(b.push, b.fallback_due_at)
        log.info("push %s: targets resolved (%d in this run)", b.push_id, stored)
        return stored

    async def _hand_over(self, b: Broadcast, tokens: list[str], through_seq: int) -> None:
        expires_at = b.accepted_at + b.spec.expire_time
        if self._clock.time() < expires_at:  # an expired push is not sent, but its targets count
            for start in range(0, len(tokens), HAND_OVER_CHUNK):
                chunk = tokens[start : start + HAND_OVER_CHUNK]
                delivery = PushDelivery(
                    b.access_id,
                    b.push_id,
                    b.spec,
                    tuple(TargetPayload(t, receipt="") for t in chunk),
                    expires_at=expires_at,
                )
                if not await self._deliver(b.push, b.app_id, delivery):
                    # Not recorded as handed over: the resolution resumes from this page later.
                    raise RuntimeError(f"a push channel failed on push {b.push_id}")
        await self._store.mark_broadcast_delivered(b.push, through_seq)
