"""The SMS provider's delivery receipts on PostgreSQL, as store/sqlite/fires.py: a receipt
whose record has no serial number yet (the callback beat the answer of the call) is kept in
`pending_receipts` and applied in the transaction that writes the serial number.

Across instances the receipt and the answer may be written at the same moment on two
instances; both take the transaction-level advisory lock of the (serial number, phone) first,
so the later one sees what the earlier one committed and the receipt is applied either way.
"""

from __future__ import annotations

import psycopg

from ...engine.states import SMS_TRANSITIONS, sources_of
from ...model import DeliveryReceipt, SmsStatus
from .database import lock_keys

Conn = psycopg.AsyncConnection


def _key(serial_no: str, phone: str) -> str:
    return f"receipt:{serial_no}:{phone}"


async def _apply(conn: Conn, rc: DeliveryReceipt) -> int:
    status = SmsStatus.DELIVERED if rc.delivered else SmsStatus.UNDELIVERED
    allowed = [int(s) for s in sources_of(SMS_TRANSITIONS, status)]
    cur = await conn.execute(
        "UPDATE sms_records SET status=%s, received_at=%s, report_code=%s, report_description=%s "
        "WHERE serial_no=%s AND serial_no != '' AND phone=%s AND status = ANY(%s)",
        (int(status), rc.receive_time, rc.code, rc.description, rc.serial_no, rc.phone_number, allowed),
    )
    return cur.rowcount


async def apply_receipts(conn: Conn, receipts: list[DeliveryReceipt]) -> int:
    """Apply what matches; keep, for later, a receipt whose serial number no record has yet."""
    await lock_keys(conn, [_key(rc.serial_no, rc.phone_number) for rc in receipts if rc.serial_no])
    matched = 0
    for rc in receipts:
        changed = await _apply(conn, rc)
        matched += changed
        if changed or not rc.serial_no:
            continue
        cur = await conn.execute(
            "SELECT 1 FROM sms_records WHERE serial_no=%s AND serial_no != '' AND phone=%s", (rc.serial_no, rc.phone_number)
        )
        if await cur.fetchone() is None:
            await conn.execute(
                "INSERT INTO pending_receipts (serial_no, phone, delivered, receive_time, code, description) "
                "VALUES (%s,%s,%s,%s,%s,%s) ON CONFLICT (serial_no, phone) DO UPDATE SET delivered=excluded.delivered, "
                "receive_time=excluded.receive_time, code=excluded.code, description=excluded.description",
                (rc.serial_no, rc.phone_number, rc.delivered, rc.receive_time, rc.code, rc.description),
            )
    return matched


async def lock_written(conn: Conn, written: list[tuple[str, str]]) -> None:
    """Before serial numbers are written: the locks apply_receipts takes for them."""
    await lock_keys(conn, [_key(s, p) for s, p in written])


async def apply_pending(conn: Conn, written: list[tuple[str, str]]) -> None:
    """After the serial numbers `written` (serial number, phone) are: apply their kept receipts."""
    if not written:
        return
    cur = await conn.execute(
        "DELETE FROM pending_receipts r USING unnest(%s::text[], %s::text[]) AS w(serial_no, phone) "
        "WHERE r.serial_no = w.serial_no AND r.phone = w.phone "
        "RETURNING r.serial_no, r.phone, r.delivered, r.receive_time, r.code, r.description",
        ([s for s, _ in written], [p for _, p in written]),
    )
    for serial_no, phone, delivered, receive_time, code, description in await cur.fetchall():
        await _apply(conn, DeliveryReceipt(phone, serial_no, delivered, receive_time, code, description))
