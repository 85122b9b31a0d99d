"""Domain types. Enum values equal the proto enum numbers, so conversion is int(x)."""

from __future__ import annotations

import enum
import hashlib
import json
from dataclasses import dataclass, field


class AudienceType(enum.IntEnum):
    TOKEN = 1
    TOKEN_LIST = 2
    ACCOUNT = 3
    ACCOUNT_LIST = 4
    TAG = 5  # devices whose tags match `tag_rules`, resolved in the background
    ALL = 6  # every device of the app, resolved in the background

    @property
    def by_account(self) -> bool:
        return self in (AudienceType.ACCOUNT, AudienceType.ACCOUNT_LIST)

    @property
    def by_token(self) -> bool:
        return self in (AudienceType.TOKEN, AudienceType.TOKEN_LIST)

    @property
    def broadcast(self) -> bool:
        """Targets found among the app's devices after acceptance, not listed in the request."""
        return self in (AudienceType.TAG, AudienceType.ALL)


class AccountPushType(enum.IntEnum):
    """Which devices of an account an account push reaches (TPNS `account_push_type`)."""

    LATEST_DEVICE = 1  # TPNS 0 (its default): the device bound to the account last
    ALL_DEVICES = 2  # TPNS 1; pushreach's default


class TagOperator(enum.IntEnum):
    """TPNS's "OR" / "AND" between tags, tag items or tag rules (proto `TagOperator`)."""

    OR = 1
    AND = 2


class MessageType(enum.IntEnum):
    NOTIFY = 1
    MESSAGE = 2


class Environment(enum.IntEnum):
    PRODUCT = 1
    DEV = 2


class TriggerCondition(enum.IntEnum):
    NOTIFICATION_DISABLED = 1
    NOT_ARRIVED = 2
    NOT_CLICKED = 3


class FallbackState(enum.IntEnum):
    NONE = 1
    PENDING = 2
    FIRING = 3
    DONE = 4
    CANCELLED = 5


class SmsStatus(enum.IntEnum):
    SENDING = 1  # dispatched: its provider call is under way

    SENT = 2
    DELIVERED = 3
    FAILED = 4
    RATE_LIMITED = 5
    UNKNOWN = 6
    UNDELIVERED = 7
    RESERVED = 8  # judged and counted, not yet handed to the provider

    @property
    def in_flight(self) -> bool:
        """Not yet answered: it counts as sent now for the rate limits."""
        return self in (SmsStatus.RESERVED, SmsStatus.SENDING)


class EventType(enum.IntEnum):
    ARRIVED = 1
    CLICKED = 2
    NOTIFICATION_DISABLED = 3
    NOTIFICATION_ENABLED = 4

    @property
    def about_push(self) -> bool:
        return self in (EventType.ARRIVED, EventType.CLICKED)


class EventOutcome(enum.IntEnum):
    ACCEPTED = 1
    DUPLICATE = 2
    UNKNOWN_PUSH = 3
    UNKNOWN_TOKEN = 4
    INVALID = 5


class Channel(enum.IntEnum):
    """How a device is reached (proto `Channel`, same numbers)."""

    APNS = 1
    FCM = 2
    HMS = 3
    HONOR = 4
    XIAOMI = 5
    OPPO = 6
    VIVO = 7
    WEBHOOK = 8
    LOG = 9


class PushOutcome(enum.IntEnum):
    """What became of one target's push (proto `PushOutcome`, same numbers)."""

    PENDING = 1  # accepted by us, not yet answered by the channel
    ACCEPTED = 2  # the channel took it (APNs 200, FCM name, vendor success)
    INVALID_TOKEN = 3  # the vendor says the token is gone: later pushes skip it
    FAILED = 4  # a permanent failure, with the vendor's code
    EXPIRED = 5  # the push expired before the channel took it
    NO_CHANNEL = 6  # the device's channel has no credentials for this app

    @property
    def final_failure(self) -> bool:
        """The device definitely cannot get this push (for early_on_push_failure)."""
        return self in (PushOutcome.INVALID_TOKEN, PushOutcome.FAILED, PushOutcome.EXPIRED, PushOutcome.NO_CHANNEL)


class StatisticsInterval(enum.IntEnum):
    """Width of the time buckets of GetStatistics (proto `StatisticsInterval`)."""

    HOUR = 1
    DAY = 2  # a calendar day in the request's time zone


