"""The Store protocol: everything the engine keeps, behind one interface.

SQLite (sqlite/) is the embedded implementation; PostgreSQL sits beside it behind the same
protocol. The store knows model types only (plus the small store-level types below, which the
engine imports). Nothing here assumes one process: state changes are guarded transitions
(engine/states.py tables, applied as `WHERE state IN (...)`), SMS records are unique per
(push, phone), and rate-limit decisions (the engine's RateWindow) are taken inside the
transaction that writes the record. Calls are set-based: one call, one transaction, however
many rows; "in one transaction" below means all or nothing, and visible to the next call once
the call has returned. Times are seconds since the epoch (float), as the caller's clock says.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from ..model import (
    App,
    Broadcast,
    Channel,
    DeliveryReceipt,
    Device,
    EventIn,
    EventOutcome,
    FallbackState,
    Funnel,
    NewPush,
    Push,
    PushListItem,
    PushOutcome,
    PushReceipt,
    PushSpec,
    RateLimitPolicy,
    ReceiptKey,
    Recipient,
    Route,
    SmsCounts,
    SmsInfo,
    SmsRecord,
    SmsRecordFilter,
    SmsStatus,
    Statistics,
    TargetOutcome,
    TargetView,
)


def funnel_of(
    by_outcome: Sequence[Sequence[Any]], sms_by_status: Mapping[int, int], no_phone: int, arrived_after_sms: int
) -> Funnel:
    """A push's funnel from what both stores read: its targets grouped by push outcome (rows of
    outcome or NULL, targets, arrived, clicked), its SMS records by status, the targets without
    phone, and the arrivals reported after their phone's SMS."""
    counts = {outcome: n for outcome, n, _, _ in by_outcome}
    sms = SmsCounts.of({SmsStatus(status): n for status, n in sms_by_status.items()})
    return Funnel(
        target_count=sum(n for _, n, _, _ in by_outcome),
        arrived_count=sum(arrived for _, _, arrived, _ in by_outcome),
        clicked_count=sum(clicked for _, _, _, clicked in by_outcome),
        push_accepted_count=counts.get(int(PushOutcome.ACCEPTED), 0),
        push_invalid_token_count=counts.get(int(PushOutcome.INVALID_TOKEN), 0),
        push_failed_count=counts.get(int(PushOutcome.FAILED), 0),
        push_expired_count=counts.get(int(PushOutcome.EXPIRED), 0),
        push_no_channel_count=counts.get(int(PushOutcome.NO_CHANNEL), 0),
        push_pending_count=counts.get(None, 0) + counts.get(int(PushOutcome.PENDING), 0),
        sms_sent_count=sms.sent,
        sms_delivered_count=sms.delivered,
        sms_failed_count=sms.failed,
        sms_rate_limited_count=sms.rate_limited,
        no_phone_count=no_phone,
        arrived_after_sms_count=arrived_after_sms,
        sms_unknown_count=sms.unknown,
        sms_undelivered_count=sms.undelivered,
        sms_pending_count=sms.pending,
    )


class RateWindow(Protocol):
    """The per-number rate-limit rule for one decision, as the engine states it
    (engine.ratelimit.Window). The store counts what it names, in the transaction that writes
    the record, and asks `verdict`; it never re-implements the rule."""

    @property
    def day_start(self) -> float:
        """SMS counted toward the daily limit: those dated at or after this."""

    @property
    def same_content_since(self) -> float:
        """A same-content SMS dated at or after this blocks."""

    def content_key(self, info: SmsInfo) -> str:
        """What "the same content" means: records with equal keys are the same content."""

    def verdict(self, sent_today: int, last_same_content_at: float | None) -> str | None:
        """The rule (its name) that blocks a send, or None when it may go ahead."""


STATISTICS_SLOT = 900  # seconds: the grain of statistics_by_slot
LIVE_PAGE = 10_000  # live fallbacks per page at start: ~1 MB of rows, 100 reads for 1,000,000


@dataclass(frozen=True, slots=True)
class FireJob:
    """A claimed fallback: what the scheduler needs to judge and send it."""

    push: int  # internal push row id
    push_id: str
    app_id: int
    access_id: str
    sms_info: SmsInfo
    policy: RateLimitPolicy
    sms_credentials_blob: bytes | None
    due_at: float

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> FireJob:
        """From a row of JOB_COLUMNS (both stores select them, `p` the push, `a` its app)."""
        spec = PushSpec.from_json(row[3])
        assert spec.sms_info is not None
        return cls(
            push=row[0],
            push_id=row[1],
            app_id=row[2],
            access_id=row[5],
            sms_info=spec.sms_info,
            policy=RateLimitPolicy(row[6], row[7], row[8]),
            sms_credentials_blob=None if row[9] is None else bytes(row[9]),
            due_at=row[4],
        )


