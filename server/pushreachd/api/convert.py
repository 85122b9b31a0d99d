"""Proto messages <-> domain values. No logic beyond the mapping."""

from __future__ import annotations

from google.protobuf import timestamp_pb2
from pushreach.v1 import admin_pb2, device_pb2, push_pb2, sms_pb2

from ..model import (
    CHANNEL_RULE_NAMES,
    App,
    Device,
    Funnel,
    Push,
    PushReceipt,
    PushSpec,
    SmsRecord,
    TargetView,
    VendorOptions,
)
from ..phone import mask_phone
from ..services.validation import (
    AndroidDraft,
    PushDraft,
    TagItemDraft,
    TagRuleDraft,
    Violations,
)

# google.protobuf.Timestamp's valid range: 0001-01-01T00:00:00Z .. 9999-12-31T23:59:59Z.
MIN_TIMESTAMP_SECONDS = -62135596800
MAX_TIMESTAMP_SECONDS = 253402300799


def ts(seconds: float | None) -> timestamp_pb2.Timestamp | None:
    if seconds is None:
        return None
    t = timestamp_pb2.Timestamp()
    t.FromNanoseconds(int(round(seconds * 1e9)))
    return t


def seconds(t: timestamp_pb2.Timestamp) -> float:
    return t.seconds + t.nanos / 1e9


def checked_seconds(v: Violations, path: str, t: timestamp_pb2.Timestamp) -> float | None:
    """seconds(t), or a violation at `path` for a Timestamp outside its valid range."""
    if not MIN_TIMESTAMP_SECONDS <= t.seconds <= MAX_TIMESTAMP_SECONDS or not 0 <= t.nanos < 10**9:
        v.add(path, "not a valid timestamp (years 1 to 9999, nanos 0 to 999,999,999)")
        return None
    return seconds(t)


def push_draft(r: push_pb2.PushRequest) -> PushDraft:
    info = r.sms_info
    return PushDraft(
        request_id=r.request_id,
        audience_type=r.audience_type,
        token_list=list(r.token_list),
        account_list=list(r.account_list),
        has_message=r.HasField("message"),
        title=r.message.title,
        content=r.message.content,
        message_type=r.message_type,
        expire_time=r.expire_time,
        multi_pkg=r.multi_pkg,
        environment=r.environment,
        resend_by_sms=r.resend_by_sms,
        has_sms_info=r.HasField("sms_info"),
        delay_trigger_time=info.delay_trigger_time,
        trigger_condition=info.trigger_condition,
        sms_sign_name=info.sms_sign_name,
        sms_template_id=info.sms_template_id,
        sms_app_id=info.sms_app_id,
        sms_template_params=list(info.sms_template_params),
        android=_android_draft(r.message.android) if r.message.HasField("android") else None,
        channel_rules=[(rule.channel, rule.disable) for rule in r.channel_rules],
        account_push_type=r.account_push_type,
        collapse_id=r.collapse_id,
        early_on_push_failure=info.early_on_push_failure,
        tag_rules=[
            TagRuleDraft(
                tag_items=[
                    TagItemDraft(list(i.tags), i.is_not, i.tags_operator, i.items_operator, i.tag_type)
                    for i in rule.tag_items
                ],
                operator=rule.operator,
                is_not=rule.is_not,
            )
            for rule in r.tag_rules
        ],
    )


def _android_draft(a: push_pb2.AndroidMessage) -> AndroidDraft:
    return AndroidDraft(
        hw_ch_id=a.hw_ch_id,
        hw_category=a.hw_category,
        hw_importance=a.hw_importance,
        xm_ch_id=a.xm_ch_id,
        oppo_ch_id=a.oppo_ch_id,
        oppo_category=a.oppo_category,
        vivo_ch_id=a.vivo_ch_id,
        vivo_category=a.vivo_category,
    )


def push_response(r: PushReceipt) -> push_pb2.PushResponse:
    return push_pb2.PushResponse(
        push_id=r.push_id,
        target_count=r.target_count,
        unused_targets=[push_pb2.UnusedTarget(value=u.value, reason=int(u.reason)) for u in r.unused_targets],
        accept_time=ts(r.accepted_at),
        fallback_due_time=ts(r.fallback_due_at),
    )


def push_request(spec: PushSpec, request_id: str) -> push_pb2.PushRequest:
    info = spec.sms_info
    return push_pb2.PushRequest(
        request_id=request_id,
        audience_type=int(spec.audience_type),
        token_list=list(spec.token_list),
        account_list=list(spec.account_list),
        message=push_pb2.Message(title=spec.title, content=spec.content, android=_android(spec.vendor)),
        message_type=int(spec.message_type),
        expire_time=spec.expire_time,
        multi_pkg=spec.multi_pkg,
        environment=int(spec.environment),
        resend_by_sms=spec.resend_by_sms,
        sms_info=None
        if info is None
        else push_pb2.SmsInfo(
            delay_trigger_time=info.delay_trigger_time,
            trigger_condition=int(info.trigger_condition),
            sms_sign_name=info.sms_sign_name,
            sms_template_id=info.sms_template_id,
            sms_app_id=info.sms_app_id,
            sms_template_params=list(info.sms_template_params),
            early_on_push_failure=info.early_on_push_failure,
        ),
        channel_rules=_channel_rules(spec.vendor),
        collapse_id=spec.collapse_id,
        account_push_type=int(spec.account_push_type) if spec.audience_type.by_account else 0,
        tag_rules=[
            push_pb2.TagRule(
                tag_items=[
                    push_pb2.TagItem(
                        tags=list(i.tags),
                        is_not=i.is_not,
                        tags_operator=int(i.tags_operator),
                        items_operator=int(i.items_operator),
                        tag_type=i.tag_type,
                    )
                    for i in rule.tag_items
                ],
                operator=int(rule.operator),
                is_not=rule.is_not,
            )
            for rule in spec.tag_rules
        ],
    )


