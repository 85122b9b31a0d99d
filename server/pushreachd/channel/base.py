"""The push-channel seam (APNs, FCM, vendor channels, or the log channel)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from ..model import PushSpec


@dataclass(frozen=True, slots=True)
class PushDelivery:
    access_id: str
    push_id: str
    spec: PushSpec
    tokens: tuple[str, ...]


class PushChannel(Protocol):
    name: str

    async def deliver(self, delivery: PushDelivery) -> None:
        """Send the push to its tokens. Errors are logged by the caller, never retried here."""
