"""The push-channel seam: APNs, FCM, the vendor channels, the app's webhook, or the log.

A channel sends one push to a batch of tokens of one app and answers one outcome per token.
It retries what its vendor says is worth retrying (flow control, 5xx, Retry-After) itself,
never past the push's expiry; the caller records the outcomes and never retries a channel.
Channels know the model and their vendor's wire protocol only: no store, no gRPC.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..model import Channel, PushOutcome, PushSpec


@dataclass(frozen=True, slots=True)
class TargetPayload:
    """One token of a delivery, with the receipt the device hands back on arrival/click ("" on
    a channel that carries none: its devices sign their reports with the device key)."""

    token: str
    receipt: str


@dataclass(frozen=True, slots=True)
class PushDelivery:
    """One push of one app to a batch of tokens on one channel."""

    access_id: str
    push_id: str
    spec: PushSpec
    targets: tuple[TargetPayload, ...]
    expires_at: float  # epoch seconds: after this the push must not be sent (nor retried)

    @property
    def tokens(self) -> tuple[str, ...]:
        return tuple(t.token for t in self.targets)


@dataclass(frozen=True, slots=True)
class TokenOutcome:
    """The channel's answer for one token."""

    token: str
    outcome: PushOutcome
    code: str = ""  # the vendor's reason or code ("Unregistered", "UNREGISTERED", "80300007")
    message: str = ""
    vendor_id: str = ""  # apns-id, FCM message name, vendor task/request id


class PushChannel(Protocol):
    """A channel bound to one app's credentials."""

    channel: Channel
    max_batch: int  # tokens per send() call the vendor allows
    # True (the default of every channel) when each target's payload carries its own receipt;
    # False for the vendors that send one payload to many tokens (Huawei, Honor, Xiaomi, vivo):
    # they carry the push id only, get targets without receipts, and their devices sign arrival
    # and click reports with the device key instead (docs/DEVICES.md).
    per_token_receipts: bool

    async def send(self, delivery: PushDelivery) -> list[TokenOutcome]:
        """Send to every target; one outcome per target, in any order. Raises only for a bug:
        vendor and network failures are outcomes (FAILED with the code, or retried inside)."""
        ...

    async def aclose(self) -> None: ...


class ChannelKind(Protocol):
    """What the channel registry needs of each channel module."""

    channel: Channel

    def validate_credentials(self, data: Mapping[str, Any]) -> Mapping[str, Any]:
        """Check a credentials file (parsed JSON) and return what is kept; raise
        `errors.InvalidArgument` whose violations name `credentials.<field>`."""
        ...


@dataclass(slots=True)
class Backoff:
    """Capped exponential backoff with full jitter, for the retries a channel makes itself."""

    base: float = 0.5
    cap: float = 30.0
    attempts: int = 5
    rng: random.Random = field(default_factory=random.Random)

    def delays(self) -> Iterator[float]:
        for n in range(self.attempts):
            yield self.rng.uniform(0, min(self.cap, self.base * 2**n))
