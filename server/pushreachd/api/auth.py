"""Caller identity from metadata: apps use TPNS's Basic scheme, operators a Bearer admin token."""

from __future__ import annotations

import base64
import binascii
import hmac

import grpc

from ..apps import AppService
from ..errors import PermissionDenied, Unauthenticated
from ..model import App


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
    def __init__(self, apps: AppService, admin_token: str) -> None:
        self._apps = apps
        self._admin_token = admin_token

    async def app(self, context: grpc.aio.ServicerContext) -> App:
        access_id, secret = parse_basic(_authorization(context))
        return await self._apps.authenticate(access_id, secret)

    def admin(self, context: grpc.aio.ServicerContext) -> None:
        if not self._admin_token:
            raise PermissionDenied("AdminService is disabled: no admin token is configured")
        scheme, _, token = _authorization(context).partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise Unauthenticated("AdminService needs 'authorization: Bearer <admin token>'")
        if not hmac.compare_digest(token.strip().encode(), self._admin_token.encode()):
            raise Unauthenticated("invalid admin token")
