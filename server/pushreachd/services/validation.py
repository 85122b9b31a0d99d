"""Request validation. Every check names the field path of the request it judges, so the API
can answer INVALID_ARGUMENT with a BadRequest that says exactly what to fix.

Drafts are plain values as they arrive (enums as ints, 0 meaning "unspecified"); validation
turns a draft into a domain object or raises InvalidArgument listing every violation.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .. import limits
from ..channels import apns
from ..errors import FieldViolation, InvalidArgument
from ..model import (
    CHANNEL_RULE_NAMES,
    AccountPushType,
    AudienceType,
    Channel,
    Environment,
    EventIn,
    EventType,
    MessageType,
    PushSpec,
    SmsInfo,
    TagItem,
    TagOperator,
    TagRule,
    TriggerCondition,
    VendorOptions,
)
from ..phone import InvalidPhoneNumber, normalize_phone
from .receipts import ReceiptClaims, encode_receipt


@dataclass
class AndroidDraft:
    """TPNS `message.android` vendor fields as they arrive."""

    hw_ch_id: str = ""
    hw_category: str = ""
    hw_importance: int = 0
    xm_ch_id: str = ""
    oppo_ch_id: str = ""
    oppo_category: str = ""
    vivo_ch_id: str = ""
    vivo_category: str = ""


@dataclass
class TagItemDraft:
    tags: list[str] = field(default_factory=list)
    is_not: bool = False
    tags_operator: int = 0  # TagOperator; 0: OR
    items_operator: int = 0
    tag_type: str = ""


@dataclass
class TagRuleDraft:
    tag_items: list[TagItemDraft] = field(default_factory=list)
    operator: int = 0
    is_not: bool = False


# TPNS's tag types: only custom tags (set through the tag API) exist here; the automatic ones
# (province, active day, app version, ...) are data TPNS collected from its own SDK.
CUSTOM_TAG_TYPES = ("", "xg_user_define")


@dataclass
class PushDraft:
    request_id: str = ""
    audience_type: int = 0
    token_list: list[str] = field(default_factory=list)
    account_list: list[str] = field(default_factory=list)
    has_message: bool = False
    title: str = ""
    content: str = ""
    message_type: int = 0
    expire_time: int = 0
    multi_pkg: bool = False
    environment: int = 0
    resend_by_sms: bool = False
    has_sms_info: bool = False
    delay_trigger_time: int = 0
    trigger_condition: int = 0
    sms_sign_name: str = ""
    sms_template_id: str = ""
    sms_app_id: str = ""
    sms_template_params: list[str] = field(default_factory=list)
    android: AndroidDraft | None = None
    channel_rules: list[tuple[str, bool]] = field(default_factory=list)  # (channel, disable)
    tag_rules: list[TagRuleDraft] = field(default_factory=list)
    account_push_type: int = 0  # AccountPushType; 0: ALL_DEVICES
    collapse_id: str = ""
    early_on_push_failure: bool = False


@dataclass(slots=True)
class EventDraft:
    push_id: str = ""
    token: str = ""
    event_type: int = 0
    event_time: float | None = None  # None: when received


class Violations:
    """Collects violations; raise_if_any() at the end reports them all at once."""

    def __init__(self) -> None:
        self.items: list[FieldViolation] = []

    def add(self, path: str, description: str) -> None:
        self.items.append(FieldViolation(path, description))

    def raise_if_any(self) -> None:
        if self.items:
            raise InvalidArgument(self.items)


_TOKEN = re.compile(r"[!-~]+")  # printable ASCII without spaces


def check_token(v: Violations, path: str, token: str) -> None:
    if not token:
        v.add(path, "required")
    elif len(token) > limits.MAX_TOKEN_LENGTH:
        v.add(path, f"at most {limits.MAX_TOKEN_LENGTH} characters")
    elif _TOKEN.fullmatch(token) is None:
        v.add(path, "printable ASCII without spaces only")


_TEXT_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")  # below 0x20, except tab, LF and CR


def check_text(v: Violations, path: str, text: str, max_len: int, *, required: bool = True) -> None:
    if not text.strip():
        if required:
            v.add(path, "required")
    elif len(text) > max_len:
        v.add(path, f"at most {max_len} characters")
    elif _TEXT_CONTROL.search(text):
        v.add(path, "control characters are not allowed")


def check_request_id(v: Violations, request_id: str) -> None:
    if len(request_id) > limits.MAX_REQUEST_ID_LENGTH:
        v.add("request_id", f"at most {limits.MAX_REQUEST_ID_LENGTH} characters")


def _enum(v: Violations, path: str, value: int, enum_cls: type, default=None):  # type: ignore[no-untyped-def]
    if value == 0:
        if default is None:
            v.add(path, "required")
        return default
    try:
        return enum_cls(value)
    except ValueError:
        v.add(path, f"unknown value {value}")
        return default


def validate_push(d: PushDraft, min_delay_seconds: int) -> PushSpec:
    v = Violations()
    check_request_id(v, d.request_id)
    audience = _enum(v, "audience_type", d.audience_type, AudienceType)
    rules: tuple[TagRule, ...] = ()
    if audience is not None:
        if audience.broadcast:
            rules = _check_broadcast(v, audience, d)
        else:
            _check_audience(v, audience, d)
            if d.tag_rules:
                v.add("tag_rules", f"must be empty for {audience.name}")
    if not d.has_message:
        v.add("message", "required")
    else:
        check_text(v, "message.title", d.title, limits.MAX_TITLE_LENGTH)
        check_text(v, "message.content", d.content, limits.MAX_CONTENT_LENGTH)
        if len(d.title.encode()) + len(d.content.encode()) > limits.MAX_MESSAGE_BYTES:
            v.add("message", f"title and content together at most {limits.MAX_MESSAGE_BYTES} bytes of UTF-8")
    account_push_type = _enum(
        v, "account_push_type", d.account_push_type, AccountPushType, AccountPushType.ALL_DEVICES
    )
    if d.account_push_type and audience is not None and not audience.by_account:
        v.add("account_push_type", f"only for ACCOUNT and ACCOUNT_LIST, not {audience.name}")
    message_type = _enum(v, "message_type", d.message_type, MessageType, MessageType.NOTIFY)
    environment = _enum(v, "environment", d.environment, Environment, Environment.PRODUCT)
    if d.expire_time > limits.MAX_EXPIRE_SECONDS or d.expire_time < 0:
        v.add("expire_time", f"between 0 and {limits.MAX_EXPIRE_SECONDS} seconds")
    sms_info = _sms_info(v, d, min_delay_seconds) if d.resend_by_sms else None
    vendor = _vendor_options(v, d)
    if d.has_message and not any(i.field.startswith("message") for i in v.items):
        size = len(apns.payload(_SizingSpec(d.title, d.content), "0" * 20, "0" * _LONGEST_RECEIPT))
        if size > apns.MAX_PAYLOAD_BYTES:
            v.add(
                "message",
                f"too large for APNs: with the receipt the device payload is up to {size} bytes, at most "
                f"{apns.MAX_PAYLOAD_BYTES} (shorten title or content by {size - apns.MAX_PAYLOAD_BYTES} bytes)",
            )
    if len(d.collapse_id.encode()) > limits.MAX_COLLAPSE_ID_BYTES:
        v.add("collapse_id", f"at most {limits.MAX_COLLAPSE_ID_BYTES} bytes (APNs apns-collapse-id)")
    elif _CONTROL.search(d.collapse_id):
        v.add("collapse_id", "must not contain control characters")
    v.raise_if_any()
    return PushSpec(
        audience_type=audience,
        token_list=tuple(d.token_list),
        account_list=tuple(d.account_list),
        title=d.title,
        content=d.content,
        message_type=message_type,
        expire_time=d.expire_time or limits.DEFAULT_EXPIRE_SECONDS,
        multi_pkg=d.multi_pkg,
        environment=environment,
        resend_by_sms=d.resend_by_sms,
        sms_info=sms_info,
        vendor=vendor,
        tag_rules=rules,
        account_push_type=account_push_type,
        collapse_id=d.collapse_id,
    )


@dataclass(frozen=True, slots=True)
class _SizingSpec:
    """What apns.payload reads of a push, to size the largest payload a device would get."""

    title: str
    content: str
    message_type: MessageType = MessageType.NOTIFY


# The longest receipt a target gets (its token can be MAX_TOKEN_LENGTH characters).
_LONGEST_RECEIPT = len(
    encode_receipt(bytes(32), ReceiptClaims(2**32 - 1, 2**16, "z" * 20, "z" * limits.MAX_TOKEN_LENGTH, 2**32 - 1))
)

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_CHANNEL_ID = re.compile(r"[!-~]{1,64}")
_CATEGORY = re.compile(r"[A-Z][A-Z_]{0,31}")


def _vendor_options(v: Violations, d: PushDraft) -> VendorOptions | None:
    """TPNS's channel_rules and message.android fields; None when none was given."""
    disabled: set[Channel] = set()
    seen: set[str] = set()
    if len(d.channel_rules) > len(CHANNEL_RULE_NAMES):
        v.add("channel_rules", f"at most {len(CHANNEL_RULE_NAMES)} rules, one per channel")
    else:
        for i, (name, disable) in enumerate(d.channel_rules):
            path = f"channel_rules[{i}].channel"
            if name not in CHANNEL_RULE_NAMES:
                v.add(path, f"unknown channel; one of {', '.join(CHANNEL_RULE_NAMES)}")
            elif name in seen:
                v.add(path, "this channel already has a rule")
            else:
                seen.add(name)
                if disable:
                    disabled.add(CHANNEL_RULE_NAMES[name])
    a = d.android
    if a is None:
        return VendorOptions(disabled_channels=frozenset(disabled)) if disabled else None
    for name in ("hw_ch_id", "xm_ch_id", "oppo_ch_id"):
        value = getattr(a, name)
        if value and _CHANNEL_ID.fullmatch(value) is None:
            v.add(f"message.android.{name}", "at most 64 printable ASCII characters without spaces")
    for name in ("hw_category", "oppo_category", "vivo_category"):
        value = getattr(a, name)
        if value and _CATEGORY.fullmatch(value) is None:
            v.add(f"message.android.{name}", "a category in capitals, e.g. WORK, ACCOUNT, ORDER (at most 32)")
    if a.hw_importance not in (0, 1, 2):
        v.add("message.android.hw_importance", "0 (unset), 1 (marketing) or 2 (service)")
    if a.vivo_ch_id not in ("", "0", "1"):
        v.add("message.android.vivo_ch_id", '"0" (operational), "1" (system) or empty')
    return VendorOptions(
        disabled_channels=frozenset(disabled),
        hw_ch_id=a.hw_ch_id,
        hw_category=a.hw_category,
        hw_importance=a.hw_importance,
        xm_ch_id=a.xm_ch_id,
        oppo_ch_id=a.oppo_ch_id,
        oppo_category=a.oppo_category,
        vivo_ch_id=a.vivo_ch_id,
        vivo_category=a.vivo_category,
    )