JOB_COLUMNS = (
    "p.id, p.push_id, p.app_id, p.spec, p.fallback_due_at, a.access_id, "
    "a.same_content_interval, a.daily_limit, a.time_zone, a.sms_credentials"
)


@dataclass(frozen=True, slots=True)
class SmsOutcome:
    """The provider's answer for one phone of a fired push."""

    phone_number: str
    status: SmsStatus  # SENT, FAILED, RATE_LIMITED or UNKNOWN
    code: str = ""
    message: str = ""
    serial_no: str = ""
    fee: int = 0
    rate_limit_rule: str = ""


@dataclass(frozen=True, slots=True)
class PurgeCounts:
    """Rows one purge deleted."""

    pushes: int = 0
    targets: int = 0
    sms_records: int = 0
    idempotency: int = 0


class Store(Protocol):
    async def open(self) -> None: ...
    async def close(self) -> None:
        """Finish queued writes, then release the database."""

    # apps
    async def create_app(
        self, access_id: str, name: str, verifier: str, now: float, sealed: bytes | None = None
    ) -> App: ...
    async def get_app(self, access_id: str) -> App | None: ...
    async def list_apps(self, after_id: int, limit: int) -> list[App]: ...
    async def set_app_secret(self, app_id: int, verifier: str, sealed: bytes | None = None) -> None: ...
    async def set_sms_credentials(self, app_id: int, blob: bytes) -> App: ...
    async def set_rate_limit_policy(self, app_id: int, policy: RateLimitPolicy) -> App: ...
    async def reseal_sms_credentials(
        self,
        reseal: Callable[[str, bytes], bytes],
        reseal_secret: Callable[[str, bytes], bytes] | None = None,
        reseal_channel: Callable[[str, Channel, bytes], bytes] | None = None,
    ) -> int:
        """Replace every app's credentials blob by reseal(access_id, blob), every sealed app
        secret by reseal_secret(access_id, blob) and every channel credentials blob by
        reseal_channel(access_id, channel, blob), all in one transaction: if any raises, no row
        changes. Returns the apps whose SMS credentials changed."""

    # push channels
    async def set_channel_credentials(self, app_id: int, channel: Channel, blob: bytes, now: float) -> App:
        """Store (or replace) one channel's sealed credentials; the app after it."""

    async def channel_credentials(self, app_id: int) -> dict[Channel, bytes]:
        """The app's sealed credentials blob per channel."""

    async def register_device(self, app_id: int, token: str, channel: Channel, phone: str, now: float) -> Device:
        """Set the device's channel and make its token valid again; bind `phone` when given."""

    async def device_routes(self, app_id: int, tokens: list[str]) -> dict[str, Route]:
        """The route of each of `tokens` that was registered or called invalid; the others
        take the app's default channel."""

    async def record_outcomes(
        self, push: int, app_id: int, outcomes: list[TargetOutcome], delivered_at: float | None = None
    ) -> None:
        """Record each target's push outcome (never over an earlier answer), mark the tokens
        answered INVALID_TOKEN invalid on their device and, with `delivered_at`, the push
        delivered, in one transaction (SQLite: shared with other deliveries' outcomes)."""

    async def pending_fallback_job(self, push: int) -> FireJob | None:
        """The push's fallback as a job while it is PENDING (not claimed); else None."""

    # receipt keys (services/receipts.py)
    async def receipt_keys(self, app_id: int) -> list[ReceiptKey]:
        """The app's receipt keys, oldest first (retired ones too)."""

    async def add_receipt_key(
        self,
        app_id: int,
        seal: Callable[[int], bytes],
        now: float,
        *,
        retire_others_at: float | None = None,
        only_if_none: bool = False,
    ) -> ReceiptKey:
        """Add the app's next key (key id = highest + 1), its blob `seal(key_id)`, in one
        transaction; with `retire_others_at`, keys not retiring sooner retire then. With
        `only_if_none` and a key already there, add nothing and return the newest."""

    async def reseal_receipt_keys(self, reseal: Callable[[int, int, bytes], bytes]) -> int:
        """Replace every receipt key blob by reseal(app_id, key_id, blob), in one transaction
        (all or nothing). Returns the keys changed."""

    # pushes
    async def tokens_of_accounts(self, app_id: int, accounts: list[str]) -> dict[str, list[str]]: ...
    async def create_push(self, push: NewPush, fingerprint: str) -> tuple[PushReceipt, int | None]:
        """Store push, targets and fallback in one transaction; return the receipt and the new
        push's row id. With a request_id already used for the same fingerprint, return the
        first receipt and None; for another fingerprint, raise AlreadyExists."""

    async def get_push(self, app_id: int, push_id: str) -> Push | None: ...
    async def mark_delivered(self, push: int, now: float) -> None:
        """The push was handed to the push channel."""

    async def last_push_row(self) -> int:
        """The highest push row id so far (0: none); bounds what a redelivery looks at."""

    async def expire_undelivered(self, through: int, now: float) -> int:
        """Mark delivered the undelivered pushes (row id <= through) whose expire_time has
        passed: nothing is left to deliver. Returns how many."""

    async def undelivered_pushes(
        self, through: int, now: float, after: tuple[float, int] | None, limit: int, max_targets: int = 50_000
    ) -> tuple[list[tuple[str, Push, tuple[str, ...]]], tuple[float, int] | None]:
        """One page of (access id, push, target tokens) of pushes accepted (row id <= through)
        but not handed to the push channel and not expired at `now`, oldest first, after the
        cursor `after`: at most `limit` pushes and about `max_targets` tokens (at least one
        push). Returns the page and the cursor of the next (None: no more)."""

    async def push_targets(self, push: int, offset: int, limit: int) -> list[TargetView]: ...
    async def push_funnel(self, push: int) -> Funnel: ...
    async def cancel_fallback(self, app_id: int, push_id: str, now: float) -> tuple[int, FallbackState] | None:
        """PENDING -> CANCELLED. Returns the push's row id and its state after the call; None
        for an unknown push."""

    # devices
    async def bind_phone(self, app_id: int, token: str, phone: str, now: float) -> Device: ...
    async def unbind_phone(self, app_id: int, token: str, now: float) -> Device: ...
    async def bind_account(
        self, app_id: int, token: str, account: str, now: float, max_tokens: int
    ) -> Device: ...
    async def unbind_account(self, app_id: int, token: str, account: str, now: float) -> Device: ...
    async def get_device(self, app_id: int, token: str) -> Device | None: ...

    async def unbind_account_everywhere(self, app_id: int, account: str, now: float) -> int:
        """Unbind the account from every token; returns how many tokens it had."""

    # tags
    async def modify_tags(
        self,
        app_id: int,
        now: float,
        *,
        clear: list[str] = ...,
        remove: list[tuple[str, str]] = ...,
        add: list[tuple[str, str]] = ...,
        max_per_token: int,
        max_per_app: int,
    ) -> None:
        """In one transaction: drop every tag of the `clear` tokens, then the (token, tag)
        pairs of `remove`, then add those of `add` (creating the devices). Raises
        FailedPrecondition, changing nothing, past either limit."""

    # broadcasts (TAG / ALL pushes): targets resolved after acceptance, page by page
    async def open_broadcasts(self) -> list[Broadcast]:
        """Every TAG / ALL push whose resolution has not finished, oldest first."""

    async def broadcast_page(
        self, app_id: int, after: str, limit: int, *, with_tags: bool
    ) -> list[tuple[str, frozenset[str]]]:
        """Up to `limit` devices of the app after token `after`, in token order, with tags."""

    async def store_broadcast_page(self, push: int, expected_cursor: str, tokens: list[str], cursor: str) -> int:
        """Store a page of targets and move the cursor, only if it is still `expected_cursor`
        (else FailedPrecondition). Returns the seq of the page's first target."""

    async def broadcast_tokens(self, push: int, from_seq: int, to_seq: int) -> list[str]: ...
    async def mark_broadcast_delivered(self, push: int, through_seq: int) -> None: ...
    async def finish_broadcast(self, push: int, now: float) -> None:
        """Resolution and delivery are over; from now on the fallback may be claimed."""

    # events
    async def record_events(self, app_id: int, events: list[EventIn], now: float) -> list[EventOutcome]: ...

    # fallbacks
    async def live_fallbacks(self, after: int = 0, limit: int = LIVE_PAGE) -> list[tuple[int, float]]:
        """One page of the live fallbacks, for the wheel: (push row id, due time) of up to
        `limit` PENDING or FIRING fallbacks whose row id is greater than `after`, in row id
        order. The caller walks the pages (next `after` = the last row id of a page; a short
        page is the last), so a start with a million pending holds one page, not all of them."""

    async def recover_interrupted_sms(self, now: float) -> int:
        """At start: every SENDING (dispatched, unanswered) record becomes UNKNOWN, never sent
        again; RESERVED records are left as they are (their fallbacks are still FIRING and send
        them when fired again). Returns how many became UNKNOWN."""

    async def claim_fallbacks(self, pushes: list[int], now: float) -> list[FireJob]:
        """PENDING (or interrupted FIRING) -> FIRING for each push, in one transaction; only the
        claimed come back (a cancelled, finished or SMS-less push has nothing to fire)."""

    async def recipients_many(self, jobs: list[FireJob]) -> dict[int, list[Recipient]]:
        """The targets of each job as the fallback sees them, by push row id, in one read."""

    async def reserve_sms_many(
        self, reservations: list[tuple[FireJob, tuple[str, ...], RateWindow]], now: float
    ) -> list[tuple[list[str], int]]:
        """For each (job, phones, window), in order and in one transaction (so a record written
        for one push counts toward the limits of the same number in the next): each phone with
        no record for that push gets one dated `now`, RATE_LIMITED (rule named) when
        `window.verdict` says so, else RESERVED. For the verdict, the app's records of the
        number that may reach it count: RESERVED and SENDING as sent at `now`, the others
        (SENT, DELIVERED, UNDELIVERED, UNKNOWN) from when they were sent (else dispatched,
        else reserved); the daily count is of records reserved since `window.day_start`.
        A phone whose record for that push is still RESERVED (a fire interrupted before its
        call) is to be sent again; any other existing record is left alone. Answers, per job,
        (phones to send, count newly rate-limited)."""

    async def dispatch_sms(self, records: list[tuple[int, str]], now: float) -> list[bool]:
        """RESERVED -> SENDING for each (push row id, phone), dated `now`, in one transaction:
        written just before the one provider call that carries them. Answers, per record in
        order, whether this call moved it; only those may be sent (False: not RESERVED any
        more, e.g. another fire or instance dispatched it)."""

    async def finish_sms_many(self, outcomes: list[tuple[int, SmsOutcome]], now: float) -> None:
        """Record the provider's answers (SENDING -> SENT, FAILED, RATE_LIMITED or UNKNOWN), each
        for (push row id, phone), dated `now` (sent_at), in one transaction."""

    async def finish_fallbacks(self, finished: list[tuple[FireJob, int]], now: float) -> None:
        """FIRING -> DONE for each (job, no-phone count), in one transaction. Called only once
        every phone of the job has a record other than RESERVED."""

    # SMS records and receipts
    async def list_sms_records(
        self, app_id: int, flt: SmsRecordFilter, before: tuple[float, int] | None, limit: int
    ) -> list[SmsRecord]: ...
    async def apply_receipts(self, receipts: list[DeliveryReceipt]) -> int:
        """Apply delivery receipts, matched by (serial number, phone), SENT or UNKNOWN ->
        DELIVERED / UNDELIVERED, in one transaction; returns the records changed now. A receipt
        for a serial number no record has yet (the callback beat the call's answer) is kept,
        and applied by the finish_sms_many that writes that serial number."""
    async def sms_sources(self) -> list[tuple[str, bytes, str]]:
        """(access id, credentials blob, sms app id) pairs that sent recently, for polling."""

    async def statistics(self, app_id: int, start: float, end: float) -> Statistics: ...
    async def statistics_by_slot(self, app_id: int, start: float, end: float) -> list[Statistics]:
        """Statistics of the pushes accepted in [start, end), one per STATISTICS_SLOT-second slot
        of the epoch (slot k covers [k*SLOT, (k+1)*SLOT)) that has any, oldest first, each with
        its slot's bounds as start/end (clipped to the range). The domain folds slots into hours
        or local days; 15 minutes divides every time zone's offset."""
        ...

    async def list_pushes(
        self, app_id: int, query: str, before: tuple[float, int] | None, limit: int
    ) -> list[PushListItem]:
        """The app's pushes, newest first (by accepted_at, then id), strictly before `before`
        (accepted_at, id) when given. `query`, when not empty, keeps pushes whose push_id starts
        with it or whose title contains it (case-insensitive for ASCII)."""
        ...

    # retention
    async def purge_expired(
        self, finished_before: float | None, idempotency_before: float, limit: int
    ) -> PurgeCounts:
        """Delete up to `limit` pushes whose fallback is over (DONE, CANCELLED or NONE) and ended
        (or, without a fallback, were accepted) before `finished_before`, with their targets and
        SMS records; and idempotency rows created before `idempotency_before`. A PENDING or
        FIRING fallback is never touched. `finished_before` None: keep every push."""


