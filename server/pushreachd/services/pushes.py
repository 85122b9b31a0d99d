"""Accepting pushes: validate, resolve targets, store durably, deliver, arm the fallback."""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Iterable
from typing import Protocol

from ..channels.base import PushChannel, PushDelivery, TargetPayload
from ..clock import Clock
from ..errors import InvalidArgument, NotFound, Unavailable
from ..model import (
    AccountPushType,
    App,
    Broadcast,
    FallbackState,
    Funnel,
    NewPush,
    Push,
    PushReceipt,
    PushSpec,
    Route,
    Target,
    TargetView,
    UnusedTarget,
    UnusedTargetReason,
)
from ..store.base import Store
from ..supervisor import Supervisor
from .broadcasts import BroadcastResolver
from .channels import AppChannels
from .deliveries import Deliveries, ReceiptMinter
from .pagination import decode_offset_token, encode_offset_token
from .validation import PushDraft, Violations, page_size, validate_push

log = logging.getLogger(__name__)

RESUME_PAGE = 500  # pushes per page of the redelivery on start
RESUME_CONCURRENCY = 64  # its deliveries under way at once


class FallbackArming(Protocol):
    """What the push side needs of the scheduler."""

    def arm(self, push: int, due_at: float) -> None: ...
    def disarm(self, push: int) -> None: ...