def _check_broadcast(v: Violations, audience: AudienceType, d: PushDraft) -> tuple[TagRule, ...]:
    for name in ("token_list", "account_list"):
        if getattr(d, name):
            v.add(name, f"must be empty for {audience.name}")
    if audience is AudienceType.ALL:
        if d.tag_rules:
            v.add("tag_rules", "must be empty for ALL")
        return ()
    if not d.tag_rules:
        v.add("tag_rules", "required for TAG")
        return ()
    if len(d.tag_rules) > limits.MAX_TAG_RULES:
        v.add("tag_rules", f"at most {limits.MAX_TAG_RULES} rules")
        return ()
    rules = []
    for i, r in enumerate(d.tag_rules):
        path = f"tag_rules[{i}]"
        operator = _enum(v, f"{path}.operator", r.operator, TagOperator, TagOperator.OR)
        if not r.tag_items:
            v.add(f"{path}.tag_items", "required")
            continue
        if len(r.tag_items) > limits.MAX_TAG_ITEMS:
            v.add(f"{path}.tag_items", f"at most {limits.MAX_TAG_ITEMS} items")
            continue
        items = []
        for j, it in enumerate(r.tag_items):
            ipath = f"{path}.tag_items[{j}]"
            tags_op = _enum(v, f"{ipath}.tags_operator", it.tags_operator, TagOperator, TagOperator.OR)
            items_op = _enum(v, f"{ipath}.items_operator", it.items_operator, TagOperator, TagOperator.OR)
            if it.tag_type not in CUSTOM_TAG_TYPES:
                v.add(f"{ipath}.tag_type", f"{it.tag_type!r} is not offered: only custom tags (xg_user_define)")
            if not it.tags:
                v.add(f"{ipath}.tags", "required")
            elif len(it.tags) > limits.MAX_TAGS_PER_ITEM:
                v.add(f"{ipath}.tags", f"at most {limits.MAX_TAGS_PER_ITEM} tags")
            else:
                for k, tag in enumerate(it.tags):
                    check_tag(v, f"{ipath}.tags[{k}]", tag)
            items.append(TagItem(tuple(it.tags), it.is_not, tags_op, items_op, "xg_user_define"))
        rules.append(TagRule(tuple(items), operator, r.is_not))
    return tuple(rules)


