"""SmsSender: the retry and concurrency policy around an SmsProvider.

The provider translates one call; the sender decides what a failure means for each
number. It never raises, so the caller can always write one final record per number:
- TRANSIENT errors (the request provably did not take effect) are retried with capped
  exponential backoff and full jitter (AWS's "full jitter": sleep uniform(0, min(cap,
  base * 2**n))), on the injected clock; after the last attempt every number is FAILED;
- RATE_LIMITED marks every number RATE_LIMITED, PERMANENT marks them FAILED, no retry;
- UNKNOWN (the request may have been sent: a read timeout, a dropped connection, an
  unreadable answer) marks every number UNKNOWN and is never retried: an SMS goes out at
  most once, even when that means not knowing whether it went;
- a number the provider did not answer for, or every number of a call on which the
  provider raised something unexpected, is UNKNOWN too, for the same reason.
Concurrency is bounded per app (one semaphore per app_access_id), so a slow or failing
app cannot hold the slots of another app.

`dispatch` (optional) runs once a slot is held, just before the first provider call: it
records the batch's numbers as dispatched and answers the batch to send (the numbers it did
dispatch), or None to send nothing. If it raises, nothing was sent and NotDispatched carries
its error out of `send` (the numbers stay reserved for a later fire).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import replace

from pushreachd.clock import Clock
from pushreachd.sms.provider import (
    SendOutcome,
    SmsBatch,
    SmsErrorKind,
    SmsProvider,
    SmsProviderError,
    SmsResult,
)

log = logging.getLogger(__name__)

MISSING_RESULT = "MissingResult"
_KIND_OUTCOME = {
    SmsErrorKind.TRANSIENT: SendOutcome.FAILED,  # only after the last attempt
    SmsErrorKind.PERMANENT: SendOutcome.FAILED,
    SmsErrorKind.RATE_LIMITED: SendOutcome.RATE_LIMITED,
    SmsErrorKind.UNKNOWN: SendOutcome.UNKNOWN,  # never retried
}


Dispatch = Callable[[SmsBatch], Awaitable[SmsBatch | None]]


class NotDispatched(Exception):
    """`dispatch` refused or failed: nothing of the batch went to the provider."""


class SmsSender:
    def __init__(
        self,
        provider: SmsProvider,
        clock: Clock,
        *,
        max_attempts: int = 4,
        base_delay: float = 0.5,
        max_delay: float = 8.0,
        per_app_concurrency: int = 4,
        rng: random.Random | None = None,
    ) -> None:
        if max_attempts < 1 or per_app_concurrency < 1:
            raise ValueError("max_attempts and per_app_concurrency must be at least 1")
        self._provider = provider
        self._clock = clock
        self._max_attempts = max_attempts
        self._base_delay = base_delay
        self._max_delay = max_delay
        self._per_app = per_app_concurrency
        self._rng = rng if rng is not None else random.Random()
        self._slots: dict[str, asyncio.Semaphore] = {}
        # Counters for metrics (read by the metrics module; plain ints are enough).
        self.batches = 0
        self.attempts = 0
        self.retries = 0
        self.exhausted = 0  # batches that failed TRANSIENT on every attempt

    @property
    def provider(self) -> SmsProvider:
        return self._provider

    def backoff(self, retry: int) -> float:
        """Delay before retry number `retry` (0 for the first retry): full jitter, capped."""
        return self._rng.uniform(0.0, min(self._max_delay, self._base_delay * (2**retry)))

    async def send(self, batch: SmsBatch, dispatch: Dispatch | None = None) -> list[SmsResult]:
        """One SmsResult per number of the batch `dispatch` answered (the whole batch without
        `dispatch`), in batch order; [] when it answered None. Raises only NotDispatched (and
        CancelledError)."""
        self.batches += 1
        sent = [batch]
        try:
            results = await self._send_with_retries(batch, dispatch, sent)
        except NotDispatched:
            raise
        except SmsProviderError as exc:
            return self._all(sent[0], _KIND_OUTCOME[exc.kind], exc.code, exc.message)
        except asyncio.CancelledError:
            raise  # shutting down: dispatched records stay SENDING and become UNKNOWN
        except Exception as exc:  # a provider bug must not lose the whole batch's records
            # It may have raised after the request left, so the SMS may have been sent.
            log.exception("sms provider %s raised unexpectedly", self._provider.name)
            return self._all(sent[0], SendOutcome.UNKNOWN, "ProviderError", type(exc).__name__)
        return _align(sent[0], results)

    async def _send_with_retries(
        self, batch: SmsBatch, dispatch: Dispatch | None, sent: list[SmsBatch]
    ) -> list[SmsResult]:
        slots = self._slots.setdefault(batch.app_access_id, asyncio.Semaphore(self._per_app))
        for attempt in range(self._max_attempts):
            try:
                # The slot is held for the call only, not for the backoff sleep, so an
                # app's retrying batch does not starve its other batches.
                async with slots:
                    if attempt == 0 and dispatch is not None:
                        try:
                            narrowed = await dispatch(batch)
                        except asyncio.CancelledError:
                            raise
                        except Exception as exc:
                            raise NotDispatched(str(exc)) from exc
                        if narrowed is None or not narrowed.phone_numbers:
                            sent[0] = replace(batch, phone_numbers=())
                            return []
                        sent[0] = batch = narrowed
                    self.attempts += 1
                    return await self._provider.send(batch)
            except SmsProviderError as exc:
                last = attempt + 1 == self._max_attempts
                if exc.kind is not SmsErrorKind.TRANSIENT or last:
                    if exc.kind is SmsErrorKind.TRANSIENT:
                        self.exhausted += 1
                    raise
                delay = self.backoff(attempt)
                self.retries += 1
                log.info(
                    "sms app=%s attempt %d/%d failed (%s), retrying in %.2fs",
                    batch.app_access_id, attempt + 1, self._max_attempts, exc.code, delay,
                )
                await self._clock.sleep(delay)
        raise AssertionError("unreachable: the loop returns or raises")

    @staticmethod
    def _all(batch: SmsBatch, outcome: SendOutcome, code: str, message: str) -> list[SmsResult]:
        return [SmsResult(n, outcome, code=code, message=message) for n in batch.phone_numbers]


def _align(batch: SmsBatch, results: list[SmsResult]) -> list[SmsResult]:
    """Exactly one result per batch number, in batch order; unanswered numbers UNKNOWN
    (the call went through, so the provider may have sent them)."""
    by_number = {r.phone_number: r for r in results}
    return [
        by_number.get(n)
        or SmsResult(n, SendOutcome.UNKNOWN, code=MISSING_RESULT, message="provider returned no status")
        for n in batch.phone_numbers
    ]
