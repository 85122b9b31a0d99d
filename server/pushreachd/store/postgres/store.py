"""The PostgreSQL store: apps, pushes, devices, events, SMS records, statistics, retention.

The same behaviour as the SQLite store (one persistence suite runs against both); what differs
is how it is shared: ingest writes go through the group-commit writer (database.py), firing
goes through short transactions with row and advisory locks (fallbacks.py), tags and the
resolution of TAG / ALL pushes through locks and leases of their own (audiences.py), early
delivery receipts through receipts.py; so any number of instances may use one database.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import psycopg
from psycopg import errors as pg_errors

from ...errors import AlreadyExists, FailedPrecondition, NotFound
from ...model import (
    App,
    Channel,
    DeliveryReceipt,
    Device,
    EventIn,
    EventOutcome,
    EventType,
    FallbackState,
    Funnel,
    NewPush,
    Push,
    PushListItem,
    PushOutcome,
    PushReceipt,
    RateLimitPolicy,
    ReceiptKey,
    SmsRecord,
    SmsRecordFilter,
    SmsStatus,
    Statistics,
    TargetView,
)
from ...supervisor import Supervisor
from .. import slots as slot_sums
from ..base import PurgeCounts, funnel_of
from ..sqlite.rows import push as _push_row
from ..sqlite.rows import receipt_from_json as _receipt_from_json
from ..sqlite.rows import receipt_to_json as _receipt_to_json
from ..sqlite.rows import sms_record as _sms_record
from . import receipt_keys, receipts, reporting
from .audiences import BroadcastQueries
from .channels import ChannelQueries
from .database import Database
from .fallbacks import FallbackQueries
from .migrations import migrate

log = logging.getLogger(__name__)
Conn = psycopg.AsyncConnection

_APP_COLUMNS = (
    "id, access_id, name, secret_verifier, created_at, sms_credentials, "
    "same_content_interval, daily_limit, time_zone, secret_sealed, "
    "(SELECT array_agg(channel) FROM channel_credentials c WHERE c.app_id = apps.id)"
)
_PUSH_COLUMNS = (
    "p.id, p.app_id, p.push_id, p.request_id, p.spec, p.accepted_at, p.target_count, "
    "p.fallback_state, p.fallback_due_at, p.fallback_ended_at"
)
_SMS_COLUMNS = (
    "r.id, p.push_id, r.phone, r.status, r.sms_app_id, r.template_id, r.sign_name, r.params, "
    "r.created_at, r.serial_no, r.provider_code, r.provider_message, r.fee, r.rate_limit_rule, "
    "r.sent_at, r.received_at, r.report_code, r.report_description"
)
_PUSH_EVENTS = frozenset((EventType.ARRIVED, EventType.CLICKED))


async def _one(conn: Conn, sql: str, args: Any = None) -> tuple[Any, ...] | None:
    cur = await conn.execute(sql, args)
    return await cur.fetchone()


async def _all(conn: Conn, sql: str, args: Any = None) -> list[tuple[Any, ...]]:
    cur = await conn.execute(sql, args)
    return await cur.fetchall()


class PostgresStore(FallbackQueries, ChannelQueries, BroadcastQueries):
    def __init__(
        self,
        dsn: str,
        *,
        owner: str = "",
        lease_seconds: float = 30.0,
        pool_size: int = 8,
        prepare_threshold: int | None = 5,
        supervisor: Supervisor | None = None,
    ) -> None:
        self._supervisor = supervisor or Supervisor()
        self._db = Database(dsn, pool_size=pool_size, prepare_threshold=prepare_threshold, supervisor=self._supervisor)
        FallbackQueries.__init__(self, self._db, owner=owner, lease_seconds=lease_seconds)
        BroadcastQueries.__init__(self)
        self._marks: tuple[list[tuple[float, int]], Any] | None = None  # (rows, future) still open
        self._renewers: list[asyncio.Task[None]] = []

    # -- life cycle and what the wiring reads ----------------------------------------------

    @property
    def stats(self) -> Any:
        return self._db.stats

    @property
    def on_commit(self) -> Callable[[int, float], None] | None:
        return self._db.on_commit

    @on_commit.setter
    def on_commit(self, fn: Callable[[int, float], None] | None) -> None:
        self._db.on_commit = fn

    @property
    def database(self) -> Database:
        return self._db

    async def open(self) -> None:
        async def setup(conn: Conn) -> None:
            await migrate(conn)

        await self._db.open(setup)
        self._renewers = [
            self._supervisor.spawn(self.renew_loop(), name="pushreach-lease-renewal", forever=True),
            self._supervisor.spawn(self.broadcast_lease_loop(), name="pushreach-broadcast-leases", forever=True),
        ]

    async def close(self) -> None:
        for task in self._renewers:
            self._supervisor.release(task)
            task.cancel()
        await asyncio.gather(*self._renewers, return_exceptions=True)
        if self._renewers:
            await self.release_broadcasts()
        self._renewers = []
        await self._db.close()

    # -- apps ---------------------------------------------------------------------------

    @staticmethod
    def _app(row: tuple[Any, ...] | None) -> App | None:
        if row is None:
            return None
        return App(
            id=row[0],
            access_id=row[1],
            name=row[2],
            secret_verifier=row[3],
            created_at=row[4],
            sms_credentials_blob=None if row[5] is None else bytes(row[5]),
            policy=RateLimitPolicy(row[6], row[7], row[8]),
            secret_sealed=None if row[9] is None else bytes(row[9]),
            channels=frozenset(Channel(c) for c in row[10] or ()),
        )

    @classmethod
    async def _app_by_id(cls, conn: Conn, app_id: int) -> App:
        app = cls._app(await _one(conn, f"SELECT {_APP_COLUMNS} FROM apps WHERE id=%s", (app_id,)))
        if app is None:
            raise NotFound("app not found")
        return app

    async def create_app(
        self, access_id: str, name: str, verifier: str, now: float, sealed: bytes | None = None
    ) -> App:
        async def op(conn: Conn) -> App:
            try:
                row = await _one(
                    conn,
                    "INSERT INTO apps (access_id, name, secret_verifier, created_at, secret_sealed) "
                    "VALUES (%s,%s,%s,%s,%s) RETURNING id",
                    (access_id, name, verifier, now, sealed),
                )
            except pg_errors.UniqueViolation:
                raise AlreadyExists("an app with this access id exists") from None
            assert row is not None
            return await self._app_by_id(conn, row[0])

        return await self._db.write(op)

    async def get_app(self, access_id: str) -> App | None:
        return await self._db.read(
            lambda c: self._fetch_app(c, f"SELECT {_APP_COLUMNS} FROM apps WHERE access_id=%s", (access_id,))
        )

    async def _fetch_app(self, conn: Conn, sql: str, args: Any) -> App | None:
        return self._app(await _one(conn, sql, args))

    async def list_apps(self, after_id: int, limit: int) -> list[App]:
        async def q(c: Conn) -> list[App]:
            rows = await _all(c, f"SELECT {_APP_COLUMNS} FROM apps WHERE id > %s ORDER BY id LIMIT %s", (after_id, limit))
            return [a for a in map(self._app, rows) if a is not None]

        return await self._db.read(q)

    async def set_app_secret(self, app_id: int, verifier: str, sealed: bytes | None = None) -> None:
        async def op(c: Conn) -> None:
            await c.execute(
                "UPDATE apps SET secret_verifier=%s, secret_sealed=%s WHERE id=%s", (verifier, sealed, app_id)
            )

        await self._db.write(op)

    async def set_sms_credentials(self, app_id: int, blob: bytes) -> App:
        async def op(conn: Conn) -> App:
            await conn.execute("UPDATE apps SET sms_credentials=%s WHERE id=%s", (blob, app_id))
            return await self._app_by_id(conn, app_id)

        return await self._db.write(op)

    async def reseal_sms_credentials(
        self,
        reseal: Callable[[str, bytes], bytes],
        reseal_secret: Callable[[str, bytes], bytes] | None = None,
        reseal_channel: Callable[[str, Channel, bytes], bytes] | None = None,
    ) -> int:
        async def op(conn: Conn) -> int:
            if reseal_channel is not None:  # channel credentials, same transaction
                await self.reseal_channels(conn, reseal_channel)
            if reseal_secret is not None:  # the sealed app secrets (TPNS signatures), same transaction
                for app_id, access_id, blob in await _all(
                    conn, "SELECT id, access_id, secret_sealed FROM apps WHERE secret_sealed IS NOT NULL ORDER BY id FOR UPDATE"
                ):
                    await conn.execute(
                        "UPDATE apps SET secret_sealed=%s WHERE id=%s", (reseal_secret(access_id, bytes(blob)), app_id)
                    )
            rows = await _all(
                conn,
                "SELECT id, access_id, sms_credentials FROM apps WHERE sms_credentials IS NOT NULL ORDER BY id FOR UPDATE",
            )
            changed = 0
            for app_id, access_id, blob in rows:
                old = bytes(blob)
                new = reseal(access_id, old)
                if new != old:
                    await conn.execute("UPDATE apps SET sms_credentials=%s WHERE id=%s", (new, app_id))
                    changed += 1
            return changed

        return await self._db.write(op)

    async def set_rate_limit_policy(self, app_id: int, policy: RateLimitPolicy) -> App:
        async def op(conn: Conn) -> App:
            await conn.execute(
                "UPDATE apps SET same_content_interval=%s, daily_limit=%s, time_zone=%s WHERE id=%s",
                (policy.same_content_interval_seconds, policy.daily_limit, policy.time_zone, app_id),
            )
            return await self._app_by_id(conn, app_id)

        return await self._db.write(op)

    # -- receipt keys -------------------------------------------------------------------

    async def receipt_keys(self, app_id: int) -> list[ReceiptKey]:
        return await self._db.read(lambda c: receipt_keys.of_app(c, app_id))

    async def add_receipt_key(
        self,
        app_id: int,
        seal: Callable[[int], bytes],
        now: float,
        *,
        retire_others_at: float | None = None,
        only_if_none: bool = False,
    ) -> ReceiptKey:
        return await self._db.write(lambda c: receipt_keys.add(c, app_id, seal, now, retire_others_at, only_if_none))

    async def reseal_receipt_keys(self, reseal: Callable[[int, int, bytes], bytes]) -> int:
        return await self._db.write(lambda c: receipt_keys.reseal(c, reseal))

    # -- pushes -------------------------------------------------------------------------

    async def tokens_of_accounts(self, app_id: int, accounts: list[str]) -> dict[str, list[str]]:
        async def q(c: Conn) -> dict[str, list[str]]:
            found: dict[str, list[str]] = {a: [] for a in accounts}
            rows = await _all(
                c,
                "SELECT account, token FROM account_tokens WHERE app_id=%s AND account = ANY(%s) "
                "ORDER BY account, bound_at, token",
                (app_id, list(accounts)),
            )
            for account, token in rows:
                found[account].append(token)
            return found

        return await self._db.read(q)

    async def create_push(self, push: NewPush, fingerprint: str) -> tuple[PushReceipt, int | None]:
        async def op(conn: Conn) -> tuple[PushReceipt, int | None]:
            if push.request_id:
                prior = await _one(
                    conn,
                    "SELECT fingerprint, response FROM idempotency WHERE app_id=%s AND method='Push' AND request_id=%s",
                    (push.app_id, push.request_id),
                )
                if prior is not None:
                    if prior[0] != fingerprint:
                        raise AlreadyExists("request_id was already used for a different push")
                    return _receipt_from_json(prior[1]), None
            spec = push.spec
            spec_json = spec.to_json(tokens=spec.audience_type.by_account)
            state = FallbackState.PENDING if push.fallback_due_at is not None else FallbackState.NONE
            row = await _one(
                conn,
                "INSERT INTO pushes (app_id, push_id, request_id, spec, title, accepted_at, target_count, "
                "fallback_state, fallback_due_at) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s) RETURNING id",
                (
                    push.app_id,
                    push.push_id,
                    push.request_id,
                    spec_json,
                    spec.title,  # the console's search reads it from the index pushes_by_app_time
                    push.accepted_at,
                    len(push.targets),
                    int(state),
                    push.fallback_due_at,
                ),
            )
            assert row is not None
            row_id = row[0]
            if spec.audience_type.broadcast:  # targets are found after acceptance (audiences.py)
                await self._open_broadcast(conn, row_id, push.app_id)
            if push.targets:
                async with conn.cursor() as cur:
                    await cur.execute(
                        "INSERT INTO targets (push, token, seq, account) "
                        "SELECT %s, t.token, t.seq - 1, t.account FROM unnest(%s::text[], %s::text[]) "
                        "WITH ORDINALITY AS t(token, account, seq)",
                        (row_id, [t.token for t in push.targets], [t.account for t in push.targets]),
                    )
            if push.request_id:
                try:
                    async with conn.transaction():
                        await conn.execute(
                            "INSERT INTO idempotency (app_id, method, request_id, fingerprint, response, created_at) "
                            "VALUES (%s, 'Push', %s, %s, %s, %s)",
                            (push.app_id, push.request_id, fingerprint, _receipt_to_json(push.receipt), push.accepted_at),
                        )
                except pg_errors.UniqueViolation:
                    # Another instance took this request_id in the meantime: its push wins.
                    raise _RequestRace() from None
            return push.receipt, row_id

        try:
            receipt, row_id = await self._db.write(op)
        except _RequestRace:
            return await self.create_push(push, fingerprint)  # now answered from the first
        if row_id is not None and push.spec.audience_type.broadcast:
            self._resolves(row_id)  # this instance resolves it (services/broadcasts.py): keep its lease
        return receipt, row_id

    @staticmethod
    def _push(row: tuple[Any, ...] | None, tokens: list[str] | None = None) -> Push | None:
        return _push_row(row, tokens)

    async def get_push(self, app_id: int, push_id: str) -> Push | None:
        async def q(c: Conn) -> Push | None:
            row = await _one(c, f"SELECT {_PUSH_COLUMNS} FROM pushes p WHERE push_id=%s AND app_id=%s", (push_id, app_id))
            if row is None:
                return None
            found = self._push(row)
            assert found is not None
            if found.spec.audience_type.broadcast:
                open_ = await _one(c, "SELECT NOT done FROM broadcasts WHERE push=%s", (row[0],))
                return replace(found, targets_pending=bool(open_ and open_[0]))
            if not found.spec.audience_type.by_token:
                return found  # targets found from accounts: not the request's
            tokens = [r[0] for r in await _all(c, "SELECT token FROM targets WHERE push=%s ORDER BY seq", (row[0],))]
            return self._push(row, tokens)

        return await self._db.read(q)

    async def mark_delivered(self, push: int, now: float) -> None:
        # Marks between two commits join one group: one queued write, one future.
        marks = self._marks
        if marks is None or marks[1].done():
            rows: list[tuple[float, int]] = []

            async def op(conn: Conn) -> None:
                if self._marks is not None and self._marks[0] is rows:
                    self._marks = None  # fixed from here on; later marks start a new group
                async with conn.cursor() as cur:
                    # In id order, as claims lock: the two never wait for each other in a cycle.
                    await cur.executemany("UPDATE pushes SET delivered_at=%s WHERE id=%s", sorted(rows, key=lambda r: r[1]))

            marks = self._marks = (rows, self._db.enqueue(op))
        marks[0].append((now, push))
        await asyncio.shield(marks[1])

    async def last_push_row(self) -> int:
        async def q(c: Conn) -> int:
            row = await _one(c, "SELECT coalesce(max(id), 0) FROM pushes")
            return int(row[0]) if row else 0

        return await self._db.read(q)

    async def expire_undelivered(self, through: int, now: float) -> int:
        async def op(c: Conn) -> int:
            cur = await c.execute(
                "UPDATE pushes SET delivered_at=%s WHERE delivered_at IS NULL AND accepted_at <= %s AND id <= %s "
                "AND accepted_at + (spec::jsonb->>'expire_time')::float8 <= %s "
                "AND NOT EXISTS (SELECT 1 FROM broadcasts b WHERE b.push = pushes.id)",  # their resolver delivers them
                (now, now, through, now),
            )
            return cur.rowcount

        return await self._db.write(op)

    async def undelivered_pushes(
        self, through: int, now: float, after: tuple[float, int] | None, limit: int, max_targets: int = 50_000
    ) -> tuple[list[tuple[str, Push, tuple[str, ...]]], tuple[float, int] | None]:
        async def q(c: Conn) -> tuple[list[tuple[str, Push, tuple[str, ...]]], tuple[float, int] | None]:
            a_at, a_id = after if after is not None else (float("-inf"), 0)
            rows = await _all(
                c,
                f"SELECT {_PUSH_COLUMNS}, a.access_id FROM pushes p JOIN apps a ON a.id = p.app_id "
                "WHERE p.delivered_at IS NULL AND (p.accepted_at, p.id) > (%s, %s) AND p.id <= %s "
                "AND p.accepted_at + (p.spec::jsonb->>'expire_time')::float8 > %s "
                "AND NOT EXISTS (SELECT 1 FROM broadcasts b WHERE b.push = p.id) "  # their resolver delivers them
                "ORDER BY p.accepted_at, p.id LIMIT %s",
                (a_at, a_id, through, now, limit),
            )
            found: list[tuple[str, Push, tuple[str, ...]]] = []
            targets = 0
            for row in rows:
                if found and targets + row[6] > max_targets:
                    break
                targets += row[6]
                tokens = [r[0] for r in await _all(c, "SELECT token FROM targets WHERE push=%s ORDER BY seq", (row[0],))]
                push = self._push(row[:10], tokens)
                assert push is not None
                # Only the targets not yet answered: one accepted before the crash is not sent again.
                pending = await _all(c, "SELECT token FROM targets WHERE push=%s AND outcome IS NULL ORDER BY seq", (row[0],))
                found.append((row[10], push, tuple(r[0] for r in pending)))
            more = len(found) < len(rows) or len(rows) == limit
            cursor = (found[-1][1].accepted_at, found[-1][1].id) if found and more else None
            return found, cursor

        return await self._db.read(q)

    async def push_targets(self, push: int, offset: int, limit: int) -> list[TargetView]:
        async def q(c: Conn) -> list[TargetView]:
            rows = await _all(
                c,
                "SELECT t.token, t.account, coalesce(d.phone, ''), t.arrived_at, t.clicked_at, r.status, "
                "coalesce(t.channel, d.channel), t.outcome, t.outcome_code, t.outcome_at "
                "FROM targets t JOIN pushes p ON p.id = t.push "
                "LEFT JOIN devices d ON d.app_id = p.app_id AND d.token = t.token "
                "LEFT JOIN sms_records r ON r.push = t.push AND r.phone = d.phone "
                "WHERE t.push=%s ORDER BY t.seq LIMIT %s OFFSET %s",
                (push, limit, offset),
            )
            return [
                TargetView(
                    token=r[0],
                    account=r[1],
                    phone_number=r[2],
                    arrived_at=r[3],
                    clicked_at=r[4],
                    sms_status=SmsStatus(r[5]) if r[5] is not None else None,
                    channel=Channel(r[6]) if r[6] is not None else None,
                    push_outcome=PushOutcome(r[7]) if r[7] is not None else PushOutcome.PENDING,
                    push_outcome_code=r[8],
                    push_outcome_at=r[9],
                )
                for r in rows
            ]

        return await self._db.read(q)

    async def push_funnel(self, push: int) -> Funnel:
        async def q(c: Conn) -> Funnel:
            by_outcome = await _all(
                c,
                "SELECT outcome, count(*), count(coalesce(arrived_at, clicked_at)), count(clicked_at) FROM targets "
                "WHERE push=%s GROUP BY outcome",
                (push,),
            )
            by_status = dict(await _all(c, "SELECT status, count(*) FROM sms_records WHERE push=%s GROUP BY status", (push,)))
            no_phone_row = await _one(c, "SELECT no_phone_count FROM pushes WHERE id=%s", (push,))
            after_row = await _one(
                c,
                "SELECT count(*) FROM targets t JOIN pushes p ON p.id = t.push "
                "JOIN devices d ON d.app_id = p.app_id AND d.token = t.token "
                "JOIN sms_records r ON r.push = t.push AND r.phone = d.phone "
                "WHERE t.push=%s AND r.sent_at IS NOT NULL AND coalesce(t.arrived_at, t.clicked_at) > r.sent_at",
                (push,),
            )
            return funnel_of(
                by_outcome, dict(by_status), no_phone_row[0] if no_phone_row else 0, after_row[0] if after_row else 0
            )

        return await self._db.read(q)

    async def cancel_fallback(self, app_id: int, push_id: str, now: float) -> tuple[int, FallbackState] | None:
        async def op(conn: Conn) -> tuple[int, FallbackState] | None:
            # FOR UPDATE: a claim on another instance either came first (FIRING) or waits.
            row = await _one(
                conn, "SELECT id, fallback_state FROM pushes WHERE push_id=%s AND app_id=%s FOR UPDATE", (push_id, app_id)
            )
            if row is None:
                return None
            state = FallbackState(row[1])
            if state in (FallbackState.CANCELLED, FallbackState.NONE):
                return row[0], state
            if state is not FallbackState.PENDING:
                raise FailedPrecondition(f"the fallback has already fired ({state.name})")
            await conn.execute(
                "UPDATE pushes SET fallback_state=%s, fallback_ended_at=%s WHERE id=%s AND fallback_state=%s",
                (int(FallbackState.CANCELLED), now, row[0], int(FallbackState.PENDING)),
            )
            return row[0], FallbackState.CANCELLED

        return await self._db.write(op)

    # -- devices ------------------------------------------------------------------------

    @staticmethod
    async def _device(conn: Conn, app_id: int, token: str) -> Device | None:
        row = await _one(
            conn,
            "SELECT phone, notifications_enabled, notification_time, updated_at, channel, invalid_at, invalid_reason "
            "FROM devices WHERE app_id=%s AND token=%s",
            (app_id, token),
        )
        if row is None:
            return None
        accounts = tuple(
            r[0]
            for r in await _all(
                conn,
                "SELECT account FROM account_tokens WHERE app_id=%s AND token=%s ORDER BY bound_at, account",
                (app_id, token),
            )
        )
        return Device(
            token=token,
            phone_number=row[0],
            accounts=accounts,
            tags=await BroadcastQueries._tags(conn, app_id, token),
            notifications_enabled=None if row[1] is None else bool(row[1]),
            notification_state_time=row[2],
            updated_at=row[3],
            channel=None if row[4] is None else Channel(row[4]),
            invalid_at=row[5],
            invalid_reason=row[6],
        )

    def _device_op(self, app_id: int, token: str, now: float, change: Callable[[Conn], Any]) -> Callable[[Conn], Any]:
        async def op(conn: Conn) -> Device:
            await conn.execute(
                "INSERT INTO devices (app_id, token, updated_at) VALUES (%s,%s,%s) "
                "ON CONFLICT (app_id, token) DO UPDATE SET updated_at=excluded.updated_at",
                (app_id, token, now),
            )
            await change(conn)
            device = await self._device(conn, app_id, token)
            assert device is not None
            return device

        return op

    async def bind_phone(self, app_id: int, token: str, phone: str, now: float) -> Device:
        async def change(c: Conn) -> None:
            await c.execute("UPDATE devices SET phone=%s WHERE app_id=%s AND token=%s", (phone, app_id, token))

        return await self._db.write(self._device_op(app_id, token, now, change))

    async def unbind_phone(self, app_id: int, token: str, now: float) -> Device:
        async def change(c: Conn) -> None:
            await c.execute("UPDATE devices SET phone='' WHERE app_id=%s AND token=%s", (app_id, token))

        return await self._db.write(self._device_op(app_id, token, now, change))

    async def bind_account(self, app_id: int, token: str, account: str, now: float, max_tokens: int) -> Device:
        async def change(conn: Conn) -> None:
            # One account's bindings are counted under a lock, so two instances binding at
            # once cannot both pass the limit.
            await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, %s))", (account, app_id))
            if await _one(
                conn, "SELECT 1 FROM account_tokens WHERE app_id=%s AND account=%s AND token=%s", (app_id, account, token)
            ):
                return
            row = await _one(conn, "SELECT count(*) FROM account_tokens WHERE app_id=%s AND account=%s", (app_id, account))
            if row is not None and row[0] >= max_tokens:
                raise FailedPrecondition(f"account already has {max_tokens} tokens, the most it may have")
            await conn.execute(
                "INSERT INTO account_tokens (app_id, account, token, bound_at) VALUES (%s,%s,%s,%s) "
                "ON CONFLICT DO NOTHING",
                (app_id, account, token, now),
            )

        return await self._db.write(self._device_op(app_id, token, now, change))

    async def unbind_account(self, app_id: int, token: str, account: str, now: float) -> Device:
        async def change(c: Conn) -> None:
            await c.execute(
                "DELETE FROM account_tokens WHERE app_id=%s AND account=%s AND token=%s", (app_id, account, token)
            )

        return await self._db.write(self._device_op(app_id, token, now, change))

    async def get_device(self, app_id: int, token: str) -> Device | None:
        return await self._db.read(lambda c: self._device(c, app_id, token))

    async def unbind_account_everywhere(self, app_id: int, account: str, now: float) -> int:
        async def op(c: Conn) -> int:
            tokens = [
                r[0]
                for r in await _all(
                    c, "DELETE FROM account_tokens WHERE app_id=%s AND account=%s RETURNING token", (app_id, account)
                )
            ]
            if tokens:
                await c.execute(
                    "UPDATE devices SET updated_at=%s WHERE app_id=%s AND token = ANY(%s)", (now, app_id, tokens)
                )
            return len(tokens)

        return await self._db.write(op)

    # -- events -------------------------------------------------------------------------

    async def record_events(self, app_id: int, events: list[EventIn], now: float) -> list[EventOutcome]:
        async def op(conn: Conn) -> list[EventOutcome]:
            outcomes: list[EventOutcome | None] = [None] * len(events)
            about_push = [i for i, e in enumerate(events) if e.event_type in _PUSH_EVENTS]
            if about_push:
                found = await _record_push_events(conn, app_id, [events[i] for i in about_push])
                for i, outcome in zip(about_push, found):
                    outcomes[i] = outcome
            for i, e in enumerate(events):
                if outcomes[i] is None:
                    outcomes[i] = await _record_notification_state(conn, app_id, e, now)
            return outcomes  # type: ignore[return-value]

        return await self._db.write(op)

    # -- SMS records and receipts ---------------------------------------------------------

    async def list_sms_records(
        self, app_id: int, flt: SmsRecordFilter, before: tuple[float, int] | None, limit: int
    ) -> list[SmsRecord]:
        where = ["r.app_id=%s"]
        args: list[Any] = [app_id]
        if flt.push_id:
            where.append("p.push_id=%s")
            args.append(flt.push_id)
        if flt.phone_number:
            where.append("r.phone=%s")
            args.append(flt.phone_number)
        if flt.statuses:
            where.append("r.status = ANY(%s)")
            args.append([int(s) for s in flt.statuses])
        if flt.start_time is not None:
            where.append("r.created_at >= %s")
            args.append(flt.start_time)
        if flt.end_time is not None:
            where.append("r.created_at < %s")
            args.append(flt.end_time)
        if before is not None:
            where.append("(r.created_at, r.id) < (%s, %s)")
            args.extend([before[0], before[1]])
        sql = (
            f"SELECT {_SMS_COLUMNS} FROM sms_records r JOIN pushes p ON p.id = r.push "
            f"WHERE {' AND '.join(where)} ORDER BY r.created_at DESC, r.id DESC LIMIT %s"
        )
        args.append(limit)

        async def q(c: Conn) -> list[SmsRecord]:
            return [_sms_record(r) for r in await _all(c, sql, args)]

        return await self._db.read(q)

    async def apply_receipts(self, found: list[DeliveryReceipt]) -> int:
        # Its own transaction (retried after a deadlock), under the locks receipts.py takes.
        return await self._db.transaction(lambda c: receipts.apply_receipts(c, found))

    async def sms_sources(self) -> list[tuple[str, bytes, str]]:
        async def q(c: Conn) -> list[tuple[str, bytes, str]]:
            rows = await _all(
                c,
                "SELECT DISTINCT a.access_id, a.sms_credentials, r.sms_app_id FROM sms_records r "
                "JOIN apps a ON a.id = r.app_id WHERE a.sms_credentials IS NOT NULL AND r.status = %s",
                (int(SmsStatus.SENT),),
            )
            return [(r[0], bytes(r[1]), r[2]) for r in rows]

        return await self._db.read(q)

    async def statistics(self, app_id: int, start: float, end: float) -> Statistics:
        return await self._db.read(lambda c: reporting.statistics(c, app_id, start, end))

    async def statistics_by_slot(self, app_id: int, start: float, end: float) -> list[Statistics]:
        return await self._db.read(lambda c: reporting.statistics_by_slot(c, app_id, start, end))

    async def list_pushes(
        self, app_id: int, query: str, before: tuple[float, int] | None, limit: int
    ) -> list[PushListItem]:
        return await self._db.read(lambda c: reporting.list_pushes(c, app_id, query, before, limit))

    # -- retention ----------------------------------------------------------------------

    async def purge_expired(
        self, finished_before: float | None, idempotency_before: float, limit: int
    ) -> PurgeCounts:
        over = [int(s) for s in (FallbackState.DONE, FallbackState.CANCELLED, FallbackState.NONE)]

        async def op(conn: Conn) -> PurgeCounts:
            pushes = targets = records = 0
            if finished_before is not None:
                ids = [
                    r[0]
                    for r in await _all(
                        conn,
                        "SELECT id FROM pushes WHERE accepted_at < %s AND fallback_state = ANY(%s) "
                        "AND coalesce(fallback_ended_at, accepted_at) < %s "
                        "AND NOT EXISTS (SELECT 1 FROM broadcasts b WHERE b.push = pushes.id AND NOT b.done) "
                        "LIMIT %s FOR UPDATE SKIP LOCKED",
                        (finished_before, over, finished_before, limit),
                    )
                ]
                if ids:
                    records = (await conn.execute("DELETE FROM sms_records WHERE push = ANY(%s)", (ids,))).rowcount
                    targets = (await conn.execute("DELETE FROM targets WHERE push = ANY(%s)", (ids,))).rowcount
                    pushes = (await conn.execute("DELETE FROM pushes WHERE id = ANY(%s)", (ids,))).rowcount
                    await conn.execute("DELETE FROM broadcasts WHERE push = ANY(%s)", (ids,))
            idempotency = (
                await conn.execute("DELETE FROM idempotency WHERE created_at < %s", (idempotency_before,))
            ).rowcount
            # Receipts kept for a serial number that never came (not ours, or its record is gone).
            await conn.execute("DELETE FROM pending_receipts WHERE receive_time < %s", (idempotency_before,))
            return PurgeCounts(pushes, targets, records, idempotency)

        return await self._db.transaction(op)


class _RequestRace(Exception):
    """Two instances stored a push for one request_id at once; the later one answers the first's."""