def check_tag(v: Violations, path: str, tag: str) -> None:
    if not tag.strip():
        v.add(path, "required")
    elif len(tag) > limits.MAX_TAG_LENGTH:
        v.add(path, f"at most {limits.MAX_TAG_LENGTH} characters")
    elif any(ord(ch) < 0x20 for ch in tag):
        v.add(path, "control characters are not allowed")


def _check_audience(v: Violations, audience: AudienceType, d: PushDraft) -> None:
    used, other = ("account_list", "token_list") if audience.by_account else ("token_list", "account_list")
    values = d.account_list if audience.by_account else d.token_list
    if getattr(d, other):
        v.add(other, f"must be empty for {audience.name}")
    single = audience in (AudienceType.TOKEN, AudienceType.ACCOUNT)
    if not values:
        v.add(used, "required")
    elif single and len(values) != 1:
        v.add(used, f"exactly one entry for {audience.name}")
    elif len(values) > limits.MAX_TARGETS:
        v.add(used, f"at most {limits.MAX_TARGETS} entries")
    else:
        for i, value in enumerate(values):
            if audience.by_account:
                check_text(v, f"{used}[{i}]", value, limits.MAX_ACCOUNT_LENGTH)
            else:
                check_token(v, f"{used}[{i}]", value)


def _sms_info(v: Violations, d: PushDraft, min_delay: int) -> SmsInfo | None:
    if not d.has_sms_info:
        v.add("sms_info", "required when resend_by_sms is true")
        return None
    if not min_delay <= d.delay_trigger_time <= limits.MAX_DELAY_SECONDS:
        v.add(
            "sms_info.delay_trigger_time",
            f"between {min_delay} and {limits.MAX_DELAY_SECONDS} seconds"
            f" (the service's min_delay_seconds setting sets the lower bound)",
        )
    condition = _enum(v, "sms_info.trigger_condition", d.trigger_condition, TriggerCondition)
    check_text(v, "sms_info.sms_sign_name", d.sms_sign_name, limits.MAX_SIGN_NAME_LENGTH, required=False)
    if not d.sms_template_id:
        v.add("sms_info.sms_template_id", "required")
    elif not d.sms_template_id.isascii() or not d.sms_template_id.isdigit():
        v.add("sms_info.sms_template_id", "digits only")
    elif len(d.sms_template_id) > limits.MAX_TEMPLATE_ID_LENGTH:
        v.add("sms_info.sms_template_id", f"at most {limits.MAX_TEMPLATE_ID_LENGTH} characters")
    check_text(v, "sms_info.sms_app_id", d.sms_app_id, limits.MAX_SMS_APP_ID_LENGTH)
    if len(d.sms_template_params) > limits.MAX_TEMPLATE_PARAMS:
        v.add("sms_info.sms_template_params", f"at most {limits.MAX_TEMPLATE_PARAMS} entries")
    else:
        for i, param in enumerate(d.sms_template_params):
            if len(param) > limits.MAX_TEMPLATE_PARAM_LENGTH:
                v.add(f"sms_info.sms_template_params[{i}]", f"at most {limits.MAX_TEMPLATE_PARAM_LENGTH} characters")
    if condition is None:
        return None
    return SmsInfo(
        delay_trigger_time=d.delay_trigger_time,
        trigger_condition=condition,
        sms_sign_name=d.sms_sign_name,
        sms_template_id=d.sms_template_id,
        sms_app_id=d.sms_app_id,
        sms_template_params=tuple(d.sms_template_params),
        early_on_push_failure=d.early_on_push_failure,
    )


