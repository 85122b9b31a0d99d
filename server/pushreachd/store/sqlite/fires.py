"""Fires and SMS records: claim due fallbacks, read their recipients, reserve a record per
phone under the rate limits, record the provider's answers, finish; list records, apply
delivery receipts.

State changes are guarded by the engine's transition tables (`WHERE status IN (...)` built
from states.guard, which checks each intended transition), so a transition another writer
already made is a no-op.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from ...engine.states import (
    FALLBACK_TRANSITIONS,
    SMS_TRANSITIONS,
    check_transition,
    guard,
)
from ...model import (
    DeliveryReceipt,
    FallbackState,
    PushOutcome,
    Recipient,
    SmsRecord,
    SmsRecordFilter,
    SmsStatus,
)
from ..base import JOB_COLUMNS, FireJob, RateWindow, SmsOutcome
from . import rows
from .rows import CHUNK, SMS_COLUMNS, in_list

# SMS that count toward the per-number limits: everything that may reach or have reached the
# phone. RESERVED and SENDING (not yet answered) count as sent now.
COUNTED = (
    SmsStatus.RESERVED,
    SmsStatus.SENDING,
    SmsStatus.SENT,
    SmsStatus.DELIVERED,
    SmsStatus.UNDELIVERED,
    SmsStatus.UNKNOWN,
)
_COUNTED_SQL = in_list(COUNTED)
_IN_FLIGHT_SQL = in_list(s for s in SmsStatus if s.in_flight)
_FINAL_FAILURES = in_list(o for o in PushOutcome if o.final_failure)


_LIVE_SQL = in_list((FallbackState.PENDING, FallbackState.FIRING))


def live_fallbacks(conn: sqlite3.Connection, after: int, limit: int) -> list[tuple[int, float]]:
    # A rowid range: each page starts where the last one ended, never re-reads it.
    return conn.execute(
        f"SELECT id, fallback_due_at FROM pushes WHERE id > ? AND fallback_state IN ({_LIVE_SQL}) "
        # A broadcast's fallback is armed by its resolver once every target is known.
        "AND id NOT IN (SELECT push FROM broadcasts WHERE done = 0) ORDER BY id LIMIT ?",
        (after, limit),
    ).fetchall()


def recover_interrupted(conn: sqlite3.Connection, now: float) -> int:
    """Dispatched records with no answer (SENDING) become UNKNOWN; RESERVED ones are left to be
    sent when their (still FIRING) fallback fires again."""
    (sending,) = guard(SMS_TRANSITIONS, SmsStatus.UNKNOWN, SmsStatus.SENDING)
    cur = conn.execute(
        "UPDATE sms_records SET status=?, provider_message=? WHERE status=?",
        (
            int(SmsStatus.UNKNOWN),
            "the service stopped before the provider answered; not sent again",
            int(sending),
        ),
    )
    return cur.rowcount


def claim(conn: sqlite3.Connection, pushes: list[int], now: float) -> list[FireJob]:
    sources = in_list(guard(FALLBACK_TRANSITIONS, FallbackState.FIRING, FallbackState.PENDING, FallbackState.FIRING))
    firing = int(FallbackState.FIRING)
    wanted = list(dict.fromkeys(pushes))
    jobs: list[FireJob] = []
    for start in range(0, len(wanted), CHUNK):
        found = _jobs(conn, wanted[start : start + CHUNK], sources)
        if found:
            conn.execute(f"UPDATE pushes SET fallback_state={firing} WHERE id IN ({in_list(j.push for j in found)})")
            jobs += found
    return jobs


def pending_job(conn: sqlite3.Connection, push: int) -> FireJob | None:
    """The fallback of a push as a job, without claiming it (an early SMS for some phones)."""
    found = _jobs(conn, [push], str(int(FallbackState.PENDING)))
    return found[0] if found else None


def _jobs(conn: sqlite3.Connection, pushes: list[int], states: str) -> list[FireJob]:
    found = conn.execute(
        f"SELECT {JOB_COLUMNS} FROM pushes p JOIN apps a ON a.id = p.app_id WHERE p.id IN ({in_list(pushes)}) "
        f"AND p.fallback_state IN ({states}) "
        # Judging a broadcast before all its targets are known would skip the rest.
        "AND p.id NOT IN (SELECT push FROM broadcasts WHERE done = 0) ORDER BY p.id"
    ).fetchall()
    return [FireJob.from_row(row) for row in found]


def recipients(conn: sqlite3.Connection, jobs: list[FireJob]) -> dict[int, list[Recipient]]:
    out: dict[int, list[Recipient]] = {job.push: [] for job in jobs}
    by_app: dict[int, list[int]] = {}
    for job in jobs:
        by_app.setdefault(job.app_id, []).append(job.push)
    for app_id, pushes in by_app.items():
        for start in range(0, len(pushes), CHUNK):
            found = conn.execute(
                "SELECT t.push, t.token, coalesce(d.phone, ''), t.arrived_at IS NOT NULL, "
                f"t.clicked_at IS NOT NULL, d.notifications_enabled, t.outcome IN ({_FINAL_FAILURES}) FROM targets t "
                "LEFT JOIN devices d ON d.app_id=? AND d.token=t.token "
                f"WHERE t.push IN ({in_list(pushes[start : start + CHUNK])}) ORDER BY t.push, t.seq",
                (app_id,),
            ).fetchall()
            for r in found:
                out[r[0]].append(
                    Recipient(r[1], r[2], bool(r[3]), bool(r[4]), None if r[5] is None else bool(r[5]), bool(r[6]))
                )
    return out


def reserve(
    conn: sqlite3.Connection, job: FireJob, phones: tuple[str, ...], window: RateWindow, now: float
) -> tuple[list[str], int]:
    """One push's part of Store.reserve_sms_many, inside the caller's transaction: three
    statements per CHUNK phones (earlier records of this push, the rate-limit counts of each
    phone, one insert), not three per phone. The rules are the engine's (window.verdict)."""
    info = job.sms_info
    key = window.content_key(info)
    params = json.dumps(list(info.sms_template_params), ensure_ascii=False)
    phones = tuple(dict.fromkeys(phones))  # one record per (push, phone), even if named twice
    to_send: list[str] = []
    limited = 0
    for lo in range(0, len(phones), CHUNK):
        chunk = phones[lo : lo + CHUNK]
        marks = ",".join("?" * len(chunk))
        # Judged before an interruption: at most one SMS per (push, phone). A record that was
        # reserved but never dispatched is still to be sent.
        prior = dict(
            conn.execute(f"SELECT phone, status FROM sms_records WHERE push=? AND phone IN ({marks})", (job.push, *chunk))
        )
        fresh = [phone for phone in chunk if phone not in prior]
        to_send += [phone for phone in chunk if prior.get(phone) == SmsStatus.RESERVED]
        if not fresh:
            continue
        # In-flight records count as sent now; answered ones from when they were sent.
        marks = ",".join("?" * len(fresh))
        counts = {
            phone: (sent_today, last_same)
            for phone, sent_today, last_same in conn.execute(
                "SELECT phone, coalesce(sum(created_at >= ?), 0), max(CASE WHEN content_key=? THEN "
                f"(CASE WHEN status IN ({_IN_FLIGHT_SQL}) THEN ? ELSE coalesce(sent_at, dispatched_at, created_at) END) "
                f"END) FROM sms_records WHERE app_id=? AND phone IN ({marks}) AND status IN ({_COUNTED_SQL}) "
                f"AND (created_at >= min(?, ?) OR status IN ({_IN_FLIGHT_SQL}) OR sent_at >= ?) GROUP BY phone",
                (
                    window.day_start,
                    key,
                    now,
                    job.app_id,
                    *fresh,
                    window.day_start,
                    window.same_content_since,
                    window.same_content_since,
                ),
            )
        }
        rows: list[tuple[Any, ...]] = []
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
        conn.executemany(
            "INSERT INTO sms_records (app_id, push, phone, status, content_key, sms_app_id, template_id, "
            "sign_name, params, rate_limit_rule, created_at) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            rows,
        )
    return to_send, limited


