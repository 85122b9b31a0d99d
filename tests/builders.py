"""Request drafts for unit tests: a valid push with an SMS fallback, changed where a test needs."""

from __future__ import annotations

from dataclasses import replace

from pushreachd.model import AudienceType, TriggerCondition
from pushreachd.services.validation import PushDraft


def sms_push_draft(tokens: list[str], delay: int, **changes: object) -> PushDraft:
    base = PushDraft(
        audience_type=int(AudienceType.TOKEN_LIST),
        token_list=list(tokens),
        has_message=True,
        title="Approval needed",
        content="Expense #42 waits for you",
        resend_by_sms=True,
        has_sms_info=True,
        delay_trigger_time=delay,
        trigger_condition=int(TriggerCondition.NOT_ARRIVED),
        sms_sign_name="Pushreach",
        sms_template_id="123456",
        sms_app_id="1400000001",
        sms_template_params=["42"],
    )
    return replace(base, **changes)  # type: ignore[arg-type]
