"""Devices reporting for themselves on a real server (gRPC + HTTP, real SQLite): the receipt
taken from the delivered payload and POSTed decides the fallback; forged, altered, foreign,
expired and replayed receipts change nothing; notification state signed with the device key
from BindPhone; Hypothesis-generated bodies never answer 500."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pushreach.v1 import push_pb2, sms_pb2
from pushreachd.channels.log import LogPushChannel
from pushreachd.services.receipts import decode_receipt, state_mac

from tests.harness import (
    Caller,
    Running,
    sms_push,
    start_service,
    test_settings,
    wait_done,
)

PHONES = ["+8613800000001", "+8613800000002", "+8613800000003"]


@pytest.fixture
async def served(tmp_path: Path):  # type: ignore[no-untyped-def]
    running = await start_service(
        test_settings(tmp_path, http_listen="127.0.0.1:0", http_address_rate_limit=0, http_token_rate_limit=0)
    )
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{running.service.http_port}", timeout=10) as client:
        yield running, client
    await running.close()
    await running.service.stop()


async def delivered_receipts(running: Running, push_id: str, timeout: float = 10.0) -> dict[str, str]:
    """token -> receipt, as the channel handed the push to the devices (bounded wait)."""
    channel = running.service.channel
    assert isinstance(channel, LogPushChannel)
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        for delivery in channel.deliveries:
            if delivery.push_id == push_id:
                return {t.token: t.receipt for t in delivery.targets}
        assert asyncio.get_running_loop().time() < deadline, "push never delivered"
        await asyncio.sleep(0.02)


async def texted(app: Caller, push_id: str) -> list[str]:
    answer = await app.sms.ListSmsRecords(
        sms_pb2.ListSmsRecordsRequest(push_id=push_id, show_full_phone_number=True), metadata=app.metadata
    )
    return sorted(r.phone_number for r in answer.records if r.status == sms_pb2.SMS_STATUS_SENT)


async def three_devices(app: Caller) -> list[str]:
    for i, phone in enumerate(PHONES):
        await app.bind(f"tok{i}", phone)
    return ["tok0", "tok1", "tok2"]


async def test_an_arrival_receipt_spares_the_sms_of_not_arrived(served) -> None:  # type: ignore[no-untyped-def]
    running, client = served
    app = await running.new_app()
    tokens = await three_devices(app)
    pushed = await app.push.Push(sms_push(tokens, push_pb2.TRIGGER_CONDITION_NOT_ARRIVED, delay=2), metadata=app.metadata)
    receipts = await delivered_receipts(running, pushed.push_id)
    assert set(receipts) == set(tokens) and all(receipts.values())
    # Good for the push's expire_time (default 3 days) plus the fallback's delay.
    assert abs(decode_receipt(receipts["tok0"])[0].expires_at - (time.time() + 259200 + 2)) < 60
    answer = await client.post("/v1/receipts", json={"receipt": receipts["tok0"], "event": "arrived"})
    assert answer.status_code == 200 and answer.json() == {"outcome": "ACCEPTED", "push_id": pushed.push_id}
    again = await client.post("/v1/receipts", json={"receipt": receipts["tok0"], "event": "arrived"})
    assert again.json()["outcome"] == "DUPLICATE"
    done = await wait_done(app, pushed.push_id)
    assert await texted(app, pushed.push_id) == PHONES[1:]
    assert done.funnel.arrived_count == 1
    # Replayed after the fallback is done: DUPLICATE, nothing changes.
    replay = await client.post("/v1/receipts", json={"receipt": receipts["tok0"], "event": "arrived"})
    assert replay.json()["outcome"] == "DUPLICATE"
    assert await texted(app, pushed.push_id) == PHONES[1:]


async def test_a_click_receipt_spares_the_sms_of_not_clicked(served) -> None:  # type: ignore[no-untyped-def]
    running, client = served
    app = await running.new_app()
    tokens = await three_devices(app)
    pushed = await app.push.Push(sms_push(tokens, push_pb2.TRIGGER_CONDITION_NOT_CLICKED, delay=2), metadata=app.metadata)
    receipts = await delivered_receipts(running, pushed.push_id)
    batch = await client.post(
        "/v1/receipts",
        json={
            "receipts": [
                {"receipt": receipts["tok0"], "event": "arrived"},  # arrival is not a click
                {"receipt": receipts["tok1"], "event": "arrived", "event_time": "2026-01-01T00:00:00Z"},
                {"receipt": receipts["tok1"], "event": "clicked"},
            ]
        },
    )
    assert batch.status_code == 200
    assert [r["outcome"] for r in batch.json()["results"]] == ["ACCEPTED", "ACCEPTED", "ACCEPTED"]
    done = await wait_done(app, pushed.push_id)
    assert await texted(app, pushed.push_id) == [PHONES[0], PHONES[2]]
    assert (done.funnel.arrived_count, done.funnel.clicked_count) == (2, 1)


async def test_a_device_reporting_disabled_gets_the_sms_of_notification_disabled(served) -> None:  # type: ignore[no-untyped-def]
    running, client = served
    app = await running.new_app()
    keys = {}
    for i, phone in enumerate(PHONES[:2]):
        keys[f"tok{i}"] = (await app.bind(f"tok{i}", phone)).device_key
    assert all(keys.values()) and keys["tok0"] != keys["tok1"]
    now = int(time.time())
    for token, state in (("tok0", "enabled"), ("tok1", "disabled")):
        body = {
            "access_id": app.access_id,
            "token": token,
            "notification_state": state,
            "timestamp": now,
            "mac": state_mac(keys[token], app.access_id, token, state, now),
        }
        answer = await client.post("/v1/devices/state", json=body)
        assert answer.status_code == 200 and answer.json() == {"outcome": "ACCEPTED"}
        assert (await client.post("/v1/devices/state", json=body)).json() == {"outcome": "DUPLICATE"}
    # tok1's key cannot speak for tok0, and a report of the other state with the same MAC fails.
    forged = {
        "access_id": app.access_id,
        "token": "tok0",
        "notification_state": "disabled",
        "timestamp": now,
        "mac": state_mac(keys["tok1"], app.access_id, "tok0", "disabled", now),
    }
    refused = await client.post("/v1/devices/state", json=forged)
    assert refused.status_code == 401 and refused.json()["error"]["field"] == "mac"
    stale = dict(forged, timestamp=now - 3600, mac=state_mac(keys["tok0"], app.access_id, "tok0", "disabled", now - 3600))
    assert (await client.post("/v1/devices/state", json=stale)).json()["error"]["field"] == "timestamp"
    pushed = await app.push.Push(
        sms_push(["tok0", "tok1"], push_pb2.TRIGGER_CONDITION_NOTIFICATION_DISABLED, delay=2), metadata=app.metadata
    )
    await wait_done(app, pushed.push_id)
    assert await texted(app, pushed.push_id) == [PHONES[1]]


async def test_forged_altered_foreign_and_expired_receipts_change_nothing(served) -> None:  # type: ignore[no-untyped-def]
    running, client = served
    app = await running.new_app("a")
    other = await running.new_app("b")
    tokens = await three_devices(app)
    await other.bind("tok0", PHONES[0])
    p = await app.push.Push(sms_push(tokens, push_pb2.TRIGGER_CONDITION_NOT_ARRIVED, delay=3), metadata=app.metadata)
    q = await other.push.Push(sms_push(["tok0"], push_pb2.TRIGGER_CONDITION_NOT_ARRIVED, delay=3), metadata=other.metadata)
    mine, theirs = await delivered_receipts(running, p.push_id), await delivered_receipts(running, q.push_id)
    genuine = mine["tok0"]
    changed = genuine[:20] + ("A" if genuine[20] != "A" else "B") + genuine[21:]
    app_row = await running.service.apps.get_app(app.access_id)
    expired = await running.service.receipts.mint(app_row.id, p.push_id, "tok0", time.time() - 1)
    for receipt in (changed, genuine[:-2], "x" * 40, expired):
        refused = await client.post("/v1/receipts", json={"receipt": receipt, "event": "arrived"})
        assert refused.status_code == 401, refused.text
        assert refused.json()["error"] == {
            "code": "UNAUTHENTICATED",
            "message": refused.json()["error"]["message"],
            "field": "receipt",
        }
    # Another app's receipt for the same token reports for that app's push only.
    theirs_posted = await client.post("/v1/receipts", json={"receipt": theirs["tok0"], "event": "arrived"})
    assert theirs_posted.json() == {"outcome": "ACCEPTED", "push_id": q.push_id}
    # A batch with one bad receipt records the good ones and names the bad one.
    mixed = await client.post(
        "/v1/receipts",
        json={"receipts": [{"receipt": changed, "event": "arrived"}, {"receipt": mine["tok1"], "event": "arrived"}]},
    )
    assert mixed.status_code == 200
    first, second = mixed.json()["results"]
    assert first["error"]["code"] == "UNAUTHENTICATED" and first["error"]["field"] == "receipts[0].receipt"
    assert second == {"outcome": "ACCEPTED", "push_id": p.push_id}
    all_bad = await client.post("/v1/receipts", json={"receipts": [{"receipt": changed, "event": "arrived"}]})
    assert all_bad.status_code == 401 and all_bad.json()["error"]["field"] == "receipts[0].receipt"
    metrics = running.service.metrics.exposition().decode()
    assert 'pushreach_device_reports_total{kind="receipt",outcome="refused"} 6.0' in metrics
    assert 'pushreach_device_reports_total{kind="receipt",outcome="accepted"} 2.0' in metrics
    await wait_done(app, p.push_id)
    assert await texted(app, p.push_id) == [PHONES[0], PHONES[2]]  # tok0's forged arrival changed nothing
    await wait_done(other, q.push_id)
    assert await texted(other, q.push_id) == []


async def test_bad_requests_name_the_field_and_record_nothing(served) -> None:  # type: ignore[no-untyped-def]
    running, client = served
    cases = [
        ({"event": "arrived"}, "receipt"),
        ({"receipt": "abc", "event": "opened"}, "event"),
        ({"receipt": "abc", "event": "arrived", "event_time": "yesterday"}, "event_time"),
        ({"receipts": [{"receipt": "abc"}]}, "receipts[0].event"),
        ({"receipts": [{"receipt": "abc", "event": "arrived"}] * 101}, "receipts"),
        ({"receipts": "abc"}, "receipts"),
    ]
    for body, field in cases:
        answer = await client.post("/v1/receipts", json=body)
        assert answer.status_code == 400, (body, answer.text)
        assert answer.json()["error"]["field"] == field
    big = await client.post("/v1/receipts", content=b" " * (200 * 1024))
    assert big.status_code == 413
    state = await client.post("/v1/devices/state", json={"token": "t", "notification_state": "off"})
    assert state.status_code == 400
    assert {v["field"] for v in state.json()["error"]["violations"]} == {
        "access_id", "notification_state", "timestamp", "mac"
    }


async def test_device_budgets_answer_429(tmp_path: Path) -> None:
    running = await start_service(
        test_settings(tmp_path, http_listen="127.0.0.1:0", http_address_rate_limit=1000, http_token_rate_limit=0.1)
    )
    try:
        app = await running.new_app()
        await app.bind("tok0", PHONES[0])
        pushed = await app.push.Push(sms_push(["tok0"], delay=60), metadata=app.metadata)
        receipt = (await delivered_receipts(running, pushed.push_id))["tok0"]
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{running.service.http_port}") as client:
            codes = [
                (await client.post("/v1/receipts", json={"receipt": receipt, "event": "arrived"})).status_code
                for _ in range(2)
            ]
            assert codes == [200, 429]  # 0.1/s with a burst of 10 s worth: one report
    finally:
        await running.close()
        await running.service.stop()


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
field_names = st.sampled_from(
    ["receipt", "event", "event_time", "receipts", "access_id", "token", "notification_state", "timestamp", "mac"]
)
bodies = st.one_of(
    st.dictionaries(field_names, json_values, max_size=6).map(lambda d: json.dumps(d).encode()),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=200),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=st.sampled_from(["/v1/receipts", "/v1/devices/state"]), body=bodies)
async def test_generated_bodies_never_answer_500(served, path: str, body: bytes) -> None:  # type: ignore[no-untyped-def]
    _, client = served
    answer = await client.post(path, content=body, headers={"content-type": "application/json"})
    assert answer.status_code in (200, 400, 401, 413, 429), answer.text
    assert "error" in answer.json() or answer.status_code == 200