async def _record_push_events(conn: Conn, app_id: int, events: list[EventIn]) -> list[EventOutcome]:
    """Arrivals and clicks in sets: one query for the pushes they name, one for their targets'
    current times (locked: another instance may record an event for the same target), one
    executemany for the targets that change. Each outcome is what taking the events one by one
    in order would have answered."""
    pushes: dict[str, int] = {}
    slots: dict[int, int] = {}
    for push_id, push, accepted_at in await _all(
        conn,
        "SELECT push_id, id, accepted_at FROM pushes WHERE push_id = ANY(%s) AND app_id = %s",
        (list({e.push_id for e in events}), app_id),
    ):
        pushes[push_id] = push
        slots[push] = slot_sums.slot_of(accepted_at)
    keys = list({(pushes[e.push_id], e.token) for e in events if e.push_id in pushes})
    times: dict[tuple[int, str], list[float | None]] = {}
    if keys:
        keys.sort()
        for push, token, arrived_at, clicked_at in await _all(
            conn,
            "SELECT t.push, t.token, t.arrived_at, t.clicked_at FROM targets t "
            "JOIN unnest(%s::bigint[], %s::text[]) AS k(push, token) ON t.push = k.push AND t.token = k.token "
            "ORDER BY t.push, t.token FOR UPDATE OF t",
            ([k[0] for k in keys], [k[1] for k in keys]),
        ):
            times[(push, token)] = [arrived_at, clicked_at]
    # Newly arrived / clicked targets per push, counted as the outcomes are decided.
    arrived_new: dict[int, int] = {}
    clicked_new: dict[int, int] = {}
    changed: dict[tuple[int, str], list[float | None]] = {}
    outcomes = []
    for e in events:
        push = pushes.get(e.push_id)
        if push is None:
            outcomes.append(EventOutcome.UNKNOWN_PUSH)
            continue
        key = (push, e.token)
        t = times.get(key)
        if t is None:
            outcomes.append(EventOutcome.UNKNOWN_TOKEN)
            continue
        arrived_at, clicked_at = t
        at = e.event_time
        if e.event_type is EventType.ARRIVED:
            if arrived_at is not None and arrived_at <= at:
                outcomes.append(EventOutcome.DUPLICATE)
                continue
            t[0] = at
            if arrived_at is None and clicked_at is None:
                arrived_new[push] = arrived_new.get(push, 0) + 1
            outcomes.append(EventOutcome.ACCEPTED if arrived_at is None else EventOutcome.DUPLICATE)
        else:
            if clicked_at is not None and clicked_at <= at:
                outcomes.append(EventOutcome.DUPLICATE)
                continue
            t[0] = at if arrived_at is None else min(arrived_at, at)  # a click implies arrival
            t[1] = at
            if clicked_at is None:
                clicked_new[push] = clicked_new.get(push, 0) + 1
                if arrived_at is None:
                    arrived_new[push] = arrived_new.get(push, 0) + 1
            outcomes.append(EventOutcome.ACCEPTED if clicked_at is None else EventOutcome.DUPLICATE)
        changed[key] = t
    if changed:
        async with conn.cursor() as cur:
            await cur.executemany(
                "UPDATE targets SET arrived_at=%s, clicked_at=%s WHERE push=%s AND token=%s",
                [(t[0], t[1], push, token) for (push, token), t in changed.items()],
            )
        await reporting.add_events(conn, app_id, slot_sums.by_slot(slots, arrived_new, clicked_new))
    return outcomes


async def _record_notification_state(conn: Conn, app_id: int, e: EventIn, now: float) -> EventOutcome:
    enabled = 1 if e.event_type is EventType.NOTIFICATION_ENABLED else 0
    # Make sure the row exists, then lock it: the latest report wins across instances too.
    await conn.execute(
        "INSERT INTO devices (app_id, token, updated_at) VALUES (%s,%s,%s) ON CONFLICT DO NOTHING",
        (app_id, e.token, now),
    )
    row = await _one(
        conn,
        "SELECT notifications_enabled, notification_time FROM devices WHERE app_id=%s AND token=%s FOR UPDATE",
        (app_id, e.token),
    )
    if row is not None and row[1] is not None:
        if row[1] > e.event_time:
            return EventOutcome.DUPLICATE  # an older report than the one we hold
        if row[1] == e.event_time and row[0] == enabled:
            return EventOutcome.DUPLICATE
    await conn.execute(
        "UPDATE devices SET notifications_enabled=%s, notification_time=%s, updated_at=%s WHERE app_id=%s AND token=%s",
        (enabled, e.event_time, now, app_id, e.token),
    )
    return EventOutcome.ACCEPTED
