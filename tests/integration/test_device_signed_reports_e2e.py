"""Arrival and click reports signed with the device key, end to end: a real server (gRPC and
HTTP on 127.0.0.1:0, real SQLite), the Android vendors' loopback emulator, FakeSmsProvider.

What is checked: a push to 3,000 Huawei devices goes out in 3 vendor calls whose payload names
the push and carries no receipt; a signed arrival for one of them spares its phone's SMS under
NOT_ARRIVED; forged reports (wrong key, another token's key, another app, a push the token was
not a target of, a stale timestamp, a changed event) are refused and record nothing, a foreign
push answered exactly like a wrong key; replays are DUPLICATE; a batch mixes receipts and
signed reports; the device's budget holds; Hypothesis-generated bodies never answer 500."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pushreach.v1 import device_pb2, push_pb2
from pushreachd.channels.emulator.android import EmulatorState, running
from pushreachd.services.receipts import event_mac
from pushreachd.wiring import Overrides

from tests.fakes import FakeSmsProvider
from tests.harness import (
    Caller,
    Running,
    register,
    set_channel,
    settled,
    sms_push,
    start_service,
    test_settings,
    wait_done,
)
from tests.integration.test_broadcast_e2e import sent_phones
from tests.integration.test_channels_e2e import HMS

PHONE_A, PHONE_B = "+8613800138000", "+8613900139000"


@pytest.fixture
async def emulator() -> AsyncIterator[tuple[EmulatorState, str]]:
    state = EmulatorState()
    state.add_app("hms", HMS["app_id"], **HMS)
    async with running(state) as url:
        yield state, url


async def serve(tmp_path: Path, url: str, **changes: Any) -> tuple[Running, FakeSmsProvider]:
    sms = FakeSmsProvider()
    limits = {"http_address_rate_limit": 0, "http_token_rate_limit": 0, "auth_failure_limit": 0} | changes
    settings = test_settings(
        tmp_path, http_listen="127.0.0.1:0", hms_endpoint=url, hms_token_endpoint=f"{url}/oauth2/v3/token", **limits
    )
    return await start_service(settings, Overrides(sms_provider=sms)), sms


@pytest.fixture
async def served(tmp_path: Path, emulator: tuple[EmulatorState, str]):  # type: ignore[no-untyped-def]
    server, sms = await serve(tmp_path, emulator[1])
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.service.http_port}", timeout=10) as client:
        yield server, sms, client
    await server.close()
    await server.service.stop()


def signed(app: Caller, key: str, token: str, push_id: str, event: str = "arrived", ts: int = 0) -> dict[str, Any]:
    """The body a device sends: signed with `key` (its device key, or a forger's guess)."""
    ts = ts or int(time.time())
    return {
        "access_id": app.access_id,
        "push_id": push_id,
        "token": token,
        "event": event,
        "timestamp": ts,
        "mac": event_mac(key, app.access_id, token, push_id, event, ts),
    }


async def hms_devices(app: Caller, tokens: list[str], phones: dict[str, str] | None = None) -> dict[str, str]:
    """token -> device key, each token registered on Huawei (a few at a time)."""
    phones = phones or {}
    keys: dict[str, str] = {}
    for start in range(0, len(tokens), 100):
        chunk = tokens[start : start + 100]
        answers = await asyncio.gather(
            *(register(app, t, device_pb2.CHANNEL_HMS, phones.get(t, "")) for t in chunk)
        )
        keys.update((t, a.device_key) for t, a in zip(chunk, answers, strict=True))
    return keys


async def test_3000_huawei_devices_in_3_calls_and_a_signed_arrival_spares_the_sms(  # type: ignore[no-untyped-def]
    served, emulator
) -> None:
    server, sms, client = served
    state, _ = emulator
    app = await server.new_app()
    await set_channel(app, device_pb2.CHANNEL_HMS, HMS)
    tokens = [f"hw-{i:04d}" for i in range(3000)]
    keys = await hms_devices(app, tokens, {"hw-0000": PHONE_A, "hw-0001": PHONE_B})

    calls = state.send_calls["hms"]
    request = sms_push([], delay=4)  # every device of the app: 3,000 targets, over the 1,000 of a token list
    request.audience_type = push_pb2.AUDIENCE_TYPE_ALL
    pushed = await app.push.Push(request, metadata=app.metadata)
    await server.service.pushes.broadcasts.drain()
    got = await settled(app, pushed.push_id)
    assert got.funnel.push_accepted_count == 3000
    assert state.send_calls["hms"] - calls == 3  # 1,000 tokens a call: one payload serves them all
    assert {d.token for d in state.delivered} == set(tokens)
    assert all(d.data == {"pushreach_push_id": pushed.push_id} for d in state.delivered)  # no receipt

    report = signed(app, keys["hw-0000"], "hw-0000", pushed.push_id)
    answer = await client.post("/v1/receipts", json=report)
    assert answer.status_code == 200 and answer.json() == {"outcome": "ACCEPTED", "push_id": pushed.push_id}
    replay = await client.post("/v1/receipts", json=report)  # within the window: harmless
    assert replay.status_code == 200 and replay.json()["outcome"] == "DUPLICATE"
    done = await wait_done(app, pushed.push_id, timeout=20)
    assert done.funnel.arrived_count == 1
    assert await sent_phones(app, pushed.push_id) == [PHONE_B] and sms.numbers == [PHONE_B]
    metrics = server.service.metrics.exposition().decode()
    assert 'pushreach_device_reports_total{kind="signed",outcome="accepted"} 1.0' in metrics
    assert 'pushreach_device_reports_total{kind="signed",outcome="duplicate"} 1.0' in metrics


async def test_forged_and_foreign_signed_reports_are_refused_and_record_nothing(served) -> None:  # type: ignore[no-untyped-def]
    server, sms, client = served
    app = await server.new_app("a")
    other = await server.new_app("b")
    await set_channel(app, device_pb2.CHANNEL_HMS, HMS)
    keys = await hms_devices(app, ["hw-a", "hw-b", "hw-c"], {"hw-a": PHONE_A, "hw-b": PHONE_B})
    other_key = (await other.bind("hw-a", PHONE_A)).device_key  # the same token in another app
    p = await app.push.Push(sms_push(["hw-a", "hw-b"], delay=3), metadata=app.metadata)
    q = await app.push.Push(sms_push(["hw-c"], delay=3), metadata=app.metadata)  # hw-a is not its target
    await settled(app, p.push_id)

    now = int(time.time())
    wrong_key = signed(app, "1.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "hw-a", p.push_id)
    refused = await client.post("/v1/receipts", json=wrong_key)
    assert refused.status_code == 401
    assert refused.json() == {"error": {"code": "UNAUTHENTICATED", "message": "invalid device MAC", "field": "mac"}}
    forgeries = {
        "another token's key": signed(app, keys["hw-b"], "hw-a", p.push_id),
        "another app's key": signed(app, other_key, "hw-a", p.push_id),
        "another app's access id": signed(other, other_key, "hw-a", p.push_id),
        "a push hw-a was not a target of": signed(app, keys["hw-a"], "hw-a", q.push_id),
        "a push that does not exist": signed(app, keys["hw-a"], "hw-a", "no-such-push"),
        "an unknown access id": dict(signed(app, keys["hw-a"], "hw-a", p.push_id), access_id="1599999999"),
        "a changed event": dict(signed(app, keys["hw-a"], "hw-a", p.push_id, "arrived"), event="clicked"),
        "a changed push id": dict(signed(app, keys["hw-a"], "hw-a", p.push_id), push_id=q.push_id),
        "a changed timestamp": dict(signed(app, keys["hw-a"], "hw-a", p.push_id, ts=now), timestamp=now + 1),
    }
    for what, body in forgeries.items():
        answer = await client.post("/v1/receipts", json=body)
        # Whether the push exists, is the app's or has that target: the same answer as a wrong key.
        assert (answer.status_code, answer.json()) == (refused.status_code, refused.json()), what
    stale = signed(app, keys["hw-a"], "hw-a", p.push_id, ts=now - 3600)
    answer = await client.post("/v1/receipts", json=stale)
    assert answer.status_code == 401 and answer.json()["error"]["field"] == "timestamp"

    # In a batch, refusals are named per report and the genuine ones recorded.
    batch = await client.post(
        "/v1/receipts",
        json={"receipts": [forgeries["a push hw-a was not a target of"], signed(app, keys["hw-b"], "hw-b", p.push_id)]},
    )
    assert batch.status_code == 200
    first, second = batch.json()["results"]
    assert first["error"] == {"code": "UNAUTHENTICATED", "message": "invalid device MAC", "field": "receipts[0].mac"}
    assert second == {"outcome": "ACCEPTED", "push_id": p.push_id}
    all_bad = await client.post("/v1/receipts", json={"receipts": [wrong_key, stale]})
    assert all_bad.status_code == 401 and all_bad.json()["error"]["field"] == "receipts[0].mac"

    got = await wait_done(app, p.push_id)
    assert (got.funnel.arrived_count, got.funnel.clicked_count) == (1, 0)  # hw-b's only
    assert await sent_phones(app, p.push_id) == [PHONE_A]  # no forgery spared hw-a's phone
    assert (await settled(app, q.push_id)).funnel.arrived_count == 0
    metrics = server.service.metrics.exposition().decode()
    assert 'pushreach_device_reports_total{kind="signed",outcome="refused"} 14.0' in metrics
    assert 'pushreach_device_reports_total{kind="signed",outcome="accepted"} 1.0' in metrics
    assert 'outcome="unknown_push"' not in metrics and 'outcome="unknown_token"' not in metrics


async def test_a_batch_mixes_receipts_and_signed_reports(served) -> None:  # type: ignore[no-untyped-def]
    server, _, client = served
    app = await server.new_app()
    await set_channel(app, device_pb2.CHANNEL_HMS, HMS)
    keys = await hms_devices(app, ["hw-a"], {"hw-a": PHONE_A})
    await app.bind("log-b", PHONE_B)  # the log channel: its target carries a receipt
    pushed = await app.push.Push(
        sms_push(["hw-a", "log-b"], push_pb2.TRIGGER_CONDITION_NOT_CLICKED, delay=3), metadata=app.metadata
    )
    await settled(app, pushed.push_id)
    (delivery,) = [d for d in server.service.channel.deliveries if d.push_id == pushed.push_id]
    (target,) = delivery.targets
    assert target.token == "log-b" and target.receipt
    answer = await client.post(
        "/v1/receipts",
        json={
            "receipts": [
                signed(app, keys["hw-a"], "hw-a", pushed.push_id, "clicked"),
                {"receipt": target.receipt, "event": "clicked", "event_time": "2026-01-01T00:00:00Z"},
            ]
        },
    )
    assert answer.status_code == 200
    assert [r["outcome"] for r in answer.json()["results"]] == ["ACCEPTED", "ACCEPTED"]
    done = await wait_done(app, pushed.push_id)
    assert (done.funnel.arrived_count, done.funnel.clicked_count) == (2, 2)  # a click implies arrival
    assert await sent_phones(app, pushed.push_id) == []
    both = await client.post("/v1/receipts", json={**signed(app, keys["hw-a"], "hw-a", pushed.push_id), "receipt": "x"})
    assert both.status_code == 400 and both.json()["error"]["field"] == "mac"
    missing = await client.post("/v1/receipts", json={"access_id": app.access_id, "event": "arrived"})
    assert missing.status_code == 400
    assert {v["field"] for v in missing.json()["error"]["violations"]} == {"push_id", "token", "timestamp", "mac"}


async def test_a_device_budget_covers_signed_reports(tmp_path: Path, emulator) -> None:  # type: ignore[no-untyped-def]
    server, _ = await serve(tmp_path, emulator[1], http_token_rate_limit=0.1)
    try:
        app = await server.new_app()
        await set_channel(app, device_pb2.CHANNEL_HMS, HMS)
        keys = await hms_devices(app, ["hw-a"])
        pushed = await app.push.Push(sms_push(["hw-a"], delay=60), metadata=app.metadata)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.service.http_port}") as client:
            codes = [
                (await client.post("/v1/receipts", json=signed(app, keys["hw-a"], "hw-a", pushed.push_id))).status_code
                for _ in range(2)
            ]
        assert codes == [200, 429]  # 0.1/s with a burst of 10 s worth: one report
    finally:
        await server.close()
        await server.service.stop()


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
signed_fields = st.fixed_dictionaries(
    {},
    optional={
        "access_id": st.sampled_from(["", "1500000001"]) | st.text(max_size=40) | json_values,
        "push_id": st.text(max_size=70) | json_values,
        "token": st.text(max_size=30) | json_values,
        "event": st.sampled_from(["arrived", "clicked", "ARRIVED", "opened"]) | json_values,
        "event_time": st.sampled_from(["2026-01-01T00:00:00Z", "2999-01-01T00:00:00Z", "now"]) | json_values,
        "timestamp": st.integers(-(2**40), 2**40) | st.just(int(time.time())) | json_values,
        "mac": st.text("0123456789abcdefABCDEF", max_size=70) | json_values,
        "receipt": json_values,
    },
)
bodies = signed_fields | st.dictionaries(st.just("receipts"), st.lists(signed_fields, max_size=3) | json_values)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=bodies)
async def test_generated_signed_bodies_never_answer_500(served, body: dict[str, Any]) -> None:  # type: ignore[no-untyped-def]
    _, _, client = served
    answer = await client.post("/v1/receipts", content=json.dumps(body), headers={"content-type": "application/json"})
    assert answer.status_code in (200, 400, 401, 413, 429), answer.text
    assert "error" in answer.json() or answer.status_code == 200
