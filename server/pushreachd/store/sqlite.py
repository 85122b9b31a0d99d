"""The SQLite store: WAL, one writer with group commit, one reader.

Group commit: every write is a small function run on the writer thread. The writer task takes
whatever writes are queued, runs them in one transaction (each inside its own SAVEPOINT, so
one failing write does not undo the others) and commits once; only then are the callers'
futures resolved. Under load many RPCs share one fsync; alone, a write commits at once.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from ..engine.fallback import Recipient
from ..engine.ratelimit import Window
from ..engine.states import FALLBACK_TRANSITIONS, SMS_TRANSITIONS, sources_of
from ..errors import AlreadyExists, FailedPrecondition, NotFound
from ..model import (
    App,
    Device,
    EventIn,
    EventOutcome,
    EventType,
    FallbackState,
    Funnel,
    NewPush,
    Push,
    PushReceipt,
    PushSpec,
    RateLimitPolicy,
    SmsInfo,
    SmsRecord,
    SmsRecordFilter,
    SmsStatus,
    Statistics,
    TargetView,
    UnusedTarget,
    UnusedTargetReason,
)
from ..sms.provider import DeliveryReceipt
from .base import FireJob, PurgeCounts, SmsOutcome
from .migrations import migrate

log = logging.getLogger(__name__)
T = TypeVar("T")

MAX_BATCH = 512  # writes per transaction; bounds how long one commit holds the writer
_CHUNK = 500  # row ids per `IN (...)` list of the fallback queries
# SMS that count toward the per-number limits: everything that may have reached the phone.
COUNTED = (
    SmsStatus.SENDING,
    SmsStatus.SENT,
    SmsStatus.DELIVERED,
    SmsStatus.UNDELIVERED,
    SmsStatus.UNKNOWN,
)
_COUNTED_SQL = ",".join(str(int(s)) for s in COUNTED)
_APP_COLUMNS = (
    "id, access_id, name, secret_verifier, created_at, sms_credentials, "
    "same_content_interval, daily_limit, time_zone"
)
_SMS_COLUMNS = (
    "r.id, p.push_id, r.phone, r.status, r.sms_app_id, r.template_id, r.sign_name, r.params, "
    "r.created_at, r.serial_no, r.provider_code, r.provider_message, r.fee, r.rate_limit_rule, "
    "r.sent_at, r.received_at, r.report_code, r.report_description"
)


def _in(values: Iterable[Any]) -> str:
    return ",".join(str(int(v)) for v in values)


def content_key(info: SmsInfo) -> str:
    """What "the same content" means for the 30-second rule: one template with one set of
    parameters, under one signature and SMS app."""
    return json.dumps(
        [info.sms_app_id, info.sms_sign_name, info.sms_template_id, list(info.sms_template_params)],
        ensure_ascii=False,
    )


@dataclass
class _Write:
    fn: Callable[[sqlite3.Connection], Any]
    future: asyncio.Future[Any]
    result: Any = None
    error: BaseException | None = None


@dataclass
class _DeliveredMarks:
    """`mark_delivered` calls waiting for the same commit: one statement, one future."""

    rows: list[tuple[float, int]]  # (delivered_at, push row id)
    write: _Write


@dataclass
class WriteStats:
    """Group-commit figures, read by the metrics module."""

    commits: int = 0
    writes: int = 0
    last_batch: int = 0
    commit_seconds: list[float] = field(default_factory=list)


class SqliteStore:
    def __init__(self, path: str, *, synchronous: str = "FULL") -> None:
        self._path = path
        self._synchronous = synchronous
        self._writer_pool = ThreadPoolExecutor(1, thread_name_prefix="pushreach-db-writer")
        self._reader_pool = ThreadPoolExecutor(2, thread_name_prefix="pushreach-db-reader")
        self._reader_local = threading.local()
        self._write_conn: sqlite3.Connection | None = None
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self._queue: asyncio.Queue[_Write | None] | None = None
        self._writer_task: asyncio.Task[None] | None = None
        self._marks: _DeliveredMarks | None = None  # the group still open to more marks
        self.stats = WriteStats()
        self.on_commit: Callable[[int, float], None] | None = None  # (batch size, seconds)

    # -- life cycle ---------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False, timeout=30)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={self._synchronous}")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA busy_timeout=30000")
        return conn

    async def open(self) -> None:
        loop = asyncio.get_running_loop()

        def setup() -> sqlite3.Connection:
            conn = self._connect()
            migrate(conn)
            return conn

        self._write_conn = await loop.run_in_executor(self._writer_pool, setup)
        self._queue = asyncio.Queue()
        self._writer_task = asyncio.create_task(self._writer_loop(), name="pushreach-db-writer")

    async def close(self) -> None:
        if self._queue is not None and self._writer_task is not None:
            await self._queue.put(None)  # the writer finishes what is queued, then stops
            await self._writer_task
            self._writer_task = None
        loop = asyncio.get_running_loop()
        if self._write_conn is not None:
            conn, self._write_conn = self._write_conn, None
            await loop.run_in_executor(self._writer_pool, conn.close)
        with self._readers_lock:
            readers, self._readers = self._readers, []
        for conn in readers:
            conn.close()
        self._writer_pool.shutdown(wait=True)
        self._reader_pool.shutdown(wait=True)

    # -- the writer ---------------------------------------------------------------------

    async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._queue is None or self._writer_task is None or self._writer_task.done():
            raise RuntimeError("store is not open")
        fut: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Write(fn, fut))
        return await fut

    async def _writer_loop(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        stopping = False
        while not stopping:
            first = await self._queue.get()
            if first is None:
                break
            batch = [first]
            while len(batch) < MAX_BATCH and not self._queue.empty():
                item = self._queue.get_nowait()
                if item is None:
                    stopping = True
                    break
                batch.append(item)
            marks = self._marks
            if marks is not None and any(w is marks.write for w in batch):
                self._marks = None  # its rows are fixed from here on; later marks start a new group
            started = loop.time()
            try:
                await loop.run_in_executor(self._writer_pool, self._commit_batch, batch)
            except asyncio.CancelledError:
                # Cancelled mid-commit (a torn-down loop): the thread finishes the transaction on
                # its own, but nobody may be told it is durable, and the task must end.
                for w in batch:
                    if not w.future.done():
                        w.future.cancel()
                raise
            except Exception as exc:  # the commit itself failed: nothing in it is durable
                log.error("store commit failed: %s", exc)
                for w in batch:
                    w.error = w.error or exc
            elapsed = loop.time() - started
            self._account(len(batch), elapsed)
            for w in batch:
                if w.future.done():  # the caller was cancelled; the write still happened
                    continue
                if w.error is not None:
                    w.future.set_exception(w.error)
                else:
                    w.future.set_result(w.result)

    def _account(self, size: int, seconds: float) -> None:
        self.stats.commits += 1
        self.stats.writes += size
        self.stats.last_batch = size
        if self.on_commit is not None:
            self.on_commit(size, seconds)

    def _commit_batch(self, batch: list[_Write]) -> None:
        conn = self._write_conn
        assert conn is not None
        conn.execute("BEGIN IMMEDIATE")
        try:
            for w in batch:
                conn.execute("SAVEPOINT w")
                try:
                    w.result = w.fn(conn)
                except Exception as exc:
                    conn.execute("ROLLBACK TO w")
                    w.error = exc
                conn.execute("RELEASE w")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    # -- readers ------------------------------------------------------------------------

    def _reader(self) -> sqlite3.Connection:
        conn = getattr(self._reader_local, "conn", None)
        if conn is None:
            conn = self._connect()
            conn.execute("PRAGMA query_only=ON")
            self._reader_local.conn = conn
            with self._readers_lock:
                self._readers.append(conn)
        return conn

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._reader_pool, lambda: fn(self._reader()))

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
            sms_credentials_blob=row[5],
            policy=RateLimitPolicy(row[6], row[7], row[8]),
        )

    @classmethod
    def _app_by_id(cls, conn: sqlite3.Connection, app_id: int) -> App:
        app = cls._app(conn.execute(f"SELECT {_APP_COLUMNS} FROM apps WHERE id=?", (app_id,)).fetchone())
        if app is None:
            raise NotFound("app not found")
        return app

    async def create_app(self, access_id: str, name: str, verifier: str, now: float) -> App:
        def op(conn: sqlite3.Connection) -> App:
            try:
                cur = conn.execute(
                    "INSERT INTO apps (access_id, name, secret_verifier, created_at) VALUES (?,?,?,?)",
                    (access_id, name, verifier, now),
                )
            except sqlite3.IntegrityError:
                raise AlreadyExists("an app with this access id exists") from None
            return self._app_by_id(conn, int(cur.lastrowid or 0))

        return await self._write(op)

    async def get_app(self, access_id: str) -> App | None:
        return await self._read(
            lambda c: self._app(
                c.execute(f"SELECT {_APP_COLUMNS} FROM apps WHERE access_id=?", (access_id,)).fetchone()
            )
        )

    async def list_apps(self, after_id: int, limit: int) -> list[App]:
        def q(c: sqlite3.Connection) -> list[App]:
            rows = c.execute(
                f"SELECT {_APP_COLUMNS} FROM apps WHERE id > ? ORDER BY id LIMIT ?", (after_id, limit)
            ).fetchall()
            return [a for a in map(self._app, rows) if a is not None]

        return await self._read(q)

    async def set_app_secret(self, app_id: int, verifier: str) -> None:
        await self._write(
            lambda c: c.execute("UPDATE apps SET secret_verifier=? WHERE id=?", (verifier, app_id))
        )

    async def set_sms_credentials(self, app_id: int, blob: bytes) -> App:
        def op(conn: sqlite3.Connection) -> App:
            conn.execute("UPDATE apps SET sms_credentials=? WHERE id=?", (blob, app_id))
            return self._app_by_id(conn, app_id)

        return await self._write(op)

    async def reseal_sms_credentials(self, reseal: Callable[[str, bytes], bytes]) -> int:
        def op(conn: sqlite3.Connection) -> int:
            rows = conn.execute(
                "SELECT id, access_id, sms_credentials FROM apps WHERE sms_credentials IS NOT NULL ORDER BY id"
            ).fetchall()
            changed = 0
            for app_id, access_id, blob in rows:
                new = reseal(access_id, bytes(blob))
                if new != blob:
                    conn.execute("UPDATE apps SET sms_credentials=? WHERE id=?", (new, app_id))
                    changed += 1
            return changed

        return await self._write(op)

    async def set_rate_limit_policy(self, app_id: int, policy: RateLimitPolicy) -> App:
        def op(conn: sqlite3.Connection) -> App:
            conn.execute(
                "UPDATE apps SET same_content_interval=?, daily_limit=?, time_zone=? WHERE id=?",
                (policy.same_content_interval_seconds, policy.daily_limit, policy.time_zone, app_id),
            )
            return self._app_by_id(conn, app_id)

        return await self._write(op)

    # -- pushes -------------------------------------------------------------------------

    async def tokens_of_accounts(self, app_id: int, accounts: list[str]) -> dict[str, list[str]]:
        def q(c: sqlite3.Connection) -> dict[str, list[str]]:
            found: dict[str, list[str]] = {}
            for account in accounts:
                rows = c.execute(
                    "SELECT token FROM account_tokens WHERE app_id=? AND account=? ORDER BY bound_at, token",
                    (app_id, account),
                ).fetchall()
                found[account] = [r[0] for r in rows]
            return found

        return await self._read(q)

    async def create_push(self, push: NewPush, fingerprint: str) -> tuple[PushReceipt, int | None]:
        def op(conn: sqlite3.Connection) -> tuple[PushReceipt, int | None]:
            if push.request_id:
                prior = conn.execute(
                    "SELECT fingerprint, response FROM idempotency "
                    "WHERE app_id=? AND method='Push' AND request_id=?",
                    (push.app_id, push.request_id),
                ).fetchone()
                if prior is not None:
                    if prior[0] != fingerprint:
                        raise AlreadyExists("request_id was already used for a different push")
                    return _receipt_from_json(prior[1]), None
            spec = push.spec
            # A token push's tokens are kept once, in the targets table.
            spec_json = spec.to_json(tokens=spec.audience_type.by_account)
            state = FallbackState.PENDING if push.fallback_due_at is not None else FallbackState.NONE
            cur = conn.execute(
                "INSERT INTO pushes (app_id, push_id, request_id, spec, accepted_at, target_count, "
                "fallback_state, fallback_due_at) VALUES (?,?,?,?,?,?,?,?)",
                (
                    push.app_id,
                    push.push_id,
                    push.request_id,
                    spec_json,
                    push.accepted_at,
                    len(push.targets),
                    int(state),
                    push.fallback_due_at,
                ),
            )
            row_id = cur.lastrowid
            conn.executemany(
                "INSERT INTO targets (push, token, seq, account) VALUES (?,?,?,?)",
                [(row_id, t.token, i, t.account) for i, t in enumerate(push.targets)],
            )
            if push.request_id:
                conn.execute(
                    "INSERT INTO idempotency (app_id, method, request_id, fingerprint, response, created_at) "
                    "VALUES (?, 'Push', ?, ?, ?, ?)",
                    (push.app_id, push.request_id, fingerprint, _receipt_to_json(push.receipt), push.accepted_at),
                )
            return push.receipt, row_id

        return await self._write(op)

    @staticmethod
    def _push(row: tuple[Any, ...] | None, tokens: list[str] | None = None) -> Push | None:
        if row is None:
            return None
        spec = PushSpec.from_json(row[4])
        if tokens is not None and not spec.audience_type.by_account:
            spec = _with_tokens(spec, tuple(tokens))
        return Push(
            id=row[0],
            app_id=row[1],
            push_id=row[2],
            request_id=row[3],
            spec=spec,
            accepted_at=row[5],
            target_count=row[6],
            fallback_state=FallbackState(row[7]),
            fallback_due_at=row[8],
            fallback_ended_at=row[9],
        )

    async def get_push(self, app_id: int, push_id: str) -> Push | None:
        def q(c: sqlite3.Connection) -> Push | None:
            row = c.execute(
                "SELECT id, app_id, push_id, request_id, spec, accepted_at, target_count, "
                "fallback_state, fallback_due_at, fallback_ended_at FROM pushes "
                "WHERE push_id=? AND app_id=?",
                (push_id, app_id),
            ).fetchone()
            if row is None:
                return None
            tokens = [r[0] for r in c.execute("SELECT token FROM targets WHERE push=? ORDER BY seq", (row[0],))]
            return self._push(row, tokens)

        return await self._read(q)

    async def mark_delivered(self, push: int, now: float) -> None:
        # Under load many pushes reach the channel between two commits. Their marks join one
        # group: one queued write (an executemany), one future, instead of a write each.
        marks = self._marks
        if marks is None:
            if self._queue is None or self._writer_task is None or self._writer_task.done():
                raise RuntimeError("store is not open")
            rows: list[tuple[float, int]] = []

            def op(conn: sqlite3.Connection) -> None:
                conn.executemany("UPDATE pushes SET delivered_at=? WHERE id=?", rows)

            marks = self._marks = _DeliveredMarks(rows, _Write(op, asyncio.get_running_loop().create_future()))
            self._queue.put_nowait(marks.write)
        marks.rows.append((now, push))
        # shield: one caller cancelled must not cancel the future the others wait on
        await asyncio.shield(marks.write.future)

    async def last_push_row(self) -> int:
        return await self._read(lambda c: c.execute("SELECT coalesce(max(id), 0) FROM pushes").fetchone()[0])

    async def expire_undelivered(self, through: int, now: float) -> int:
        return await self._write(
            lambda c: c.execute(
                # `+id`: walk the (small) partial index of undelivered pushes, not the table.
                "UPDATE pushes SET delivered_at=? WHERE delivered_at IS NULL AND accepted_at <= ? AND +id <= ? "
                "AND accepted_at + json_extract(spec, '$.expire_time') <= ?",
                (now, now, through, now),
            ).rowcount
        )

    async def undelivered_pushes(
        self, through: int, now: float, after: tuple[float, int] | None, limit: int, max_targets: int = 50_000
    ) -> tuple[list[tuple[str, Push, tuple[str, ...]]], tuple[float, int] | None]:
        def q(c: sqlite3.Connection) -> tuple[list[tuple[str, Push, tuple[str, ...]]], tuple[float, int] | None]:
            a_at, a_id = after if after is not None else (float("-inf"), 0)
            rows = c.execute(
                "SELECT p.id, p.app_id, p.push_id, p.request_id, p.spec, p.accepted_at, p.target_count, "
                "p.fallback_state, p.fallback_due_at, p.fallback_ended_at, a.access_id FROM pushes p "
                "JOIN apps a ON a.id = p.app_id WHERE p.delivered_at IS NULL AND (p.accepted_at, p.id) > (?, ?) "
                "AND p.id <= ? AND p.accepted_at + json_extract(p.spec, '$.expire_time') > ? "
                "ORDER BY p.accepted_at, p.id LIMIT ?",
                (a_at, a_id, through, now, limit),
            ).fetchall()
            found: list[tuple[str, Push, tuple[str, ...]]] = []
            targets = 0
            for row in rows:
                if found and targets + row[6] > max_targets:  # bounded by tokens too, not only pushes
                    break
                targets += row[6]
                tokens = [r[0] for r in c.execute("SELECT token FROM targets WHERE push=? ORDER BY seq", (row[0],))]
                push = self._push(row[:10], tokens)
                assert push is not None
                found.append((row[10], push, tuple(tokens)))
            more = len(found) < len(rows) or len(rows) == limit
            cursor = (found[-1][1].accepted_at, found[-1][1].id) if found and more else None
            return found, cursor

        return await self._read(q)

    async def push_targets(self, push: int, offset: int, limit: int) -> list[TargetView]:
        def q(c: sqlite3.Connection) -> list[TargetView]:
            rows = c.execute(
                "SELECT t.token, t.account, coalesce(d.phone, ''), t.arrived_at, t.clicked_at, r.status "
                "FROM targets t JOIN pushes p ON p.id = t.push "
                "LEFT JOIN devices d ON d.app_id = p.app_id AND d.token = t.token "
                "LEFT JOIN sms_records r ON r.push = t.push AND r.phone = d.phone "
                "WHERE t.push=? ORDER BY t.seq LIMIT ? OFFSET ?",
                (push, limit, offset),
            ).fetchall()
            return [
                TargetView(
                    token=r[0],
                    account=r[1],
                    phone_number=r[2],
                    arrived_at=r[3],
                    clicked_at=r[4],
                    sms_status=SmsStatus(r[5]) if r[5] is not None else None,
                )
                for r in rows
            ]

        return await self._read(q)

    async def push_funnel(self, push: int) -> Funnel:
        def q(c: sqlite3.Connection) -> Funnel:
            targets, arrived, clicked = c.execute(
                "SELECT count(*), count(coalesce(arrived_at, clicked_at)), count(clicked_at) "
                "FROM targets WHERE push=?",
                (push,),
            ).fetchone()
            by_status = dict(
                c.execute("SELECT status, count(*) FROM sms_records WHERE push=? GROUP BY status", (push,)).fetchall()
            )
            no_phone = c.execute("SELECT no_phone_count FROM pushes WHERE id=?", (push,)).fetchone()[0]
            (after_sms,) = c.execute(
                # CROSS JOIN fixes the order (the push's targets first): left to the planner,
                # it reads every device of the app.
                "SELECT count(*) FROM targets t CROSS JOIN pushes p ON p.id = t.push "
                "CROSS JOIN devices d ON d.app_id = p.app_id AND d.token = t.token "
                "JOIN sms_records r ON r.push = t.push AND r.phone = d.phone "
                "WHERE t.push=? AND r.sent_at IS NOT NULL "
                "AND coalesce(t.arrived_at, t.clicked_at) > r.sent_at",
                (push,),
            ).fetchone()

            def n(*statuses: SmsStatus) -> int:
                return sum(by_status.get(int(s), 0) for s in statuses)

            return Funnel(
                target_count=targets,
                arrived_count=arrived,
                clicked_count=clicked,
                sms_sent_count=n(SmsStatus.SENT, SmsStatus.DELIVERED, SmsStatus.UNDELIVERED),
                sms_delivered_count=n(SmsStatus.DELIVERED),
                sms_failed_count=n(SmsStatus.FAILED, SmsStatus.UNDELIVERED),
                sms_rate_limited_count=n(SmsStatus.RATE_LIMITED),
                no_phone_count=no_phone,
                arrived_after_sms_count=after_sms,
                sms_unknown_count=n(SmsStatus.UNKNOWN, SmsStatus.SENDING),
            )

        return await self._read(q)

    async def cancel_fallback(self, app_id: int, push_id: str, now: float) -> tuple[int, FallbackState] | None:
        def op(conn: sqlite3.Connection) -> tuple[int, FallbackState] | None:
            row = conn.execute(
                "SELECT id, fallback_state FROM pushes WHERE push_id=? AND app_id=?", (push_id, app_id)
            ).fetchone()
            if row is None:
                return None
            state = FallbackState(row[1])
            if state in (FallbackState.CANCELLED, FallbackState.NONE):
                return row[0], state
            if state is not FallbackState.PENDING:
                raise FailedPrecondition(f"the fallback has already fired ({state.name})")
            conn.execute(
                "UPDATE pushes SET fallback_state=?, fallback_ended_at=? WHERE id=? AND fallback_state=?",
                (int(FallbackState.CANCELLED), now, row[0], int(FallbackState.PENDING)),
            )
            return row[0], FallbackState.CANCELLED

        return await self._write(op)

    # -- devices ------------------------------------------------------------------------

    @staticmethod
    def _device(conn: sqlite3.Connection, app_id: int, token: str) -> Device | None:
        row = conn.execute(
            "SELECT phone, notifications_enabled, notification_time, updated_at FROM devices "
            "WHERE app_id=? AND token=?",
            (app_id, token),
        ).fetchone()
        if row is None:
            return None
        accounts = tuple(
            r[0]
            for r in conn.execute(
                # Left to itself the planner walks every binding of the app (primary key
                # prefix app_id) instead of this token's few.
                "SELECT account FROM account_tokens INDEXED BY account_tokens_by_token "
                "WHERE app_id=? AND token=? ORDER BY bound_at, account",
                (app_id, token),
            )
        )
        return Device(
            token=token,
            phone_number=row[0],
            accounts=accounts,
            notifications_enabled=None if row[1] is None else bool(row[1]),
            notification_state_time=row[2],
            updated_at=row[3],
        )

    @staticmethod
    def _touch_device(conn: sqlite3.Connection, app_id: int, token: str, now: float) -> None:
        conn.execute(
            "INSERT INTO devices (app_id, token, updated_at) VALUES (?,?,?) "
            "ON CONFLICT (app_id, token) DO UPDATE SET updated_at=excluded.updated_at",
            (app_id, token, now),
        )

    def _device_op(
        self, app_id: int, token: str, now: float, change: Callable[[sqlite3.Connection], None]
    ) -> Callable[[sqlite3.Connection], Device]:
        def op(conn: sqlite3.Connection) -> Device:
            self._touch_device(conn, app_id, token, now)
            change(conn)
            device = self._device(conn, app_id, token)
            assert device is not None
            return device

        return op

    async def bind_phone(self, app_id: int, token: str, phone: str, now: float) -> Device:
        return await self._write(
            self._device_op(
                app_id,
                token,
                now,
                lambda c: c.execute("UPDATE devices SET phone=? WHERE app_id=? AND token=?", (phone, app_id, token)),
            )
        )

    async def unbind_phone(self, app_id: int, token: str, now: float) -> Device:
        return await self._write(
            self._device_op(
                app_id,
                token,
                now,
                lambda c: c.execute("UPDATE devices SET phone='' WHERE app_id=? AND token=?", (app_id, token)),
            )
        )

    async def bind_account(self, app_id: int, token: str, account: str, now: float, max_tokens: int) -> Device:
        def change(conn: sqlite3.Connection) -> None:
            bound = conn.execute(
                "SELECT 1 FROM account_tokens WHERE app_id=? AND account=? AND token=?", (app_id, account, token)
            ).fetchone()
            if bound:
                return
            (count,) = conn.execute(
                "SELECT count(*) FROM account_tokens WHERE app_id=? AND account=?", (app_id, account)
            ).fetchone()
            if count >= max_tokens:
                raise FailedPrecondition(f"account already has {max_tokens} tokens, the most it may have")
            conn.execute(
                "INSERT INTO account_tokens (app_id, account, token, bound_at) VALUES (?,?,?,?)",
                (app_id, account, token, now),
            )

        return await self._write(self._device_op(app_id, token, now, change))

    async def unbind_account(self, app_id: int, token: str, account: str, now: float) -> Device:
        return await self._write(
            self._device_op(
                app_id,
                token,
                now,
                lambda c: c.execute(
                    "DELETE FROM account_tokens WHERE app_id=? AND account=? AND token=?", (app_id, account, token)
                ),
            )
        )

    async def get_device(self, app_id: int, token: str) -> Device | None:
        return await self._read(lambda c: self._device(c, app_id, token))

    # -- events -------------------------------------------------------------------------

    async def record_events(self, app_id: int, events: list[EventIn], now: float) -> list[EventOutcome]:
        def op(conn: sqlite3.Connection) -> list[EventOutcome]:
            about_push = [i for i, e in enumerate(events) if e.event_type in _PUSH_EVENTS]
            if len(about_push) >= _SET_BASED_FROM:
                outcomes: list[EventOutcome | None] = [None] * len(events)
                for i, outcome in zip(about_push, _record_push_events(conn, app_id, [events[i] for i in about_push])):
                    outcomes[i] = outcome
                for i, e in enumerate(events):
                    if outcomes[i] is None:
                        outcomes[i] = _record_notification_state(conn, app_id, e, now)
                return outcomes  # type: ignore[return-value]
            push_rows: dict[str, int | None] = {}
            found = []
            for e in events:
                if e.event_type.about_push:
                    if e.push_id not in push_rows:
                        row = conn.execute(
                            "SELECT id FROM pushes WHERE push_id=? AND app_id=?", (e.push_id, app_id)
                        ).fetchone()
                        push_rows[e.push_id] = row[0] if row else None
                    push = push_rows[e.push_id]
                    found.append(
                        EventOutcome.UNKNOWN_PUSH if push is None else _record_push_event(conn, push, e)
                    )
                else:
                    found.append(_record_notification_state(conn, app_id, e, now))
            return found

        return await self._write(op)

    # -- fallbacks ----------------------------------------------------------------------

    async def live_fallbacks(self) -> list[tuple[int, float]]:
        live = _in((FallbackState.PENDING, FallbackState.FIRING))
        return await self._read(
            lambda c: c.execute(
                f"SELECT id, fallback_due_at FROM pushes WHERE fallback_state IN ({live})"
            ).fetchall()
        )

    async def recover_interrupted_sms(self, now: float) -> int:
        def op(conn: sqlite3.Connection) -> int:
            cur = conn.execute(
                "UPDATE sms_records SET status=?, provider_message=? WHERE status=?",
                (
                    int(SmsStatus.UNKNOWN),
                    "the service stopped before the provider answered; not sent again",
                    int(SmsStatus.SENDING),
                ),
            )
            return cur.rowcount

        return await self._write(op)

    async def claim_fallbacks(self, pushes: list[int], now: float) -> list[FireJob]:
        sources = _in(sources_of(FALLBACK_TRANSITIONS, FallbackState.FIRING))
        firing = int(FallbackState.FIRING)
        wanted = list(dict.fromkeys(pushes))

        def op(conn: sqlite3.Connection) -> list[FireJob]:
            jobs: list[FireJob] = []
            for start in range(0, len(wanted), _CHUNK):
                ids = _in(wanted[start : start + _CHUNK])
                rows = conn.execute(
                    "SELECT p.id, p.push_id, p.app_id, p.spec, p.fallback_due_at, a.access_id, "
                    "a.same_content_interval, a.daily_limit, a.time_zone, a.sms_credentials "
                    f"FROM pushes p JOIN apps a ON a.id = p.app_id WHERE p.id IN ({ids}) "
                    f"AND p.fallback_state IN ({sources}) ORDER BY p.id"
                ).fetchall()
                if not rows:
                    continue
                conn.execute(f"UPDATE pushes SET fallback_state={firing} WHERE id IN ({_in(r[0] for r in rows)})")
                for row in rows:
                    spec = PushSpec.from_json(row[3])
                    assert spec.sms_info is not None
                    jobs.append(
                        FireJob(
                            push=row[0],
                            push_id=row[1],
                            app_id=row[2],
                            access_id=row[5],
                            sms_info=spec.sms_info,
                            policy=RateLimitPolicy(row[6], row[7], row[8]),
                            sms_credentials_blob=row[9],
                            due_at=row[4],
                        )
                    )
            return jobs

        return await self._write(op)

    async def recipients_many(self, jobs: list[FireJob]) -> dict[int, list[Recipient]]:
        def q(c: sqlite3.Connection) -> dict[int, list[Recipient]]:
            out: dict[int, list[Recipient]] = {job.push: [] for job in jobs}
            by_app: dict[int, list[int]] = {}
            for job in jobs:
                by_app.setdefault(job.app_id, []).append(job.push)
            for app_id, pushes in by_app.items():
                for start in range(0, len(pushes), _CHUNK):
                    rows = c.execute(
                        "SELECT t.push, t.token, coalesce(d.phone, ''), t.arrived_at IS NOT NULL, "
                        "t.clicked_at IS NOT NULL, d.notifications_enabled FROM targets t "
                        "LEFT JOIN devices d ON d.app_id=? AND d.token=t.token "
                        f"WHERE t.push IN ({_in(pushes[start : start + _CHUNK])}) ORDER BY t.push, t.seq",
                        (app_id,),
                    ).fetchall()
                    for r in rows:
                        out[r[0]].append(
                            Recipient(r[1], r[2], bool(r[3]), bool(r[4]), None if r[5] is None else bool(r[5]))
                        )
            return out

        return await self._read(q)

    async def reserve_sms_many(
        self, reservations: list[tuple[FireJob, tuple[str, ...], Window]], now: float
    ) -> list[tuple[list[str], int]]:
        def op(conn: sqlite3.Connection) -> list[tuple[list[str], int]]:
            # In order, in one transaction: a record written for an earlier push counts
            # toward the limits of the same number in a later one.
            return [_reserve(conn, job, phones, window, now) for job, phones, window in reservations]

        return await self._write(op)

    async def finish_sms_many(self, outcomes: list[tuple[int, SmsOutcome]], now: float) -> None:
        by_status: dict[SmsStatus, list[tuple[Any, ...]]] = {}
        for push, o in outcomes:
            by_status.setdefault(o.status, []).append(
                (int(o.status), o.code, o.message, o.serial_no, o.fee, o.rate_limit_rule, now, push, o.phone_number)
            )

        def op(conn: sqlite3.Connection) -> None:
            for status, rows in by_status.items():
                allowed = _in(sources_of(SMS_TRANSITIONS, status))
                conn.executemany(
                    "UPDATE sms_records SET status=?, provider_code=?, provider_message=?, serial_no=?, fee=?, "
                    f"rate_limit_rule=?, sent_at=? WHERE push=? AND phone=? AND status IN ({allowed})",
                    rows,
                )

        await self._write(op)

    async def finish_fallbacks(self, finished: list[tuple[FireJob, int]], now: float) -> None:
        done, firing = int(FallbackState.DONE), int(FallbackState.FIRING)
        rows = [(done, now, no_phone, job.push, firing) for job, no_phone in finished]
        await self._write(
            lambda c: c.executemany(
                "UPDATE pushes SET fallback_state=?, fallback_ended_at=?, no_phone_count=? "
                "WHERE id=? AND fallback_state=?",
                rows,
            )
        )

    # -- SMS records and receipts ---------------------------------------------------------

    async def list_sms_records(
        self, app_id: int, flt: SmsRecordFilter, before: tuple[float, int] | None, limit: int
    ) -> list[SmsRecord]:
        # With a push id, `+` keeps the planner off sms_by_app_time (which would walk the whole
        # app's history newest first) so it reads the push's own records instead.
        where = ["+r.app_id=?" if flt.push_id else "r.app_id=?"]
        args: list[Any] = [app_id]
        if flt.push_id:
            where.append("p.push_id=?")
            args.append(flt.push_id)
        if flt.phone_number:
            where.append("r.phone=?")
            args.append(flt.phone_number)
        if flt.statuses:
            where.append(f"r.status IN ({_in(flt.statuses)})")
        if flt.start_time is not None:
            where.append("r.created_at >= ?")
            args.append(flt.start_time)
        if flt.end_time is not None:
            where.append("r.created_at < ?")
            args.append(flt.end_time)
        if before is not None:
            where.append("(r.created_at < ? OR (r.created_at = ? AND r.id < ?))")
            args.extend([before[0], before[0], before[1]])
        sql = (
            f"SELECT {_SMS_COLUMNS} FROM sms_records r JOIN pushes p ON p.id = r.push "
            f"WHERE {' AND '.join(where)} ORDER BY r.created_at DESC, r.id DESC LIMIT ?"
        )
        args.append(limit)
        return await self._read(lambda c: [_sms_record(r) for r in c.execute(sql, args).fetchall()])

    async def apply_receipts(self, receipts: list[DeliveryReceipt]) -> int:
        def op(conn: sqlite3.Connection) -> int:
            matched = 0
            for rc in receipts:
                status = SmsStatus.DELIVERED if rc.delivered else SmsStatus.UNDELIVERED
                allowed = _in(sources_of(SMS_TRANSITIONS, status))
                cur = conn.execute(
                    "UPDATE sms_records SET status=?, received_at=?, report_code=?, report_description=? "
                    # `serial_no != ''` lets SQLite use the partial index sms_by_serial.
                    f"WHERE serial_no=? AND serial_no != '' AND phone=? AND status IN ({allowed})",
                    (int(status), rc.receive_time, rc.code, rc.description, rc.serial_no, rc.phone_number),
                )
                matched += cur.rowcount
            return matched

        return await self._write(op)

    async def sms_sources(self) -> list[tuple[str, bytes, str]]:
        return await self._read(
            lambda c: c.execute(
                "SELECT DISTINCT a.access_id, a.sms_credentials, r.sms_app_id FROM sms_records r "
                "JOIN apps a ON a.id = r.app_id WHERE a.sms_credentials IS NOT NULL "
                f"AND r.status = {int(SmsStatus.SENT)}"
            ).fetchall()
        )

    async def statistics(self, app_id: int, start: float, end: float) -> Statistics:
        def q(c: sqlite3.Connection) -> Statistics:
            pushes, targets, pending = c.execute(
                "SELECT count(*), coalesce(sum(target_count), 0), "
                f"coalesce(sum(fallback_state = {int(FallbackState.PENDING)}), 0) "
                "FROM pushes WHERE app_id=? AND accepted_at >= ? AND accepted_at < ?",
                (app_id, start, end),
            ).fetchone()
            arrived, clicked = c.execute(
                "SELECT count(coalesce(t.arrived_at, t.clicked_at)), count(t.clicked_at) FROM pushes p "
                "JOIN targets t ON t.push = p.id WHERE p.app_id=? AND p.accepted_at >= ? AND p.accepted_at < ?",
                (app_id, start, end),
            ).fetchone()
            by_status: dict[SmsStatus, int] = {}
            fee = 0
            for status, count, fees in c.execute(
                "SELECT r.status, count(*), coalesce(sum(r.fee), 0) FROM pushes p JOIN sms_records r ON r.push = p.id "
                "WHERE p.app_id=? AND p.accepted_at >= ? AND p.accepted_at < ? GROUP BY r.status",
                (app_id, start, end),
            ):
                by_status[SmsStatus(status)] = count
                fee += fees
            return Statistics(
                start_time=start,
                end_time=end,
                push_count=pushes,
                target_count=targets,
                arrived_count=arrived,
                clicked_count=clicked,
                sms_by_status=by_status,
                sms_fee=fee,
                pending_fallback_count=pending,
            )

        return await self._read(q)


    # -- retention ----------------------------------------------------------------------

    async def purge_expired(
        self, finished_before: float | None, idempotency_before: float, limit: int
    ) -> PurgeCounts:
        over = _in((FallbackState.DONE, FallbackState.CANCELLED, FallbackState.NONE))

        def op(conn: sqlite3.Connection) -> PurgeCounts:
            pushes = targets = records = 0
            if finished_before is not None:
                # ended_at >= accepted_at, so the accepted_at bound only narrows the index range.
                ids = [
                    r[0]
                    for r in conn.execute(
                        "SELECT id FROM pushes WHERE accepted_at < ? AND fallback_state IN "
                        f"({over}) AND coalesce(fallback_ended_at, accepted_at) < ? LIMIT ?",
                        (finished_before, finished_before, limit),
                    )
                ]
                if ids:
                    marks = ",".join("?" * len(ids))
                    records = conn.execute(f"DELETE FROM sms_records WHERE push IN ({marks})", ids).rowcount
                    targets = conn.execute(f"DELETE FROM targets WHERE push IN ({marks})", ids).rowcount
                    pushes = conn.execute(f"DELETE FROM pushes WHERE id IN ({marks})", ids).rowcount
            idempotency = conn.execute(
                "DELETE FROM idempotency WHERE created_at < ?", (idempotency_before,)
            ).rowcount
            return PurgeCounts(pushes, targets, records, idempotency)

        return await self._write(op)


# -- helpers that run on the writer thread ------------------------------------------------


def _reserve(
    conn: sqlite3.Connection, job: FireJob, phones: tuple[str, ...], window: Window, now: float
) -> tuple[list[str], int]:
    """The reservation of reserve_sms_many for one push, inside the caller's transaction."""
    info = job.sms_info
    key = content_key(info)
    params = json.dumps(list(info.sms_template_params), ensure_ascii=False)
    to_send: list[str] = []
    limited = 0
    for phone in phones:
        if conn.execute("SELECT 1 FROM sms_records WHERE push=? AND phone=?", (job.push, phone)).fetchone():
            continue  # judged before an interruption: at most one SMS per (push, phone)
        sent_today, last_same = conn.execute(
            "SELECT coalesce(sum(created_at >= ?), 0), max(CASE WHEN content_key=? THEN created_at END) "
            f"FROM sms_records WHERE app_id=? AND phone=? AND status IN ({_COUNTED_SQL}) "
            "AND created_at >= min(?, ?)",
            (window.day_start, key, job.app_id, phone, window.day_start, window.same_content_since),
        ).fetchone()
        rule = window.verdict(sent_today, last_same)
        status = SmsStatus.RATE_LIMITED if rule else SmsStatus.SENDING
        conn.execute(
            "INSERT INTO sms_records (app_id, push, phone, status, content_key, sms_app_id, template_id, "
            "sign_name, params, rate_limit_rule, created_at) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            (
                job.app_id,
                job.push,
                phone,
                int(status),
                key,
                info.sms_app_id,
                info.sms_template_id,
                info.sms_sign_name,
                params,
                rule or "",
                now,
            ),
        )
        if rule:
            limited += 1
        else:
            to_send.append(phone)
    return to_send, limited


