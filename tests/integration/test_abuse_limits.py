"""Limits that keep one caller from hurting others, on a real server: the per-app request
budget, the slowdown after failed authentications, and the length of a ReportEvents stream."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest
from pushreach.v1 import admin_pb2, device_pb2, event_pb2, push_pb2
from pushreachd import limits

from tests.harness import Running, basic, sms_push, start_service, test_settings


@pytest.fixture
async def strict(tmp_path) -> Running:  # type: ignore[no-untyped-def,misc]
    running = await start_service(
        test_settings(tmp_path, app_rate_limit=20.0, app_rate_burst=10, auth_failure_limit=2)
    )
    yield running
    await running.close()
    await running.service.stop()


async def _code(call) -> grpc.StatusCode:  # type: ignore[no-untyped-def]
    try:
        await call
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


async def test_a_noisy_app_hits_its_limit_and_the_others_go_on(strict: Running) -> None:
    noisy = await strict.new_app("noisy")
    quiet = await strict.new_app("quiet")
    request = device_pb2.GetDeviceRequest(token="t")
    codes = await asyncio.gather(*(_code(noisy.device.GetDevice(request, metadata=noisy.metadata)) for _ in range(60)))
    assert codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED) >= 40  # burst 10 (+ a refill or two)
    assert set(codes) == {grpc.StatusCode.NOT_FOUND, grpc.StatusCode.RESOURCE_EXHAUSTED}
    quiet_codes = [await _code(quiet.device.GetDevice(request, metadata=quiet.metadata)) for _ in range(5)]
    assert quiet_codes == [grpc.StatusCode.NOT_FOUND] * 5
    await asyncio.sleep(0.2)  # 20/s: the noisy app's budget comes back
    assert await _code(noisy.device.GetDevice(request, metadata=noisy.metadata)) == grpc.StatusCode.NOT_FOUND


async def test_failed_authentications_from_one_peer_slow_down(strict: Running) -> None:
    app = await strict.new_app()
    wrong = basic(app.access_id, "0" * 32)
    request = device_pb2.GetDeviceRequest(token="t")
    for _ in range(2):  # up to the limit: answered at once
        assert await _code(app.device.GetDevice(request, metadata=wrong)) == grpc.StatusCode.UNAUTHENTICATED
    started = time.monotonic()
    assert await _code(app.device.GetDevice(request, metadata=wrong)) == grpc.StatusCode.UNAUTHENTICATED
    assert time.monotonic() - started >= 0.45  # base delay 0.5 s
    # Admin attempts from the same address count, and are slowed, too.
    started = time.monotonic()
    bad_admin = (("authorization", "Bearer not-the-admin-token-0000"),)
    assert await _code(app.admin.ListApps(admin_pb2.ListAppsRequest(), metadata=bad_admin)) == grpc.StatusCode.UNAUTHENTICATED
    assert time.monotonic() - started >= 0.95  # 1 s now


async def test_a_stream_past_its_event_limit_ends_after_recording_what_came_before(
    server: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(limits, "MAX_EVENTS_PER_STREAM", 5)
    app = await server.new_app()
    tokens = [f"t{i}" for i in range(6)]
    pushed = await app.push.Push(sms_push(tokens, delay=3600), metadata=app.metadata)
    arrived = [event_pb2.Event(push_id=pushed.push_id, token=t, event_type=event_pb2.EVENT_TYPE_ARRIVED) for t in tokens]

    async def messages():  # type: ignore[no-untyped-def]
        yield event_pb2.ReportEventsRequest(events=arrived[:3])
        yield event_pb2.ReportEventsRequest(events=arrived[3:])

    with pytest.raises(grpc.aio.AioRpcError) as err:
        await app.event.ReportEvents(messages(), metadata=app.metadata)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "first 1 messages (3 events: 3 accepted" in (err.value.details() or "")
    got = await app.push.GetPush(push_pb2.GetPushRequest(push_id=pushed.push_id), metadata=app.metadata)
    assert got.funnel.arrived_count == 3


async def test_a_stream_past_its_message_limit_ends(server: Running, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(limits, "MAX_MESSAGES_PER_STREAM", 3)
    app = await server.new_app()

    async def empties():  # type: ignore[no-untyped-def]
        for _ in range(10):
            yield event_pb2.ReportEventsRequest()

    with pytest.raises(grpc.aio.AioRpcError) as err:
        await app.event.ReportEvents(empties(), metadata=app.metadata)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED

    async def three():  # type: ignore[no-untyped-def]
        for _ in range(3):
            yield event_pb2.ReportEventsRequest()

    answer = await app.event.ReportEvents(three(), metadata=app.metadata)
    assert answer.accepted_count == 0
