"""A real pushreach server in-process on 127.0.0.1:0, with real SQLite, and stubs to call it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import grpc
from pushreach import basic_auth as basic  # tests say basic(access_id, secret)
from pushreach.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    device_pb2,
    device_pb2_grpc,
    event_pb2_grpc,
    push_pb2,
    push_pb2_grpc,
    sms_pb2_grpc,
)
from pushreachd.config import Settings
from pushreachd.wiring import Overrides, Service

ADMIN_TOKEN = "test-admin-token-0123456789"
ADMIN = (("authorization", f"Bearer {ADMIN_TOKEN}"),)


def test_settings(tmp_path: Path, **changes: object) -> Settings:
    base = Settings(
        listen="127.0.0.1:0",
        db=str(tmp_path / "pushreach.db"),
        master_key_file=str(tmp_path / "master.key"),
        min_delay_seconds=1,
        tick_ms=20,
        admin_token=ADMIN_TOKEN,
        shutdown_grace_seconds=2,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


test_settings.__test__ = False  # type: ignore[attr-defined]  # a helper, not a test


@dataclass
class Caller:
    """Stubs bound to one app's credentials."""

    channel: grpc.aio.Channel
    metadata: tuple[tuple[str, str], ...]
    access_id: str = ""
    push: push_pb2_grpc.PushServiceStub = field(init=False)
    device: device_pb2_grpc.DeviceServiceStub = field(init=False)
    event: event_pb2_grpc.EventServiceStub = field(init=False)
    sms: sms_pb2_grpc.SmsServiceStub = field(init=False)
    admin: admin_pb2_grpc.AdminServiceStub = field(init=False)

    def __post_init__(self) -> None:
        self.push = push_pb2_grpc.PushServiceStub(self.channel)
        self.device = device_pb2_grpc.DeviceServiceStub(self.channel)
        self.event = event_pb2_grpc.EventServiceStub(self.channel)
        self.sms = sms_pb2_grpc.SmsServiceStub(self.channel)
        self.admin = admin_pb2_grpc.AdminServiceStub(self.channel)

    async def bind(self, token: str, phone: str) -> device_pb2.BindPhoneResponse:
        return await self.device.BindPhone(
            device_pb2.BindPhoneRequest(token=token, phone_number=phone), metadata=self.metadata
        )


class Running:
    def __init__(self, service: Service) -> None:
        self.service = service
        self.target = f"127.0.0.1:{service.port}"
        self.channel = grpc.aio.insecure_channel(self.target)

    async def new_app(self, name: str = "app") -> Caller:
        app, secret = await self.service.apps.create_app(name)
        return Caller(self.channel, basic(app.access_id, secret), app.access_id)

    def anonymous(self) -> Caller:
        return Caller(self.channel, ())

    async def close(self) -> None:
        await self.channel.close()


async def start_service(settings: Settings, overrides: Overrides | None = None) -> Running:
    service = Service(settings, overrides)
    await service.start()
    return Running(service)


def sms_push(
    tokens: list[str],
    condition: int = push_pb2.TRIGGER_CONDITION_NOT_ARRIVED,
    delay: int = 1,
    **extra: object,
) -> push_pb2.PushRequest:
    return push_pb2.PushRequest(
        audience_type=push_pb2.AUDIENCE_TYPE_TOKEN_LIST,
        token_list=tokens,
        message=push_pb2.Message(title="Approval needed", content="Expense #42 waits for you"),
        message_type=push_pb2.MESSAGE_TYPE_NOTIFY,
        resend_by_sms=True,
        sms_info=push_pb2.SmsInfo(
            delay_trigger_time=delay,
            trigger_condition=condition,
            sms_sign_name="Pushreach",
            sms_template_id="123456",
            sms_app_id="1400000001",
            sms_template_params=["42", "Alice"],
        ),
        **extra,  # type: ignore[arg-type]
    )


async def wait_done(caller: Caller, push_id: str, timeout: float = 10.0) -> push_pb2.GetPushResponse:
    """Poll GetPush until the push's fallback is DONE (bounded by `timeout`)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        got = await caller.push.GetPush(push_pb2.GetPushRequest(push_id=push_id), metadata=caller.metadata)
        if got.push.fallback_state == push_pb2.FALLBACK_STATE_DONE:
            return got
        assert asyncio.get_running_loop().time() < deadline, got
        await asyncio.sleep(0.05)


# -- push channels -------------------------------------------------------------------------


async def set_channel(app: Caller, channel: int, credentials: Mapping[str, Any]) -> admin_pb2.App:
    """Set one channel's credentials of the app (AdminService, with the admin token)."""
    got = await app.admin.SetChannelCredentials(
        admin_pb2.SetChannelCredentialsRequest(
            access_id=app.access_id, channel=channel, credentials_json=json.dumps(credentials)
        ),
        metadata=ADMIN,
    )
    return got.app


async def register(app: Caller, token: str, channel: int, phone: str = "") -> device_pb2.RegisterDeviceResponse:
    return await app.device.RegisterDevice(
        device_pb2.RegisterDeviceRequest(token=token, channel=channel, phone_number=phone), metadata=app.metadata
    )


async def settled(app: Caller, push_id: str, timeout: float = 20.0) -> push_pb2.GetPushResponse:
    """GetPush once every target has its channel's answer (bounded by `timeout`)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        got = await app.push.GetPush(push_pb2.GetPushRequest(push_id=push_id), metadata=app.metadata)
        if got.funnel.push_pending_count == 0:
            return got
        assert asyncio.get_running_loop().time() < deadline, got
        await asyncio.sleep(0.02)


def plain_push(tokens: list[str], **extra: Any) -> push_pb2.PushRequest:
    """A push to these tokens without SMS fallback."""
    return push_pb2.PushRequest(
        audience_type=push_pb2.AUDIENCE_TYPE_TOKEN_LIST,
        token_list=tokens,
        message=push_pb2.Message(title="Approval needed", content="Expense #42 waits for you"),
        **extra,
    )