class UnusedTargetReason(enum.IntEnum):
    DUPLICATE = 1
    ACCOUNT_HAS_NO_DEVICE = 2
    INVALID_TOKEN = 3  # the channel called the token invalid; skipped until registered again


@dataclass(frozen=True, slots=True)
class RateLimitPolicy:
    same_content_interval_seconds: int = 30
    daily_limit: int = 10
    time_zone: str = ""  # empty: the server's rate_limit_time_zone


@dataclass(frozen=True, slots=True)
class App:
    id: int  # internal row id; never shown
    access_id: str
    name: str
    secret_verifier: str
    created_at: float
    policy: RateLimitPolicy
    sms_credentials_blob: bytes | None = field(default=None, repr=False)
    # The secret key sealed under the master key, for TPNS's signature scheme (HMAC needs the
    # key itself); None for apps created before it existed, until their secret is rotated.
    secret_sealed: bytes | None = field(default=None, repr=False)
    # The push channels whose credentials are set (sealed in their own table).
    channels: frozenset[Channel] = frozenset()


@dataclass(frozen=True, slots=True)
class SmsInfo:
    delay_trigger_time: int
    trigger_condition: TriggerCondition
    sms_sign_name: str
    sms_template_id: str
    sms_app_id: str
    sms_template_params: tuple[str, ...]
    # pushreach's own: SMS at once for a phone none of whose devices can get the push.
    early_on_push_failure: bool = False


# TPNS's names for the channels in `channel_rules`, and ours.
CHANNEL_RULE_NAMES: dict[str, Channel] = {
    "apns": Channel.APNS,
    "fcm": Channel.FCM,
    "hw": Channel.HMS,
    "honor": Channel.HONOR,
    "xm": Channel.XIAOMI,
    "oppo": Channel.OPPO,
    "vivo": Channel.VIVO,
    "webhook": Channel.WEBHOOK,
}


@dataclass(frozen=True, slots=True)
class VendorOptions:
    """A push's per-vendor fields (TPNS `channel_rules` and `message.android.*_ch_id`...).

    Empty means "the app's default" (from the channel's credentials file), then the vendor's.
    """

    disabled_channels: frozenset[Channel] = frozenset()
    hw_ch_id: str = ""  # Huawei android.notification.channel_id
    hw_category: str = ""  # Huawei android.category (WORK, ACCOUNT, EXPRESS, MARKETING...)
    hw_importance: int = 0  # 1 marketing (LOW), 2 service/communication (NORMAL); Huawei and Honor
    xm_ch_id: str = ""  # Xiaomi extra.channel_id
    oppo_ch_id: str = ""  # OPPO notification.channel_id (private channel for service messages)
    oppo_category: str = ""  # OPPO notification.category (IM, ACCOUNT, ORDER, MARKETING...)
    vivo_ch_id: str = ""  # vivo classification: "0" operational, "1" system
    vivo_category: str = ""  # vivo category (IM, ACCOUNT, ORDER, MARKETING...)

    def is_default(self) -> bool:
        return self == VendorOptions()

    def to_dict(self) -> dict[str, object]:
        d: dict[str, object] = {
            name: getattr(self, name)
            for name in self.__slots__  # type: ignore[attr-defined]
            if name != "disabled_channels" and getattr(self, name)
        }
        if self.disabled_channels:
            d["disabled_channels"] = sorted(int(c) for c in self.disabled_channels)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, object]) -> VendorOptions:
        d = dict(d)
        disabled = frozenset(Channel(c) for c in d.pop("disabled_channels", ()))  # type: ignore[union-attr]
        return cls(disabled_channels=disabled, **d)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class TagItem:
    """TPNS `tag_items[]`: `tags` joined by `tags_operator`, negated when `is_not`."""

    tags: tuple[str, ...]
    is_not: bool = False
    tags_operator: TagOperator = TagOperator.OR
    items_operator: TagOperator = TagOperator.OR  # joins this item to the one before it
    tag_type: str = "xg_user_define"

    def to_dict(self) -> dict[str, object]:
        return {
            "tags": list(self.tags),
            "is_not": self.is_not,
            "tags_operator": int(self.tags_operator),
            "items_operator": int(self.items_operator),
            "tag_type": self.tag_type,
        }

    @classmethod
    def from_dict(cls, d: dict[str, object]) -> TagItem:
        return cls(
            tags=tuple(d["tags"]),  # type: ignore[arg-type]
            is_not=bool(d["is_not"]),
            tags_operator=TagOperator(d["tags_operator"]),
            items_operator=TagOperator(d["items_operator"]),
            tag_type=str(d["tag_type"]),
        )


