"""Loopback emulators of the push vendors, speaking their wire protocols (auth included)."""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import AsyncIterator

from aiohttp import web


@contextlib.asynccontextmanager
async def serving(
    app: web.Application,
    host: str = "127.0.0.1",
    port: int = 0,
    ssl_context: ssl.SSLContext | None = None,
    *,
    shutdown_timeout: float = 1.0,  # a "slow" answer must not hold a test's end
) -> AsyncIterator[str]:
    """Serve `app` for the duration of the block; yields its base URL (https with ssl_context)."""
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=shutdown_timeout)
    await runner.setup()
    site = web.TCPSite(runner, host, port, ssl_context=ssl_context)
    await site.start()
    try:
        server = site._server  # the bound port, when 0 was asked for
        bound = server.sockets[0].getsockname()[1] if server and server.sockets else port  # type: ignore[union-attr]
        yield f"{'https' if ssl_context else 'http'}://{host}:{bound}"
    finally:
        await runner.cleanup()