def _record_push_event(conn: sqlite3.Connection, push: int, e: EventIn) -> EventOutcome:
    row = conn.execute("SELECT arrived_at, clicked_at FROM targets WHERE push=? AND token=?", (push, e.token)).fetchone()
    if row is None:
        return EventOutcome.UNKNOWN_TOKEN
    arrived_at, clicked_at = row
    if e.event_type is EventType.ARRIVED:
        if arrived_at is not None and arrived_at <= e.event_time:
            return EventOutcome.DUPLICATE
        conn.execute("UPDATE targets SET arrived_at=? WHERE push=? AND token=?", (e.event_time, push, e.token))
        return EventOutcome.ACCEPTED if arrived_at is None else EventOutcome.DUPLICATE
    if clicked_at is not None and clicked_at <= e.event_time:
        return EventOutcome.DUPLICATE
    # A click implies arrival: record the arrival too if none came first.
    conn.execute(
        "UPDATE targets SET clicked_at=?, arrived_at=min(coalesce(arrived_at, ?), ?) WHERE push=? AND token=?",
        (e.event_time, e.event_time, e.event_time, push, e.token),
    )
    return EventOutcome.ACCEPTED if clicked_at is None else EventOutcome.DUPLICATE


_PUSH_EVENTS = frozenset((EventType.ARRIVED, EventType.CLICKED))
# From this many arrival/click events in one call, they are recorded in sets (below); fewer
# (the unary RPC) take the per-event statements, which are cheaper for one or two.
_SET_BASED_FROM = 4


