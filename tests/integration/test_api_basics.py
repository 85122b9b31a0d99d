"""The service as a caller meets it: reflection, health, authentication, app isolation."""

from __future__ import annotations

import asyncio
import base64

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from pushreach.v1 import admin_pb2, device_pb2, event_pb2, push_pb2, sms_pb2

from tests.harness import (
    ADMIN_TOKEN,
    Caller,
    Running,
    sms_push,
    start_service,
    test_settings,
)

SERVICES = {
    "pushreach.v1.PushService",
    "pushreach.v1.DeviceService",
    "pushreach.v1.EventService",
    "pushreach.v1.SmsService",
    "pushreach.v1.AdminService",
}


def _reflect(target: str) -> tuple[set[str], set[str]]:
    # What grpcurl does for `list` and `describe`, through the blocking reflection client.
    with grpc.insecure_channel(target) as channel:
        db = ProtoReflectionDescriptorDatabase(channel)
        services = set(db.get_services())
        file = db.FindFileContainingSymbol("pushreach.v1.PushService")
        methods = {m.name for s in file.service if s.name == "PushService" for m in s.method}
        return services, methods


async def test_reflection_lists_and_describes_every_service(server: Running) -> None:
    services, methods = await asyncio.to_thread(_reflect, server.target)  # the server shares our loop
    assert SERVICES | {"grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"} <= services
    assert methods == {"Push", "GetPush", "CancelFallback"}


async def test_health_serving_for_each_service(server: Running) -> None:
    stub = health_pb2_grpc.HealthStub(server.channel)
    for name in ["", *SERVICES]:
        answer = await stub.Check(health_pb2.HealthCheckRequest(service=name))
        assert answer.status == health_pb2.HealthCheckResponse.SERVING, name


async def test_health_goes_not_serving_as_soon_as_shutdown_begins(tmp_path) -> None:  # type: ignore[no-untyped-def]
    running = await start_service(test_settings(tmp_path))
    stub = health_pb2_grpc.HealthStub(running.channel)
    watch = stub.Watch(health_pb2.HealthCheckRequest(service="pushreach.v1.PushService"))
    first = await watch.read()
    assert first.status == health_pb2.HealthCheckResponse.SERVING
    stopping = asyncio.create_task(running.service.stop())
    second = await asyncio.wait_for(watch.read(), timeout=5)
    assert second.status == health_pb2.HealthCheckResponse.NOT_SERVING
    await stopping
    await running.close()


