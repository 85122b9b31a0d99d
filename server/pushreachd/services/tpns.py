"""TPNS `/v3/push/app` bodies to pushreach push bodies: pure, no I/O.

TPNS spells enums as lower-case strings (`"token_list"`, `"notify"`, `"product"`) and
numbers `trigger_condition` 0, 1, 2 where pushreach's enum starts at 1 (0 is UNSPECIFIED).
`from_tpns` returns a dict in pushreach's field names with enum value names, ready for
`google.protobuf.json_format.ParseDict(body, PushRequest())`, and the TPNS fields it had to
leave out (pushreach has no equivalent), so the caller can say so.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

AUDIENCE_TYPES = {
    "token": "AUDIENCE_TYPE_TOKEN",
    "token_list": "AUDIENCE_TYPE_TOKEN_LIST",
    "account": "AUDIENCE_TYPE_ACCOUNT",
    "account_list": "AUDIENCE_TYPE_ACCOUNT_LIST",
}
UNSUPPORTED_AUDIENCES = ("all", "tag", "package_account_push")
MESSAGE_TYPES = {"notify": "MESSAGE_TYPE_NOTIFY", "message": "MESSAGE_TYPE_MESSAGE"}
ENVIRONMENTS = {"product": "ENVIRONMENT_PRODUCT", "dev": "ENVIRONMENT_DEV"}
# TPNS 0, 1, 2 -> pushreach 1, 2, 3
TRIGGER_CONDITIONS = {
    0: "TRIGGER_CONDITION_NOTIFICATION_DISABLED",
    1: "TRIGGER_CONDITION_NOT_ARRIVED",
    2: "TRIGGER_CONDITION_NOT_CLICKED",
}
_COPIED = ("token_list", "account_list", "expire_time", "multi_pkg", "resend_by_sms")
_SMS_COPIED = ("delay_trigger_time", "sms_sign_name", "sms_template_id", "sms_app_id", "sms_template_params")
_MESSAGE_COPIED = ("title", "content")


class TpnsBodyError(ValueError):
    """The body cannot be expressed as a pushreach push; the message names the field."""


def _enum(field: str, value: Any, table: Mapping[str, str]) -> str:
    if not isinstance(value, str) or value.lower() not in table:
        raise TpnsBodyError(f"{field}: {value!r} is not one of {', '.join(sorted(table))}")
    return table[value.lower()]


def from_tpns(body: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """(pushreach push body, TPNS fields that were ignored). Raises TpnsBodyError."""
    if not isinstance(body, Mapping):
        raise TpnsBodyError("the body must be a JSON object")
    out: dict[str, Any] = {}
    ignored: list[str] = []
    for key, value in body.items():
        if key in _COPIED:
            out[key] = value
        elif key == "audience_type":
            if isinstance(value, str) and value.lower() in UNSUPPORTED_AUDIENCES:
                raise TpnsBodyError(f"audience_type: {value!r} is not offered by pushreach")
            out[key] = _enum(key, value, AUDIENCE_TYPES)
        elif key == "message_type":
            out[key] = _enum(key, value, MESSAGE_TYPES)
        elif key == "environment":
            out[key] = _enum(key, value, ENVIRONMENTS)
        elif key == "message":
            if not isinstance(value, Mapping):
                raise TpnsBodyError("message: must be an object")
            out[key] = {k: value[k] for k in _MESSAGE_COPIED if k in value}
            ignored.extend(f"message.{k}" for k in value if k not in _MESSAGE_COPIED)
        elif key == "sms_info":
            if not isinstance(value, Mapping):
                raise TpnsBodyError("sms_info: must be an object")
            out[key] = _sms_info(value, ignored)
        else:
            ignored.append(key)
    return out, ignored


def _sms_info(info: Mapping[str, Any], ignored: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in info.items():
        if key in _SMS_COPIED:
            out[key] = value
        elif key == "trigger_condition":
            if isinstance(value, bool) or not isinstance(value, int) or value not in TRIGGER_CONDITIONS:
                raise TpnsBodyError(f"sms_info.trigger_condition: {value!r} is not 0, 1 or 2")
            out[key] = TRIGGER_CONDITIONS[value]
        else:
            ignored.append(f"sms_info.{key}")
    return out
