"""Each app's push channels: credentials sealed at rest, and the channel clients built from them.

Credentials are checked by their channel module (naming `credentials.<field>`), sealed under
the master key bound to (app, channel), and never returned or logged. A client is built on
first use and kept while its sealed blob is unchanged; another instance's (or the CLI's)
change is seen within CACHE_SECONDS.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping
from typing import Any

from ..channels import registry
from ..channels.base import PushChannel
from ..channels.registry import ChannelContext
from ..clock import Clock
from ..errors import InvalidArgument
from ..model import App, Channel
from ..secrets import SecretBox, SecretError
from ..store.base import Store

log = logging.getLogger(__name__)

CACHE_SECONDS = 5.0
MAX_CREDENTIALS_BYTES = 64 * 1024


def credentials_ad(access_id: str, channel: Channel) -> bytes:
    # Binds the blob to its app and channel: copied onto another row it will not open.
    return f"channel_credentials:{access_id}:{int(channel)}".encode()


def parse_channel(name: str) -> Channel:
    """`apns`, `fcm`, ... (the CLI's and the docs' names) to a Channel."""
    channel = registry.NAMES.get(name.strip().lower())
    if channel is None:
        raise InvalidArgument.one("channel", f"must be one of {', '.join(registry.NAMES)}")
    return channel


def check_credentials(channel: Channel, text: str) -> Mapping[str, Any]:
    """Parse and check a credentials file's text for `channel`; what is kept."""
    if channel not in registry.MODULES:
        raise InvalidArgument.one("channel", f"must be one of {', '.join(registry.NAMES)}")
    if not text.strip():
        raise InvalidArgument.one("credentials_json", "required")
    if len(text.encode()) > MAX_CREDENTIALS_BYTES:
        raise InvalidArgument.one("credentials_json", f"at most {MAX_CREDENTIALS_BYTES} bytes")
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise InvalidArgument.one("credentials_json", f"not JSON: {exc.msg} at line {exc.lineno}") from None
    return registry.validate_credentials(channel, data)


class AppChannels:
    def __init__(self, store: Store, box: SecretBox, clock: Clock, context: ChannelContext) -> None:
        self._store = store
        self._box = box
        self._clock = clock
        self._context = context
        self._blobs: dict[int, tuple[float, dict[Channel, bytes]]] = {}  # app -> (read at, blobs)
        self._clients: dict[tuple[int, Channel], tuple[bytes, PushChannel]] = {}
        self._lock = asyncio.Lock()

    async def set_credentials(self, app: App, channel: Channel, text: str) -> App:
        kept = check_credentials(channel, text)
        plain = json.dumps(kept, sort_keys=True).encode()
        updated = await self._store.set_channel_credentials(
            app.id, channel, self._box.seal(plain, credentials_ad(app.access_id, channel)), self._clock.time()
        )
        self._blobs.pop(app.id, None)
        log.info("app %s: %s credentials set", app.access_id, channel.name.lower())
        return updated

    async def configured(self, app_id: int) -> frozenset[Channel]:
        """The channels the app has credentials for."""
        return frozenset(await self._sealed(app_id))

    async def client(self, app: App | tuple[int, str], channel: Channel) -> PushChannel | None:
        """The app's client for `channel`; None without (readable) credentials."""
        app_id, access_id = (app.id, app.access_id) if isinstance(app, App) else app
        blob = (await self._sealed(app_id)).get(channel)
        if blob is None:
            return None
        cached = self._clients.get((app_id, channel))
        if cached is not None and cached[0] == blob:
            return cached[1]
        async with self._lock:
            cached = self._clients.get((app_id, channel))
            if cached is not None and cached[0] == blob:
                return cached[1]
            try:
                credentials = json.loads(self._box.open(blob, credentials_ad(access_id, channel)))
            except (SecretError, ValueError):
                log.error("app %s: the %s credentials do not open under the master key", access_id, channel.name)
                return None
            client = registry.create(channel, credentials, self._context)
            self._clients[(app_id, channel)] = (blob, client)
        if cached is not None:  # the credentials changed: the old client goes
            await cached[1].aclose()
        return client

    async def _sealed(self, app_id: int) -> dict[Channel, bytes]:
        now = self._clock.time()
        cached = self._blobs.get(app_id)
        if cached is None or now - cached[0] >= CACHE_SECONDS:
            cached = (now, await self._store.channel_credentials(app_id))
            self._blobs[app_id] = cached
        return cached[1]

    async def aclose(self) -> None:
        clients, self._clients = self._clients, {}
        for _, client in clients.values():
            await client.aclose()
