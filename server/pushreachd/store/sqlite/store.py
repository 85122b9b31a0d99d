"""SqliteStore: the Store protocol on one SQLite file (WAL, one group-commit writer, a few
readers). Each method is one read or one write of the SQL in this package's concern modules;
this class only routes."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

from ...model import (
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
    PushReceipt,
    RateLimitPolicy,
    ReceiptKey,
    Recipient,
    Route,
    SmsRecord,
    SmsRecordFilter,
    Statistics,
    TargetOutcome,
    TargetView,
)
from ...supervisor import Supervisor
from ..base import LIVE_PAGE, FireJob, PurgeCounts, RateWindow, SmsOutcome
from . import apps, audiences, channels, devices, events, fires, pushes, receipt_keys, reporting, retention
from .migrations import migrate
from .readers import ReaderPool
from .writer import GroupCommitWriter, WriteStats


class SqliteStore:
    def __init__(self, path: str, *, synchronous: str = "FULL", supervisor: Supervisor | None = None) -> None:
        self._path = path
        self._synchronous = synchronous
        self._writer = GroupCommitWriter(self._connect, supervisor)
        self._readers = ReaderPool(self._connect)
        self._write = self._writer.write
        self._read = self._readers.read

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False, timeout=30)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={self._synchronous}")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA busy_timeout=30000")
        return conn

    @property
    def stats(self) -> WriteStats:
        return self._writer.stats

    @property
    def on_commit(self) -> Callable[[int, float], None] | None:
        return self._writer.on_commit

    @on_commit.setter
    def on_commit(self, observe: Callable[[int, float], None] | None) -> None:
        self._writer.on_commit = observe

    @property
    def writer(self) -> GroupCommitWriter:
        return self._writer

    async def open(self) -> None:
        await self._writer.open(migrate)

    async def close(self) -> None:
        await self._writer.close()
        self._readers.close()

    # apps

    async def create_app(
        self, access_id: str, name: str, verifier: str, now: float, sealed: bytes | None = None
    ) -> App:
        return await self._write(lambda c: apps.create(c, access_id, name, verifier, now, sealed))

    async def receipt_keys(self, app_id: int) -> list[ReceiptKey]:
        return await self._read(lambda c: receipt_keys.of_app(c, app_id))

    async def add_receipt_key(
        self,
        app_id: int,
        seal: Callable[[int], bytes],
        now: float,
        *,
        retire_others_at: float | None = None,
        only_if_none: bool = False,
    ) -> ReceiptKey:
        return await self._write(lambda c: receipt_keys.add(c, app_id, seal, now, retire_others_at, only_if_none))

    async def reseal_receipt_keys(self, reseal: Callable[[int, int, bytes], bytes]) -> int:
        return await self._write(lambda c: receipt_keys.reseal(c, reseal))

    async def get_app(self, access_id: str) -> App | None:
        return await self._read(lambda c: apps.by_access_id(c, access_id))

    async def list_apps(self, after_id: int, limit: int) -> list[App]:
        return await self._read(lambda c: apps.page(c, after_id, limit))

    async def set_app_secret(self, app_id: int, verifier: str, sealed: bytes | None = None) -> None:
        await self._write(lambda c: apps.set_secret(c, app_id, verifier, sealed))

    async def set_sms_credentials(self, app_id: int, blob: bytes) -> App:
        return await self._write(lambda c: apps.set_sms_credentials(c, app_id, blob))

    async def reseal_sms_credentials(
        self,
        reseal: Callable[[str, bytes], bytes],
        reseal_secret: Callable[[str, bytes], bytes] | None = None,
        reseal_channel: Callable[[str, Channel, bytes], bytes] | None = None,
    ) -> int:
        def run(c: sqlite3.Connection) -> int:
            changed = apps.reseal_sms_credentials(c, reseal, reseal_secret)
            if reseal_channel is not None:
                channels.reseal(c, reseal_channel)
            return changed

        return await self._write(run)

    # push channels

    async def set_channel_credentials(self, app_id: int, channel: Channel, blob: bytes, now: float) -> App:
        def run(c: sqlite3.Connection) -> App:
            channels.set_credentials(c, app_id, channel, blob, now)
            return apps.by_id(c, app_id)

        return await self._write(run)

    async def channel_credentials(self, app_id: int) -> dict[Channel, bytes]:
        return await self._read(lambda c: channels.credentials(c, app_id))

    async def register_device(self, app_id: int, token: str, channel: Channel, phone: str, now: float) -> Device:
        def how(c: sqlite3.Connection) -> None:
            channels.register(c, app_id, token, channel)
            if phone:
                devices.set_phone(c, app_id, token, phone)

        return await self._write(lambda c: devices.change(c, app_id, token, now, how))

    async def device_routes(self, app_id: int, tokens: list[str]) -> dict[str, Route]:
        # Every push reads its targets' routes: pushes accepted at once share one trip.
        return await self._readers.join("routes", (app_id, tokens), channels.routes_many)

    async def record_outcomes(
        self, push: int, app_id: int, outcomes: list[TargetOutcome], delivered_at: float | None = None
    ) -> None:
        # Many deliveries answer between two commits: their outcomes join one write.
        await self._writer.join("outcomes", (push, app_id, outcomes, delivered_at), channels.record_many)

    async def pending_fallback_job(self, push: int) -> FireJob | None:
        return await self._read(lambda c: fires.pending_job(c, push))

    async def set_rate_limit_policy(self, app_id: int, policy: RateLimitPolicy) -> App:
        return await self._write(lambda c: apps.set_rate_limit_policy(c, app_id, policy))

    # pushes

    async def tokens_of_accounts(self, app_id: int, accounts: list[str]) -> dict[str, list[str]]:
        return await self._read(lambda c: pushes.tokens_of_accounts(c, app_id, accounts))

    async def create_push(self, push: NewPush, fingerprint: str) -> tuple[PushReceipt, int | None]:
        return await self._write(lambda c: pushes.create(c, push, fingerprint))

    async def get_push(self, app_id: int, push_id: str) -> Push | None:
        return await self._read(lambda c: pushes.get(c, app_id, push_id))

    async def mark_delivered(self, push: int, now: float) -> None:
        # Under load many pushes reach the channel between two commits: their marks join one
        # write (one executemany, one future) instead of a write each.
        await self._writer.join("delivered", (now, push), pushes.mark_delivered)

    async def last_push_row(self) -> int:
        return await self._read(pushes.last_row)

    async def expire_undelivered(self, through: int, now: float) -> int:
        return await self._write(lambda c: pushes.expire_undelivered(c, through, now))

    async def undelivered_pushes(
        self, through: int, now: float, after: tuple[float, int] | None, limit: int, max_targets: int = 50_000
    ) -> tuple[list[tuple[str, Push, tuple[str, ...]]], tuple[float, int] | None]:
        return await self._read(lambda c: pushes.undelivered(c, through, now, after, limit, max_targets))

    async def push_targets(self, push: int, offset: int, limit: int) -> list[TargetView]:
        return await self._read(lambda c: pushes.targets(c, push, offset, limit))

    async def push_funnel(self, push: int) -> Funnel:
        return await self._read(lambda c: reporting.funnel(c, push))

    async def cancel_fallback(self, app_id: int, push_id: str, now: float) -> tuple[int, FallbackState] | None:
        return await self._write(lambda c: pushes.cancel_fallback(c, app_id, push_id, now))

    # devices

    async def bind_phone(self, app_id: int, token: str, phone: str, now: float) -> Device:
        return await self._write(
            lambda c: devices.change(c, app_id, token, now, lambda c: devices.set_phone(c, app_id, token, phone))
        )

    async def unbind_phone(self, app_id: int, token: str, now: float) -> Device:
        return await self._write(
            lambda c: devices.change(c, app_id, token, now, lambda c: devices.set_phone(c, app_id, token, ""))
        )

    async def bind_account(self, app_id: int, token: str, account: str, now: float, max_tokens: int) -> Device:
        return await self._write(
            lambda c: devices.change(
                c, app_id, token, now, lambda c: devices.bind_account(c, app_id, token, account, now, max_tokens)
            )
        )

    async def unbind_account(self, app_id: int, token: str, account: str, now: float) -> Device:
        return await self._write(
            lambda c: devices.change(
                c, app_id, token, now, lambda c: devices.unbind_account(c, app_id, token, account)
            )
        )

    async def get_device(self, app_id: int, token: str) -> Device | None:
        return await self._read(lambda c: devices.get(c, app_id, token))

    async def unbind_account_everywhere(self, app_id: int, account: str, now: float) -> int:
        return await self._write(lambda c: audiences.unbind_account_everywhere(c, app_id, account, now))

    # tags

    async def modify_tags(
        self,
        app_id: int,
        now: float,
        *,
        clear: list[str] = (),  # type: ignore[assignment]
        remove: list[tuple[str, str]] = (),  # type: ignore[assignment]
        add: list[tuple[str, str]] = (),  # type: ignore[assignment]
        max_per_token: int,
        max_per_app: int,
    ) -> None:
        await self._write(
            lambda c: audiences.modify_tags(
                c, app_id, now, list(clear), list(remove), list(add), max_per_token, max_per_app
            )
        )

    # broadcasts (TAG / ALL pushes)

    async def open_broadcasts(self) -> list[Broadcast]:
        return await self._read(audiences.open_broadcasts)

    async def broadcast_page(
        self, app_id: int, after: str, limit: int, *, with_tags: bool
    ) -> list[tuple[str, frozenset[str]]]:
        return await self._read(lambda c: audiences.page(c, app_id, after, limit, with_tags))

    async def store_broadcast_page(self, push: int, expected_cursor: str, tokens: list[str], cursor: str) -> int:
        return await self._write(lambda c: audiences.store_page(c, push, expected_cursor, tokens, cursor))

    async def broadcast_tokens(self, push: int, from_seq: int, to_seq: int) -> list[str]:
        return await self._read(lambda c: audiences.tokens(c, push, from_seq, to_seq))

    async def mark_broadcast_delivered(self, push: int, through_seq: int) -> None:
        await self._write(lambda c: audiences.mark_delivered(c, push, through_seq))

    async def finish_broadcast(self, push: int, now: float) -> None:
        await self._write(lambda c: audiences.finish(c, push, now))

    # events

    async def record_events(self, app_id: int, events_in: list[EventIn], now: float) -> list[EventOutcome]:
        return await self._write(lambda c: events.record(c, app_id, events_in, now))

    # fallbacks and SMS records

    async def live_fallbacks(self, after: int = 0, limit: int = LIVE_PAGE) -> list[tuple[int, float]]:
        return await self._read(lambda c: fires.live_fallbacks(c, after, limit))

    async def recover_interrupted_sms(self, now: float) -> int:
        return await self._write(lambda c: fires.recover_interrupted(c, now))

    async def claim_fallbacks(self, push_rows: list[int], now: float) -> list[FireJob]:
        return await self._write(lambda c: fires.claim(c, push_rows, now))

    async def recipients_many(self, jobs: list[FireJob]) -> dict[int, list[Recipient]]:
        return await self._read(lambda c: fires.recipients(c, jobs))

    async def reserve_sms_many(
        self, reservations: list[tuple[FireJob, tuple[str, ...], RateWindow]], now: float
    ) -> list[tuple[list[str], int]]:
        # In order, in one transaction: a record written for an earlier push counts toward the
        # limits of the same number in a later one.
        return await self._write(
            lambda c: [fires.reserve(c, job, phones, window, now) for job, phones, window in reservations]
        )

    async def dispatch_sms(self, records: list[tuple[int, str]], now: float) -> list[bool]:
        return await self._write(lambda c: fires.dispatch(c, records, now))

    async def finish_sms_many(self, outcomes: list[tuple[int, SmsOutcome]], now: float) -> None:
        await self._write(lambda c: fires.finish_sms(c, outcomes, now))

    async def finish_fallbacks(self, finished: list[tuple[FireJob, int]], now: float) -> None:
        await self._write(lambda c: fires.finish_fallbacks(c, finished, now))

    async def list_sms_records(
        self, app_id: int, flt: SmsRecordFilter, before: tuple[float, int] | None, limit: int
    ) -> list[SmsRecord]:
        return await self._read(lambda c: fires.list_records(c, app_id, flt, before, limit))

    async def apply_receipts(self, receipts: list[DeliveryReceipt]) -> int:
        return await self._write(lambda c: fires.apply_receipts(c, receipts))

    async def sms_sources(self) -> list[tuple[str, bytes, str]]:
        return await self._read(fires.sms_sources)

    async def statistics(self, app_id: int, start: float, end: float) -> Statistics:
        return await self._read(lambda c: reporting.statistics(c, app_id, start, end))

    async def statistics_by_slot(self, app_id: int, start: float, end: float) -> list[Statistics]:
        return await self._read(lambda c: reporting.statistics_by_slot(c, app_id, start, end))

    async def list_pushes(
        self, app_id: int, query: str, before: tuple[float, int] | None, limit: int
    ) -> list[PushListItem]:
        return await self._read(lambda c: reporting.list_pushes(c, app_id, query, before, limit))

    # retention

    async def purge_expired(
        self, finished_before: float | None, idempotency_before: float, limit: int
    ) -> PurgeCounts:
        return await self._write(lambda c: retention.purge(c, finished_before, idempotency_before, limit))
