"""Caller identity from gRPC metadata; the checks themselves are `services.callers`, shared
with the HTTP surface (one login cache, one failure throttle, one budget per app)."""

from __future__ import annotations

import grpc

from ..admission import peer_host
from ..model import App
from ..services.callers import CallerAuthenticator, parse_basic

__all__ = ["Authenticator", "parse_basic"]


def _authorization(context: grpc.aio.ServicerContext) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == "authorization":
            return value if isinstance(value, str) else value.decode("latin-1")
    return ""


class Authenticator(CallerAuthenticator):
    """The shared checks, fed from a servicer context."""

    async def app(self, context: grpc.aio.ServicerContext) -> App:
        return await self.app_from(_authorization(context), peer_host(context.peer() or ""))

    async def admin(self, context: grpc.aio.ServicerContext) -> None:
        await self.admin_from(_authorization(context), peer_host(context.peer() or ""))