def _record_push_events(conn: sqlite3.Connection, app_id: int, events: list[EventIn]) -> list[EventOutcome]:
    """Arrivals and clicks, in sets: one query for the pushes they name, one per push for its
    targets' current times, one executemany for the targets that change. (Times stay bound
    parameters, never JSON: SQLite writes a REAL to JSON with 15 digits, which would lose
    precision.)

    Each event's outcome is what `_record_push_event` would have answered taking the events
    one by one in order (an event for the same target as an earlier one sees its effect)."""
    pushes = dict(
        conn.execute(
            # CROSS JOIN: the named pushes first, each found by its unique push_id.
            "SELECT j.value, p.id FROM json_each(?) j CROSS JOIN pushes p ON p.push_id = j.value "
            "WHERE p.app_id = ?",
            (json.dumps(list({e.push_id for e in events})), app_id),
        ).fetchall()
    )
    tokens_of: dict[int, set[str]] = {}
    for e in events:
        if e.push_id in pushes:
            tokens_of.setdefault(pushes[e.push_id], set()).add(e.token)
    times: dict[tuple[int, str], list[float | None]] = {}
    for push, tokens in tokens_of.items():  # one query per push (a message is mostly about few)
        for token, arrived_at, clicked_at in conn.execute(
            "SELECT t.token, t.arrived_at, t.clicked_at FROM json_each(?) j CROSS JOIN targets t "
            "ON t.push = ? AND t.token = j.value",
            (json.dumps(list(tokens)), push),
        ):
            times[(push, token)] = [arrived_at, clicked_at]
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
            outcomes.append(EventOutcome.ACCEPTED if arrived_at is None else EventOutcome.DUPLICATE)
        else:
            if clicked_at is not None and clicked_at <= at:
                outcomes.append(EventOutcome.DUPLICATE)
                continue
            # A click implies arrival: record the arrival too if none came first.
            t[0] = at if arrived_at is None else min(arrived_at, at)
            t[1] = at
            outcomes.append(EventOutcome.ACCEPTED if clicked_at is None else EventOutcome.DUPLICATE)
        changed[key] = t
    if changed:
        conn.executemany(
            "UPDATE targets SET arrived_at=?, clicked_at=? WHERE push=? AND token=?",
            [(t[0], t[1], push, token) for (push, token), t in changed.items()],
        )
    return outcomes


