"""Per-number SMS limits of an app (Tencent Cloud SMS's defaults: the same content at most
once in 30 s, at most 10 a calendar day).

Counters are not kept here: the store counts the app's SMS records for the number, so the
counts survive restarts and can never drift from what was actually sent. This module says
which window to count and whether a send may go ahead.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from ..model import RateLimitPolicy

SAME_CONTENT_RULE = "same_content"
DAILY_LIMIT_RULE = "daily_limit"
PROVIDER_RULE = "provider"


@dataclass(frozen=True, slots=True)
class Window:
    """What the store must count for one decision."""

    day_start: float  # epoch seconds of midnight today in the policy's time zone
    same_content_since: float  # a same-content SMS at or after this blocks
    daily_limit: int

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