def _android(v: VendorOptions | None) -> push_pb2.AndroidMessage | None:
    if v is None:
        return None
    a = push_pb2.AndroidMessage(
        hw_ch_id=v.hw_ch_id,
        hw_category=v.hw_category,
        hw_importance=v.hw_importance,
        xm_ch_id=v.xm_ch_id,
        oppo_ch_id=v.oppo_ch_id,
        oppo_category=v.oppo_category,
        vivo_ch_id=v.vivo_ch_id,
        vivo_category=v.vivo_category,
    )
    return a if a.ByteSize() else None


def _channel_rules(v: VendorOptions | None) -> list[push_pb2.ChannelRule]:
    if v is None:
        return []
    names = {channel: name for name, channel in CHANNEL_RULE_NAMES.items()}
    return [push_pb2.ChannelRule(channel=names[c], disable=True) for c in sorted(v.disabled_channels) if c in names]


def push_summary(p: Push) -> push_pb2.PushSummary:
    return push_pb2.PushSummary(
        push_id=p.push_id,
        request=push_request(p.spec, p.request_id),
        accept_time=ts(p.accepted_at),
        fallback_state=int(p.fallback_state),
        fallback_due_time=ts(p.fallback_due_at),
        fallback_end_time=ts(p.fallback_ended_at),
        targets_pending=p.targets_pending,
    )


def funnel(f: Funnel) -> push_pb2.PushFunnel:
    return push_pb2.PushFunnel(**{name: getattr(f, name) for name in push_pb2.PushFunnel.DESCRIPTOR.fields_by_name})


def target(t: TargetView) -> push_pb2.PushTarget:
    return push_pb2.PushTarget(
        token=t.token,
        account=t.account,
        phone_number=mask_phone(t.phone_number),
        arrive_time=ts(t.arrived_at),
        click_time=ts(t.clicked_at),
        sms_status=int(t.sms_status) if t.sms_status is not None else 0,
        channel=int(t.channel) if t.channel is not None else 0,
        push_outcome=int(t.push_outcome),
        push_outcome_code=t.push_outcome_code,
        push_outcome_time=ts(t.push_outcome_at),
    )


def device(d: Device) -> device_pb2.Device:
    state = 0 if d.notifications_enabled is None else (1 if d.notifications_enabled else 2)
    return device_pb2.Device(
        token=d.token,
        phone_number=d.phone_number,
        accounts=list(d.accounts),
        notification_state=state,
        notification_state_time=ts(d.notification_state_time),
        update_time=ts(d.updated_at),
        tags=list(d.tags),
        channel=int(d.channel) if d.channel is not None else 0,
        token_state=device_pb2.TOKEN_STATE_INVALID if d.invalid_at is not None else device_pb2.TOKEN_STATE_VALID,
        token_invalid_time=ts(d.invalid_at),
        token_invalid_reason=d.invalid_reason,
    )


def sms_record(r: SmsRecord, full_phone: bool) -> sms_pb2.SmsRecord:
    return sms_pb2.SmsRecord(
        push_id=r.push_id,
        phone_number=r.phone_number if full_phone else mask_phone(r.phone_number),
        status=int(r.status),
        sms_app_id=r.sms_app_id,
        sms_template_id=r.sms_template_id,
        sms_sign_name=r.sms_sign_name,
        sms_template_params=list(r.sms_template_params),
        serial_no=r.serial_no,
        provider_code=r.provider_code,
        provider_message=r.provider_message,
        fee=r.fee,
        rate_limit_rule=r.rate_limit_rule,
        create_time=ts(r.created_at),
        send_time=ts(r.sent_at),
        receive_time=ts(r.received_at),
        report_code=r.report_code,
        report_description=r.report_description,
    )


def app(a: App) -> admin_pb2.App:
    return admin_pb2.App(
        access_id=a.access_id,
        name=a.name,
        create_time=ts(a.created_at),
        sms_credentials_set=a.sms_credentials_blob is not None,
        rate_limit_policy=admin_pb2.RateLimitPolicy(
            same_content_interval_seconds=a.policy.same_content_interval_seconds,
            daily_limit=a.policy.daily_limit,
            time_zone=a.policy.time_zone,
        ),
        channels=sorted(int(c) for c in a.channels),
    )
