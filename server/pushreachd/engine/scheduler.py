"""The fallback scheduler: when a push's delay ends, decide per phone and send the SMS.

The store is the truth and the wheel an index: on start every PENDING or FIRING fallback is
loaded back into the wheel (overdue ones fire at once). Due pushes are fired in groups, so
that a burst costs a few transactions and provider calls per group, not per push:

1. A claim worker takes up to `group_size` due push ids from the queue and claims them in
   one transaction (PENDING -> FIRING). Each claimed fire goes to its app's lane.
2. Up to `per_app` lane runners per app each take up to `group_size` of the app's fires,
   read their recipients in one read, judge each phone (fallback.decide), reserve a record
   per phone under the rate limits (RESERVED or RATE_LIMITED, in order, so an earlier push's
   record counts for a later one; the time is read here, when phones are reserved) in writes
   of at most `max_phones_per_write` phones, merge the numbers of all the group's pushes that
   share app, credentials, SMS app, signature, template and parameters into provider calls of
   up to 200 (sms.batching.coalesce), mark each call's records dispatched (RESERVED ->
   SENDING, one write per call, once the call holds its provider slot), record the call's
   answers per (push, phone), and mark the fallbacks whose every phone was dispatched DONE.

Lanes are per app, so a slow app only slows itself. A lane holds at most `group_size * per_app`
claimed fires; beyond that it keeps only their ids and claims them again when it gets to them
(FIRING -> FIRING is allowed), so a backlog costs little memory.

A crash anywhere leaves a state the next start resumes from: SENDING records (dispatched, no
answer) become UNKNOWN (never sent twice); a FIRING fallback is fired again, which sends its
RESERVED records and judges the phones not yet judged.

Stopping (`stop`): claiming, reserving and dispatching end at once; provider calls already
under way get up to the grace to finish; what was not dispatched stays RESERVED (its fallback
FIRING) for the next start.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace

from .. import heap
from ..clock import Clock
from ..errors import Unavailable
from ..model import RateLimitPolicy, SmsStatus
from ..phone import mask_phone
from ..sms.batching import coalesce
from ..sms.provider import SendOutcome, SmsBatch, SmsCredentials, SmsResult
from ..sms.sender import NotDispatched, SmsSender
from ..store.base import LIVE_PAGE, FireJob, SmsOutcome, Store
from ..supervisor import Supervisor
from .fallback import Decision, decide, decide_early
from .ratelimit import PROVIDER_RULE, RateLimiter, Window
from .states import SMS_TRANSITIONS, check_transition
from .timer import WheelTimer

log = logging.getLogger(__name__)

RETRY_SECONDS = 30.0  # a fire that failed (e.g. the database was busy) is tried again after this
ANSWER_RETRY_DELAYS = (0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0, 10.0, 10.0)  # ~1 min for SMS answers to be written

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
    lateness: float  # seconds between due time and the reservation of its phones
    sent: int
    failed: int
    rate_limited: int
    unknown: int  # may or may not have reached the phone; never resent
    no_phone: int


@dataclass
class _Tally:
    sent: int = 0
    failed: int = 0
    rate_limited: int = 0
    unknown: int = 0

    def add(self, status: SmsStatus) -> None:
        if status is SmsStatus.SENT:
            self.sent += 1
        elif status is SmsStatus.FAILED:
            self.failed += 1
        elif status is SmsStatus.RATE_LIMITED:
            self.rate_limited += 1
        else:
            self.unknown += 1


@dataclass
class _Lane:
    """One app's claimed fires waiting for a runner, and ids beyond the lane's limit."""

    jobs: deque[tuple[float, FireJob]] = field(default_factory=deque)  # (claimed at, job)
    parked: deque[int] = field(default_factory=deque)  # claimed once; claimed again when taken
    runners: int = 0
    busy: int = 0  # runners firing a chunk (the others are about to take one)

    def __len__(self) -> int:
        return len(self.jobs) + len(self.parked)


# What must be equal for numbers to share one provider call.
_BatchKey = tuple[str, bytes | None, str, str, str, tuple[str, ...]]


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
        workers: int = 4,
        group_size: int = 256,
        per_app: int = 16,
        max_phones_per_write: int = 500,
        live_page: int = LIVE_PAGE,
        supervisor: Supervisor | None = None,
    ) -> None:
        if workers < 1 or group_size < 1 or per_app < 1 or max_phones_per_write < 1 or live_page < 1:
            raise ValueError("workers, group_size, per_app, max_phones_per_write and live_page must be at least 1")
        self._live_page = live_page
        self._max_phones = max_phones_per_write
        self._stopping = False
        self._store = store
        self._sender = sender
        self._clock = clock
        self._limiter = limiter
        self._credentials = credentials
        self._supervisor = supervisor or Supervisor()
        self._timer = WheelTimer(clock, self._on_due, tick_ms=tick_ms, supervisor=self._supervisor)
        self._queue: asyncio.Queue[int] = asyncio.Queue()
        self._queued: set[int] = set()  # a push is queued or being fired at most once
        self._workers_count = workers
        self._group_size = group_size
        self._per_app = per_app
        self._lane_limit = group_size * per_app
        self._lanes: dict[str, _Lane] = {}
        self._runners: set[asyncio.Task[None]] = set()
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
        live = await self._arm_live()
        self._timer.start()
        self._workers = [
            self._supervisor.spawn(self._work(), name=f"pushreach-fire-{i}", forever=True)
            for i in range(self._workers_count)
        ]
        log.info("scheduler started with %d live fallback(s)", live)
        return live

    async def _arm_live(self) -> int:
        # A page at a time: the rows of one page are the peak, not those of every live fallback
        # (CPython keeps the arenas of a freed million-row list: +200 MB RSS for good).
        armed, after = 0, 0
        while True:
            page = await self._store.live_fallbacks(after, self._live_page)
            for push, due_at in page:
                self._timer.add(due_at, push)
            armed += len(page)
            if len(page) < self._live_page:
                # The pages' rows are freed, but glibc keeps their memory mapped: give it back.
                heap.trim()
                return armed
            after = page[-1][0]

    def begin_stop(self) -> None:
        """Stop claiming, reserving and dispatching at once (provider calls under way go on)."""
        self._stopping = True
        for task in self._workers:
            task.cancel()

    async def stop(self, grace: float = 10.0) -> None:
        """begin_stop, then give provider calls under way up to `grace` seconds to finish and
        record their answers; then cancel what is left.

        Records not dispatched stay RESERVED and their fallbacks FIRING: the next start sends
        them. A call still under way when the grace ends leaves its records SENDING, which the
        next start records UNKNOWN (never sent again).
        """
        self.begin_stop()
        await self._timer.stop()
        await asyncio.gather(*self._workers, return_exceptions=True)
        if self._runners:
            _, pending = await asyncio.wait(set(self._runners), timeout=grace)
            if pending:
                log.warning("%d fire(s) still waiting for the SMS provider at the end of the grace", len(pending))
        tasks = [*self._workers, *self._runners]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._workers = []
        self._runners.clear()
        self._lanes.clear()

    def arm(self, push: int, due_at: float) -> None:
        self._timer.add(due_at, push)

    def knows(self, push: int) -> bool:
        """The push is armed in the wheel, or due and being fired."""
        return push in self._timer or push in self._queued

    def disarm(self, push: int) -> None:
        self._timer.cancel(push)

    def _on_due(self, pushes: list[int]) -> None:
        for push in pushes:
            if push not in self._queued:
                self._queued.add(push)
                self._queue.put_nowait(push)

    # -- stage 1: claim due pushes in groups, hand them to their app's lane ---------------------

    async def _work(self) -> None:
        while True:
            group = [await self._queue.get()]
            while len(group) < self._group_size and not self._queue.empty():
                group.append(self._queue.get_nowait())
            now = self._clock.time()  # the claim's time (fires are dated when their phones are reserved)
            try:
                jobs = await self._store.claim_fallbacks(group, now)
            except asyncio.CancelledError:
                raise
            except Exception:
                self._retry_later(group, "claiming")
                continue
            claimed = {job.push for job in jobs}
            # Cancelled, or already done by another worker or instance: nothing to fire.
            self._queued.difference_update(p for p in group if p not in claimed)
            touched: dict[str, _Lane] = {}
            for job in jobs:
                lane = touched.get(job.access_id) or self._lanes.setdefault(job.access_id, _Lane())
                touched[job.access_id] = lane
                if len(lane.jobs) < self._lane_limit and not lane.parked:
                    lane.jobs.append((now, job))
                else:
                    lane.parked.append(job.push)
            for access_id, lane in touched.items():
                self._kick(access_id, lane)

    def _retry_later(self, pushes: Iterable[int], doing: str) -> None:
        # The fallbacks stay PENDING or FIRING in the store; firing again resumes them (phones
        # already judged keep their records), so try again a little later rather than give up.
        pushes = list(pushes)
        log.exception("%s %d fallback(s) failed; retrying in %ss", doing, len(pushes), RETRY_SECONDS)
        at = self._clock.time() + RETRY_SECONDS
        for push in pushes:
            self._queued.discard(push)
            self._timer.add(at, push)

    # -- stage 2: per app, judge, reserve, send and finish a group at a time --------------------

    def _kick(self, access_id: str, lane: _Lane) -> None:
        """Start runners for the lane's work not yet covered by a free runner, up to `per_app`."""
        while lane.runners < self._per_app and (lane.runners - lane.busy) * self._group_size < len(lane):
            lane.runners += 1
            task = self._supervisor.spawn(self._run_lane(access_id, lane), name=f"pushreach-lane-{access_id}")
            self._runners.add(task)
            task.add_done_callback(self._runners.discard)

    async def _run_lane(self, access_id: str, lane: _Lane) -> None:
        try:
            while (lane.jobs or lane.parked) and not self._stopping:
                lane.busy += 1
                try:
                    await self._run_chunk(lane)
                finally:
                    lane.busy -= 1
        finally:
            lane.runners -= 1
            if lane.runners == 0 and not lane and self._lanes.get(access_id) is lane:
                del self._lanes[access_id]

    async def _run_chunk(self, lane: _Lane) -> None:
        if lane.jobs:
            # One claim's jobs at a time (they share a fire time), at most a group.
            now, job = lane.jobs.popleft()
            chunk = [job]
            while lane.jobs and len(chunk) < self._group_size and lane.jobs[0][0] == now:
                chunk.append(lane.jobs.popleft()[1])
        else:
            ids = [lane.parked.popleft() for _ in range(min(len(lane.parked), self._group_size))]
            try:
                chunk = await self._store.claim_fallbacks(ids, self._clock.time())
            except asyncio.CancelledError:
                raise
            except Exception:
                self._retry_later(ids, "claiming")
                return
            claimed = {job.push for job in chunk}
            self._queued.difference_update(p for p in ids if p not in claimed)
        try:
            await self._fire_jobs(chunk)
        except asyncio.CancelledError:
            raise
        except Exception:
            self._retry_later((job.push for job in chunk), "firing")
        else:
            self._queued.difference_update(job.push for job in chunk)

    # -- firing ---------------------------------------------------------------------------------

    async def fire(self, push: int) -> FireReport | None:
        """Fire one push now, outside the wheel (tests, tools); None when there is nothing to fire."""
        reports = await self.fire_many([push])
        return reports[0] if reports else None

    async def fire_many(self, pushes: list[int]) -> list[FireReport]:
        """Claim and fire these pushes now, as one group; a report per push actually fired."""
        jobs = await self._store.claim_fallbacks(pushes, self._clock.time())
        return await self._fire_jobs(jobs) if jobs else []

    async def fire_early(self, push: int) -> FireReport | None:
        """early_on_push_failure: send now to the phones of a PENDING fallback none of whose
        devices can get the push. The fallback stays PENDING and fires at its due time for the
        other phones; the phones sent to here keep their records (one SMS per push and phone)
        and count against the rate limits like any other."""
        if self._stopping:
            return None  # the fallback fires at its due time after the restart
        job = await self._store.pending_fallback_job(push)
        if job is None:
            return None
        reports = await self._fire_jobs([job], early=True)
        return reports[0] if reports else None

    def _parts(self, jobs: list[FireJob], decisions: list[Decision]) -> Iterator[list[tuple[FireJob, tuple[str, ...]]]]:
        """The group's phones in reservation writes of at most `max_phones_per_write` phones (a
        large push is split), so that no write holds the store for long."""
        part: list[tuple[FireJob, tuple[str, ...]]] = []
        room = self._max_phones
        for job, d in zip(jobs, decisions):
            phones = d.phones
            while True:
                take, phones = phones[:room], phones[room:]
                part.append((job, take))
                room -= len(take)
                if room == 0:
                    yield part
                    part, room = [], self._max_phones
                if not phones:
                    break
        if part:
            yield part

    async def _fire_jobs(self, jobs: list[FireJob], *, early: bool = False) -> list[FireReport]:
        """Judge, reserve, send and finish claimed fallbacks as one group. A job some of whose
        phones were not dispatched (a stop, a failed dispatch write) is left FIRING. `early`:
        only the phones decide_early picks, and the fallbacks are not finished."""
        recipients = await self._store.recipients_many(jobs)
        decisions: list[Decision] = [
            decide_early(recipients[j.push]) if early else decide(recipients[j.push], j.sms_info.trigger_condition)
            for j in jobs
        ]
        if early and not any(d.phones for d in decisions):
            return []
        tallies = {job.push: _Tally() for job in jobs}
        reserved_at: dict[int, float] = {}
        unfinished: set[int] = set()
        items: list[tuple[_BatchKey, FireJob, str]] = []
        for part in self._parts(jobs, decisions):
            if self._stopping:
                unfinished.update(job.push for job, _ in part)
                continue
            # The time phones are reserved: the rate-limit window, the records' date, lateness.
            now = self._clock.time()
            windows: dict[RateLimitPolicy, Window] = {}
            for job, _ in part:
                if job.policy not in windows:
                    windows[job.policy] = self._limiter.window(job.policy, now)
            reserved = await self._store.reserve_sms_many(
                [(job, phones, windows[job.policy]) for job, phones in part], now
            )
            for (job, _), (to_send, limited) in zip(part, reserved):
                reserved_at.setdefault(job.push, now)
                tallies[job.push].rate_limited += limited
                info = job.sms_info
                key: _BatchKey = (
                    job.access_id,
                    job.sms_credentials_blob,
                    info.sms_app_id,
                    info.sms_sign_name,
                    info.sms_template_id,
                    info.sms_template_params,
                )
                items.extend((key, job, phone) for phone in to_send)
        batches = coalesce(items, self._sender.provider.max_batch_size)
        credentials: dict[tuple[str, bytes | None], SmsCredentials | None] = {}
        for key, _ in batches:
            if key[:2] not in credentials:
                credentials[key[:2]] = self._credentials(key[0], key[1])
        # The sender bounds concurrency per app; the group's calls go out together.
        for left in await asyncio.gather(
            *(self._send(key, credentials[key[:2]], refs, tallies) for key, refs in batches)
        ):
            unfinished.update(left)
        finished = [(j, d) for j, d in zip(jobs, decisions) if j.push not in unfinished]
        if finished and not early:
            await self._store.finish_fallbacks([(j, d.no_phone_count) for j, d in finished], self._clock.time())
        reports = []
        for job, d in finished:
            t = tallies[job.push]
            report = FireReport(
                push_id=job.push_id,
                access_id=job.access_id,
                lateness=max(0.0, reserved_at.get(job.push, self._clock.time()) - job.due_at),
                sent=t.sent,
                failed=t.failed,
                rate_limited=t.rate_limited,
                unknown=t.unknown,
                no_phone=d.no_phone_count,
            )
            log.debug(
                "fallback of push %s fired: %d sent, %d failed, %d rate-limited, %d unknown, %d satisfied, "
                "%d without phone",
                job.push_id, t.sent, t.failed, t.rate_limited, t.unknown, d.satisfied_phones, d.no_phone_count,
            )
            reports.append(report)
            for observer in self.observers:
                observer(report)
        if reports:
            log.info(
                "fallbacks fired: %d push(es) in %d provider call(s): %d sent, %d failed, %d rate-limited, "
                "%d unknown",
                len(reports), len(batches), sum(r.sent for r in reports), sum(r.failed for r in reports),
                sum(r.rate_limited for r in reports), sum(r.unknown for r in reports),
            )
        if unfinished and not self._stopping:
            raise RuntimeError(f"{len(unfinished)} fallback(s) not fully dispatched")
        return reports

    async def _send(
        self,
        key: _BatchKey,
        credentials: SmsCredentials | None,
        refs: list[tuple[FireJob, str]],
        tallies: dict[int, _Tally],
    ) -> set[int]:
        """One provider call: dispatch, send, record the answers. Returns the pushes of the
        call's records left RESERVED (nothing dispatched), else an empty set."""
        access_id, _, sms_app_id, sign_name, template_id, params = key
        batch = SmsBatch(
            app_access_id=access_id,
            credentials=credentials,
            sms_app_id=sms_app_id,
            sign_name=sign_name,
            template_id=template_id,
            template_params=params,
            phone_numbers=tuple(phone for _, phone in refs),
            # Receipts match by serial number and phone; the context names the first push.
            session_context=refs[0][0].push_id,
        )
        carried = refs  # the records this call dispatched

        async def dispatch(b: SmsBatch) -> SmsBatch | None:
            # Runs holding the provider slot, just before the call: one write per call.
            nonlocal carried
            if self._stopping:
                raise _Stopping("the service is stopping; left RESERVED for the next start")
            moved = await self._store.dispatch_sms([(job.push, phone) for job, phone in refs], self._clock.time())
            carried = [ref for ref, ok in zip(refs, moved, strict=True) if ok]
            return replace(b, phone_numbers=tuple(phone for _, phone in carried)) if carried else None

        try:
            results = await self._sender.send(batch, dispatch)  # one per carried number, in order
        except NotDispatched as exc:
            if not isinstance(exc.__cause__, _Stopping):
                log.error("dispatching an SMS call of %d number(s) failed: %s", len(refs), exc.__cause__)
            return {job.push for job, _ in refs}
        outcomes: list[tuple[int, SmsOutcome]] = []
        for (job, _), r in zip(carried, results, strict=True):
            outcome = _outcome(r)
            outcomes.append((job.push, outcome))
            tallies[job.push].add(outcome.status)
            if r.outcome is not SendOutcome.SENT:
                log.info("SMS for push %s to %s: %s %s", job.push_id, mask_phone(r.phone_number), r.outcome.name, r.code)
        if outcomes:
            await self._record_answers(outcomes)
        return set()

    async def _record_answers(self, outcomes: list[tuple[int, SmsOutcome]]) -> None:
        """Write the provider's answers. They are sent SMS: a store that is only busy or briefly
        away (PostgreSQL's pool exhausted by a burst) is waited for, with capped backoff, rather
        than leave the records SENDING, which the next start would record UNKNOWN."""
        for delay in ANSWER_RETRY_DELAYS:
            try:
                await self._store.finish_sms_many(outcomes, self._clock.time())
                return
            except Unavailable as exc:
                log.warning("recording %d SMS answer(s) failed (%s); retrying in %gs", len(outcomes), exc, delay)
                await self._clock.sleep(delay)
        await self._store.finish_sms_many(outcomes, self._clock.time())


class _Stopping(Exception):
    pass


def _outcome(r: SmsResult) -> SmsOutcome:
    status = _STATUS_OF[r.outcome]
    check_transition(SMS_TRANSITIONS, SmsStatus.SENDING, status)
    return SmsOutcome(
        phone_number=r.phone_number,
        status=status,
        code=r.code,
        message=r.message,
        serial_no=r.serial_no,
        fee=r.fee,
        rate_limit_rule=PROVIDER_RULE if status is SmsStatus.RATE_LIMITED else "",
    )