def _basic(raw: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", "Basic " + base64.b64encode(raw.encode()).decode()),)


@pytest.mark.parametrize(
    "metadata",
    [
        (),
        (("authorization", "Bearer something"),),
        (("authorization", "Basic !!!notbase64"),),
        _basic("no-colon-here"),
        _basic("1999999999:0123456789abcdef0123456789abcdef"),
    ],
    ids=["none", "wrong-scheme", "bad-base64", "no-colon", "unknown-app"],
)
async def test_push_without_valid_credentials_is_unauthenticated(server: Running, metadata) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await server.anonymous().push.Push(sms_push(["t"]), metadata=metadata)
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_wrong_secret_is_unauthenticated_and_right_one_works(server: Running) -> None:
    app = await server.new_app()
    wrong = _basic(f"{app.access_id}:{'0' * 32}")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await app.device.GetDevice(device_pb2.GetDeviceRequest(token="t"), metadata=wrong)
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    await app.bind("t", "13800138000")
    got = await app.device.GetDevice(device_pb2.GetDeviceRequest(token="t"), metadata=app.metadata)
    assert got.device.phone_number == "+8613800138000"


async def test_every_app_rpc_needs_credentials(server: Running) -> None:
    anon = server.anonymous()
    calls = [
        anon.push.GetPush(push_pb2.GetPushRequest(push_id="x")),
        anon.push.CancelFallback(push_pb2.CancelFallbackRequest(push_id="x")),
        anon.device.BindPhone(device_pb2.BindPhoneRequest(token="t", phone_number="13800138000")),
        anon.device.UnbindPhone(device_pb2.UnbindPhoneRequest(token="t")),
        anon.device.BindAccount(device_pb2.BindAccountRequest(token="t", account="a")),
        anon.device.UnbindAccount(device_pb2.UnbindAccountRequest(token="t", account="a")),
        anon.device.GetDevice(device_pb2.GetDeviceRequest(token="t")),
        anon.event.ReportEvent(event_pb2.ReportEventRequest(push_id="x", token="t", event_type=1)),
        anon.sms.ListSmsRecords(sms_pb2.ListSmsRecordsRequest()),
        anon.sms.GetStatistics(sms_pb2.GetStatisticsRequest()),
    ]
    for call in calls:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_admin_needs_the_admin_token_not_app_credentials(server: Running) -> None:
    app = await server.new_app()
    request = admin_pb2.CreateAppRequest(name="other")
    for metadata in [(), app.metadata, (("authorization", "Bearer wrong-token-000000000"),)]:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await app.admin.CreateApp(request, metadata=metadata)
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    created = await app.admin.CreateApp(request, metadata=(("authorization", f"Bearer {ADMIN_TOKEN}"),))
    assert created.secret_key and created.app.access_id and created.app.access_id != app.access_id


async def test_admin_disabled_without_a_token(tmp_path) -> None:  # type: ignore[no-untyped-def]
    running = await start_service(test_settings(tmp_path, admin_token=""))
    try:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await running.anonymous().admin.ListApps(
                admin_pb2.ListAppsRequest(), metadata=(("authorization", "Bearer anything-at-all-here"),)
            )
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    finally:
        await running.close()
        await running.service.stop()


async def _a_push_of(app: Caller) -> str:
    await app.bind("shared-token", "+8613800000009")
    pushed = await app.push.Push(sms_push(["shared-token"], delay=60), metadata=app.metadata)
    return pushed.push_id


async def test_one_app_never_sees_or_touches_another_apps_data(server: Running) -> None:
    a = await server.new_app("a")
    b = await server.new_app("b")
    push_id = await _a_push_of(a)

    for call in [
        b.push.GetPush(push_pb2.GetPushRequest(push_id=push_id), metadata=b.metadata),
        b.push.CancelFallback(push_pb2.CancelFallbackRequest(push_id=push_id), metadata=b.metadata),
        b.device.GetDevice(device_pb2.GetDeviceRequest(token="shared-token"), metadata=b.metadata),
    ]:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call
        assert err.value.code() == grpc.StatusCode.NOT_FOUND

    event = event_pb2.ReportEventRequest(push_id=push_id, token="shared-token", event_type=event_pb2.EVENT_TYPE_ARRIVED)
    answer = await b.event.ReportEvent(event, metadata=b.metadata)
    assert answer.outcome == event_pb2.EVENT_OUTCOME_UNKNOWN_PUSH

    records = await b.sms.ListSmsRecords(sms_pb2.ListSmsRecordsRequest(push_id=push_id), metadata=b.metadata)
    assert list(records.records) == []
    stats = await b.sms.GetStatistics(sms_pb2.GetStatisticsRequest(), metadata=b.metadata)
    assert stats.push_count == 0 and stats.pending_fallback_count == 0

    # B binding the same token makes B's own device; A's stays as it was.
    await b.bind("shared-token", "+8613800000010")
    mine = await a.device.GetDevice(device_pb2.GetDeviceRequest(token="shared-token"), metadata=a.metadata)
    assert mine.device.phone_number == "+8613800000009"

    # A still sees its push untouched: B's calls changed nothing.
    got = await a.push.GetPush(push_pb2.GetPushRequest(push_id=push_id), metadata=a.metadata)
    assert got.push.fallback_state == push_pb2.FALLBACK_STATE_PENDING
    assert got.funnel.arrived_count == 0
