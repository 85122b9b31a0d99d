"""Metrics: a registry per service, the hooks feed the right series, the interceptor's codes."""

from __future__ import annotations

from dataclasses import dataclass

import grpc
import pytest
from pushreach.v1 import push_pb2, push_pb2_grpc
from pushreachd.api.interceptors import MetricsInterceptor
from pushreachd.engine.scheduler import FireReport
from pushreachd.metrics import Metrics, TimedSmsProvider
from pushreachd.sms.provider import (
    SendOutcome,
    SmsBatch,
    SmsErrorKind,
    SmsProviderError,
    SmsResult,
)


def value(m: Metrics, name: str, **labels: str) -> float | None:
    return m.registry.get_sample_value(name, labels)


def report(lateness: float = 0.5, sent: int = 2, failed: int = 1, rate_limited: int = 3, no_phone: int = 4) -> FireReport:
    return FireReport("p1", "a1", lateness, sent, failed, rate_limited, 0, no_phone)


def test_each_metrics_has_its_own_registry() -> None:
    a, b = Metrics(), Metrics()  # would raise "Duplicated timeseries" on a shared registry
    a.observe_fire(report())
    assert value(a, "pushreach_sms_total", outcome="sent") == 2
    assert value(b, "pushreach_sms_total", outcome="sent") == 0


def test_fire_reports_feed_sms_by_outcome_and_lateness() -> None:
    m = Metrics()
    m.observe_fire(report(lateness=0.07))
    m.observe_fire(report(lateness=12.0, sent=1, failed=0, rate_limited=0, no_phone=0))
    assert value(m, "pushreach_sms_total", outcome="sent") == 3
    assert value(m, "pushreach_sms_total", outcome="failed") == 1
    assert value(m, "pushreach_sms_total", outcome="rate_limited") == 3
    assert value(m, "pushreach_fallback_targets_without_phone_total") == 4
    assert value(m, "pushreach_fallback_fires_total") == 2
    assert value(m, "pushreach_fallback_fire_lateness_seconds_count") == 2
    assert value(m, "pushreach_fallback_fire_lateness_seconds_bucket", le="0.1") == 1
    assert value(m, "pushreach_fallback_fire_lateness_seconds_bucket", le="30.0") == 2


def test_commits_feed_latency_and_batch_size() -> None:
    m = Metrics()
    m.observe_commit(1, 0.002)
    m.observe_commit(40, 0.02)
    assert value(m, "pushreach_store_commit_batch_size_count") == 2
    assert value(m, "pushreach_store_commit_batch_size_sum") == 41
    assert value(m, "pushreach_store_commit_batch_size_bucket", le="32.0") == 1
    assert value(m, "pushreach_store_commit_duration_seconds_bucket", le="0.0025") == 1


@dataclass
class Live:
    pending_count: int = 0
    backlog: int = 0


@dataclass
class Counters:
    batches: int = 0
    attempts: int = 0
    retries: int = 0
    exhausted: int = 0


def test_pending_fallbacks_and_sender_counters_are_read_at_scrape_time() -> None:
    m = Metrics()
    assert value(m, "pushreach_fallbacks_pending") is None  # nothing attached yet
    live, counters = Live(), Counters()
    m.watch(live, counters)
    live.pending_count, live.backlog = 7, 2
    counters.attempts, counters.retries = 5, 3
    assert value(m, "pushreach_fallbacks_pending") == 7
    assert value(m, "pushreach_fallbacks_backlog") == 2
    assert value(m, "pushreach_sms_provider_attempts_total") == 5
    assert value(m, "pushreach_sms_provider_retries_total") == 3
    live.pending_count = 0
    assert value(m, "pushreach_fallbacks_pending") == 0
    assert b"pushreach_fallbacks_pending 0.0" in m.exposition()


class ScriptedProvider:
    name = "scripted"
    max_batch_size = 200

    def __init__(self, error: SmsProviderError | Exception | None = None) -> None:
        self.error = error
        self.closed = False

    async def send(self, batch: SmsBatch) -> list[SmsResult]:
        if self.error is not None:
            raise self.error
        return [SmsResult(n, SendOutcome.SENT) for n in batch.phone_numbers]

    async def close(self) -> None:
        self.closed = True


BATCH = SmsBatch("a1", None, "1400000001", "Sign", "123", (), ("+8613800000001",))


@pytest.mark.parametrize(
    ("error", "result"),
    [
        (None, "ok"),
        (SmsProviderError(SmsErrorKind.TRANSIENT, "InternalError", "x"), "transient"),
        (SmsProviderError(SmsErrorKind.RATE_LIMITED, "LimitExceeded.PhoneNumberDailyLimit", "x"), "rate_limited"),
        (SmsProviderError(SmsErrorKind.PERMANENT, "AuthFailure", "x"), "permanent"),
        (RuntimeError("bug"), "error"),
    ],
)
async def test_provider_calls_are_timed_by_result(error: Exception | None, result: str) -> None:
    m = Metrics()
    ticks = iter([10.0, 10.25])
    inner = ScriptedProvider(error)
    timed = TimedSmsProvider(inner, m.observe_provider_call, timer=lambda: next(ticks))
    assert (timed.name, timed.max_batch_size) == ("scripted", 200)
    if error is None:
        assert [r.outcome for r in await timed.send(BATCH)] == [SendOutcome.SENT]
    else:
        with pytest.raises(type(error)):
            await timed.send(BATCH)
    labels = {"provider": "scripted", "result": result}
    assert value(m, "pushreach_sms_provider_duration_seconds_count", **labels) == 1
    assert value(m, "pushreach_sms_provider_duration_seconds_sum", **labels) == 0.25
    code = error.code if isinstance(error, SmsProviderError) else ""
    if code:  # the provider's code is counted, so an alert can single out AuthFailure
        assert value(m, "pushreach_sms_provider_errors_total", provider="scripted", code=code) == 1
    else:
        assert "pushreach_sms_provider_errors_total{" not in m.exposition().decode()
    await timed.close()
    assert inner.closed


class Servicer(push_pb2_grpc.PushServiceServicer):
    async def GetPush(self, request, context):  # type: ignore[no-untyped-def]
        if request.push_id == "missing":
            await context.abort(grpc.StatusCode.NOT_FOUND, "no such push")
        if request.push_id == "crash":
            raise RuntimeError("bug")
        return push_pb2.GetPushResponse()


async def test_interceptor_counts_rpcs_by_method_and_code() -> None:
    seen: list[tuple[str, str]] = []
    server = grpc.aio.server(interceptors=[MetricsInterceptor(lambda method, code, s: seen.append((method, code)))])
    push_pb2_grpc.add_PushServiceServicer_to_server(Servicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = push_pb2_grpc.PushServiceStub(channel)
            await stub.GetPush(push_pb2.GetPushRequest(push_id="p"))
            for push_id in ("missing", "crash"):
                with pytest.raises(grpc.aio.AioRpcError):
                    await stub.GetPush(push_pb2.GetPushRequest(push_id=push_id))
            with pytest.raises(grpc.aio.AioRpcError) as unimplemented:  # the generated base method
                await stub.Push(push_pb2.PushRequest())
    finally:
        await server.stop(None)
    method = "/pushreach.v1.PushService/GetPush"
    assert seen == [
        (method, "OK"),
        (method, "NOT_FOUND"),
        (method, "UNKNOWN"),
        ("/pushreach.v1.PushService/Push", unimplemented.value.code().name),
    ]
