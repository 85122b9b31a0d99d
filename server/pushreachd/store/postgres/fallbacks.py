"""Firing on PostgreSQL, shared by any number of instances.

- A due fallback is claimed with `UPDATE ... WHERE id IN (SELECT ... FOR UPDATE SKIP LOCKED)
  RETURNING`: PENDING, or FIRING under a lease that expired (its owner died) or that this
  instance holds, becomes FIRING under this instance's lease, measured on the database's clock.
- Taking over an expired lease recovers its SMS records in the same transaction: a SENDING
  record may have reached the provider, so it becomes UNKNOWN and is never sent again.
- Rate limits: reservations for one (app, phone) are serialised by a transaction-level
  advisory lock taken before counting, so two instances see each other's records.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import psycopg

from ...engine.states import (
    FALLBACK_TRANSITIONS,
    SMS_TRANSITIONS,
    check_transition,
    guard,
    sources_of,
)
from ...model import FallbackState, Recipient, SmsStatus
from ..base import JOB_COLUMNS, LIVE_PAGE, FireJob, RateWindow, SmsOutcome
from ..sqlite.fires import COUNTED
from . import receipts
from .channels import FINAL_FAILURES
from .database import Database, lock_keys

log = logging.getLogger(__name__)
Conn = psycopg.AsyncConnection
DB_NOW = "extract(epoch FROM clock_timestamp())"  # the one clock every instance shares
_COUNTED = [int(s) for s in COUNTED]
_IN_FLIGHT = [int(s) for s in SmsStatus if s.in_flight]
UNKNOWN_MESSAGE = "the service stopped before the provider answered; not sent again"
# A broadcast's fallback waits until every target is known: its resolver arms it then, and
# judging it earlier would skip the targets not found yet (as SQLite's fires.py).
NOT_RESOLVING = "NOT EXISTS (SELECT 1 FROM broadcasts b WHERE b.push = pushes.id AND NOT b.done)"


class FallbackQueries:
    def __init__(self, db: Database, *, owner: str, lease_seconds: float) -> None:
        self._fdb = db
        self.owner = owner or _new_owner()
        self.lease_seconds = lease_seconds
        self._firing: set[int] = set()  # claimed here and not finished: their leases are renewed

    async def renew_loop(self) -> None:
        """Keep the leases of the fires under way: renewed every third of a lease, so only a
        stopped (or cut off) instance loses them. Never dies; a failed round is retried."""
        while True:
            await asyncio.sleep(self.lease_seconds / 3)
            firing = sorted(self._firing)
            try:
                held = await self.renew_leases(firing)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("renewing %d fire lease(s) failed: %s", len(firing), exc)
                continue
            if held < len(firing):
                log.warning("%d fire lease(s) expired before renewal; another instance may finish them",
                            len(firing) - held)

    async def live_fallbacks(self, after: int = 0, limit: int = LIVE_PAGE) -> list[tuple[int, float]]:
        live = [int(FallbackState.PENDING), int(FallbackState.FIRING)]

        async def q(c: Conn) -> list[tuple[int, float]]:
            cur = await c.execute(
                f"SELECT id, fallback_due_at FROM pushes WHERE fallback_state = ANY(%s) AND id > %s AND {NOT_RESOLVING} "
                "ORDER BY id LIMIT %s",
                (live, after, limit),
            )
            return [(r[0], r[1]) for r in await cur.fetchall()]

        return await self._fdb.read(q)

    async def due_fallbacks(self, through: float, after: tuple[float, int] | None, limit: int) -> list[tuple[int, float]]:
        """(push row id, due time) of PENDING fallbacks due at or before `through`, in due order
        after the cursor `after`: what an instance arms in its wheel, a horizon at a time.
        (FIRING ones belong to their lease owner until it expires: `expired_leases`.)"""
        a_due, a_id = after if after is not None else (float("-inf"), 0)

        async def q(c: Conn) -> list[tuple[int, float]]:
            cur = await c.execute(
                "SELECT id, fallback_due_at FROM pushes WHERE fallback_state IN (%s, %s) AND fallback_state = %s "
                f"AND fallback_due_at <= %s AND (fallback_due_at, id) > (%s, %s) AND {NOT_RESOLVING} "
                "ORDER BY fallback_due_at, id LIMIT %s",
                (int(FallbackState.PENDING), int(FallbackState.FIRING), int(FallbackState.PENDING), through, a_due,
                 a_id, limit),
            )
            return [(r[0], r[1]) for r in await cur.fetchall()]

        return await self._fdb.read(q)

    async def expired_leases(self, limit: int) -> list[int]:
        """FIRING pushes whose owner's lease ran out (on the database's clock): the reaper's work."""

        async def q(c: Conn) -> list[int]:
            cur = await c.execute(
                f"SELECT id FROM pushes WHERE fallback_state = %s AND lease_until < {DB_NOW} "
                "ORDER BY fallback_due_at LIMIT %s",
                (int(FallbackState.FIRING), limit),
            )
            return [r[0] for r in await cur.fetchall()]

        return await self._fdb.read(q)

    async def renew_leases(self, pushes: list[int]) -> int:
        """Extend this instance's leases on pushes it is still firing; returns how many it holds."""
        if not pushes:
            return 0

        async def op(c: Conn) -> int:
            cur = await c.execute(
                f"UPDATE pushes SET lease_until = {DB_NOW} + %s WHERE id = ANY(%s) AND fallback_state = %s "
                "AND fire_owner = %s",
                (self.lease_seconds, sorted(pushes), int(FallbackState.FIRING), self.owner),
            )
            return cur.rowcount

        return await self._fdb.transaction(op)

    async def recover_interrupted_sms(self, now: float) -> int:
        """SENDING records whose push is no longer under a live lease of another instance:
        their process stopped before the provider answered. They become UNKNOWN."""

        async def op(c: Conn) -> int:
            cur = await c.execute(
                "UPDATE sms_records r SET status=%s, provider_message=%s FROM pushes p "
                "WHERE r.status=%s AND p.id = r.push AND NOT (p.fallback_state = %s "
                f"AND p.lease_until >= {DB_NOW} AND p.fire_owner != %s)",
                (int(SmsStatus.UNKNOWN), UNKNOWN_MESSAGE, int(SmsStatus.SENDING), int(FallbackState.FIRING), self.owner),
            )
            return cur.rowcount

        return await self._fdb.transaction(op)

    async def claim_fallbacks(self, pushes: list[int], now: float) -> list[FireJob]:
        wanted = sorted(set(pushes))
        if not wanted:
            return []
        assert set(sources_of(FALLBACK_TRANSITIONS, FallbackState.FIRING)) == {FallbackState.PENDING, FallbackState.FIRING}
        jobs = await self._fdb.transaction(lambda c: self._claim(c, wanted, skip_locked=True))
        self._firing.update(j.push for j in jobs)
        # SKIP LOCKED also skips rows that an unrelated short write holds (a delivery mark, a
        # cancel still committing). Those still claimable are claimed again, waiting for the
        # lock this time: once it is released the row is judged afresh, so a claim another
        # instance committed meanwhile is seen and not taken twice.
        got = {j.push for j in jobs}
        rest = [p for p in wanted if p not in got]
        if rest and await self._fdb.read(lambda c: self._claimable(c, rest)):
            more = await self._fdb.transaction(lambda c: self._claim(c, rest, skip_locked=False))
            self._firing.update(j.push for j in more)
            jobs += more
        return sorted(jobs, key=lambda j: j.push)

    def _claimable_sql(self) -> str:
        return (
            "(fallback_state = %(pending)s OR (fallback_state = %(firing)s AND (fire_owner = %(owner)s "
            f"OR lease_until IS NULL OR lease_until < {DB_NOW}))) AND {NOT_RESOLVING}"
        )

    def _claim_args(self, ids: list[int]) -> dict[str, Any]:
        return {
            "pending": int(FallbackState.PENDING),
            "firing": int(FallbackState.FIRING),
            "owner": self.owner,
            "lease": self.lease_seconds,
            "ids": ids,
        }

    async def _claimable(self, c: Conn, ids: list[int]) -> bool:
        cur = await c.execute(
            f"SELECT EXISTS (SELECT 1 FROM pushes WHERE id = ANY(%(ids)s) AND {self._claimable_sql()})",
            self._claim_args(ids),
        )
        row = await cur.fetchone()
        return bool(row and row[0])

    async def _claim(self, c: Conn, ids: list[int], *, skip_locked: bool) -> list[FireJob]:
        if not skip_locked:
            await c.execute("SET LOCAL lock_timeout = '10s'")
        cur = await c.execute(
            "WITH claimed AS ("
            f" UPDATE pushes p SET fallback_state = %(firing)s, fire_owner = %(owner)s, lease_until = {DB_NOW} + %(lease)s"
            " FROM (SELECT id, fire_owner AS old_owner, fallback_state AS old_state"
            f"  FROM pushes WHERE id = ANY(%(ids)s) AND {self._claimable_sql()}"
            f"  ORDER BY id FOR UPDATE{' SKIP LOCKED' if skip_locked else ''}) s"
            " WHERE p.id = s.id"
            " RETURNING p.id, p.push_id, p.app_id, p.spec, p.fallback_due_at, s.old_state, s.old_owner)"
            " SELECT c.id, c.push_id, c.app_id, c.spec, c.fallback_due_at, a.access_id,"
            " a.same_content_interval, a.daily_limit, a.time_zone, a.sms_credentials, c.old_state, c.old_owner"
            " FROM claimed c JOIN apps a ON a.id = c.app_id ORDER BY c.id",
            self._claim_args(ids),
        )
        rows = await cur.fetchall()
        firing = int(FallbackState.FIRING)
        taken_over = [r[0] for r in rows if r[10] == firing and r[11] != self.owner]
        if taken_over:
            # The previous owner may have called the provider for these: never again.
            await c.execute(
                "UPDATE sms_records SET status=%s, provider_message=%s WHERE push = ANY(%s) AND status=%s",
                (int(SmsStatus.UNKNOWN), UNKNOWN_MESSAGE, taken_over, int(SmsStatus.SENDING)),
            )
        return _jobs(rows)

    async def _pending_job(self, c: Conn, push: int) -> FireJob | None:
        """A PENDING fallback as a job, not claimed (early_on_push_failure)."""
        cur = await c.execute(
            f"SELECT {JOB_COLUMNS} FROM pushes p JOIN apps a ON a.id = p.app_id "
            "WHERE p.id = %s AND p.fallback_state = %s "
            "AND NOT EXISTS (SELECT 1 FROM broadcasts b WHERE b.push = p.id AND NOT b.done)",
            (push, int(FallbackState.PENDING)),
        )
        jobs = _jobs(await cur.fetchall())
        return jobs[0] if jobs else None

    async def recipients_many(self, jobs: list[FireJob]) -> dict[int, list[Recipient]]:
        async def q(c: Conn) -> dict[int, list[Recipient]]:
            out: dict[int, list[Recipient]] = {job.push: [] for job in jobs}
            by_app: dict[int, list[int]] = {}
            for job in jobs:
                by_app.setdefault(job.app_id, []).append(job.push)
            for app_id, pushes in by_app.items():
                cur = await c.execute(
                    "SELECT t.push, t.token, coalesce(d.phone, ''), t.arrived_at IS NOT NULL, "
                    "t.clicked_at IS NOT NULL, d.notifications_enabled, coalesce(t.outcome = ANY(%s), false) "
                    "FROM targets t LEFT JOIN devices d ON d.app_id=%s AND d.token=t.token "
                    "WHERE t.push = ANY(%s) ORDER BY t.push, t.seq",
                    (FINAL_FAILURES, app_id, pushes),
                )
                for r in await cur.fetchall():
                    out[r[0]].append(
                        Recipient(r[1], r[2], bool(r[3]), bool(r[4]), None if r[5] is None else bool(r[5]), bool(r[6]))
                    )
            return out

        return await self._fdb.read(q)

    async def reserve_sms_many(
        self, reservations: list[tuple[FireJob, tuple[str, ...], RateWindow]], now: float
    ) -> list[tuple[list[str], int]]:
        async def op(c: Conn) -> list[tuple[list[str], int]]:
            # Every (app, phone) of the call locked in one order: two instances reserving for
            # the same numbers wait for each other instead of deadlocking.
            await lock_keys(c, [f"{job.app_id}:{phone}" for job, phones, _ in reservations for phone in phones])
            return [await _reserve(c, job, phones, window, now) for job, phones, window in reservations]

        return await self._fdb.transaction(op)

    async def dispatch_sms(self, records: list[tuple[int, str]], now: float) -> list[bool]:
        """RESERVED -> SENDING, guarded: of two instances holding one record (a lease lost
        while its owner was paused), only one moves it, and only that one calls the provider."""
        if not records:
            return []
        (reserved,) = guard(SMS_TRANSITIONS, SmsStatus.SENDING, SmsStatus.RESERVED)

        async def op(c: Conn) -> set[tuple[int, str]]:
            cur = await c.execute(
                "UPDATE sms_records r SET status=%s, dispatched_at=%s "
                "FROM unnest(%s::bigint[], %s::text[]) AS k(push, phone) "
                "WHERE r.push = k.push AND r.phone = k.phone AND r.status = %s RETURNING r.push, r.phone",
                (int(SmsStatus.SENDING), now, [p for p, _ in records], [ph for _, ph in records], int(reserved)),
            )
            return {(r[0], r[1]) for r in await cur.fetchall()}

        moved = await self._fdb.transaction(op)
        answers = []
        for key in records:  # a record named twice is moved once
            answers.append(key in moved)
            moved.discard(key)
        return answers

    async def finish_sms_many(self, outcomes: list[tuple[int, SmsOutcome]], now: float) -> None:
        by_status: dict[SmsStatus, list[tuple[Any, ...]]] = {}
        for push, o in sorted(outcomes, key=lambda x: (x[0], x[1].phone_number)):
            allowed = [int(s) for s in guard(SMS_TRANSITIONS, o.status, SmsStatus.SENDING)]
            by_status.setdefault(o.status, []).append(
                (int(o.status), o.code, o.message, o.serial_no, o.fee, o.rate_limit_rule, now, push, o.phone_number, allowed)
            )

        # A receipt kept because it beat its serial number is applied with it (receipts.py).
        written = sorted({(o.serial_no, o.phone_number) for _, o in outcomes if o.serial_no})

        async def op(c: Conn) -> None:
            await receipts.lock_written(c, written)
            async with c.cursor() as cur:
                for rows in by_status.values():
                    await cur.executemany(
                        "UPDATE sms_records SET status=%s, provider_code=%s, provider_message=%s, serial_no=%s, "
                        "fee=%s, rate_limit_rule=%s, sent_at=%s WHERE push=%s AND phone=%s AND status = ANY(%s)",
                        rows,
                    )
            await receipts.apply_pending(c, written)

        if by_status:
            await self._fdb.transaction(op)

    async def finish_fallbacks(self, finished: list[tuple[FireJob, int]], now: float) -> None:
        done, firing = int(FallbackState.DONE), int(FallbackState.FIRING)
        rows = sorted((done, now, no_phone, job.push, firing) for job, no_phone in finished)
        rows = [(r[0], r[1], r[2], r[3], r[4]) for r in sorted(rows, key=lambda r: r[3])]

        async def op(c: Conn) -> None:
            async with c.cursor() as cur:
                await cur.executemany(
                    "UPDATE pushes SET fallback_state=%s, fallback_ended_at=%s, no_phone_count=%s, lease_until=NULL "
                    "WHERE id=%s AND fallback_state=%s",
                    rows,
                )

        if rows:
            await self._fdb.transaction(op)
        self._firing.difference_update(job.push for job, _ in finished)


