"""Per-number SMS limits of an app (Tencent Cloud SMS's defaults: the same content at most
once in 30 s, at most 10 a calendar day).

Counters are not kept here: the store counts the app's SMS records for the number, so the
counts survive restarts and can never drift from what was actually sent. This module says
which window to count and whether a send may go ahead.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from ..model import RateLimitPolicy, SmsInfo

SAME_CONTENT_RULE = "same_content"
DAILY_LIMIT_RULE = "daily_limit"
PROVIDER_RULE = "provider"


def content_key(info: SmsInfo) -> str:
    """What "the same content" means for the 30-second rule: one template with one set of
    parameters, under one signature and SMS app."""
    return json.dumps(
        [info.sms_app_id, info.sms_sign_name, info.sms_template_id, list(info.sms_template_params)],
        ensure_ascii=False,
    )


@dataclass(frozen=True, slots=True)
class Window:
    """What the store must count for one decision, and the decision itself (the store calls
    `verdict` inside the transaction that writes the record: store.base.RateWindow)."""

    day_start: float  # epoch seconds of midnight today in the policy's time zone
    same_content_since: float  # a same-content SMS at or after this blocks
    daily_limit: int

    def content_key(self, info: SmsInfo) -> str:
        return content_key(info)

    def verdict(self, sent_today: int, last_same_content_at: float | None) -> str | None:
        """The rule that blocks a send, or None when it may go ahead."""
        if last_same_content_at is not None and last_same_content_at >= self.same_content_since:
            return SAME_CONTENT_RULE
        if sent_today >= self.daily_limit:
            return DAILY_LIMIT_RULE
        return None


class RateLimiter:
    def __init__(self, default_time_zone: str = "Asia/Shanghai") -> None:
        self._default_zone = ZoneInfo(default_time_zone)

    def window(self, policy: RateLimitPolicy, now: float) -> Window:
        zone = ZoneInfo(policy.time_zone) if policy.time_zone else self._default_zone
        local = dt.datetime.fromtimestamp(now, zone)
        midnight = local.replace(hour=0, minute=0, second=0, microsecond=0)
        return Window(
            day_start=midnight.timestamp(),
            same_content_since=now - policy.same_content_interval_seconds,
            daily_limit=policy.daily_limit,
        )
