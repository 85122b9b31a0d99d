from __future__ import annotations

import grpc
from pushreach.v1 import device_pb2, device_pb2_grpc

from ..model import App
from ..services.devices import DeviceService
from ..services.receipts import Receipts
from . import convert
from .auth import Authenticator
from .rpc import app_rpc


class DeviceServicer(device_pb2_grpc.DeviceServiceServicer):
    def __init__(self, auth: Authenticator, devices: DeviceService, receipts: Receipts) -> None:
        self.auth = auth
        self._devices = devices
        self._receipts = receipts

    @app_rpc
    async def BindPhone(self, request: device_pb2.BindPhoneRequest, app: App, context: grpc.aio.ServicerContext):
        device = await self._devices.bind_phone(app, request.token, request.phone_number, request.request_id)
        key = await self._receipts.device_key(app.id, device.token)
        return device_pb2.BindPhoneResponse(device=convert.device(device), device_key=key)

    @app_rpc
    async def RegisterDevice(
        self, request: device_pb2.RegisterDeviceRequest, app: App, context: grpc.aio.ServicerContext
    ):
        device = await self._devices.register_device(
            app, request.token, request.channel, request.phone_number, request.request_id
        )
        key = await self._receipts.device_key(app.id, device.token)
        return device_pb2.RegisterDeviceResponse(device=convert.device(device), device_key=key)

    @app_rpc
    async def UnbindPhone(self, request: device_pb2.UnbindPhoneRequest, app: App, context: grpc.aio.ServicerContext):
        device = await self._devices.unbind_phone(app, request.token, request.request_id)
        return device_pb2.UnbindPhoneResponse(device=convert.device(device))

    @app_rpc
    async def BindAccount(self, request: device_pb2.BindAccountRequest, app: App, context: grpc.aio.ServicerContext):
        device = await self._devices.bind_account(app, request.token, request.account, request.request_id)
        return device_pb2.BindAccountResponse(device=convert.device(device))

    @app_rpc
    async def UnbindAccount(
        self, request: device_pb2.UnbindAccountRequest, app: App, context: grpc.aio.ServicerContext
    ):
        device = await self._devices.unbind_account(app, request.token, request.account, request.request_id)
        return device_pb2.UnbindAccountResponse(device=convert.device(device))

    @app_rpc
    async def GetDevice(self, request: device_pb2.GetDeviceRequest, app: App, context: grpc.aio.ServicerContext):
        return device_pb2.GetDeviceResponse(device=convert.device(await self._devices.get_device(app, request.token)))

    @app_rpc
    async def AddTags(self, request: device_pb2.AddTagsRequest, app: App, context: grpc.aio.ServicerContext):
        pairs = [(p.token, p.tag) for p in request.pairs]
        await self._devices.add_tags(app, list(request.tokens), list(request.tags), pairs, request.request_id)
        return device_pb2.AddTagsResponse()

    @app_rpc
    async def RemoveTags(self, request: device_pb2.RemoveTagsRequest, app: App, context: grpc.aio.ServicerContext):
        pairs = [(p.token, p.tag) for p in request.pairs]
        await self._devices.remove_tags(app, list(request.tokens), list(request.tags), pairs, request.request_id)
        return device_pb2.RemoveTagsResponse()

    @app_rpc
    async def SetTags(self, request: device_pb2.SetTagsRequest, app: App, context: grpc.aio.ServicerContext):
        device = await self._devices.set_tags(app, request.token, list(request.tags), request.request_id)
        return device_pb2.SetTagsResponse(device=convert.device(device))

    @app_rpc
    async def ClearTags(self, request: device_pb2.ClearTagsRequest, app: App, context: grpc.aio.ServicerContext):
        await self._devices.clear_tags(app, list(request.tokens), request.request_id)
        return device_pb2.ClearTagsResponse()
