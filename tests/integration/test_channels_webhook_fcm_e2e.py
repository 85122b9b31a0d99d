"""The app's webhook and FCM end to end: a real server (gRPC + HTTP), the loopback webhook
receiver and FCM emulator (signatures, OAuth2 JWT-bearer grant and bearer tokens checked).

The receipt a device got in its payload decides the fallback: an arrival POSTed to
/v1/receipts spares the SMS of NOT_ARRIVED, a click the SMS of NOT_CLICKED; a device that
reports notifications off with its device key (from RegisterDevice) gets the SMS of
NOTIFICATION_DISABLED. FCM: the data keys, UNREGISTERED marked and skipped, 503 then 200
delivered once, an expired access token renewed."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from pushreach.v1 import device_pb2, push_pb2, sms_pb2
from pushreachd.channels.emulator import fcm as fcm_emulator
from pushreachd.channels.emulator import webhook as webhook_emulator
from pushreachd.services.receipts import state_mac
from pushreachd.wiring import Overrides

from tests.fakes import FakeSmsProvider
from tests.harness import Caller, set_channel, settled, sms_push, start_service, test_settings, wait_done

SECRET = "whsec-0123456789abcdef"
PHONES = {"tok0": "+8613800000001", "tok1": "+8613800000002", "tok2": "+8613800000003"}


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[webhook_emulator.WebhookReceiverState, str]]:
    state = webhook_emulator.WebhookReceiverState()
    state.add_endpoint("app", SECRET)
    async with webhook_emulator.running(state) as url:
        yield state, f"{url}/webhook/app"


@pytest.fixture
async def fcm() -> AsyncIterator[tuple[fcm_emulator.FcmEmulatorState, dict[str, str]]]:
    state = fcm_emulator.FcmEmulatorState()
    async with fcm_emulator.running(state) as url:
        account = fcm_emulator.new_service_account("pushreach-demo", f"{url}{fcm_emulator.TOKEN_PATH}")
        state.add_account(account)
        yield state, {"url": url, **account}


@pytest.fixture
async def served(tmp_path: Path, fcm: tuple[fcm_emulator.FcmEmulatorState, dict[str, str]]):  # type: ignore[no-untyped-def]
    _, account = fcm
    sms = FakeSmsProvider()
    settings = test_settings(
        tmp_path,
        http_listen="127.0.0.1:0",
        http_address_rate_limit=0,
        http_token_rate_limit=0,
        fcm_endpoint=account["url"],
    )
    running = await start_service(settings, Overrides(sms_provider=sms))
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{running.service.http_port}", timeout=10) as client:
        yield running, client, sms
    await running.close()
    await running.service.stop()


async def received(state: webhook_emulator.WebhookReceiverState, push_id: str, count: int) -> dict[str, str]:
    """token -> receipt of what the app's sender got for the push (bounded wait)."""
    deadline = asyncio.get_running_loop().time() + 10
    while True:
        got = {d.token: d.receipt for d in state.delivered if d.push_id == push_id}
        if len(got) >= count:
            return got
        assert asyncio.get_running_loop().time() < deadline, state.delivered
        await asyncio.sleep(0.02)


async def texted(app: Caller, push_id: str) -> list[str]:
    answer = await app.sms.ListSmsRecords(
        sms_pb2.ListSmsRecordsRequest(push_id=push_id, show_full_phone_number=True), metadata=app.metadata
    )
    return sorted(r.phone_number for r in answer.records if r.status == sms_pb2.SMS_STATUS_SENT)


@pytest.mark.parametrize(
    ("condition", "event", "spared"),
    [
        (push_pb2.TRIGGER_CONDITION_NOT_ARRIVED, "arrived", "tok0"),
        (push_pb2.TRIGGER_CONDITION_NOT_CLICKED, "clicked", "tok1"),
    ],
)
async def test_a_receipt_from_the_webhook_payload_spares_that_phone_its_sms(  # type: ignore[no-untyped-def]
    served, receiver, condition: int, event: str, spared: str
) -> None:
    running, client, _ = served
    state, url = receiver
    app = await running.new_app()
    await set_channel(app, device_pb2.CHANNEL_WEBHOOK, {"url": url, "secret": SECRET})
    for token, phone in PHONES.items():
        await app.bind(token, phone)  # only bound: the app's default channel, its webhook
    pushed = await app.push.Push(sms_push(list(PHONES), condition, delay=2), metadata=app.metadata)
    receipts = await received(state, pushed.push_id, 3)
    delivered = state.delivered_to(spared)[0]
    assert delivered.payload == {"pushreach_push_id": pushed.push_id, "pushreach_receipt": receipts[spared]}
    answer = await client.post("/v1/receipts", json={"receipt": receipts[spared], "event": event})
    assert answer.status_code == 200 and answer.json()["outcome"] == "ACCEPTED"
    done = await wait_done(app, pushed.push_id)
    assert await texted(app, pushed.push_id) == sorted(p for t, p in PHONES.items() if t != spared)
    assert {t.token: t.push_outcome for t in done.targets} == {t: push_pb2.PUSH_OUTCOME_ACCEPTED for t in PHONES}
    assert {t.channel for t in done.targets} == {device_pb2.CHANNEL_WEBHOOK}


