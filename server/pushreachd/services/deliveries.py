"""Delivering an accepted push: each target through its device's channel, each outcome kept.

A target goes through the channel its device registered with; a token only bound with
BindPhone takes the app's default (its webhook when it has one, else the log channel). A
token a channel called invalid is not sent to; a channel the app has no credentials for, or
that `channel_rules` turned off, gives NO_CHANNEL. Channels retry what is worth retrying
themselves; every target's outcome is recorded once, and the push is marked delivered only
when every target has one, so a crash in between sends the rest (never the answered ones)
on the next start.

Receipts are minted per channel, for the channels that carry one per target
(`per_token_receipts`); the one-payload Android vendors carry the push id only, and their
devices sign arrival and click reports with the device key.

With `sms_info.early_on_push_failure`, a phone all of whose targets of the push definitely
cannot get it is handed to the fallback at once (`EarlyFallback`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Protocol

from ..channels.base import PushChannel, PushDelivery, TargetPayload, TokenOutcome
from ..clock import Clock
from ..model import Channel, PushOutcome, Route, TargetOutcome
from ..store.base import Store
from .channels import AppChannels
from .receipts import receipt_expiry

log = logging.getLogger(__name__)


class ReceiptMinter(Protocol):
    """What deliveries need of services/receipts.py: one receipt per target."""

    async def mint_many(self, app_id: int, push_id: str, tokens: list[str], expires_at: float) -> list[str]: ...


class EarlyFallback(Protocol):
    """What deliveries need of the scheduler for early_on_push_failure."""

    async def fire_early(self, push: int) -> None: ...


# (channel name, targets by outcome name, seconds of the send or None) -> None
PushObserver = Callable[[str, Mapping[str, int], float | None], None]


class Deliveries:
    def __init__(
        self,
        store: Store,
        default: PushChannel,
        clock: Clock,
        *,
        channels: AppChannels | None = None,
        receipts: ReceiptMinter | None = None,
        early: EarlyFallback | None = None,
    ) -> None:
        self._store = store
        self._default = default  # the log channel (tests put a recording channel here)
        self._clock = clock
        self._channels = channels
        self._receipts = receipts
        self.early = early
        self.observers: list[PushObserver] = []

    async def deliver(
        self,
        push: int,
        app_id: int,
        delivery: PushDelivery,
        *,
        routes: Mapping[str, Route] | None = None,
        mark_delivered: bool = False,
    ) -> bool:
        """Send to every target and record the outcomes; True when every target has one, False
        when a channel broke (a bug), leaving its targets for the next start. `routes`: the
        targets' routes when the caller has just read them. `mark_delivered`: mark the push
        delivered in the write of its outcomes once every target has one."""
        if not delivery.targets:
            if mark_delivered:
                await self._store.mark_delivered(push, self._clock.time())
            return True
        if routes is None:
            routes = await self._store.device_routes(app_id, list(delivery.tokens))
        configured = await self._channels.configured(app_id) if self._channels is not None else frozenset()
        default = Channel.WEBHOOK if Channel.WEBHOOK in configured else Channel.LOG
        disabled = delivery.spec.vendor.disabled_channels if delivery.spec.vendor is not None else frozenset()
        now = self._clock.time()
        outcomes: list[TargetOutcome] = []
        groups: dict[Channel, list[TargetPayload]] = {}
        for target in delivery.targets:
            route = routes.get(target.token)
            channel = route.channel if route is not None and route.channel is not None else default
            if route is not None and route.invalid:
                outcomes.append(TargetOutcome(target.token, channel, PushOutcome.INVALID_TOKEN, "invalid_token", now))
            elif channel in disabled:
                outcomes.append(TargetOutcome(target.token, channel, PushOutcome.NO_CHANNEL, "channel_rules", now))
            elif channel is not Channel.LOG and channel not in configured:
                outcomes.append(TargetOutcome(target.token, channel, PushOutcome.NO_CHANNEL, "no_credentials", now))
            else:
                groups.setdefault(channel, []).append(target)
        self._observe_unsent(outcomes)
        if len(groups) == 1:  # the usual case: no task and no gather for one channel
            ((channel, ts),) = groups.items()
            sent = [await self._send(app_id, channel, dataclasses.replace(delivery, targets=tuple(ts)))]
        else:
            sent = await asyncio.gather(
                *(self._send(app_id, channel, dataclasses.replace(delivery, targets=tuple(ts)))
                  for channel, ts in groups.items())
            )
        complete = True
        for part in sent:
            if part is None:
                complete = False
            else:
                outcomes += part
        if outcomes:
            delivered_at = self._clock.time() if complete and mark_delivered else None
            await self._store.record_outcomes(push, app_id, outcomes, delivered_at)
        info = delivery.spec.sms_info
        if self.early is not None and info is not None and info.early_on_push_failure:
            if any(o.outcome.final_failure for o in outcomes):
                try:
                    await self.early.fire_early(push)
                except Exception:
                    # Not lost: those phones are judged again when the fallback fires at its time.
                    log.exception("early SMS for push %s failed; left to the fallback's due time", delivery.push_id)
        return complete

    async def _send(self, app_id: int, channel: Channel, delivery: PushDelivery) -> list[TargetOutcome] | None:
        client = self._default if channel is Channel.LOG else await self._client(app_id, delivery.access_id, channel)
        if client is None:
            now = self._clock.time()
            return [
                TargetOutcome(t.token, channel, PushOutcome.NO_CHANNEL, "credentials_unreadable", now)
                for t in delivery.targets
            ]
        if getattr(client, "per_token_receipts", True):  # the one-payload vendors carry none
            delivery = await self.with_receipts(app_id, delivery)
        started = time.perf_counter()
        try:
            answers = await client.send(delivery)
        except Exception:
            # A channel raises only for a bug: its targets stay unanswered and go again on the
            # next start.
            log.exception("the %s channel failed on push %s", channel.name.lower(), delivery.push_id)
            return None
        seconds = time.perf_counter() - started
        now = self._clock.time()
        by_token: dict[str, TokenOutcome] = {a.token: a for a in answers}
        outcomes = []
        for t in delivery.targets:
            a = by_token.get(t.token)
            if a is None:
                outcomes.append(TargetOutcome(t.token, channel, PushOutcome.FAILED, "no_result", now))
            else:
                outcomes.append(TargetOutcome(t.token, channel, a.outcome, a.code, now))
        counts = Counter(o.outcome.name.lower() for o in outcomes)
        for observe in self.observers:
            observe(channel.name.lower(), counts, seconds)
        return outcomes

    async def _client(self, app_id: int, access_id: str, channel: Channel) -> PushChannel | None:
        assert self._channels is not None
        return await self._channels.client((app_id, access_id), channel)

    def _observe_unsent(self, outcomes: list[TargetOutcome]) -> None:
        if not outcomes or not self.observers:
            return
        by_channel: dict[str, Counter[str]] = {}
        for o in outcomes:
            by_channel.setdefault(o.channel.name.lower(), Counter())[o.outcome.name.lower()] += 1
        for channel, counts in by_channel.items():
            for observe in self.observers:
                observe(channel, counts, None)

    async def with_receipts(self, app_id: int, delivery: PushDelivery) -> PushDelivery:
        """The delivery with each target's receipt (the same one on a redelivery: minting is
        pure); as it is when receipts are off."""
        if self._receipts is None:
            return delivery
        expires = receipt_expiry(delivery.spec, delivery.expires_at)
        tokens = list(delivery.tokens)
        receipts = await self._receipts.mint_many(app_id, delivery.push_id, tokens, expires)
        return dataclasses.replace(delivery, targets=tuple(map(TargetPayload, tokens, receipts)))