class PushService:
    def __init__(
        self,
        store: Store,
        channel: PushChannel,
        fallbacks: FallbackArming,
        clock: Clock,
        *,
        min_delay_seconds: int = 300,
        receipts: ReceiptMinter | None = None,
        supervisor: Supervisor | None = None,
        channels: AppChannels | None = None,
    ) -> None:
        self._supervisor = supervisor or Supervisor()
        self._store = store
        # `channel` takes the targets routed to the log channel; `channels` the app's others.
        self.deliveries = Deliveries(store, channel, clock, channels=channels, receipts=receipts)
        self._fallbacks = fallbacks
        self._clock = clock
        self._min_delay = min_delay_seconds
        self._deliveries: set[asyncio.Task[None]] = set()
        self._resume: asyncio.Task[int] | None = None
        # TAG / ALL pushes: targets found, delivered and the fallback armed in the background.
        self.broadcasts = BroadcastResolver(
            store, self.deliveries.deliver, fallbacks, clock, supervisor=self._supervisor
        )

    async def push(self, app: App, draft: PushDraft) -> PushReceipt:
        spec = validate_push(draft, self._min_delay)
        routes: dict[str, Route] = {}
        if spec.audience_type.broadcast:
            targets, unused = [], []  # found after acceptance by self.broadcasts
        else:
            targets, unused, routes = await self._resolve_targets(app, spec)
        now = self._clock.time()
        due = now + spec.sms_info.delay_trigger_time if spec.sms_info is not None else None
        push_id = secrets.token_hex(10)
        receipt = PushReceipt(
            push_id=push_id,
            target_count=len(targets),
            unused_targets=tuple(unused),
            accepted_at=now,
            fallback_due_at=due,
        )
        new = NewPush(
            push_id=push_id,
            app_id=app.id,
            spec=spec,
            targets=tuple(targets),
            accepted_at=now,
            fallback_due_at=due,
            request_id=draft.request_id,
            receipt=receipt,
        )
        # The fingerprint only tells a retry from a reused request_id: without one, skip it.
        fingerprint = spec.fingerprint() if draft.request_id else ""
        stored, row_id = await self._store.create_push(new, fingerprint)
        if row_id is None:  # an idempotent retry: the first call did the work
            return stored
        if spec.audience_type.broadcast:
            self.broadcasts.submit(Broadcast(row_id, push_id, app.id, app.access_id, spec, now, due, "", 0, 0))
            return stored
        if due is not None:
            self._fallbacks.arm(row_id, due)
        delivery = _delivery(app.access_id, push_id, spec, [t.token for t in targets], now)
        self._deliver(row_id, app.id, delivery, routes)
        return stored

    async def _resolve_targets(
        self, app: App, spec: PushSpec
    ) -> tuple[list[Target], list[UnusedTarget], dict[str, Route]]:
        seen: set[str] = set()
        targets: list[Target] = []
        unused: list[UnusedTarget] = []
        if not spec.audience_type.by_account:
            for token in spec.token_list:
                if token in seen:
                    unused.append(UnusedTarget(token, UnusedTargetReason.DUPLICATE))
                else:
                    seen.add(token)
                    targets.append(Target(token))
            return await self._skip_invalid(app, targets, unused)
        seen_accounts: set[str] = set()
        accounts = [a for a in spec.account_list if not (a in seen_accounts or seen_accounts.add(a))]
        tokens_of = await self._store.tokens_of_accounts(app.id, accounts)
        for account in spec.account_list:
            if account not in seen_accounts:
                unused.append(UnusedTarget(account, UnusedTargetReason.DUPLICATE))
                continue
            seen_accounts.discard(account)  # later repeats of it are duplicates
            tokens = tokens_of.get(account, [])
            if spec.account_push_type is AccountPushType.LATEST_DEVICE:
                tokens = tokens[-1:]  # in the order they were bound: the last is the latest
            if not tokens:
                unused.append(UnusedTarget(account, UnusedTargetReason.ACCOUNT_HAS_NO_DEVICE))
            for token in tokens:
                if token not in seen:  # a token shared by two accounts is one target
                    seen.add(token)
                    targets.append(Target(token, account))
        return await self._skip_invalid(app, targets, unused)

    async def _skip_invalid(
        self, app: App, targets: list[Target], unused: list[UnusedTarget]
    ) -> tuple[list[Target], list[UnusedTarget], dict[str, Route]]:
        """Tokens a channel called invalid are not targets until registered again. Also
        answers the targets' routes, which their delivery then need not read again."""
        if not targets:
            return targets, unused, {}
        routes = await self._store.device_routes(app.id, [t.token for t in targets])
        if not any(r.invalid for r in routes.values()):
            return targets, unused, routes
        kept = []
        for t in targets:
            route = routes.get(t.token)
            if route is not None and route.invalid:
                unused.append(UnusedTarget(t.token, UnusedTargetReason.INVALID_TOKEN))
            else:
                kept.append(t)
        return kept, unused, routes

    def _deliver(
        self, row_id: int, app_id: int, delivery: PushDelivery, routes: dict[str, Route] | None = None
    ) -> asyncio.Task[None]:
        """Hand the push to its channels after it is durable; the caller does not wait for it.
        Marked delivered with the last outcome, so a push accepted just before a crash is
        delivered after the restart to the targets not yet answered."""

        async def run() -> None:
            # A store that cannot record outcomes is broken: that is a death (the supervisor).
            # A shared database that is briefly unreachable is not: the push stays undelivered
            # and its unanswered targets are handed to their channels again on a later start.
            try:
                await self.deliveries.deliver(row_id, app_id, delivery, routes=routes, mark_delivered=True)
            except Unavailable:
                log.warning("push %s not delivered (database unreachable); delivered on a later start",
                            delivery.push_id)

        task = self._supervisor.spawn(run(), name=f"pushreach-delivery-{delivery.push_id}")
        self._deliveries.add(task)
        task.add_done_callback(self._deliveries.discard)
        return task

    async def start_resume(self, *, page: int = RESUME_PAGE, concurrency: int = RESUME_CONCURRENCY) -> None:
        """On start: redeliver, in the background, the pushes accepted before now that never
        reached the channel. Only the bound (the last push row) is read before returning, so
        the server starts at once; pushes accepted from here on are delivered by push()."""
        through = await self._store.last_push_row()
        await self.broadcasts.start()
        self._resume = self._supervisor.spawn(
            self.resume_deliveries(through, page=page, concurrency=concurrency), name="pushreach-redelivery"
        )

    async def resume_deliveries(
        self, through: int, *, page: int = RESUME_PAGE, concurrency: int = RESUME_CONCURRENCY
    ) -> int:
        """Hand the channel every push (row id <= through) accepted but never delivered, page
        by page (`page` pushes at most in memory), at most `concurrency` deliveries at a time.
        Expired ones are marked delivered in SQL, never loaded. Returns how many were handed."""
        now = self._clock.time()
        expired = await self._store.expire_undelivered(through, now)
        if expired:
            log.info("%d undelivered push(es) expired before the start; not delivered", expired)
        slots = asyncio.Semaphore(concurrency)
        count = 0
        after: tuple[float, int] | None = None
        while True:
            found, after = await self._store.undelivered_pushes(through, now, after, page)
            for access_id, push, tokens in found:
                await slots.acquire()
                delivery = _delivery(access_id, push.push_id, push.spec, tokens, push.accepted_at)
                task = self._deliver(push.id, push.app_id, delivery)
                task.add_done_callback(lambda _: slots.release())
                count += 1
            if after is None:
                break
        if count:
            log.info("%d accepted push(es) had not reached the push channel; delivered them again", count)
        return count

    async def drain(self) -> None:
        """Wait for the redelivery on start and for deliveries under way."""
        if self._resume is not None:
            await asyncio.gather(self._resume, return_exceptions=True)
        if self._deliveries:
            await asyncio.gather(*self._deliveries, return_exceptions=True)
        await self.broadcasts.drain()

    async def stop(self) -> None:
        """On shutdown: stop the redelivery (what it did not reach is redelivered next start),
        then wait for deliveries under way."""
        if self._resume is not None:
            self._resume.cancel()
        await self.broadcasts.stop()
        await self.drain()

    async def get_push(
        self, app: App, push_id: str, size: int = 0, token: str = ""
    ) -> tuple[Push, Funnel, list[TargetView], str]:
        v = Violations()
        if not push_id:
            v.add("push_id", "required")
        limit = page_size(v, size)
        offset = decode_offset_token(v, "page_token", token, scope=push_id)
        v.raise_if_any()
        push = await self._store.get_push(app.id, push_id)
        if push is None:
            raise NotFound(f"push {push_id!r} not found")
        funnel = await self._store.push_funnel(push.id)
        targets = await self._store.push_targets(push.id, offset, limit)
        next_token = encode_offset_token(offset + limit, scope=push_id) if offset + limit < push.target_count else ""
        return push, funnel, targets, next_token

    async def cancel_fallback(self, app: App, push_id: str) -> FallbackState:
        if not push_id:
            raise InvalidArgument.one("push_id", "required")
        cancelled = await self._store.cancel_fallback(app.id, push_id, self._clock.time())
        if cancelled is None:
            raise NotFound(f"push {push_id!r} not found")
        row_id, state = cancelled
        if state is FallbackState.CANCELLED:
            self._fallbacks.disarm(row_id)
        return state


def _delivery(access_id: str, push_id: str, spec: PushSpec, tokens: Iterable[str], accepted_at: float) -> PushDelivery:
    targets = tuple(TargetPayload(token, receipt="") for token in tokens)
    return PushDelivery(access_id, push_id, spec, targets, expires_at=accepted_at + spec.expire_time)
