"""The fallback scheduler: when a push's delay ends, decide per phone and send the SMS.

The store is the truth and the wheel an index: on start every PENDING or FIRING fallback is
loaded back into the wheel (overdue ones fire at once). When the wheel hands over due push
ids, workers fire them: claim (PENDING -> FIRING), judge each phone (fallback.decide),
reserve a record per phone under the rate limits (SENDING or RATE_LIMITED, in one
transaction), send in batches, record each answer, and mark the fallback DONE.

A crash anywhere leaves a state the next start resumes from: SENDING records become UNKNOWN
(never sent twice), and a FIRING fallback is fired again for the phones not yet judged.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from .clock import Clock
from .fallback import decide
from .model import SmsStatus
from .phone import mask_phone
from .ratelimit import PROVIDER_RULE, RateLimiter
from .sms.batching import split_batches
from .sms.provider import SendOutcome, SmsBatch, SmsCredentials, SmsResult
from .sms.sender import SmsSender
from .store.base import FireJob, SmsOutcome, Store
from .timer import WheelTimer

log = logging.getLogger(__name__)

RETRY_SECONDS = 30.0  # a fire that failed (e.g. the database was busy) is tried again after this

_STATUS_OF = {
    SendOutcome.SENT: SmsStatus.SENT,
    SendOutcome.FAILED: SmsStatus.FAILED,
    SendOutcome.RATE_LIMITED: SmsStatus.RATE_LIMITED,
    SendOutcome.UNKNOWN: SmsStatus.UNKNOWN,  # may have been sent: counted, never resent
}


@dataclass(frozen=True, slots=True)
class FireReport:
    """What one fire did; handed to observers (metrics, tests)."""

    push_id: str
    access_id: str
    lateness: float  # seconds between due time and the start of the fire
    sent: int
    failed: int
    rate_limited: int
    unknown: int  # may or may not have reached the phone; never resent
    no_phone: int


class Scheduler:
    def __init__(
        self,
        store: Store,
        sender: SmsSender,
        clock: Clock,
        *,
        limiter: RateLimiter,
        credentials: Callable[[str, bytes | None], SmsCredentials | None],
        tick_ms: int = 100,
        workers: int = 16,
    ) -> None:
        self._store = store
        self._sender = sender
        self._clock = clock
        self._limiter = limiter
        self._credentials = credentials
        self._timer = WheelTimer(clock, self._on_due, tick_ms=tick_ms)
        self._queue: asyncio.Queue[int] = asyncio.Queue()
        self._queued: set[int] = set()  # a push is queued or being fired at most once
        self._workers_count = workers
        self._workers: list[asyncio.Task[None]] = []
        self.observers: list[Callable[[FireReport], None]] = []

    @property
    def pending_count(self) -> int:
        """Fallbacks armed in the wheel."""
        return len(self._timer)

    @property
    def backlog(self) -> int:
        """Fallbacks due and waiting for (or in the hands of) a worker."""
        return len(self._queued)

    async def start(self) -> int:
        """Recover after a stop, load live fallbacks into the wheel and start firing."""
        unknown = await self._store.recover_interrupted_sms(self._clock.time())
        if unknown:
            log.warning("%d SMS were in flight when the service stopped; recorded as UNKNOWN", unknown)
        live = await self._store.live_fallbacks()
        for push, due_at in live:
            self._timer.add(due_at, push)
        self._timer.start()
        self._workers = [
            asyncio.create_task(self._work(), name=f"pushreach-fire-{i}") for i in range(self._workers_count)
        ]
        log.info("scheduler started with %d live fallback(s)", len(live))
        return len(live)

    async def stop(self, grace: float = 10.0) -> None:
        """Stop arming, let fires under way finish for up to `grace` seconds, then cancel.

        A cancelled fire is resumed on the next start (its SENDING records become UNKNOWN).
        """
        await self._timer.stop()
        if self._queued:
            try:
                await asyncio.wait_for(self._drain(), timeout=grace)
            except TimeoutError:
                log.warning("%d fallback(s) still firing at shutdown; resumed on next start", len(self._queued))
        for task in self._workers:
            task.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        self._workers = []

    async def _drain(self) -> None:
        while self._queued:
            await asyncio.sleep(0.01)

    def arm(self, push: int, due_at: float) -> None:
        self._timer.add(due_at, push)

    def disarm(self, push: int) -> None:
        self._timer.cancel(push)

    def _on_due(self, pushes: list[int]) -> None:
        for push in pushes:
            if push not in self._queued:
                self._queued.add(push)
                self._queue.put_nowait(push)

    async def _work(self) -> None:
        while True:
            push = await self._queue.get()
            try:
                await self.fire(push)
            except asyncio.CancelledError:
                raise
            except Exception:
                # The fallback stays FIRING in the store; firing again resumes it (phones already
                # judged keep their records), so try again a little later rather than give up.
                log.exception("firing the fallback of push #%d failed; retrying in %ss", push, RETRY_SECONDS)
                self._timer.add(self._clock.time() + RETRY_SECONDS, push)
            finally:
                self._queued.discard(push)

    async def fire(self, push: int) -> FireReport | None:
        now = self._clock.time()
        job = await self._store.claim_fallback(push, now)
        if job is None:
            return None  # cancelled, or already done by another worker or instance
        recipients = await self._store.recipients(job)
        decision = decide(recipients, job.sms_info.trigger_condition)
        window = self._limiter.window(job.policy, now)
        to_send, limited = await self._store.reserve_sms(job, decision.phones, window, now)
        outcomes = await self._send(job, to_send)
        await self._store.finish_fallback(job, decision.no_phone_count, self._clock.time())
        report = FireReport(
            push_id=job.push_id,
            access_id=job.access_id,
            lateness=max(0.0, now - job.due_at),
            sent=sum(o.status is SmsStatus.SENT for o in outcomes),
            failed=sum(o.status is SmsStatus.FAILED for o in outcomes),
            rate_limited=limited + sum(o.status is SmsStatus.RATE_LIMITED for o in outcomes),
            unknown=sum(o.status is SmsStatus.UNKNOWN for o in outcomes),
            no_phone=decision.no_phone_count,
        )
        log.info(
            "fallback of push %s fired: %d sent, %d failed, %d rate-limited, %d unknown, %d satisfied, "
            "%d without phone",
            job.push_id,
            report.sent,
            report.failed,
            report.rate_limited,
            report.unknown,
            decision.satisfied_phones,
            report.no_phone,
        )
        for observer in self.observers:
            observer(report)
        return report

    async def _send(self, job: FireJob, phones: list[str]) -> list[SmsOutcome]:
        if not phones:
            return []
        info = job.sms_info
        credentials = self._credentials(job.access_id, job.sms_credentials_blob)
        batches = [
            SmsBatch(
                app_access_id=job.access_id,
                credentials=credentials,
                sms_app_id=info.sms_app_id,
                sign_name=info.sms_sign_name,
                template_id=info.sms_template_id,
                template_params=info.sms_template_params,
                phone_numbers=numbers,
                session_context=job.push_id,
            )
            for numbers in split_batches(phones, self._sender.provider.max_batch_size)
        ]

        async def send_one(batch: SmsBatch) -> list[SmsOutcome]:
            results = await self._sender.send(batch)
            outcomes = [_outcome(r) for r in results]
            await self._store.finish_sms(job, outcomes, self._clock.time())
            for r in results:
                if r.outcome is not SendOutcome.SENT:
                    log.info("SMS for push %s to %s: %s %s", job.push_id, mask_phone(r.phone_number), r.outcome.name, r.code)
            return outcomes

        # The sender bounds concurrency per app; batches of one fire go out together.
        per_batch = await asyncio.gather(*(send_one(b) for b in batches))
        return [o for outcomes in per_batch for o in outcomes]


def _outcome(r: SmsResult) -> SmsOutcome:
    status = _STATUS_OF[r.outcome]
    return SmsOutcome(
        phone_number=r.phone_number,
        status=status,
        code=r.code,
        message=r.message,
        serial_no=r.serial_no,
        fee=r.fee,
        rate_limit_rule=PROVIDER_RULE if status is SmsStatus.RATE_LIMITED else "",
    )
