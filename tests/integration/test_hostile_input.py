"""Generated and malformed requests against every RPC of a real server.

Whatever arrives (random strings with unicode, NUL and huge ones, random enum numbers,
oversize lists, random bytes where a serialized message should be), the answer is never
INTERNAL or UNKNOWN, the server stays healthy and the store stays consistent.

The server runs on its own event loop in a thread so that Hypothesis can drive it with the
blocking gRPC client, one example at a time.
"""

from __future__ import annotations

import asyncio
import base64
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor, message
from google.protobuf.descriptor import FieldDescriptor as F
from google.protobuf.message_factory import GetMessageClass
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pushreach.v1 import admin_pb2, device_pb2, event_pb2, push_pb2, sms_pb2
from pushreachd.wiring import Service

from tests.harness import ADMIN_TOKEN, basic, sms_push, test_settings

BAD = (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN)
MODULES = (push_pb2, device_pb2, event_pb2, sms_pb2, admin_pb2)
METHODS = [
    (service, method)
    for module in MODULES
    for service in module.DESCRIPTOR.services_by_name.values()
    for method in service.methods
]
EXAMPLES = settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
    database=None,
)


@dataclass
class Server:
    target: str
    db: str
    app_md: tuple[tuple[str, str], ...]
    admin_md: tuple[tuple[str, str], ...]
    push_id: str
    channel: grpc.Channel


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("hostile")
    # No per-app budget or failure slowdown here: this is about what the input does.
    config = test_settings(tmp, app_rate_limit=0.0, auth_failure_limit=0)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    def run(coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, loop).result(timeout=30)

    service = run(_start(config))
    app, secret = run(service.apps.create_app("hostile"))
    channel = grpc.insecure_channel(f"127.0.0.1:{service.port}")
    md = basic(app.access_id, secret)
    stub_push = channel.unary_unary(
        "/pushreach.v1.PushService/Push",
        request_serializer=push_pb2.PushRequest.SerializeToString,
        response_deserializer=push_pb2.PushResponse.FromString,
    )
    device = channel.unary_unary(
        "/pushreach.v1.DeviceService/BindPhone",
        request_serializer=device_pb2.BindPhoneRequest.SerializeToString,
        response_deserializer=device_pb2.BindPhoneResponse.FromString,
    )
    device(device_pb2.BindPhoneRequest(token="t1", phone_number="+8613800000001"), metadata=md)
    pushed = stub_push(sms_push(["t1", "t2"], delay=3600), metadata=md)
    try:
        yield Server(
            f"127.0.0.1:{service.port}", config.db, md, (("authorization", f"Bearer {ADMIN_TOKEN}"),),
            pushed.push_id, channel,
        )
    finally:
        channel.close()
        run(service.stop())
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)


async def _start(config: Any) -> Service:
    service = Service(config)
    await service.start()
    return service


# -- strategies -------------------------------------------------------------------------------

TEXT = st.one_of(
    st.text(max_size=40),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=300),
    st.sampled_from(["", "\x00", "a\x00b", "+8613800000001", "13800138000", "../../etc", "'; DROP TABLE pushes; --"]),
    st.builds(lambda c, n: c * n, st.sampled_from(["x", "é", "\x00", "9", "😀"]), st.integers(250, 70_000)),
)


def _scalar(field: descriptor.FieldDescriptor, push_id: str) -> st.SearchStrategy[Any]:
    t = field.type
    if t == F.TYPE_STRING:
        if field.name in ("push_id",):
            return st.one_of(TEXT, st.just(push_id))
        return TEXT
    if t == F.TYPE_BYTES:
        return st.binary(max_size=200)
    if t == F.TYPE_BOOL:
        return st.booleans()
    if t == F.TYPE_ENUM:
        known = [v.number for v in field.enum_type.values]
        return st.one_of(st.sampled_from(known), st.integers(-(2**31), 2**31 - 1))
    if t in (F.TYPE_INT32, F.TYPE_SINT32, F.TYPE_SFIXED32):
        return st.integers(-(2**31), 2**31 - 1)
    if t in (F.TYPE_UINT32, F.TYPE_FIXED32):
        return st.integers(0, 2**32 - 1)
    if t in (F.TYPE_INT64, F.TYPE_SINT64, F.TYPE_SFIXED64):
        return st.integers(-(2**63), 2**63 - 1)
    if t in (F.TYPE_UINT64, F.TYPE_FIXED64):
        return st.integers(0, 2**64 - 1)
    if t in (F.TYPE_DOUBLE, F.TYPE_FLOAT):
        return st.floats(allow_nan=True, allow_infinity=True, width=32 if t == F.TYPE_FLOAT else 64)
    raise AssertionError(f"no strategy for {field.full_name}")


