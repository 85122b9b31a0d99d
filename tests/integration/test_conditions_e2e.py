"""Issue 3's Done-when on a real server, for NOT_CLICKED, NOTIFICATION_DISABLED and shared phones,
and the API's error shape (INVALID_ARGUMENT with a BadRequest naming the field path)."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from google.rpc import code_pb2, error_details_pb2
from grpc_status import rpc_status
from pushreach.v1 import event_pb2, push_pb2, sms_pb2

from tests.harness import Caller, Running, sms_push, wait_done

PHONES = ["+8613800000001", "+8613800000002", "+8613800000003"]




async def sms_records(caller: Caller, push_id: str) -> list[sms_pb2.SmsRecord]:
    answer = await caller.sms.ListSmsRecords(
        sms_pb2.ListSmsRecordsRequest(push_id=push_id, show_full_phone_number=True), metadata=caller.metadata
    )
    return list(answer.records)


async def report(caller: Caller, token: str, event_type: int, push_id: str = "") -> int:
    answer = await caller.event.ReportEvent(
        event_pb2.ReportEventRequest(push_id=push_id, token=token, event_type=event_type), metadata=caller.metadata
    )
    return answer.outcome


async def three_devices(app: Caller) -> list[str]:
    for i, phone in enumerate(PHONES):
        await app.bind(f"tok{i}", phone)
    return ["tok0", "tok1", "tok2"]


def assert_sent_once_with_the_push_template(records: list[sms_pb2.SmsRecord], phones: list[str]) -> None:
    assert sorted(r.phone_number for r in records) == sorted(phones), "once each, nobody else"
    for r in records:
        assert r.status == sms_pb2.SMS_STATUS_SENT
        assert (r.sms_template_id, r.sms_sign_name, r.sms_app_id) == ("123456", "Pushreach", "1400000001")
        assert list(r.sms_template_params) == ["42", "Alice"]


async def test_not_clicked_spares_only_the_phone_that_clicked(server: Running) -> None:
    app = await server.new_app()
    tokens = await three_devices(app)
    pushed = await app.push.Push(sms_push(tokens, push_pb2.TRIGGER_CONDITION_NOT_CLICKED, delay=2), metadata=app.metadata)
    # Arrival is not a click: tok0 still gets the SMS.
    assert await report(app, "tok0", event_pb2.EVENT_TYPE_ARRIVED, pushed.push_id) == event_pb2.EVENT_OUTCOME_ACCEPTED
    assert await report(app, "tok1", event_pb2.EVENT_TYPE_CLICKED, pushed.push_id) == event_pb2.EVENT_OUTCOME_ACCEPTED
    done = await wait_done(app, pushed.push_id)
    assert_sent_once_with_the_push_template(await sms_records(app, pushed.push_id), [PHONES[0], PHONES[2]])
    assert (done.funnel.arrived_count, done.funnel.clicked_count, done.funnel.sms_sent_count) == (2, 1, 2)


async def test_notification_disabled_spares_only_the_phone_with_notifications_enabled(server: Running) -> None:
    app = await server.new_app()
    tokens = await three_devices(app)
    # Device states are reported without a push id; tok2 never reports one.
    await report(app, "tok0", event_pb2.EVENT_TYPE_NOTIFICATION_ENABLED)
    await report(app, "tok1", event_pb2.EVENT_TYPE_NOTIFICATION_ENABLED)
    pushed = await app.push.Push(
        sms_push(tokens, push_pb2.TRIGGER_CONDITION_NOTIFICATION_DISABLED, delay=2), metadata=app.metadata
    )
    await asyncio.sleep(0.01)  # a later report than the one above, so it is the latest
    await report(app, "tok1", event_pb2.EVENT_TYPE_NOTIFICATION_DISABLED)
    await wait_done(app, pushed.push_id)
    assert_sent_once_with_the_push_template(await sms_records(app, pushed.push_id), PHONES[1:])


@pytest.mark.parametrize(
    ("events", "phones_texted"),
    [
        ([], 1),
        ([("a", event_pb2.EVENT_TYPE_ARRIVED)], 0),
        ([("b", event_pb2.EVENT_TYPE_ARRIVED)], 0),
        ([("b", event_pb2.EVENT_TYPE_CLICKED)], 0),  # a click implies arrival
    ],
)
async def test_two_tokens_sharing_one_phone(server: Running, events: list[tuple[str, int]], phones_texted: int) -> None:
    app = await server.new_app()
    await app.bind("a", PHONES[0])
    await app.bind("b", PHONES[0])
    await app.bind("c", PHONES[1])  # a bystander phone that always needs the SMS
    pushed = await app.push.Push(sms_push(["a", "b", "c"], delay=2), metadata=app.metadata)
    for token, event_type in events:
        await report(app, token, event_type, pushed.push_id)
    await wait_done(app, pushed.push_id)
    records = await sms_records(app, pushed.push_id)
    assert_sent_once_with_the_push_template(records, [PHONES[0]] * phones_texted + [PHONES[1]])


async def test_cancel_fallback_over_the_api(server: Running) -> None:
    app = await server.new_app()
    tokens = await three_devices(app)
    pushed = await app.push.Push(sms_push(tokens, delay=1), metadata=app.metadata)
    cancelled = await app.push.CancelFallback(push_pb2.CancelFallbackRequest(push_id=pushed.push_id), metadata=app.metadata)
    assert cancelled.fallback_state == push_pb2.FALLBACK_STATE_CANCELLED
    await asyncio.sleep(1.5)
    got = await app.push.GetPush(push_pb2.GetPushRequest(push_id=pushed.push_id), metadata=app.metadata)
    assert got.push.fallback_state == push_pb2.FALLBACK_STATE_CANCELLED
    assert await sms_records(app, pushed.push_id) == []


def bad_request(err: grpc.aio.AioRpcError) -> dict[str, str]:
    status = rpc_status.from_call(err)
    assert status is not None, "google.rpc.Status in grpc-status-details-bin"
    assert status.code == code_pb2.INVALID_ARGUMENT
    found: dict[str, str] = {}
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            found.update({v.field: v.description for v in bad.field_violations})
    return found


async def test_invalid_argument_carries_a_bad_request_with_the_field_path(server: Running) -> None:
    app = await server.new_app()
    request = sms_push(["tok0"], delay=0)
    request.sms_info.sms_template_id = ""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await app.push.Push(request, metadata=app.metadata)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert set(bad_request(caught.value)) == {"sms_info.delay_trigger_time", "sms_info.sms_template_id"}

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await app.event.ReportEvent(
            event_pb2.ReportEventRequest(token="tok0", event_type=event_pb2.EVENT_TYPE_CLICKED), metadata=app.metadata
        )
    assert set(bad_request(caught.value)) == {"push_id"}


async def test_request_id_retries_over_the_api(server: Running) -> None:
    app = await server.new_app()
    first = await app.push.Push(sms_push(["tok0"], request_id="order-42"), metadata=app.metadata)
    again = await app.push.Push(sms_push(["tok0"], request_id="order-42"), metadata=app.metadata)
    assert again.push_id == first.push_id
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await app.push.Push(sms_push(["tok0", "tok1"], request_id="order-42"), metadata=app.metadata)
    assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS
