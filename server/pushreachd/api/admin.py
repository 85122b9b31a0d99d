from __future__ import annotations

import grpc
from pushreach.v1 import admin_pb2, admin_pb2_grpc

from ..clock import Clock
from ..model import Channel, RateLimitPolicy
from ..services.apps import AppService
from ..services.channels import AppChannels
from ..services.pagination import decode_token, encode_token
from ..services.receipts import Receipts
from ..services.validation import Violations, page_size
from . import convert
from .auth import Authenticator
from .rpc import admin_rpc


class AdminServicer(admin_pb2_grpc.AdminServiceServicer):
    def __init__(
        self, auth: Authenticator, apps: AppService, channels: AppChannels, receipts: Receipts, clock: Clock
    ) -> None:
        self.auth = auth
        self._clock = clock
        self._apps = apps
        self._channels = channels
        self._receipts = receipts

    @admin_rpc
    async def CreateApp(self, request: admin_pb2.CreateAppRequest, context: grpc.aio.ServicerContext):
        app, secret = await self._apps.create_app(request.name)
        return admin_pb2.CreateAppResponse(app=convert.app(app), secret_key=secret)

    @admin_rpc
    async def GetApp(self, request: admin_pb2.GetAppRequest, context: grpc.aio.ServicerContext):
        return admin_pb2.GetAppResponse(app=convert.app(await self._apps.get_app(request.access_id)))

    @admin_rpc
    async def ListApps(self, request: admin_pb2.ListAppsRequest, context: grpc.aio.ServicerContext):
        v = Violations()
        limit = page_size(v, request.page_size)
        after = decode_token(v, "page_token", request.page_token, scope="apps") or 0
        if not isinstance(after, int):
            v.add("page_token", "not a page token from this service")
        v.raise_if_any()
        apps = await self._apps.list_apps(after, limit + 1)
        more = len(apps) > limit
        apps = apps[:limit]
        return admin_pb2.ListAppsResponse(
            apps=[convert.app(a) for a in apps],
            next_page_token=encode_token(apps[-1].id, scope="apps") if more else "",
        )

    @admin_rpc
    async def RotateAppSecret(self, request: admin_pb2.RotateAppSecretRequest, context: grpc.aio.ServicerContext):
        return admin_pb2.RotateAppSecretResponse(secret_key=await self._apps.rotate_secret(request.access_id))

    @admin_rpc
    async def SetSmsCredentials(
        self, request: admin_pb2.SetSmsCredentialsRequest, context: grpc.aio.ServicerContext
    ):
        app = await self._apps.set_sms_credentials(request.access_id, request.secret_id, request.secret_key)
        return admin_pb2.SetSmsCredentialsResponse(app=convert.app(app))

    @admin_rpc
    async def SetRateLimitPolicy(
        self, request: admin_pb2.SetRateLimitPolicyRequest, context: grpc.aio.ServicerContext
    ):
        p = request.policy
        policy = RateLimitPolicy(p.same_content_interval_seconds, p.daily_limit, p.time_zone)
        return admin_pb2.SetRateLimitPolicyResponse(app=convert.app(await self._apps.set_rate_limit_policy(request.access_id, policy)))

    @admin_rpc
    async def SetChannelCredentials(
        self, request: admin_pb2.SetChannelCredentialsRequest, context: grpc.aio.ServicerContext
    ):
        v = Violations()
        channel = _channel(v, request.channel)
        if not request.credentials_json.strip():
            v.add("credentials_json", "required")
        v.raise_if_any()
        assert channel is not None
        app = await self._apps.get_app(request.access_id)
        updated = await self._channels.set_credentials(app, channel, request.credentials_json)
        return admin_pb2.SetChannelCredentialsResponse(app=convert.app(updated))

    @admin_rpc
    async def RotateReceiptKey(self, request: admin_pb2.RotateReceiptKeyRequest, context: grpc.aio.ServicerContext):
        app = await self._apps.get_app(request.access_id)
        rotated_at = self._clock.time()
        key_id = await self._receipts.rotate(app.id)
        return admin_pb2.RotateReceiptKeyResponse(
            receipt_key_id=key_id, older_keys_expire_time=convert.ts(rotated_at + self._receipts.overlap)
        )


def _channel(v: Violations, value: int) -> Channel | None:
    if value in (0, Channel.LOG):
        v.add("channel", "required: one of APNS, FCM, HMS, HONOR, XIAOMI, OPPO, VIVO, WEBHOOK")
        return None
    try:
        return Channel(value)
    except ValueError:
        v.add("channel", f"unknown channel {value}")
        return None