def dispatch(conn: sqlite3.Connection, records: list[tuple[int, str]], now: float) -> list[bool]:
    """RESERVED -> SENDING for each (push row id, phone): one write per provider call. Answers,
    per record, whether this call moved it (False: another fire already dispatched it)."""
    (reserved,) = guard(SMS_TRANSITIONS, SmsStatus.SENDING, SmsStatus.RESERVED)
    sending = int(SmsStatus.SENDING)
    return [
        conn.execute(
            "UPDATE sms_records SET status=?, dispatched_at=? WHERE push=? AND phone=? AND status=?",
            (sending, now, push, phone, int(reserved)),
        ).rowcount
        == 1
        for push, phone in records
    ]


def finish_sms(conn: sqlite3.Connection, outcomes: list[tuple[int, SmsOutcome]], now: float) -> None:
    by_status: dict[SmsStatus, list[tuple[Any, ...]]] = {}
    for push, o in outcomes:
        by_status.setdefault(o.status, []).append(
            (int(o.status), o.code, o.message, o.serial_no, o.fee, o.rate_limit_rule, now, push, o.phone_number)
        )
    for status, changes in by_status.items():
        allowed = in_list(guard(SMS_TRANSITIONS, status, SmsStatus.SENDING))
        conn.executemany(
            "UPDATE sms_records SET status=?, provider_code=?, provider_message=?, serial_no=?, fee=?, "
            f"rate_limit_rule=?, sent_at=? WHERE push=? AND phone=? AND status IN ({allowed})",
            changes,
        )
    _apply_pending_receipts(conn, [(o.serial_no, o.phone_number) for _, o in outcomes if o.serial_no])


