"""The default push channel: logs each delivery and keeps the latest ones in memory.

It stands in for a real channel (APNs, FCM) where pushreach runs beside an existing push
system and only the SMS fallback is wanted; tests read `deliveries`.
"""

from __future__ import annotations

import logging
from collections import deque

from ..model import Channel, PushOutcome
from .base import PushDelivery, TokenOutcome

log = logging.getLogger(__name__)


class LogPushChannel:
    channel = Channel.LOG
    max_batch = 100_000
    per_token_receipts = True  # kept with each delivery, as the other channels carry them

    def __init__(self, keep: int = 1000) -> None:
        self.deliveries: deque[PushDelivery] = deque(maxlen=keep)
        self.delivered_count = 0

    async def send(self, delivery: PushDelivery) -> list[TokenOutcome]:
        self.deliveries.append(delivery)
        self.delivered_count += 1
        log.info(
            "push %s of app %s delivered to %d token(s): %r",
            delivery.push_id,
            delivery.access_id,
            len(delivery.tokens),
            delivery.spec.title,
        )
        return [TokenOutcome(token, PushOutcome.ACCEPTED) for token in delivery.tokens]

    async def aclose(self) -> None:
        pass
