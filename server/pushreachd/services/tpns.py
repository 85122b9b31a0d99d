"""TPNS `/v3/push/app` bodies to pushreach push bodies: pure, no I/O.

The one mapping used by both `pushreach push --tpns` and the REST API's `POST /v3/push/app`.
TPNS spells enums as lower-case strings (`"token_list"`, `"notify"`, `"product"`, `"OR"`)
and numbers `trigger_condition` 0, 1, 2 where pushreach's enum starts at 1 (0 is
UNSPECIFIED). `from_tpns` returns a dict in pushreach's field names with enum value names,
ready for `google.protobuf.json_format.ParseDict(body, PushRequest())`, and the TPNS fields
it left out (pushreach has no equivalent), so the caller can say so.

Where TPNS changes what it was given, so does the mapping: an `expire_time` between 1 and
799 becomes 800 (TPNS's floor); `token` / `account` audiences keep only the first entry
of their list; `tag_list` (TPNS's older tag form) is used only when `tag_rules` is absent.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..model import CHANNEL_RULE_NAMES

AUDIENCE_TYPES = {
    "token": "AUDIENCE_TYPE_TOKEN",
    "token_list": "AUDIENCE_TYPE_TOKEN_LIST",
    "account": "AUDIENCE_TYPE_ACCOUNT",
    "account_list": "AUDIENCE_TYPE_ACCOUNT_LIST",
    "tag": "AUDIENCE_TYPE_TAG",
    "all": "AUDIENCE_TYPE_ALL",
}
UNSUPPORTED_AUDIENCES = ("package_account_push", "package_token_push")
MESSAGE_TYPES = {"notify": "MESSAGE_TYPE_NOTIFY", "message": "MESSAGE_TYPE_MESSAGE"}
ENVIRONMENTS = {"product": "ENVIRONMENT_PRODUCT", "dev": "ENVIRONMENT_DEV"}
TAG_OPERATORS = {"or": "TAG_OPERATOR_OR", "and": "TAG_OPERATOR_AND"}
# TPNS 0, 1, 2 -> pushreach 1, 2, 3
TRIGGER_CONDITIONS = {
    0: "TRIGGER_CONDITION_NOTIFICATION_DISABLED",
    1: "TRIGGER_CONDITION_NOT_ARRIVED",
    2: "TRIGGER_CONDITION_NOT_CLICKED",
}
ACCOUNT_PUSH_TYPES = {0: "ACCOUNT_PUSH_TYPE_LATEST_DEVICE", 1: "ACCOUNT_PUSH_TYPE_ALL_DEVICES"}
EXPIRE_FLOOR = 800  # TPNS: 0 < expire_time < 800 is raised to 800
_LISTS = ("token_list", "account_list")
_BOOLS = ("multi_pkg", "resend_by_sms")
_SMS_COPIED = ("delay_trigger_time", "sms_sign_name", "sms_template_id", "sms_app_id", "sms_template_params")
_MESSAGE_COPIED = ("title", "content")
# message.android fields the vendor channels use; TPNS's other Android fields are ignored.
_ANDROID_STRINGS = ("hw_ch_id", "hw_category", "xm_ch_id", "oppo_ch_id", "oppo_category", "vivo_ch_id", "vivo_category")
_ANDROID_INTS = ("hw_importance",)


class TpnsBodyError(ValueError):
    """The body cannot be expressed as a pushreach push; the message names the field."""

    def __init__(self, message: str, *, missing: bool = False) -> None:
        super().__init__(message)
        self.missing = missing  # a required field is absent (TPNS answers those apart)


def _enum(field: str, value: Any, table: Mapping[str, str]) -> str:
    if not isinstance(value, str) or value.lower() not in table:
        raise TpnsBodyError(f"{field}: {value!r} is not one of {', '.join(sorted(table))}")
    return table[value.lower()]


def _int(field: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TpnsBodyError(f"{field}: {value!r} is not an integer")
    return value


def _strings(field: str, value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise TpnsBodyError(f"{field}: must be an array of strings")
    return list(value)


def from_tpns(body: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """(pushreach push body, TPNS fields that were ignored). Raises TpnsBodyError."""
    if not isinstance(body, Mapping):
        raise TpnsBodyError("the body must be a JSON object")
    out: dict[str, Any] = {}
    ignored: list[str] = []
    for key, value in body.items():
        if key in _LISTS:
            out[key] = _strings(key, value)
        elif key in _BOOLS:
            if not isinstance(value, bool):
                raise TpnsBodyError(f"{key}: {value!r} is not true or false")
            out[key] = value
        elif key == "expire_time":
            seconds = _int(key, value)
            out[key] = EXPIRE_FLOOR if 0 <= seconds < EXPIRE_FLOOR else seconds
        elif key == "audience_type":
            if isinstance(value, str) and value.lower() in UNSUPPORTED_AUDIENCES:
                raise TpnsBodyError(f"audience_type: {value!r} is not offered by pushreach (no package upload)")
            out[key] = _enum(key, value, AUDIENCE_TYPES)
        elif key == "message_type":
            out[key] = _enum(key, value, MESSAGE_TYPES)
        elif key == "environment":
            out[key] = _enum(key, value, ENVIRONMENTS)
        elif key == "message":
            if not isinstance(value, Mapping):
                raise TpnsBodyError("message: must be an object")
            for k in _MESSAGE_COPIED:
                if k in value and not isinstance(value[k], str):
                    raise TpnsBodyError(f"message.{k}: must be a string")
            out[key] = {k: value[k] for k in _MESSAGE_COPIED if k in value}
            for k in value:
                if k == "android" and isinstance(value[k], Mapping):
                    out[key]["android"] = _android(value[k], ignored)
                elif k not in _MESSAGE_COPIED:
                    ignored.append(f"message.{k}")
        elif key == "sms_info":
            if not isinstance(value, Mapping):
                raise TpnsBodyError("sms_info: must be an object")
            out[key] = _sms_info(value, ignored)
        elif key == "channel_rules":
            out[key] = _channel_rules(value, ignored)
        elif key == "tag_rules":
            out[key] = _tag_rules(value)
        elif key == "tag_list":
            continue  # below: only when tag_rules is absent, as TPNS does
        elif key == "account_push_type":
            continue  # below: it needs the audience
        else:
            ignored.append(key)
    if "tag_list" in body:
        if "tag_rules" in body:
            ignored.append("tag_list")
        else:
            out["tag_rules"] = _tag_list(body["tag_list"])
    # TPNS: account pushes go to the latest device of each account unless account_push_type is 1.
    if out.get("audience_type") in ("AUDIENCE_TYPE_ACCOUNT", "AUDIENCE_TYPE_ACCOUNT_LIST"):
        kind = body.get("account_push_type", 0)
        if isinstance(kind, bool) or kind not in ACCOUNT_PUSH_TYPES:
            raise TpnsBodyError(f"account_push_type: {kind!r} is not 0 or 1")
        out["account_push_type"] = ACCOUNT_PUSH_TYPES[kind]
    elif "account_push_type" in body:
        ignored.append("account_push_type")
    # TPNS sends a token / account push to the first entry of its list only.
    for audience, field in (("AUDIENCE_TYPE_TOKEN", "token_list"), ("AUDIENCE_TYPE_ACCOUNT", "account_list")):
        if out.get("audience_type") == audience and len(out.get(field, ())) > 1:
            out[field] = out[field][:1]
    return out, ignored


def _android(android: Mapping[str, Any], ignored: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in android.items():
        if key in _ANDROID_STRINGS:
            if not isinstance(value, str):
                raise TpnsBodyError(f"message.android.{key}: must be a string")
            out[key] = value
        elif key in _ANDROID_INTS:
            out[key] = _int(f"message.android.{key}", value)
        else:
            ignored.append(f"message.android.{key}")
    return out


def _channel_rules(rules: Any, ignored: list[str]) -> list[dict[str, Any]]:
    """TPNS's channel_rules; rules for channels pushreach has no client for (xg, mz) are left out."""
    if not isinstance(rules, list):
        raise TpnsBodyError("channel_rules: must be an array")
    out = []
    for i, rule in enumerate(rules):
        if not isinstance(rule, Mapping) or not isinstance(rule.get("channel"), str):
            raise TpnsBodyError(f"channel_rules[{i}].channel: required, a string")
        disable = rule.get("disable", False)
        if not isinstance(disable, bool):
            raise TpnsBodyError(f"channel_rules[{i}].disable: {disable!r} is not true or false")
        if rule["channel"] in CHANNEL_RULE_NAMES:
            out.append({"channel": rule["channel"], "disable": disable})
        else:
            ignored.append(f"channel_rules[{i}]")
    return out