async def _reserve(c: Conn, job: FireJob, phones: tuple[str, ...], window: RateWindow, now: float) -> tuple[list[str], int]:
    """The reservation for one push, inside the caller's transaction and under its locks."""
    info = job.sms_info
    key = window.content_key(info)
    params = json.dumps(list(info.sms_template_params), ensure_ascii=False)
    unique = list(dict.fromkeys(phones))
    if not unique:
        return [], 0
    cur = await c.execute("SELECT phone, status FROM sms_records WHERE push=%s AND phone = ANY(%s)", (job.push, unique))
    # Judged before an interruption: at most one SMS per (push, phone). A record reserved but
    # never dispatched (its fire stopped, or its instance died) is still to be sent.
    judged = {r[0]: SmsStatus(r[1]) for r in await cur.fetchall()}
    fresh = [p for p in unique if p not in judged]
    to_send = [p for p in unique if judged.get(p) is SmsStatus.RESERVED]
    if not fresh:
        return to_send, 0
    # In-flight records count as sent now; answered ones from when they were sent.
    since = min(window.day_start, window.same_content_since)
    cur = await c.execute(
        "SELECT phone, count(*) FILTER (WHERE created_at >= %(day)s), "
        "max(CASE WHEN status = ANY(%(flight)s) THEN %(now)s ELSE coalesce(sent_at, dispatched_at, created_at) END) "
        "FILTER (WHERE content_key = %(key)s) "
        "FROM sms_records WHERE app_id=%(app)s AND phone = ANY(%(phones)s) AND status = ANY(%(counted)s) "
        "AND (created_at >= %(since)s OR status = ANY(%(flight)s) OR sent_at >= %(same)s) GROUP BY phone",
        {"day": window.day_start, "flight": _IN_FLIGHT, "now": now, "key": key, "app": job.app_id, "phones": fresh,
         "counted": _COUNTED, "since": since, "same": window.same_content_since},
    )
    counts = {r[0]: (r[1], r[2]) for r in await cur.fetchall()}
    limited = 0
    rows = []
    for phone in fresh:
        sent_today, last_same = counts.get(phone, (0, None))
        rule = window.verdict(sent_today, last_same)
        status = SmsStatus.RATE_LIMITED if rule else SmsStatus.RESERVED
        check_transition(SMS_TRANSITIONS, None, status)
        rows.append((job.app_id, job.push, phone, int(status), key, info.sms_app_id, info.sms_template_id,
                     info.sms_sign_name, params, rule or "", now))
        if rule:
            limited += 1
        else:
            to_send.append(phone)
    async with c.cursor() as wcur:
        await wcur.executemany(
            "INSERT INTO sms_records (app_id, push, phone, status, content_key, sms_app_id, template_id, "
            "sign_name, params, rate_limit_rule, created_at) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)",
            rows,
        )
    sending = set(to_send)
    return [p for p in unique if p in sending], limited  # in the order asked


def _new_owner() -> str:
    import os
    import socket
    import uuid

    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _jobs(rows: list[tuple[Any, ...]]) -> list[FireJob]:
    return [FireJob.from_row(row) for row in rows]
