"""Caller identity from metadata: apps use TPNS's Basic scheme, operators a Bearer admin token."""

from __future__ import annotations

import base64
import binascii
import hmac

import grpc

from ..admission import AppRequestLimiter, AuthFailureThrottle, peer_host
from ..clock import Clock
from ..errors import PermissionDenied, ResourceExhausted, Unauthenticated
from ..model import App
from ..services.apps import AppService


def _authorization(context: grpc.aio.ServicerContext) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == "authorization":
            return value if isinstance(value, str) else value.decode("latin-1")
    return ""


def parse_basic(header: str) -> tuple[str, str]:
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic" or not encoded:
        raise Unauthenticated("missing credentials: send 'authorization: Basic base64(access_id:secret_key)'")
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        raise Unauthenticated("malformed Basic credentials") from None
    access_id, sep, secret = decoded.partition(":")
    if not sep:
        raise Unauthenticated("malformed Basic credentials")
    return access_id, secret


class Authenticator:
    """Checks who is calling and whether they may call now.

    With a `throttle`, failed authentications slow down (then refuse) further attempts from
    the same peer address; with a `limiter`, each app has a request budget and an app past
    it gets RESOURCE_EXHAUSTED, before the call reaches the domain.
    """

    def __init__(
        self,
        apps: AppService,
        admin_token: str,
        *,
        clock: Clock | None = None,
        throttle: AuthFailureThrottle | None = None,
        limiter: AppRequestLimiter | None = None,
    ) -> None:
        self._apps = apps
        self._admin_token = admin_token
        self._clock = clock
        self._throttle = throttle
        self._limiter = limiter

    async def app(self, context: grpc.aio.ServicerContext) -> App:
        peer = await self._admit(context)
        try:
            access_id, secret = parse_basic(_authorization(context))
            app = await self._apps.authenticate(access_id, secret)
        except Unauthenticated:
            if self._throttle is not None:
                self._throttle.failed(peer)
            raise
        if self._limiter is not None and not self._limiter.allow(app.id):
            wait = self._limiter.retry_after(app.id)
            raise ResourceExhausted(f"request rate limit of this app exceeded; retry in {wait:.3f}s")
        return app

    async def admin(self, context: grpc.aio.ServicerContext) -> None:
        if not self._admin_token:
            raise PermissionDenied("AdminService is disabled: no admin token is configured")
        peer = await self._admit(context)
        try:
            scheme, _, token = _authorization(context).partition(" ")
            if scheme.lower() != "bearer" or not token:
                raise Unauthenticated("AdminService needs 'authorization: Bearer <admin token>'")
            if not hmac.compare_digest(token.strip().encode(), self._admin_token.encode()):
                raise Unauthenticated("invalid admin token")
        except Unauthenticated:
            if self._throttle is not None:
                self._throttle.failed(peer)
            raise

    async def _admit(self, context: grpc.aio.ServicerContext) -> str:
        """Wait out (or refuse) a peer that failed to authenticate too often; its address."""
        if self._throttle is None:
            return ""
        peer = peer_host(context.peer() or "")
        wait = self._throttle.delay(peer)
        if wait == AuthFailureThrottle.REFUSE:
            raise ResourceExhausted("too many failed authentications from this address; try again later")
        if wait > 0 and self._clock is not None:
            await self._clock.sleep(wait)
        return peer
