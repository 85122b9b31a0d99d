"""After a scenario with arrivals, clicks, SMS, a rate limit and a pending fallback, GetPush,
GetStatistics and /metrics tell exactly what happened."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest
from pushreach.v1 import event_pb2, push_pb2, sms_pb2

from tests.harness import Caller, Running, sms_push, start_service, test_settings
from tests.integration.test_fallback_e2e import report, wait_done

PHONES = ["+8613800000001", "+8613800000002", "+8613800000003", "+8613800000004"]


@pytest.fixture
async def metered(tmp_path: Path) -> Running:  # type: ignore[misc]
    running = await start_service(test_settings(tmp_path, metrics_listen="127.0.0.1:0"))
    yield running
    await running.close()
    await running.service.stop()


async def run_scenario(app: Caller) -> dict[str, str]:
    """tok0..tok3 have phones, tok4 has none.

    Push A (NOT_ARRIVED) to tok0..tok4: tok0 arrives, tok1 clicks; the fallback sends to the
    phones of tok2 and tok3, counts tok4 as without phone; then tok2 arrives (after its SMS).
    Push B (NOT_CLICKED, same content) to tok3: its phone got that content seconds ago, so the
    SMS is rate-limited. Push C waits an hour: its fallback stays pending.
    """
    for i, phone in enumerate(PHONES):
        await app.bind(f"tok{i}", phone)
    a = await app.push.Push(sms_push([f"tok{i}" for i in range(5)], delay=1), metadata=app.metadata)
    assert await report(app, a.push_id, "tok0", event_pb2.EVENT_TYPE_ARRIVED) == event_pb2.EVENT_OUTCOME_ACCEPTED
    assert await report(app, a.push_id, "tok1", event_pb2.EVENT_TYPE_CLICKED) == event_pb2.EVENT_OUTCOME_ACCEPTED
    await wait_done(app, a.push_id)
    assert await report(app, a.push_id, "tok2", event_pb2.EVENT_TYPE_ARRIVED) == event_pb2.EVENT_OUTCOME_ACCEPTED
    b = await app.push.Push(
        sms_push(["tok3"], condition=push_pb2.TRIGGER_CONDITION_NOT_CLICKED, delay=1), metadata=app.metadata
    )
    await wait_done(app, b.push_id)
    c = await app.push.Push(sms_push(["tok0"], delay=3600), metadata=app.metadata)
    return {"a": a.push_id, "b": b.push_id, "c": c.push_id}


async def test_get_push_statistics_and_metrics_match_the_scenario(metered: Running) -> None:
    app = await metered.new_app()
    ids = await run_scenario(app)

    got = await app.push.GetPush(push_pb2.GetPushRequest(push_id=ids["a"]), metadata=app.metadata)
    f = got.funnel
    assert got.push.fallback_state == push_pb2.FALLBACK_STATE_DONE
    assert got.push.HasField("fallback_end_time")
    assert (f.target_count, f.arrived_count, f.clicked_count) == (5, 3, 1)
    assert (f.sms_sent_count, f.sms_failed_count, f.sms_rate_limited_count, f.sms_unknown_count) == (2, 0, 0, 0)
    assert (f.no_phone_count, f.arrived_after_sms_count) == (1, 1)
    by_token = {t.token: t for t in got.targets}
    assert [by_token[f"tok{i}"].sms_status for i in range(5)] == [0, 0, sms_pb2.SMS_STATUS_SENT, sms_pb2.SMS_STATUS_SENT, 0]
    assert by_token["tok1"].HasField("click_time") and by_token["tok1"].HasField("arrive_time")
    assert by_token["tok2"].phone_number == "+86138****0003"
    assert by_token["tok4"].phone_number == ""

    got_b = await app.push.GetPush(push_pb2.GetPushRequest(push_id=ids["b"]), metadata=app.metadata)
    assert (got_b.funnel.target_count, got_b.funnel.sms_sent_count, got_b.funnel.sms_rate_limited_count) == (1, 0, 1)
    assert got_b.targets[0].sms_status == sms_pb2.SMS_STATUS_RATE_LIMITED

    got_c = await app.push.GetPush(push_pb2.GetPushRequest(push_id=ids["c"]), metadata=app.metadata)
    assert got_c.push.fallback_state == push_pb2.FALLBACK_STATE_PENDING
    assert got_c.push.fallback_due_time.seconds - got_c.push.accept_time.seconds in (3599, 3600)

    limited = await app.sms.ListSmsRecords(
        sms_pb2.ListSmsRecordsRequest(statuses=[sms_pb2.SMS_STATUS_RATE_LIMITED], show_full_phone_number=True),
        metadata=app.metadata,
    )
    assert [(r.push_id, r.phone_number, r.rate_limit_rule) for r in limited.records] == [
        (ids["b"], PHONES[3], "same_content")  # sms.proto says same_content_30s
    ]

    stats = await app.sms.GetStatistics(sms_pb2.GetStatisticsRequest(), metadata=app.metadata)
    assert (stats.push_count, stats.target_count, stats.arrived_count, stats.clicked_count) == (3, 7, 3, 1)
    assert stats.arrival_rate == pytest.approx(3 / 7) and stats.click_rate == pytest.approx(1 / 7)
    assert (stats.sms.sent, stats.sms.failed, stats.sms.rate_limited, stats.sms.unknown) == (2, 0, 1, 0)
    assert stats.sms_fee == 2  # the console provider bills 1 per SMS sent
    assert stats.pending_fallback_count == 1
    assert list(stats.buckets) == []  # none unless asked for

    hourly = await app.sms.GetStatistics(
        sms_pb2.GetStatisticsRequest(interval=sms_pb2.STATISTICS_INTERVAL_HOUR, time_zone="Asia/Shanghai"),
        metadata=app.metadata,
    )
    assert len(hourly.buckets) in (7 * 24, 7 * 24 + 1)  # the default 7 days, clipped at both ends
    assert sum(b.push_count for b in hourly.buckets) == 3
    assert sum(b.target_count for b in hourly.buckets) == 7
    assert sum(b.arrived_count for b in hourly.buckets) == 3
    assert sum(b.sms.sent for b in hourly.buckets) == 2 and sum(b.sms.rate_limited for b in hourly.buckets) == 1
    assert hourly.buckets[-1].end_time == hourly.end_time and hourly.buckets[0].start_time == hourly.start_time

    # Another app sees none of it.
    other = await metered.new_app("other")
    empty = await other.sms.GetStatistics(sms_pb2.GetStatisticsRequest(), metadata=other.metadata)
    assert (empty.push_count, empty.sms.sent) == (0, 0)

    text = await scrape(metered)
    assert sample(text, "pushreach_sms_total", outcome="sent") == 2
    assert sample(text, "pushreach_sms_total", outcome="rate_limited") == 1
    assert sample(text, "pushreach_sms_total", outcome="failed") == 0
    assert sample(text, "pushreach_fallback_fires_total") == 2
    assert sample(text, "pushreach_fallback_targets_without_phone_total") == 1
    assert sample(text, "pushreach_fallback_fire_lateness_seconds_count") == 2
    assert sample(text, "pushreach_fallbacks_pending") == 1
    assert sample(text, "pushreach_fallbacks_backlog") == 0
    push_ok = {"method": "/pushreach.v1.PushService/Push", "code": "OK"}
    assert sample(text, "pushreach_rpc_requests_total", **push_ok) == 3
    assert sample(text, "pushreach_rpc_duration_seconds_count", **push_ok) == 3
    assert sample(text, "pushreach_rpc_duration_seconds_bucket", le="+Inf", **push_ok) == 3
    # Only push A's fallback reached the provider (B's SMS was suppressed before it).
    assert sample(text, "pushreach_sms_provider_duration_seconds_count", provider="console", result="ok") == 1
    assert sample(text, "pushreach_sms_provider_attempts_total") == 1
    assert sample(text, "pushreach_store_commit_duration_seconds_count") >= 1
    assert sample(text, "pushreach_store_commit_batch_size_sum") >= sample(
        text, "pushreach_store_commit_batch_size_count"
    )


async def test_rpc_errors_are_counted_by_code(metered: Running) -> None:
    app = await metered.new_app()
    with pytest.raises(Exception):
        await app.push.GetPush(push_pb2.GetPushRequest(push_id="nope"), metadata=app.metadata)
    with pytest.raises(Exception):
        await metered.anonymous().push.GetPush(push_pb2.GetPushRequest(push_id="nope"))
    with pytest.raises(Exception):
        await app.push.Push(push_pb2.PushRequest(), metadata=app.metadata)
    text = await scrape(metered)
    get = "/pushreach.v1.PushService/GetPush"
    assert sample(text, "pushreach_rpc_requests_total", method=get, code="NOT_FOUND") == 1
    assert sample(text, "pushreach_rpc_requests_total", method=get, code="UNAUTHENTICATED") == 1
    assert sample(text, "pushreach_rpc_requests_total", method="/pushreach.v1.PushService/Push", code="INVALID_ARGUMENT") == 1


async def test_metrics_endpoint_is_off_by_default_and_closes_on_stop(tmp_path: Path) -> None:
    (tmp_path / "off").mkdir()
    (tmp_path / "on").mkdir()
    off = await start_service(test_settings(tmp_path / "off"))
    assert off.service.metrics_port == 0 and off.service.metrics_server is None
    await off.close()
    await off.service.stop()
    on = await start_service(test_settings(tmp_path / "on", metrics_listen="127.0.0.1:0"))
    port = on.service.metrics_port
    assert port and "pushreach_fallbacks_pending 0.0" in await scrape(on)
    await on.close()
    await on.service.stop()
    async with httpx.AsyncClient() as client:
        with pytest.raises(httpx.ConnectError):
            await client.get(f"http://127.0.0.1:{port}/metrics")


async def scrape(running: Running) -> str:
    async with httpx.AsyncClient() as client:
        answer = await client.get(f"http://127.0.0.1:{running.service.metrics_port}/metrics")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain")
    return answer.text


def sample(text: str, name: str, **labels: str) -> float:
    """The value of one series in the exposition text; fails when it is absent."""
    for line in text.splitlines():
        m = re.fullmatch(r"([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)", line)
        if m is None or m.group(1) != name:
            continue
        found = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
        if found == labels:
            return float(m.group(3))
    raise AssertionError(f"no series {name}{labels} in /metrics")