@st.composite
def messages(draw: st.DrawFn, desc: descriptor.Descriptor, push_id: str, depth: int = 0) -> message.Message:
    msg = GetMessageClass(desc)()
    for field in desc.fields:
        if not draw(st.booleans()):
            continue
        if field.full_name == "google.protobuf.Timestamp.nanos":
            value_strategy: st.SearchStrategy[Any] = st.integers(-(2**31), 2**31 - 1)
        elif field.type == F.TYPE_MESSAGE:
            if depth >= 2:
                continue
            value_strategy = messages(field.message_type, push_id, depth + 1)
        else:
            value_strategy = _scalar(field, push_id)
        if field.is_repeated:
            # Past-the-limit counts at the top level only: nested lists of lists (tag_rules ->
            # tag_items -> tags) multiplied out would be gigabytes before they reach the server.
            size = draw(st.one_of(st.integers(0, 5), st.sampled_from([1001, 1100]))) if depth == 0 else draw(st.integers(0, 5))
            if field.type == F.TYPE_MESSAGE:
                # 1,000 of a message: past any count limit anyway, so an empty one will do.
                one = draw(value_strategy) if size < 10 else GetMessageClass(field.message_type)()
                getattr(msg, field.name).extend([one] * min(size, 1100))
            else:
                short = size >= 10 and field.type == F.TYPE_STRING  # 1,000 huge strings: past any limit anyway
                one = draw(st.text(max_size=8) if short else value_strategy)
                getattr(msg, field.name).extend([one] * size)
        elif field.type == F.TYPE_MESSAGE:
            getattr(msg, field.name).CopyFrom(draw(value_strategy))
        else:
            setattr(msg, field.name, draw(value_strategy))
    return msg


# -- checks -----------------------------------------------------------------------------------


def _call(live: Server, service: descriptor.ServiceDescriptor, method: descriptor.MethodDescriptor,
          payloads: list[bytes], metadata: Any) -> grpc.StatusCode:
    path = f"/{service.full_name}/{method.name}"
    try:
        if method.client_streaming:
            live.channel.stream_unary(path)(iter(payloads), metadata=metadata, timeout=30)
        else:
            live.channel.unary_unary(path)(payloads[0], metadata=metadata, timeout=30)
    except grpc.RpcError as exc:
        return exc.code()  # type: ignore[attr-defined,no-any-return]
    return grpc.StatusCode.OK


def _metadata(live: Server, service: descriptor.ServiceDescriptor) -> Any:
    return live.admin_md if service.name == "AdminService" else live.app_md


def check_store(db: str) -> None:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        bad_counts = conn.execute(
            "SELECT p.push_id FROM pushes p WHERE p.target_count != (SELECT count(*) FROM targets t WHERE t.push = p.id)"
        ).fetchall()
        assert bad_counts == []
        assert conn.execute("SELECT count(*) FROM targets WHERE push NOT IN (SELECT id FROM pushes)").fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM sms_records WHERE push NOT IN (SELECT id FROM pushes)").fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM pushes WHERE fallback_state NOT IN (1,2,3,4,5)").fetchone() == (0,)
    finally:
        conn.close()


def check_healthy(live: Server) -> None:
    answer = health_pb2_grpc.HealthStub(live.channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
    assert answer.status == health_pb2.HealthCheckResponse.SERVING


@pytest.mark.parametrize(("service", "method"), METHODS, ids=[f"{s.name}.{m.name}" for s, m in METHODS])
def test_generated_requests_never_break_the_server(live: Server, service, method) -> None:  # type: ignore[no-untyped-def]
    @EXAMPLES
    @given(st.data())
    def run(data: st.DataObject) -> None:
        count = data.draw(st.integers(1, 3)) if method.client_streaming else 1
        requests = [data.draw(messages(method.input_type, live.push_id)) for _ in range(count)]
        code = _call(live, service, method, [r.SerializeToString() for r in requests], _metadata(live, service))
        assert code not in BAD, (code, requests)

    run()
    check_healthy(live)
    check_store(live.db)


@pytest.mark.parametrize(("service", "method"), METHODS, ids=[f"{s.name}.{m.name}" for s, m in METHODS])
def test_random_bytes_as_a_message_never_break_the_server(live: Server, service, method) -> None:  # type: ignore[no-untyped-def]
    @EXAMPLES
    @given(st.lists(st.binary(max_size=300), min_size=1, max_size=3))
    def run(payloads: list[bytes]) -> None:
        code = _call(live, service, method, payloads, _metadata(live, service))
        assert code not in BAD, (code, payloads)

    run()
    check_healthy(live)
    check_store(live.db)


@given(st.one_of(st.text(max_size=200), st.binary(max_size=200).map(lambda b: base64.b64encode(b).decode())))
@EXAMPLES
def test_garbage_credentials_are_unauthenticated(live: Server, header: str) -> None:
    for value in (header, f"Basic {header}", f"Bearer {header}"):
        if not value.isprintable() or not value.isascii():
            continue  # gRPC refuses such metadata on the client side
        for service, method in METHODS[:1] + [m for m in METHODS if m[0].name == "AdminService"][:1]:
            code = _call(live, service, method, [b""], (("authorization", value),))
            assert code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED), (code, value)
