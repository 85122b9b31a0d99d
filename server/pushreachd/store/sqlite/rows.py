"""Rows to model types and back, and the small SQL helpers every concern uses."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import replace
from typing import Any

from ...model import (
    App,
    Channel,
    FallbackState,
    Push,
    PushReceipt,
    PushSpec,
    RateLimitPolicy,
    SmsRecord,
    SmsStatus,
    UnusedTarget,
    UnusedTargetReason,
)

CHUNK = 500  # row ids per `IN (...)` list

APP_COLUMNS = (
    "id, access_id, name, secret_verifier, created_at, sms_credentials, "
    "same_content_interval, daily_limit, time_zone, secret_sealed, "
    "(SELECT group_concat(channel) FROM channel_credentials c WHERE c.app_id = apps.id)"
)
PUSH_COLUMNS = (
    "p.id, p.app_id, p.push_id, p.request_id, p.spec, p.accepted_at, p.target_count, "
    "p.fallback_state, p.fallback_due_at, p.fallback_ended_at"
)
SMS_COLUMNS = (
    "r.id, p.push_id, r.phone, r.status, r.sms_app_id, r.template_id, r.sign_name, r.params, "
    "r.created_at, r.serial_no, r.provider_code, r.provider_message, r.fee, r.rate_limit_rule, "
    "r.sent_at, r.received_at, r.report_code, r.report_description"
)


def in_list(values: Iterable[Any]) -> str:
    """Integers for an `IN (...)` list (ints only: never caller text)."""
    return ",".join(str(int(v)) for v in values)


def app(row: tuple[Any, ...] | None) -> App | None:
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
        secret_sealed=row[9],
        channels=frozenset(Channel(int(c)) for c in row[10].split(",")) if row[10] else frozenset(),
    )


def push(row: tuple[Any, ...] | None, tokens: list[str] | None = None) -> Push | None:
    """A push from PUSH_COLUMNS; a token push's tokens (kept in targets) put back when given."""
    if row is None:
        return None
    spec = PushSpec.from_json(row[4])
    if tokens is not None and spec.audience_type.by_token:
        spec = replace(spec, token_list=tuple(tokens))
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


def sms_record(r: tuple[Any, ...]) -> SmsRecord:
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


def receipt_to_json(r: PushReceipt) -> str:
    return json.dumps(
        {
            "push_id": r.push_id,
            "target_count": r.target_count,
            "unused": [[u.value, int(u.reason)] for u in r.unused_targets],
            "accepted_at": r.accepted_at,
            "fallback_due_at": r.fallback_due_at,
        }
    )


def receipt_from_json(text: str) -> PushReceipt:
    d = json.loads(text)
    return PushReceipt(
        push_id=d["push_id"],
        target_count=d["target_count"],
        unused_targets=tuple(UnusedTarget(v, UnusedTargetReason(r)) for v, r in d["unused"]),
        accepted_at=d["accepted_at"],
        fallback_due_at=d["fallback_due_at"],
    )
