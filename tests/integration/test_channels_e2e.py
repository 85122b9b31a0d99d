"""Pushes reaching devices through their registered channels, end to end: a real server, the
loopback push emulator speaking each vendor's wire protocol (auth checked), real gRPC.

What is checked: RegisterDevice routes a token to its channel; every target's outcome shows
in GetPush; a token the channel calls invalid is marked on the device and skipped by the next
push until registered again; a channel without credentials gives NO_CHANNEL; a push mixing
channels reaches each device through its own; early_on_push_failure sends at once for a phone
whose only device is invalid, not for a phone with one good device; bad credentials files are
refused naming the field and never logged."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from pushreach.v1 import admin_pb2, device_pb2, push_pb2, sms_pb2
from pushreachd.channels.emulator.android import EmulatorState, running
from pushreachd.wiring import Overrides

from tests.fakes import FakeSmsProvider
from tests.harness import (
    ADMIN,
    Running,
    plain_push,
    register,
    set_channel,
    settled,
    sms_push,
    start_service,
    test_settings,
)
from tests.integration.test_conditions_e2e import bad_request

HMS = {"app_id": "10086", "client_secret": "hms-secret-value"}
XIAOMI = {"app_secret": "xm-secret==", "package_name": "com.example.app"}
PHONE_A, PHONE_B = "+8613800138000", "+8613900139000"


@pytest.fixture
async def emulator() -> AsyncIterator[tuple[EmulatorState, str]]:
    state = EmulatorState()
    state.add_app("hms", HMS["app_id"], **HMS)
    state.add_app("xiaomi", XIAOMI["package_name"], **XIAOMI)
    async with running(state) as url:
        yield state, url


@pytest.fixture
async def service(
    tmp_path: Path, emulator: tuple[EmulatorState, str]
) -> AsyncIterator[tuple[Running, FakeSmsProvider]]:
    _, url = emulator
    sms = FakeSmsProvider()
    settings = test_settings(
        tmp_path, hms_endpoint=url, hms_token_endpoint=f"{url}/oauth2/v3/token", xiaomi_endpoint=url
    )
    running_service = await start_service(settings, Overrides(sms_provider=sms))
    yield running_service, sms
    await running_service.close()
    await running_service.service.stop()


async def test_a_push_mixing_channels_reaches_each_device_through_its_own(
    service: tuple[Running, FakeSmsProvider], emulator: tuple[EmulatorState, str]
) -> None:
    server, _ = service
    state, _ = emulator
    app = await server.new_app()
    shown = await set_channel(app, device_pb2.CHANNEL_HMS, HMS)
    assert list(shown.channels) == [device_pb2.CHANNEL_HMS]
    await set_channel(app, device_pb2.CHANNEL_XIAOMI, XIAOMI)
    registered = await register(app, "hw-token-1", device_pb2.CHANNEL_HMS, PHONE_A)
    assert registered.device.channel == device_pb2.CHANNEL_HMS
    assert registered.device.token_state == device_pb2.TOKEN_STATE_VALID and registered.device_key
    await register(app, "xm-token-1", device_pb2.CHANNEL_XIAOMI, PHONE_B)
    await app.bind("log-token-1", PHONE_B)  # only bound: the app's default channel (no webhook: log)

    pushed = await app.push.Push(plain_push(["hw-token-1", "xm-token-1", "log-token-1"]), metadata=app.metadata)
    got = await settled(app, pushed.push_id)

    by_token = {t.token: t for t in got.targets}
    assert {t: (v.channel, v.push_outcome) for t, v in by_token.items()} == {
        "hw-token-1": (device_pb2.CHANNEL_HMS, push_pb2.PUSH_OUTCOME_ACCEPTED),
        "xm-token-1": (device_pb2.CHANNEL_XIAOMI, push_pb2.PUSH_OUTCOME_ACCEPTED),
        "log-token-1": (device_pb2.CHANNEL_LOG, push_pb2.PUSH_OUTCOME_ACCEPTED),
    }
    assert all(v.HasField("push_outcome_time") for v in by_token.values())
    assert got.funnel.push_accepted_count == 3
    (hw,) = state.delivered_to("hms", "hw-token-1")
    (xm,) = state.delivered_to("xiaomi", "xm-token-1")
    for delivered in (hw, xm):
        # One payload serves many tokens on these vendors: the push id only, no receipt (the
        # device signs its reports with its device key, docs/DEVICES.md).
        assert delivered.data == {"pushreach_push_id": pushed.push_id}
    (logged,) = server.service.channel.deliveries[-1].targets
    assert logged.token == "log-token-1" and logged.receipt  # the log channel keeps its receipt


async def test_an_invalid_token_is_marked_skipped_and_valid_again_once_registered(
    service: tuple[Running, FakeSmsProvider], emulator: tuple[EmulatorState, str]
) -> None:
    server, _ = service
    state, _ = emulator
    app = await server.new_app()
    await set_channel(app, device_pb2.CHANNEL_HMS, HMS)
    await register(app, "hw-gone", device_pb2.CHANNEL_HMS)
    await register(app, "hw-ok", device_pb2.CHANNEL_HMS)
    state.mark_invalid("hms", "hw-gone")

    first = await app.push.Push(plain_push(["hw-gone", "hw-ok"]), metadata=app.metadata)
    got = await settled(app, first.push_id)
    outcomes = {t.token: (t.push_outcome, t.push_outcome_code) for t in got.targets}
    assert outcomes["hw-ok"] == (push_pb2.PUSH_OUTCOME_ACCEPTED, "")
    assert outcomes["hw-gone"][0] == push_pb2.PUSH_OUTCOME_INVALID_TOKEN and outcomes["hw-gone"][1]
    assert got.funnel.push_invalid_token_count == 1
    device = (await app.device.GetDevice(device_pb2.GetDeviceRequest(token="hw-gone"), metadata=app.metadata)).device
    assert device.token_state == device_pb2.TOKEN_STATE_INVALID
    assert device.token_invalid_reason == outcomes["hw-gone"][1] and device.HasField("token_invalid_time")

    sends = state.send_calls["hms"]
    second = await app.push.Push(plain_push(["hw-gone", "hw-ok"]), metadata=app.metadata)
    assert second.target_count == 1
    assert [(u.value, u.reason) for u in second.unused_targets] == [
        ("hw-gone", push_pb2.UNUSED_TARGET_REASON_INVALID_TOKEN)
    ]
    await settled(app, second.push_id)
    assert len(state.delivered_to("hms", "hw-gone")) == 0 and state.send_calls["hms"] == sends + 1

    again = await register(app, "hw-gone", device_pb2.CHANNEL_HMS)  # the app got a fresh registration
    assert again.device.token_state == device_pb2.TOKEN_STATE_VALID and not again.device.token_invalid_reason
    state.invalid["hms"].discard("hw-gone")
    third = await app.push.Push(plain_push(["hw-gone"]), metadata=app.metadata)
    assert third.target_count == 1 and not third.unused_targets
    got = await settled(app, third.push_id)
    assert got.targets[0].push_outcome == push_pb2.PUSH_OUTCOME_ACCEPTED


async def test_a_channel_without_credentials_or_turned_off_gives_no_channel(
    service: tuple[Running, FakeSmsProvider],
) -> None:
    server, _ = service
    app = await server.new_app()
    await set_channel(app, device_pb2.CHANNEL_HMS, HMS)
    await register(app, "oppo-1", device_pb2.CHANNEL_OPPO)  # the app has no OPPO credentials
    await register(app, "hw-1", device_pb2.CHANNEL_HMS)
    request = plain_push(["oppo-1", "hw-1"])
    request.channel_rules.append(push_pb2.ChannelRule(channel="hw", disable=True))
    pushed = await app.push.Push(request, metadata=app.metadata)
    got = await settled(app, pushed.push_id)
    assert {t.token: (t.push_outcome, t.push_outcome_code) for t in got.targets} == {
        "oppo-1": (push_pb2.PUSH_OUTCOME_NO_CHANNEL, "no_credentials"),
        "hw-1": (push_pb2.PUSH_OUTCOME_NO_CHANNEL, "channel_rules"),
    }
    assert got.funnel.push_no_channel_count == 2


async def test_early_on_push_failure_sends_at_once_only_for_a_phone_with_no_reachable_device(
    service: tuple[Running, FakeSmsProvider], emulator: tuple[EmulatorState, str]
) -> None:
    server, sms = service
    state, _ = emulator
    app = await server.new_app()
    await set_channel(app, device_pb2.CHANNEL_HMS, HMS)
    await register(app, "a-only", device_pb2.CHANNEL_HMS, PHONE_A)  # phone A: its one device is gone
    await register(app, "b-gone", device_pb2.CHANNEL_HMS, PHONE_B)  # phone B: one gone, one good
    await register(app, "b-good", device_pb2.CHANNEL_HMS, PHONE_B)
    state.mark_invalid("hms", "a-only", "b-gone")

    request = sms_push(["a-only", "b-gone", "b-good"], delay=600)
    request.sms_info.early_on_push_failure = True
    pushed = await app.push.Push(request, metadata=app.metadata)
    deadline = asyncio.get_running_loop().time() + 10
    while PHONE_A not in sms.numbers:
        assert asyncio.get_running_loop().time() < deadline, "no early SMS for the unreachable phone"
        await asyncio.sleep(0.02)
    got = await settled(app, pushed.push_id)
    assert got.push.fallback_state == push_pb2.FALLBACK_STATE_PENDING  # phone B waits for the delay
    assert sms.numbers == [PHONE_A]
    records = await app.sms.ListSmsRecords(sms_pb2.ListSmsRecordsRequest(push_id=pushed.push_id), metadata=app.metadata)
    assert [r.status for r in records.records] == [sms_pb2.SMS_STATUS_SENT]

    # Without the flag, TPNS's behaviour: nothing before the delay.
    state.mark_invalid("hms", "c-only")
    await register(app, "c-only", device_pb2.CHANNEL_HMS, "+8613700137000")
    waiting = await app.push.Push(sms_push(["c-only"], delay=600), metadata=app.metadata)
    await settled(app, waiting.push_id)
    assert sms.numbers == [PHONE_A]


async def test_bad_channel_credentials_are_refused_naming_the_field_and_never_logged(
    service: tuple[Running, FakeSmsProvider], caplog: pytest.LogCaptureFixture
) -> None:
    server, _ = service
    app = await server.new_app()
    caplog.set_level(logging.DEBUG)

    async def refused(channel: int, text: str) -> dict[str, str]:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await app.admin.SetChannelCredentials(
                admin_pb2.SetChannelCredentialsRequest(access_id=app.access_id, channel=channel, credentials_json=text),
                metadata=ADMIN,
            )
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        return bad_request(err.value)

    assert "credentials.client_secret" in await refused(device_pb2.CHANNEL_HMS, json.dumps({"app_id": "10086"}))
    assert "credentials.app_id" in await refused(device_pb2.CHANNEL_HMS, json.dumps({**HMS, "app_id": "abc"}))
    assert "credentials_json" in await refused(device_pb2.CHANNEL_HMS, "{not json")
    assert "channel" in await refused(0, json.dumps(HMS))
    assert "channel" in await refused(device_pb2.CHANNEL_LOG, json.dumps(HMS))
    assert "channel" in await refused(99, json.dumps(HMS))
    with pytest.raises(grpc.aio.AioRpcError) as err:  # app credentials are not enough
        await app.admin.SetChannelCredentials(
            admin_pb2.SetChannelCredentialsRequest(
                access_id=app.access_id, channel=device_pb2.CHANNEL_HMS, credentials_json=json.dumps(HMS)
            ),
            metadata=app.metadata,
        )
    assert err.value.code() in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED)
    await set_channel(app, device_pb2.CHANNEL_HMS, HMS)
    shown = await app.admin.GetApp(admin_pb2.GetAppRequest(access_id=app.access_id), metadata=ADMIN)
    assert "hms-secret-value" not in str(shown)
    assert "hms-secret-value" not in caplog.text


async def test_register_device_refuses_bad_input_naming_the_field(service: tuple[Running, FakeSmsProvider]) -> None:
    server, _ = service
    app = await server.new_app()
    for request, field in (
        (device_pb2.RegisterDeviceRequest(token="t", channel=0), "channel"),
        (device_pb2.RegisterDeviceRequest(token="t", channel=42), "channel"),
        (device_pb2.RegisterDeviceRequest(token="", channel=device_pb2.CHANNEL_FCM), "token"),
        (
            device_pb2.RegisterDeviceRequest(token="t", channel=device_pb2.CHANNEL_FCM, phone_number="12"),
            "phone_number",
        ),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await app.device.RegisterDevice(request, metadata=app.metadata)
        assert field in bad_request(err.value)
    with pytest.raises(grpc.aio.AioRpcError) as err:  # nothing half-written
        await app.device.GetDevice(device_pb2.GetDeviceRequest(token="t"), metadata=app.metadata)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
