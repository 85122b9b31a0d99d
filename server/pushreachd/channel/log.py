"""The default push channel: logs each delivery and keeps the latest ones in memory.

It stands in for a real channel (APNs, FCM) where pushreach runs beside an existing push
system and only the SMS fallback is wanted; tests read `deliveries`.
"""

from __future__ import annotations

import logging
from collections import deque

from .base import PushDelivery

log = logging.getLogger(__name__)


class LogPushChannel:
    name = "log"

    def __init__(self, keep: int = 1000) -> None:
        self.deliveries: deque[PushDelivery] = deque(maxlen=keep)
        self.delivered_count = 0

    async def deliver(self, delivery: PushDelivery) -> None:
        self.deliveries.append(delivery)
        self.delivered_count += 1
        log.info(
            "push %s of app %s delivered to %d token(s): %r",
            delivery.push_id,
            delivery.access_id,
            len(delivery.tokens),
            delivery.spec.title,
        )
