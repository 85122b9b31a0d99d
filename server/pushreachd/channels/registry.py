"""Which module serves each channel, and what a channel is built with.

Each channel module (apns.py, fcm.py, webhook.py, hms.py, ...) exposes:
- `channel`: its `Channel`;
- `validate_credentials(data) -> Mapping`: check a parsed credentials file, return what is
  kept, raise `errors.InvalidArgument` naming `credentials.<field>`;
- `create(credentials, context) -> PushChannel`: the channel bound to one app's credentials.

Modules are imported on first use, so an instance that sends through no FCM app never loads
google-auth.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from ..clock import Clock
from ..errors import InvalidArgument
from ..model import Channel

MODULES: dict[Channel, str] = {
    Channel.APNS: "apns",
    Channel.FCM: "fcm",
    Channel.HMS: "hms",
    Channel.HONOR: "honor",
    Channel.XIAOMI: "xiaomi",
    Channel.OPPO: "oppo",
    Channel.VIVO: "vivo",
    Channel.WEBHOOK: "webhook",
}

# The lower-case names of `pushreach apps set-channel ACCESS_ID CHANNEL` and of the docs.
NAMES: dict[str, Channel] = {c.name.lower(): c for c in MODULES}

# The endpoint settings channels read (config.Settings fields of the same names).
ENDPOINT_SETTINGS = (
    "apns_endpoint",
    "apns_sandbox_endpoint",
    "fcm_endpoint",
    "hms_endpoint",
    "hms_token_endpoint",
    "honor_endpoint",
    "honor_token_endpoint",
    "xiaomi_endpoint",
    "oppo_endpoint",
    "vivo_endpoint",
)


@dataclass(frozen=True, slots=True)
class ChannelContext:
    """What every channel is built with besides the app's credentials."""

    clock: Clock
    endpoints: Mapping[str, str] = field(default_factory=dict)  # setting name -> base URL
    ca_file: str = ""  # extra CA bundle (PEM) trusted beside the public CAs
    timeout: float = 30.0  # seconds for one HTTP request

    def endpoint(self, name: str, default: str) -> str:
        return (self.endpoints.get(name) or default).rstrip("/")


def module(channel: Channel) -> ModuleType:
    name = MODULES.get(channel)
    if name is None:
        raise InvalidArgument.one("channel", f"{channel.name.lower()} takes no credentials")
    return importlib.import_module(f"{__package__}.{name}")


def validate_credentials(channel: Channel, data: Any) -> Mapping[str, Any]:
    """Check a credentials file for `channel` (parsed JSON); what is kept, or InvalidArgument."""
    if not isinstance(data, Mapping):
        raise InvalidArgument.one("credentials", "must be a JSON object")
    return module(channel).validate_credentials(data)  # type: ignore[no-any-return]


def create(channel: Channel, credentials: Mapping[str, Any], context: ChannelContext) -> Any:
    """The channel for one app's (validated) credentials."""
    return module(channel).create(credentials, context)