async def test_a_device_reporting_notifications_off_gets_the_sms_of_notification_disabled(  # type: ignore[no-untyped-def]
    served, receiver
) -> None:
    running, client, _ = served
    state, url = receiver
    app = await running.new_app()
    await set_channel(app, device_pb2.CHANNEL_WEBHOOK, {"url": url, "secret": SECRET})
    keys = {}
    for token in ("tok0", "tok1"):
        answer = await app.device.RegisterDevice(
            device_pb2.RegisterDeviceRequest(
                token=token, channel=device_pb2.CHANNEL_WEBHOOK, phone_number=PHONES[token]
            ),
            metadata=app.metadata,
        )
        keys[token] = answer.device_key
    now = int(time.time())
    for token, notification_state in (("tok0", "disabled"), ("tok1", "enabled")):
        body = {
            "access_id": app.access_id,
            "token": token,
            "notification_state": notification_state,
            "timestamp": now,
            "mac": state_mac(keys[token], app.access_id, token, notification_state, now),
        }
        assert (await client.post("/v1/devices/state", json=body)).json() == {"outcome": "ACCEPTED"}
    pushed = await app.push.Push(
        sms_push(["tok0", "tok1"], push_pb2.TRIGGER_CONDITION_NOTIFICATION_DISABLED, delay=2), metadata=app.metadata
    )
    await received(state, pushed.push_id, 2)
    await wait_done(app, pushed.push_id)
    assert await texted(app, pushed.push_id) == [PHONES["tok0"]]


async def test_a_410_from_the_app_sender_marks_the_token_and_a_503_is_retried_once_through(  # type: ignore[no-untyped-def]
    served, receiver
) -> None:
    running, _, _ = served
    state, url = receiver
    app = await running.new_app()
    await set_channel(app, device_pb2.CHANNEL_WEBHOOK, {"url": url, "secret": SECRET})
    state.mark_gone("tok-gone")
    state.fail_next("unavailable", 1)
    pushed = await app.push.Push(
        push_pb2.PushRequest(
            audience_type=push_pb2.AUDIENCE_TYPE_TOKEN_LIST,
            token_list=["tok-gone", "tok-ok"],
            message=push_pb2.Message(title="t", content="c"),
        ),
        metadata=app.metadata,
    )
    await received(state, pushed.push_id, 1)
    got = await settled(app, pushed.push_id)
    assert {t.token: t.push_outcome for t in got.targets} == {
        "tok-gone": push_pb2.PUSH_OUTCOME_INVALID_TOKEN,
        "tok-ok": push_pb2.PUSH_OUTCOME_ACCEPTED,
    }
    assert len(state.delivered_to("tok-ok")) == 1  # the 503 was retried, delivered once
    again = await app.push.Push(
        push_pb2.PushRequest(
            audience_type=push_pb2.AUDIENCE_TYPE_TOKEN,
            token_list=["tok-gone"],
            message=push_pb2.Message(title="t", content="c"),
        ),
        metadata=app.metadata,
    )
    assert again.target_count == 0 and again.unused_targets[0].reason == push_pb2.UNUSED_TARGET_REASON_INVALID_TOKEN


async def test_fcm_devices_get_the_push_id_and_receipt_in_data_and_unregistered_ones_are_skipped(  # type: ignore[no-untyped-def]
    served, fcm
) -> None:
    running, client, _ = served
    state, account = fcm
    app = await running.new_app()
    await set_channel(app, device_pb2.CHANNEL_FCM, {k: v for k, v in account.items() if k != "url"})
    for token in ("fcm-a", "fcm-b", "fcm-gone"):
        await app.device.RegisterDevice(
            device_pb2.RegisterDeviceRequest(token=token, channel=device_pb2.CHANNEL_FCM), metadata=app.metadata
        )
    state.mark_unregistered("fcm-gone")
    state.fail_next("unavailable", 1)  # one 503 on the way: retried, delivered once
    first = await app.push.Push(
        push_pb2.PushRequest(
            audience_type=push_pb2.AUDIENCE_TYPE_TOKEN_LIST,
            token_list=["fcm-a", "fcm-b", "fcm-gone"],
            message=push_pb2.Message(title="Approval needed", content="Expense #42"),
            collapse_id="expense-42",
        ),
        metadata=app.metadata,
    )
    got = await settled(app, first.push_id)
    assert {t.token: (t.push_outcome, t.push_outcome_code) for t in got.targets} == {
        "fcm-a": (push_pb2.PUSH_OUTCOME_ACCEPTED, ""),
        "fcm-b": (push_pb2.PUSH_OUTCOME_ACCEPTED, ""),
        "fcm-gone": (push_pb2.PUSH_OUTCOME_INVALID_TOKEN, "UNREGISTERED"),
    }
    (a,) = state.delivered_to("fcm-a")
    assert a.data["pushreach_push_id"] == first.push_id and a.notification["title"] == "Approval needed"
    assert a.android.get("collapse_key") == "expense-42"
    # The receipt in data is the device's credential for /v1/receipts.
    answer = await client.post("/v1/receipts", json={"receipt": a.data["pushreach_receipt"], "event": "arrived"})
    assert answer.status_code == 200 and answer.json()["outcome"] == "ACCEPTED"

    issued = state.tokens_issued
    state.expire_access_tokens()  # FCM answers 401: one renewal, then the send goes through
    second = await app.push.Push(
        push_pb2.PushRequest(
            audience_type=push_pb2.AUDIENCE_TYPE_TOKEN_LIST,
            token_list=["fcm-a", "fcm-gone"],
            message=push_pb2.Message(title="t", content="c"),
        ),
        metadata=app.metadata,
    )
    assert [u.value for u in second.unused_targets] == ["fcm-gone"]
    got = await settled(app, second.push_id)
    assert [t.push_outcome for t in got.targets] == [push_pb2.PUSH_OUTCOME_ACCEPTED]
    assert state.tokens_issued == issued + 1 and len(state.delivered_to("fcm-a")) == 2