def validate_phone(v: Violations, path: str, raw: str) -> str:
    if not raw.strip():
        v.add(path, "required")
        return ""
    try:
        return normalize_phone(raw)
    except InvalidPhoneNumber as exc:
        v.add(path, str(exc))
        return ""


_EVENT_TYPES = {int(t): t for t in EventType}
_PUSH_EVENT_TYPES = frozenset(t for t in EventType if t.about_push)


def validate_event(v: Violations, prefix: str, d: EventDraft, now: float) -> EventIn | None:
    """Check one event; violations go to `v` under `prefix` ("" or "events[3].")."""
    # The common case first, building no field paths: exactly the checks below, all passed.
    event_type = _EVENT_TYPES.get(d.event_type)
    token, push_id = d.token, d.push_id
    event_time = now if d.event_time is None else d.event_time
    if (
        event_type is not None
        and 0 < len(token) <= limits.MAX_TOKEN_LENGTH
        and _TOKEN.fullmatch(token) is not None
        and (push_id or event_type not in _PUSH_EVENT_TYPES)
        and len(push_id) <= 64
        and 0 < event_time <= now + limits.MAX_EVENT_FUTURE_SECONDS
    ):
        return EventIn(push_id=push_id, token=token, event_type=event_type, event_time=event_time)
    before = len(v.items)
    event_type = _enum(v, f"{prefix}event_type", d.event_type, EventType)
    check_token(v, f"{prefix}token", d.token)
    if event_type is not None and event_type.about_push and not d.push_id:
        v.add(f"{prefix}push_id", f"required for {event_type.name}")
    elif len(d.push_id) > 64:
        v.add(f"{prefix}push_id", "at most 64 characters")
    event_time = now if d.event_time is None else d.event_time
    if event_time > now + limits.MAX_EVENT_FUTURE_SECONDS:
        v.add(f"{prefix}event_time", "more than 5 minutes in the future")
    elif event_time <= 0:
        v.add(f"{prefix}event_time", "must be after 1970")
    if len(v.items) > before or event_type is None:
        return None
    return EventIn(push_id=d.push_id, token=d.token, event_type=event_type, event_time=event_time)


def page_size(v: Violations, value: int, path: str = "page_size") -> int:
    if value < 0 or value > limits.MAX_PAGE_SIZE:
        v.add(path, f"between 0 and {limits.MAX_PAGE_SIZE}")
        return limits.DEFAULT_PAGE_SIZE
    return value or limits.DEFAULT_PAGE_SIZE