def _sms_info(info: Mapping[str, Any], ignored: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in info.items():
        if key == "sms_template_params":
            out[key] = _strings(f"sms_info.{key}", value)
        elif key == "delay_trigger_time":
            out[key] = _int(f"sms_info.{key}", value)
        elif key in _SMS_COPIED:
            if not isinstance(value, str):
                raise TpnsBodyError(f"sms_info.{key}: must be a string")
            out[key] = value
        elif key == "trigger_condition":
            if isinstance(value, bool) or not isinstance(value, int) or value not in TRIGGER_CONDITIONS:
                raise TpnsBodyError(f"sms_info.trigger_condition: {value!r} is not 0, 1 or 2")
            out[key] = TRIGGER_CONDITIONS[value]
        else:
            ignored.append(f"sms_info.{key}")
    return out


def _tag_rules(rules: Any) -> list[dict[str, Any]]:
    if not isinstance(rules, list):
        raise TpnsBodyError("tag_rules: must be an array")
    out = []
    for i, rule in enumerate(rules):
        path = f"tag_rules[{i}]"
        if not isinstance(rule, Mapping):
            raise TpnsBodyError(f"{path}: must be an object")
        items = rule.get("tag_items")
        if not isinstance(items, list):
            raise TpnsBodyError(f"{path}.tag_items: must be an array", missing=items is None)
        r: dict[str, Any] = {"tag_items": [_tag_item(f"{path}.tag_items[{j}]", it) for j, it in enumerate(items)]}
        if "operator" in rule:
            r["operator"] = _enum(f"{path}.operator", rule["operator"], TAG_OPERATORS)
        if "is_not" in rule:
            r["is_not"] = _bool(f"{path}.is_not", rule["is_not"])
        out.append(r)
    return out


def _tag_item(path: str, item: Any) -> dict[str, Any]:
    if not isinstance(item, Mapping):
        raise TpnsBodyError(f"{path}: must be an object")
    out: dict[str, Any] = {"tags": _strings(f"{path}.tags", item.get("tags", []))}
    for key in ("tags_operator", "items_operator"):
        if key in item:
            out[key] = _enum(f"{path}.{key}", item[key], TAG_OPERATORS)
    if "is_not" in item:
        out["is_not"] = _bool(f"{path}.is_not", item["is_not"])
    if "tag_type" in item:
        if not isinstance(item["tag_type"], str):
            raise TpnsBodyError(f"{path}.tag_type: must be a string")
        out["tag_type"] = item["tag_type"]
    return out


def _tag_list(value: Any) -> list[dict[str, Any]]:
    """TPNS's older form `{"tags": [...], "op": "AND" | "OR"}`: one rule of one item."""
    if not isinstance(value, Mapping):
        raise TpnsBodyError("tag_list: must be an object with tags and op")
    item = {"tags": _strings("tag_list.tags", value.get("tags", []))}
    if "op" in value:
        item["tags_operator"] = _enum("tag_list.op", value["op"], TAG_OPERATORS)
    return [{"tag_items": [item]}]


def _bool(path: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise TpnsBodyError(f"{path}: {value!r} is not true or false")
    return value