def _record_notification_state(conn: sqlite3.Connection, app_id: int, e: EventIn, now: float) -> EventOutcome:
    enabled = 1 if e.event_type is EventType.NOTIFICATION_ENABLED else 0
    row = conn.execute(
        "SELECT notifications_enabled, notification_time FROM devices WHERE app_id=? AND token=?",
        (app_id, e.token),
    ).fetchone()
    if row is not None and row[1] is not None:
        if row[1] > e.event_time:
            return EventOutcome.DUPLICATE  # an older report than the one we hold: latest wins
        if row[1] == e.event_time and row[0] == enabled:
            return EventOutcome.DUPLICATE
    conn.execute(
        "INSERT INTO devices (app_id, token, notifications_enabled, notification_time, updated_at) "
        "VALUES (?,?,?,?,?) ON CONFLICT (app_id, token) DO UPDATE SET "
        "notifications_enabled=excluded.notifications_enabled, notification_time=excluded.notification_time, "
        "updated_at=excluded.updated_at",
        (app_id, e.token, enabled, e.event_time, now),
    )
    return EventOutcome.ACCEPTED


def _sms_record(r: tuple[Any, ...]) -> SmsRecord:
    return SmsRecord(
        id=r[0],
        push_id=r[1],
        phone_number=r[2],
        status=SmsStatus(r[3]),
        sms_app_id=r[4],
        sms_template_id=r[5],
        sms_sign_name=r[6],
        sms_template_params=tuple(json.loads(r[7])),
        created_at=r[8],
        serial_no=r[9],
        provider_code=r[10],
        provider_message=r[11],
        fee=r[12],
        rate_limit_rule=r[13],
        sent_at=r[14],
        received_at=r[15],
        report_code=r[16],
        report_description=r[17],
    )


def _with_tokens(spec: PushSpec, tokens: tuple[str, ...]) -> PushSpec:
    return replace(spec, token_list=tokens)


def _receipt_to_json(r: PushReceipt) -> str:
    return json.dumps(
        {
            "push_id": r.push_id,
            "target_count": r.target_count,
            "unused": [[u.value, int(u.reason)] for u in r.unused_targets],
            "accepted_at": r.accepted_at,
            "fallback_due_at": r.fallback_due_at,
        }
    )


def _receipt_from_json(text: str) -> PushReceipt:
    d = json.loads(text)
    return PushReceipt(
        push_id=d["push_id"],
        target_count=d["target_count"],
        unused_targets=tuple(UnusedTarget(v, UnusedTargetReason(r)) for v, r in d["unused"]),
        accepted_at=d["accepted_at"],
        fallback_due_at=d["fallback_due_at"],
    )