@dataclass(frozen=True, slots=True)
class TagRule:
    """TPNS `tag_rules[]`: its items (AND binds tighter than OR), negated when `is_not`."""

    tag_items: tuple[TagItem, ...]
    operator: TagOperator = TagOperator.OR  # joins this rule to the one before it
    is_not: bool = False

    def to_dict(self) -> dict[str, object]:
        return {
            "tag_items": [i.to_dict() for i in self.tag_items],
            "operator": int(self.operator),
            "is_not": self.is_not,
        }

    @classmethod
    def from_dict(cls, d: dict[str, object]) -> TagRule:
        return cls(
            tag_items=tuple(TagItem.from_dict(i) for i in d["tag_items"]),  # type: ignore[union-attr]
            operator=TagOperator(d["operator"]),
            is_not=bool(d["is_not"]),
        )


@dataclass(frozen=True, slots=True)
class PushSpec:
    """A push body as the caller sent it (TPNS field names), after defaults are applied."""

    audience_type: AudienceType
    token_list: tuple[str, ...]
    account_list: tuple[str, ...]
    title: str
    content: str
    message_type: MessageType = MessageType.NOTIFY
    expire_time: int = 259200
    multi_pkg: bool = False
    environment: Environment = Environment.PRODUCT
    resend_by_sms: bool = False
    sms_info: SmsInfo | None = None
    vendor: VendorOptions | None = None  # None: no per-vendor fields given
    tag_rules: tuple[TagRule, ...] = ()  # for AudienceType.TAG only
    account_push_type: AccountPushType = AccountPushType.ALL_DEVICES
    collapse_id: str = ""  # APNs apns-collapse-id / FCM collapse_key; empty = none

    def to_json(self, *, tokens: bool = True) -> str:
        """The body as sorted compact JSON (what is stored, and what the fingerprint digests).
        Built by hand: `dataclasses.asdict` deep-copies every field and showed in the profile.
        `tokens=False` leaves token_list empty (the store keeps targets in their own table)."""
        info = self.sms_info
        d = {
            "account_list": list(self.account_list),
            "audience_type": int(self.audience_type),
            "content": self.content,
            "environment": int(self.environment),
            "expire_time": self.expire_time,
            "message_type": int(self.message_type),
            "multi_pkg": self.multi_pkg,
            "resend_by_sms": self.resend_by_sms,
            "sms_info": None
            if info is None
            else {
                "delay_trigger_time": info.delay_trigger_time,
                "sms_app_id": info.sms_app_id,
                "sms_sign_name": info.sms_sign_name,
                "sms_template_id": info.sms_template_id,
                "sms_template_params": list(info.sms_template_params),
                "trigger_condition": int(info.trigger_condition),
            },
            "title": self.title,
            "token_list": list(self.token_list) if tokens else [],
        }
        # Only when given, so bodies without vendor fields digest as they always did.
        if self.vendor is not None and not self.vendor.is_default():
            d["vendor"] = self.vendor.to_dict()
        if self.tag_rules:  # absent otherwise, so fingerprints of older pushes stay the same
            d["tag_rules"] = [r.to_dict() for r in self.tag_rules]
        if self.account_push_type is not AccountPushType.ALL_DEVICES:  # likewise
            d["account_push_type"] = int(self.account_push_type)
        if self.collapse_id:  # likewise
            d["collapse_id"] = self.collapse_id
        if info is not None and info.early_on_push_failure:  # likewise
            d["sms_info"]["early_on_push_failure"] = True  # type: ignore[index]
        return json.dumps(d, sort_keys=True, separators=(",", ":"), ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> PushSpec:
        d = json.loads(text)
        info = d.pop("sms_info")
        vendor = d.pop("vendor", None)
        rules = tuple(TagRule.from_dict(r) for r in d.pop("tag_rules", ()))
        return cls(
            tag_rules=rules,
            account_push_type=AccountPushType(d.pop("account_push_type", AccountPushType.ALL_DEVICES)),
            audience_type=AudienceType(d.pop("audience_type")),
            token_list=tuple(d.pop("token_list")),
            account_list=tuple(d.pop("account_list")),
            message_type=MessageType(d.pop("message_type")),
            environment=Environment(d.pop("environment")),
            sms_info=None
            if info is None
            else SmsInfo(
                delay_trigger_time=info["delay_trigger_time"],
                trigger_condition=TriggerCondition(info["trigger_condition"]),
                sms_sign_name=info["sms_sign_name"],
                sms_template_id=info["sms_template_id"],
                sms_app_id=info["sms_app_id"],
                sms_template_params=tuple(info["sms_template_params"]),
                early_on_push_failure=info.get("early_on_push_failure", False),
            ),
            vendor=None if vendor is None else VendorOptions.from_dict(vendor),
            **d,
        )

    def fingerprint(self) -> str:
        """Stable digest of the body, to tell an idempotent retry from a reused request_id."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Target:
    token: str
    account: str = ""  # the account through which the token was reached, if any


@dataclass(frozen=True, slots=True)
class UnusedTarget:
    value: str
    reason: UnusedTargetReason


@dataclass(frozen=True, slots=True)
class PushReceipt:
    """What Push answers; also what an idempotent retry gets back."""

    push_id: str
    target_count: int
    unused_targets: tuple[UnusedTarget, ...]
    accepted_at: float
    fallback_due_at: float | None


@dataclass(frozen=True, slots=True)
class NewPush:
    push_id: str
    app_id: int
    spec: PushSpec
    targets: tuple[Target, ...]
    accepted_at: float
    fallback_due_at: float | None
    request_id: str
    receipt: PushReceipt


@dataclass(frozen=True, slots=True)
class Push:
    id: int  # internal row id: the wheel's key
    push_id: str
    app_id: int
    spec: PushSpec
    request_id: str
    accepted_at: float
    fallback_state: FallbackState
    fallback_due_at: float | None
    fallback_ended_at: float | None
    target_count: int
    targets_pending: bool = False  # a TAG / ALL push whose targets are still being found


@dataclass(frozen=True, slots=True)
class Broadcast:
    """A TAG or ALL push whose targets are being resolved: where the resolution stands.

    Targets are found page by page in token order; `cursor` is the last token examined and
    `next_seq` the seq the next target gets. Targets with seq < delivered_seq were handed to
    the push channel. All three move in the transaction that stores a page, so a resolution
    interrupted anywhere resumes where its last page ended."""

    push: int  # push row id
    push_id: str
    app_id: int
    access_id: str
    spec: PushSpec
    accepted_at: float
    fallback_due_at: float | None
    cursor: str
    next_seq: int
    delivered_seq: int


@dataclass(frozen=True, slots=True)
class Device:
    token: str
    phone_number: str = ""
    accounts: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    notifications_enabled: bool | None = None  # None: never reported
    notification_state_time: float | None = None
    updated_at: float = 0.0
    channel: Channel | None = None  # None: only bound; the app's default channel applies
    invalid_at: float | None = None  # when the channel called the token invalid
    invalid_reason: str = ""


@dataclass(frozen=True, slots=True)
class Route:
    """How a push reaches one token: its registered channel (None: the app's default) and
    whether the token was called invalid."""

    channel: Channel | None
    invalid: bool


@dataclass(frozen=True, slots=True)
class TargetOutcome:
    """One target's push outcome, as recorded."""

    token: str
    channel: Channel
    outcome: PushOutcome
    code: str = ""
    at: float = 0.0


@dataclass(frozen=True, slots=True)
class EventIn:
    push_id: str
    token: str
    event_type: EventType
    event_time: float


@dataclass(frozen=True, slots=True)
class ReceiptKey:
    """One of an app's receipt keys, sealed under the master key."""

    key_id: int
    blob: bytes = field(repr=False)
    created_at: float
    retire_at: float | None  # after this it verifies nothing; None: the current key


@dataclass(frozen=True, slots=True)
class TargetView:
    token: str
    account: str
    phone_number: str
    arrived_at: float | None
    clicked_at: float | None
    sms_status: SmsStatus | None
    channel: Channel | None = None
    push_outcome: PushOutcome = PushOutcome.PENDING
    push_outcome_code: str = ""
    push_outcome_at: float | None = None


@dataclass(frozen=True, slots=True)
class Funnel:
    target_count: int = 0
    arrived_count: int = 0
    clicked_count: int = 0
    sms_sent_count: int = 0
    sms_delivered_count: int = 0
    sms_failed_count: int = 0
    sms_rate_limited_count: int = 0
    no_phone_count: int = 0
    arrived_after_sms_count: int = 0
    sms_unknown_count: int = 0
    sms_undelivered_count: int = 0
    sms_pending_count: int = 0
    push_accepted_count: int = 0
    push_invalid_token_count: int = 0
    push_failed_count: int = 0
    push_expired_count: int = 0
    push_no_channel_count: int = 0
    push_pending_count: int = 0


@dataclass(frozen=True, slots=True)
class SmsCounts:
    """SMS records by outcome: the one mapping of statuses that GetPush's funnel and
    GetStatistics both use."""

    sent: int = 0  # accepted by the provider: SENT, DELIVERED, UNDELIVERED
    delivered: int = 0
    undelivered: int = 0  # sent, and a receipt says it did not arrive
    failed: int = 0  # FAILED only (an UNDELIVERED SMS was sent)
    rate_limited: int = 0
    unknown: int = 0  # UNKNOWN: may have been sent; never sent again
    pending: int = 0  # RESERVED or SENDING: not yet answered

    @classmethod
    def of(cls, by_status: dict[SmsStatus, int]) -> SmsCounts:
        def n(*statuses: SmsStatus) -> int:
            return sum(by_status.get(s, 0) for s in statuses)

        return cls(
            sent=n(SmsStatus.SENT, SmsStatus.DELIVERED, SmsStatus.UNDELIVERED),
            delivered=n(SmsStatus.DELIVERED),
            undelivered=n(SmsStatus.UNDELIVERED),
            failed=n(SmsStatus.FAILED),
            rate_limited=n(SmsStatus.RATE_LIMITED),
            unknown=n(SmsStatus.UNKNOWN),
            pending=n(SmsStatus.RESERVED, SmsStatus.SENDING),
        )


@dataclass(frozen=True, slots=True)
class SmsRecord:
    push_id: str
    phone_number: str
    status: SmsStatus
    sms_app_id: str
    sms_template_id: str
    sms_sign_name: str
    sms_template_params: tuple[str, ...]
    created_at: float
    serial_no: str = ""
    provider_code: str = ""
    provider_message: str = ""
    fee: int = 0
    rate_limit_rule: str = ""
    sent_at: float | None = None
    received_at: float | None = None
    report_code: str = ""
    report_description: str = ""
    id: int = 0  # internal, for paging


@dataclass(frozen=True, slots=True)
class SmsRecordFilter:
    push_id: str = ""
    phone_number: str = ""
    statuses: tuple[SmsStatus, ...] = ()
    start_time: float | None = None
    end_time: float | None = None


@dataclass(frozen=True, slots=True)
class Statistics:
    start_time: float
    end_time: float
    push_count: int = 0
    target_count: int = 0
    arrived_count: int = 0
    clicked_count: int = 0
    sms_by_status: dict[SmsStatus, int] = field(default_factory=dict)
    sms_fee: int = 0
    pending_fallback_count: int = 0


@dataclass(frozen=True, slots=True)
class Recipient:
    """One target of a push as the fallback sees it when it fires."""

    token: str
    phone_number: str  # E.164, "" when no phone is bound
    arrived: bool
    clicked: bool
    notifications_enabled: bool | None  # latest report; None if never reported
    unreachable: bool = False  # its channel answered that it definitely cannot get the push


@dataclass(frozen=True, slots=True)
class DeliveryReceipt:
    """A delivery report from the SMS provider (Tencent's callback or PullSmsSendStatus)."""

    phone_number: str  # E.164
    serial_no: str
    delivered: bool
    receive_time: float  # seconds since the epoch
    code: str = ""  # report_status / errmsg
    description: str = ""


@dataclass(frozen=True, slots=True)
class PushListItem:
    """One push in an app's list of pushes (the console's push list)."""

    id: int  # internal, for paging
    push_id: str
    title: str
    accepted_at: float
    target_count: int
    fallback_state: FallbackState
    fallback_due_at: float | None
