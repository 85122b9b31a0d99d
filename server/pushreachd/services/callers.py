"""Who is calling, for both front doors (gRPC metadata, HTTP headers): apps use TPNS's Basic
scheme, operators a Bearer admin token. Transport-free: each front door passes the
`authorization` value and the peer's address; one object (one cache, one throttle, one
budget per app) serves both.
"""

from __future__ import annotations

import base64
import binascii
import hmac

from ..admission import AppRequestLimiter, AuthFailureThrottle
from ..clock import Clock
from ..errors import PermissionDenied, ResourceExhausted, Unauthenticated
from ..model import App
from .apps import AppService


class RateLimited(ResourceExhausted):
    """A budget is spent; `retry_after` says when the next request would be allowed (seconds)."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


BASIC_FORM = "'authorization: Basic base64(access_id:secret_key)'"


def parse_basic(header: str) -> tuple[str, str]:
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic" or not encoded:
        raise Unauthenticated(f"missing credentials: send {BASIC_FORM}")
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        raise Unauthenticated(f"malformed Basic credentials (not base64 of UTF-8 text): send {BASIC_FORM}") from None
    access_id, sep, secret = decoded.partition(":")
    if not sep:
        raise Unauthenticated(f"malformed Basic credentials (no ':' between access_id and secret_key): send {BASIC_FORM}")
    return access_id, secret


class CallerAuthenticator:
    """Checks who is calling and whether they may call now.

    With a `throttle`, failed authentications slow down (then refuse) further attempts from
    the same peer address; with a `limiter`, each app has a request budget and an app past
    it gets RESOURCE_EXHAUSTED (`RateLimited`), before the call reaches the domain.
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

    async def app_from(self, authorization: str, peer: str) -> App:
        """The app whose Basic credentials `authorization` carries, within its budget."""
        await self.admit(peer)
        try:
            access_id, secret = parse_basic(authorization)
            app = await self._apps.authenticate(access_id, secret)
        except Unauthenticated:
            self.failed(peer)
            raise
        if self._limiter is not None and not self._limiter.allow(app.id):
            wait = self._limiter.retry_after(app.id)
            raise RateLimited(f"request rate limit of this app exceeded; retry in {wait:.3f}s", wait)
        return app

    async def admin_from(self, authorization: str, peer: str) -> None:
        if not self._admin_token:
            raise PermissionDenied("AdminService is disabled: no admin token is configured")
        await self.admit(peer)
        try:
            scheme, _, token = authorization.partition(" ")
            if scheme.lower() != "bearer" or not token:
                raise Unauthenticated("AdminService needs 'authorization: Bearer <admin token>'")
            if not hmac.compare_digest(token.strip().encode(), self._admin_token.encode()):
                raise Unauthenticated("invalid admin token")
        except Unauthenticated:
            self.failed(peer)
            raise

    async def admit(self, peer: str) -> None:
        """Wait out (or refuse) a peer that failed to authenticate too often."""
        if self._throttle is None:
            return
        wait = self._throttle.delay(peer)
        if wait == AuthFailureThrottle.REFUSE:
            raise RateLimited(
                "too many failed authentications from this address; try again later", self._throttle.window
            )
        if wait > 0 and self._clock is not None:
            await self._clock.sleep(wait)

    def failed(self, peer: str) -> None:
        """Count a failed authentication (an app's credentials, or a device's receipt or key)."""
        if self._throttle is not None:
            self._throttle.failed(peer)
