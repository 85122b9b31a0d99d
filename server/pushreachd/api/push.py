from __future__ import annotations

import grpc
from pushreach.v1 import push_pb2, push_pb2_grpc

from ..model import App
from ..services.pushes import PushService
from . import convert
from .auth import Authenticator
from .rpc import app_rpc


class PushServicer(push_pb2_grpc.PushServiceServicer):
    def __init__(self, auth: Authenticator, pushes: PushService) -> None:
        self.auth = auth
        self._pushes = pushes

    @app_rpc
    async def Push(self, request: push_pb2.PushRequest, app: App, context: grpc.aio.ServicerContext):
        return convert.push_response(await self._pushes.push(app, convert.push_draft(request)))

    @app_rpc
    async def GetPush(self, request: push_pb2.GetPushRequest, app: App, context: grpc.aio.ServicerContext):
        push, funnel, targets, next_token = await self._pushes.get_push(
            app, request.push_id, request.page_size, request.page_token
        )
        return push_pb2.GetPushResponse(
            push=convert.push_summary(push),
            funnel=convert.funnel(funnel),
            targets=[convert.target(t) for t in targets],
            next_page_token=next_token,
        )

    @app_rpc
    async def CancelFallback(
        self, request: push_pb2.CancelFallbackRequest, app: App, context: grpc.aio.ServicerContext
    ):
        state = await self._pushes.cancel_fallback(app, request.push_id)
        return push_pb2.CancelFallbackResponse(fallback_state=int(state))