def finish_fallbacks(conn: sqlite3.Connection, finished: list[tuple[FireJob, int]], now: float) -> None:
    (firing,) = guard(FALLBACK_TRANSITIONS, FallbackState.DONE, FallbackState.FIRING)
    done = int(FallbackState.DONE)
    conn.executemany(
        "UPDATE pushes SET fallback_state=?, fallback_ended_at=?, no_phone_count=? WHERE id=? AND fallback_state=?",
        [(done, now, no_phone, job.push, int(firing)) for job, no_phone in finished],
    )


def list_records(
    conn: sqlite3.Connection, app_id: int, flt: SmsRecordFilter, before: tuple[float, int] | None, limit: int
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
        where.append(f"r.status IN ({in_list(flt.statuses)})")
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
        f"SELECT {SMS_COLUMNS} FROM sms_records r JOIN pushes p ON p.id = r.push "
        f"WHERE {' AND '.join(where)} ORDER BY r.created_at DESC, r.id DESC LIMIT ?"
    )
    args.append(limit)
    return [rows.sms_record(r) for r in conn.execute(sql, args).fetchall()]


def _apply_receipt(conn: sqlite3.Connection, rc: DeliveryReceipt) -> int:
    status = SmsStatus.DELIVERED if rc.delivered else SmsStatus.UNDELIVERED
    allowed = in_list(guard(SMS_TRANSITIONS, status))
    return conn.execute(
        "UPDATE sms_records SET status=?, received_at=?, report_code=?, report_description=? "
        # `serial_no != ''` lets SQLite use the partial index sms_by_serial.
        f"WHERE serial_no=? AND serial_no != '' AND phone=? AND status IN ({allowed})",
        (int(status), rc.receive_time, rc.code, rc.description, rc.serial_no, rc.phone_number),
    ).rowcount


def apply_receipts(conn: sqlite3.Connection, receipts: list[DeliveryReceipt]) -> int:
    matched = 0
    for rc in receipts:
        changed = _apply_receipt(conn, rc)
        matched += changed
        if changed or not rc.serial_no:
            continue
        known = conn.execute(
            "SELECT 1 FROM sms_records WHERE serial_no=? AND serial_no != '' AND phone=?", (rc.serial_no, rc.phone_number)
        ).fetchone()
        if known is None:  # no record has this serial number yet: keep it for when one does
            conn.execute(
                "INSERT OR REPLACE INTO pending_receipts (serial_no, phone, delivered, receive_time, code, description) "
                "VALUES (?,?,?,?,?,?)",
                (rc.serial_no, rc.phone_number, int(rc.delivered), rc.receive_time, rc.code, rc.description),
            )
    return matched


def _apply_pending_receipts(conn: sqlite3.Connection, written: list[tuple[str, str]]) -> None:
    """Apply the kept receipts of the (serial number, phone) pairs just written."""
    if not written or conn.execute("SELECT 1 FROM pending_receipts LIMIT 1").fetchone() is None:
        return
    for serial_no, phone in written:
        row = conn.execute(
            "SELECT delivered, receive_time, code, description FROM pending_receipts WHERE serial_no=? AND phone=?",
            (serial_no, phone),
        ).fetchone()
        if row is not None:
            _apply_receipt(conn, DeliveryReceipt(phone, serial_no, bool(row[0]), row[1], row[2], row[3]))
            conn.execute("DELETE FROM pending_receipts WHERE serial_no=? AND phone=?", (serial_no, phone))


def sms_sources(conn: sqlite3.Connection) -> list[tuple[str, bytes, str]]:
    return conn.execute(
        "SELECT DISTINCT a.access_id, a.sms_credentials, r.sms_app_id FROM sms_records r "
        "JOIN apps a ON a.id = r.app_id WHERE a.sms_credentials IS NOT NULL "
        f"AND r.status = {int(SmsStatus.SENT)}"
    ).fetchall()
