"""Serving the HTTP application on `http_listen`, plain or TLS, with a graceful stop."""

from __future__ import annotations

import logging
import ssl

from aiohttp import web

from .app import CONTEXT

log = logging.getLogger(__name__)


def server_ssl_context(cert_file: str, key_file: str) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert_file, key_file)
    return ctx


class HttpServer:
    """One aiohttp app on one address."""

    def __init__(
        self,
        app: web.Application,
        host: str,
        port: int,
        *,
        ssl_context: ssl.SSLContext | None = None,
        grace: float = 10.0,
    ) -> None:
        self.app = app
        self._host = host
        self._port = port
        self._ssl = ssl_context
        self._grace = grace
        self._runner: web.AppRunner | None = None
        self.port = 0  # the bound port, set by start()

    @property
    def scheme(self) -> str:
        return "https" if self._ssl is not None else "http"

    async def start(self) -> int:
        self._runner = web.AppRunner(
            self.app, access_log=None, handle_signals=False, shutdown_timeout=self._grace
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port, ssl_context=self._ssl, reuse_port=False)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        self.app[CONTEXT].serving = True
        return self.port

    async def stop(self) -> None:
        """Health answers 503 at once; no new connections; requests in flight get `grace`
        seconds to finish, then are cancelled."""
        self.app[CONTEXT].serving = False
        if self._runner is None:
            return
        await self._runner.cleanup()
        self._runner = None
