"""pushreach.Client against a real server, and its retry and deadline rules against stubs."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import grpc
import pytest
from pushreach import Client, PushreachError
from pushreach.v1 import device_pb2_grpc, event_pb2, push_pb2, push_pb2_grpc, sms_pb2

from tests.harness import Running, sms_push, start_service, test_settings


async def client_for(server: Running, **kwargs: object) -> Client:
    app, secret = await server.service.apps.create_app("client")
    return Client(server.target, app.access_id, secret, **kwargs)  # type: ignore[arg-type]


async def test_every_app_rpc_through_the_client(server: Running) -> None:
    async with await client_for(server) as client:
        bound = await client.bind_phone("tok0", "13800000001")
        assert bound.device.phone_number == "+8613800000001"
        await client.bind_phone("tok1", "+8613800000002")
        await client.bind_account("tok1", "alice")
        assert list((await client.get_device("tok1")).device.accounts) == ["alice"]
        await client.unbind_account("tok1", "alice")
        await client.unbind_phone("tok1")
        assert (await client.get_device("tok1")).device.phone_number == ""

        request = sms_push(["tok0", "tok1", "tok2"], delay=1)
        pushed = await client.push(request)
        assert pushed.target_count == 3
        assert request.request_id == ""  # the caller's message is left alone
        stored = await client.get_push(pushed.push_id)
        assert stored.push.request.request_id  # the client filled one in

        arrived = await client.report_event(pushed.push_id, "tok1", event_pb2.EVENT_TYPE_ARRIVED)
        assert arrived.outcome == event_pb2.EVENT_OUTCOME_ACCEPTED
        events = [
            event_pb2.Event(push_id=pushed.push_id, token="tok2", event_type=event_pb2.EVENT_TYPE_CLICKED),
            event_pb2.Event(push_id=pushed.push_id, token="tok1", event_type=event_pb2.EVENT_TYPE_ARRIVED),
            event_pb2.Event(push_id="nope", token="tok1", event_type=event_pb2.EVENT_TYPE_ARRIVED),
        ]
        tally = await client.report_events(events, batch_size=2)  # two messages on one stream
        assert (tally.accepted_count, tally.duplicate_count, tally.unknown_push_count) == (1, 1, 1)
        assert [r.index for r in tally.rejected] == [2]

        pages = [t.token async for t in client.iter_push_targets(pushed.push_id, page_size=2)]
        assert pages == ["tok0", "tok1", "tok2"]

        await wait_for_done(client, pushed.push_id)
        records = [r async for r in client.iter_sms_records(push_id=pushed.push_id, show_full_phone_number=True)]
        assert [(r.phone_number, r.status) for r in records] == [("+8613800000001", sms_pb2.SMS_STATUS_SENT)]
        masked = await client.list_sms_records(push_id=pushed.push_id)
        assert masked.records[0].phone_number == "+86138****0001"

        stats = await client.get_statistics()
        assert (stats.push_count, stats.target_count, stats.arrived_count, stats.clicked_count) == (1, 3, 2, 1)
        assert stats.sms.sent == 1

        later = await client.push(sms_push(["tok0"], delay=3600))
        cancelled = await client.cancel_fallback(later.push_id)
        assert cancelled.fallback_state == push_pb2.FALLBACK_STATE_CANCELLED
        assert (await client.cancel_fallback(later.push_id)).fallback_state == push_pb2.FALLBACK_STATE_CANCELLED


async def wait_for_done(client: Client, push_id: str) -> None:
    for _ in range(200):
        if (await client.get_push(push_id)).push.fallback_state == push_pb2.FALLBACK_STATE_DONE:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("fallback did not finish")


async def test_iterating_sms_records_follows_every_page(server: Running) -> None:
    async with await client_for(server) as client:
        tokens = [f"t{i}" for i in range(5)]
        for i, token in enumerate(tokens):
            await client.bind_phone(token, f"+861380000100{i}")
        pushed = await client.push(sms_push(tokens, delay=1))
        await wait_for_done(client, pushed.push_id)
        records = [r async for r in client.iter_sms_records(page_size=2, show_full_phone_number=True)]
        assert sorted(r.phone_number for r in records) == [f"+861380000100{i}" for i in range(5)]


async def test_errors_carry_code_and_field_violations(server: Running) -> None:
    async with await client_for(server) as client:
        with pytest.raises(PushreachError) as bad:
            await client.push(push_pb2.PushRequest(audience_type=push_pb2.AUDIENCE_TYPE_TOKEN_LIST))
        assert bad.value.code is grpc.StatusCode.INVALID_ARGUMENT
        fields = {v.field for v in bad.value.violations}
        assert {"token_list", "message"} <= fields, bad.value.violations
        with pytest.raises(PushreachError) as missing:
            await client.get_push("nope")
        assert missing.value.code is grpc.StatusCode.NOT_FOUND
    async with Client(server.target, "nobody", "wrong") as stranger:
        with pytest.raises(PushreachError) as denied:
            await stranger.get_statistics()
        assert denied.value.code is grpc.StatusCode.UNAUTHENTICATED


# -- retries and deadlines, against a stub server ---------------------------------------------


class FlakyPushes(push_pb2_grpc.PushServiceServicer):
    """Answers UNAVAILABLE `failures` times, then succeeds; sleeps `delay` per call."""

    def __init__(self, failures: int, delay: float = 0.0) -> None:
        self.failures = failures
        self.delay = delay
        self.calls: list[str] = []  # request ids (Push) or push ids (GetPush / CancelFallback)

    async def _maybe_fail(self, key: str, context: grpc.aio.ServicerContext) -> None:
        self.calls.append(key)
        if self.delay:
            await asyncio.sleep(self.delay)
        if len(self.calls) <= self.failures:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "try again")

    async def Push(self, request, context):  # type: ignore[no-untyped-def]
        await self._maybe_fail(request.request_id, context)
        return push_pb2.PushResponse(push_id="p-" + request.request_id[:8], target_count=len(request.token_list))

    async def GetPush(self, request, context):  # type: ignore[no-untyped-def]
        await self._maybe_fail(request.push_id, context)
        return push_pb2.GetPushResponse(push=push_pb2.PushSummary(push_id=request.push_id))


@pytest.fixture
async def stub():  # type: ignore[no-untyped-def]
    servers = []

    async def start(servicer: FlakyPushes) -> str:
        server = grpc.aio.server()
        push_pb2_grpc.add_PushServiceServicer_to_server(servicer, server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        servers.append(server)
        return f"127.0.0.1:{port}"

    yield start
    for server in servers:
        await server.stop(None)


async def test_push_is_retried_on_unavailable_with_one_request_id(stub) -> None:  # type: ignore[no-untyped-def]
    flaky = FlakyPushes(failures=2)
    async with Client(await stub(flaky), "a", "s", backoff=0.01) as client:
        answer = await client.push(sms_push(["t"]))
    assert len(flaky.calls) == 3
    assert len(set(flaky.calls)) == 1 and flaky.calls[0]  # every attempt carried the same id
    assert answer.push_id == "p-" + flaky.calls[0][:8]


async def test_a_given_request_id_is_kept(stub) -> None:  # type: ignore[no-untyped-def]
    flaky = FlakyPushes(failures=1)
    async with Client(await stub(flaky), "a", "s", backoff=0.01) as client:
        await client.push(sms_push(["t"], request_id="order-42"))
    assert flaky.calls == ["order-42", "order-42"]


async def test_retries_are_bounded(stub) -> None:  # type: ignore[no-untyped-def]
    flaky = FlakyPushes(failures=10)
    async with Client(await stub(flaky), "a", "s", retries=2, backoff=0.01) as client:
        with pytest.raises(PushreachError) as failed:
            await client.get_push("p1")
    assert failed.value.code is grpc.StatusCode.UNAVAILABLE
    assert flaky.calls == ["p1"] * 3


async def test_non_idempotent_calls_are_not_retried() -> None:
    calls = []

    class FlakyDevices(device_pb2_grpc.DeviceServiceServicer):
        async def BindPhone(self, request, context):  # type: ignore[no-untyped-def]
            calls.append(request.token)
            await context.abort(grpc.StatusCode.UNAVAILABLE, "try again")

    server = grpc.aio.server()
    device_pb2_grpc.add_DeviceServiceServicer_to_server(FlakyDevices(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with Client(f"127.0.0.1:{port}", "a", "s", backoff=0.01) as client:
            with pytest.raises(PushreachError) as failed:
                await client.bind_phone("t", "+8613800000001")
    finally:
        await server.stop(None)
    assert failed.value.code is grpc.StatusCode.UNAVAILABLE
    assert calls == ["t"]


async def test_every_call_has_a_deadline(stub) -> None:  # type: ignore[no-untyped-def]
    slow = FlakyPushes(failures=0, delay=5.0)
    target = await stub(slow)
    async with Client(target, "a", "s", timeout=0.2) as client:
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(PushreachError) as late:
            await client.get_push("p1")
        assert late.value.code is grpc.StatusCode.DEADLINE_EXCEEDED
        assert loop.time() - started < 2.0
        with pytest.raises(PushreachError) as late_too:
            await client.push(sms_push(["t"]), timeout=0.1)  # per-call override
        assert late_too.value.code is grpc.StatusCode.DEADLINE_EXCEEDED
    assert slow.calls[0] == "p1" and len(slow.calls) == 2  # DEADLINE_EXCEEDED is not retried


async def test_retry_reaches_a_server_that_starts_after_the_first_attempt(tmp_path: Path) -> None:
    with socket.socket() as s:  # a free port; the server will take it a moment later
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = test_settings(tmp_path, listen=f"127.0.0.1:{port}")
    fast_reconnect = [("grpc.initial_reconnect_backoff_ms", 50), ("grpc.max_reconnect_backoff_ms", 100)]
    client = Client(f"127.0.0.1:{port}", "a", "s", retries=20, backoff=0.05, max_backoff=0.1, options=fast_reconnect)
    running: Running | None = None
    try:
        call = asyncio.create_task(client.get_statistics())
        await asyncio.sleep(0.3)  # the first attempts find nobody listening
        assert not call.done()
        running = await start_service(settings)
        with pytest.raises(PushreachError) as answered:
            await call
        # The server answered: wrong credentials, but no longer UNAVAILABLE.
        assert answered.value.code is grpc.StatusCode.UNAUTHENTICATED
    finally:
        await client.close()
        if running is not None:
            await running.close()
            await running.service.stop()


def test_the_client_package_does_not_import_the_server() -> None:
    import subprocess
    import sys

    code = "import sys, pushreach; pushreach.Client; print(any(m.startswith('pushreachd') for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
