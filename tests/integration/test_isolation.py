"""Tenant isolation, RPC by RPC: app B can neither read, change, cancel nor report on app A's
pushes, devices, events or SMS records, and learns nothing of their existence: every answer B
gets about A's ids is the answer it gets about ids that exist nowhere. After all of B's
attempts, everything A can see is exactly as it was.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

import grpc
import pytest
from google.protobuf import timestamp_pb2
from grpc_status import rpc_status
from pushreach.v1 import device_pb2, event_pb2, push_pb2, sms_pb2

from tests.harness import Caller, Running, sms_push

A_PHONES = ("+8613800000001", "+8613800000002")
A_TOKENS = ("tok-a1", "tok-a2")
ACCOUNT = "alice"
NOWHERE_PUSH = "00000000000000000000"  # looks like a push id, exists for no app
NOWHERE_TOKEN = "tok-nowhere"
ALL_TIME = sms_pb2.GetStatisticsRequest(
    start_time=timestamp_pb2.Timestamp(seconds=0), end_time=timestamp_pb2.Timestamp(seconds=4_000_000_000)
)


async def _error(call: Awaitable[Any], secret_id: str) -> tuple[Any, ...]:
    """What a caller learns from a failed call, with the id it asked about blanked out."""
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call
    e = err.value
    status = rpc_status.from_call(e)  # type: ignore[arg-type]
    details = [(d.type_url, d.value) for d in status.details] if status else []
    return e.code(), e.details().replace(secret_id, "<id>"), details


async def _wait_for_sms(a: Caller, push_id: str, timeout: float = 10.0) -> list[sms_pb2.SmsRecord]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        got = await a.push.GetPush(push_pb2.GetPushRequest(push_id=push_id), metadata=a.metadata)
        if got.push.fallback_state == push_pb2.FALLBACK_STATE_DONE:
            records = await a.sms.ListSmsRecords(sms_pb2.ListSmsRecordsRequest(push_id=push_id), metadata=a.metadata)
            return list(records.records)
        assert loop.time() < deadline, "the fallback did not fire in time"
        await asyncio.sleep(0.05)


async def _snapshot(a: Caller, push_ids: list[str]) -> list[Any]:
    """Everything A can read about its own data."""
    md = a.metadata
    seen: list[Any] = []
    for push_id in push_ids:
        seen.append(await a.push.GetPush(push_pb2.GetPushRequest(push_id=push_id), metadata=md))
    for token in A_TOKENS:
        seen.append(await a.device.GetDevice(device_pb2.GetDeviceRequest(token=token), metadata=md))
    seen.append(
        await a.sms.ListSmsRecords(sms_pb2.ListSmsRecordsRequest(show_full_phone_number=True), metadata=md)
    )
    stats = await a.sms.GetStatistics(ALL_TIME, metadata=md)
    assert stats.push_count == 2 and stats.sms.sent == 2  # a snapshot that would notice a change
    seen.append(stats)
    return seen


@pytest.fixture
async def world(server: Running) -> tuple[Caller, Caller, str, str]:
    """A with two devices (phones, an account), a pending push and a fired one; B empty."""
    a = await server.new_app("a")
    b = await server.new_app("b")
    for token, phone in zip(A_TOKENS, A_PHONES, strict=True):
        await a.bind(token, phone)
        await a.device.BindAccount(device_pb2.BindAccountRequest(token=token, account=ACCOUNT), metadata=a.metadata)
    await a.event.ReportEvent(
        event_pb2.ReportEventRequest(token=A_TOKENS[0], event_type=event_pb2.EVENT_TYPE_NOTIFICATION_ENABLED),
        metadata=a.metadata,
    )
    pending = await a.push.Push(sms_push(list(A_TOKENS), delay=3600, request_id="req-1"), metadata=a.metadata)
    fired = await a.push.Push(sms_push(list(A_TOKENS), delay=1), metadata=a.metadata)
    records = await _wait_for_sms(a, fired.push_id)
    assert len(records) == 2  # the fired fallback left SMS records for A's two phones
    return a, b, pending.push_id, fired.push_id


async def test_push_service_get_and_cancel_look_like_unknown_ids(world) -> None:  # type: ignore[no-untyped-def]
    a, b, pending, fired = world
    before = await _snapshot(a, [pending, fired])
    md = b.metadata
    for push_id in (pending, fired):
        nowhere = await _error(b.push.GetPush(push_pb2.GetPushRequest(push_id=NOWHERE_PUSH), metadata=md), NOWHERE_PUSH)
        assert nowhere[0] == grpc.StatusCode.NOT_FOUND
        assert await _error(b.push.GetPush(push_pb2.GetPushRequest(push_id=push_id), metadata=md), push_id) == nowhere
        paged = push_pb2.GetPushRequest(push_id=push_id, page_size=1)
        assert await _error(b.push.GetPush(paged, metadata=md), push_id) == nowhere
        cancel_nowhere = await _error(
            b.push.CancelFallback(push_pb2.CancelFallbackRequest(push_id=NOWHERE_PUSH), metadata=md), NOWHERE_PUSH
        )
        assert cancel_nowhere[0] == grpc.StatusCode.NOT_FOUND
        cancel = b.push.CancelFallback(push_pb2.CancelFallbackRequest(push_id=push_id, request_id="r"), metadata=md)
        assert await _error(cancel, push_id) == cancel_nowhere
    assert await _snapshot(a, [pending, fired]) == before


async def test_push_by_b_never_reaches_as_devices_or_idempotency_rows(world) -> None:  # type: ignore[no-untyped-def]
    a, b, pending, fired = world
    before = await _snapshot(a, [pending, fired])
    md = b.metadata
    # A's account resolves to nothing for B, exactly like an account nobody has.
    by_account = push_pb2.PushRequest(
        audience_type=push_pb2.AUDIENCE_TYPE_ACCOUNT_LIST,
        account_list=[ACCOUNT, "nobody"],
        message=push_pb2.Message(title="t", content="c"),
        message_type=push_pb2.MESSAGE_TYPE_NOTIFY,
    )
    answer = await b.push.Push(by_account, metadata=md)
    assert answer.target_count == 0
    assert [u.reason for u in answer.unused_targets] == [push_pb2.UNUSED_TARGET_REASON_ACCOUNT_HAS_NO_DEVICE] * 2
    # A's request_id is a fresh one for B: a new push, not A's receipt.
    again = await b.push.Push(sms_push(list(A_TOKENS), delay=3600, request_id="req-1"), metadata=md)
    assert again.push_id not in (pending, fired)
    got = await b.push.GetPush(push_pb2.GetPushRequest(push_id=again.push_id), metadata=md)
    assert [t.phone_number for t in got.targets] == ["", ""]  # A's phones do not show through
    assert await _snapshot(a, [pending, fired]) == before


async def test_device_service_sees_only_the_callers_own_devices(world) -> None:  # type: ignore[no-untyped-def]
    a, b, pending, fired = world
    before = await _snapshot(a, [pending, fired])
    md = b.metadata
    token = A_TOKENS[0]
    nowhere = await _error(b.device.GetDevice(device_pb2.GetDeviceRequest(token=NOWHERE_TOKEN), metadata=md), NOWHERE_TOKEN)
    assert nowhere[0] == grpc.StatusCode.NOT_FOUND
    assert await _error(b.device.GetDevice(device_pb2.GetDeviceRequest(token=token), metadata=md), token) == nowhere

    def mine(d: device_pb2.Device) -> tuple[Any, ...]:
        return d.phone_number, list(d.accounts), d.notification_state

    # Mutations act on B's own device of that name: what B gets back is what a token nobody
    # used gives, never A's phone, accounts or notification state.
    for t in (NOWHERE_TOKEN, token):
        un = await b.device.UnbindPhone(device_pb2.UnbindPhoneRequest(token=t), metadata=md)
        assert mine(un.device) == ("", [], device_pb2.NOTIFICATION_STATE_UNSPECIFIED)
        unacc = await b.device.UnbindAccount(device_pb2.UnbindAccountRequest(token=t, account=ACCOUNT), metadata=md)
        assert mine(unacc.device) == ("", [], 0)
        acc = await b.device.BindAccount(device_pb2.BindAccountRequest(token=t, account=ACCOUNT), metadata=md)
        assert mine(acc.device) == ("", [ACCOUNT], 0)
        bound = await b.bind(t, "+8613900000009")
        assert mine(bound.device) == ("+8613900000009", [ACCOUNT], 0)
        # Registering B's token of that name moves B's device only: A's keeps its channel.
        moved = await b.device.RegisterDevice(
            device_pb2.RegisterDeviceRequest(token=t, channel=device_pb2.CHANNEL_FCM), metadata=md
        )
        assert mine(moved.device) == ("+8613900000009", [ACCOUNT], 0) and moved.device.channel == device_pb2.CHANNEL_FCM
    assert await _snapshot(a, [pending, fired]) == before
    own = await a.device.GetDevice(device_pb2.GetDeviceRequest(token=token), metadata=a.metadata)
    assert own.device.channel == device_pb2.CHANNEL_UNSPECIFIED
    # And A's pending fallback still goes to A's phones, not to the one B bound.
    got = await a.push.GetPush(push_pb2.GetPushRequest(push_id=pending), metadata=a.metadata)
    assert got.push.fallback_state == push_pb2.FALLBACK_STATE_PENDING


def _events(push_ids: list[str]) -> list[event_pb2.Event]:
    kinds = (event_pb2.EVENT_TYPE_ARRIVED, event_pb2.EVENT_TYPE_CLICKED)
    return [event_pb2.Event(push_id=p, token=t, event_type=k) for p in push_ids for t in A_TOKENS for k in kinds]


async def test_event_service_reports_on_as_pushes_are_unknown_pushes(world) -> None:  # type: ignore[no-untyped-def]
    a, b, pending, fired = world
    before = await _snapshot(a, [pending, fired])
    md = b.metadata
    for e in _events([pending, fired, NOWHERE_PUSH]):
        answer = await b.event.ReportEvent(
            event_pb2.ReportEventRequest(push_id=e.push_id, token=e.token, event_type=e.event_type), metadata=md
        )
        assert answer.outcome == event_pb2.EVENT_OUTCOME_UNKNOWN_PUSH

    async def stream(push_ids: list[str]) -> event_pb2.ReportEventsResponse:
        async def messages():  # type: ignore[no-untyped-def]
            events = _events(push_ids)
            yield event_pb2.ReportEventsRequest(events=events[:3])
            yield event_pb2.ReportEventsRequest(events=events[3:])

        return await b.event.ReportEvents(messages(), metadata=md)

    theirs = await stream([pending, fired])
    nowhere = await stream([NOWHERE_PUSH, NOWHERE_PUSH[:-1] + "1"])
    assert theirs.unknown_push_count == 8 and theirs.accepted_count == 0
    strip = [(r.index, r.outcome, r.reason) for r in theirs.rejected]
    assert strip == [(r.index, r.outcome, r.reason) for r in nowhere.rejected]
    # Notification state is per app: B's report about "tok-a1" is about B's own device.
    disabled = event_pb2.ReportEventRequest(token=A_TOKENS[0], event_type=event_pb2.EVENT_TYPE_NOTIFICATION_DISABLED)
    await b.event.ReportEvent(disabled, metadata=md)
    assert await _snapshot(a, [pending, fired]) == before


async def test_sms_service_lists_nothing_and_counts_zero_for_b(world) -> None:  # type: ignore[no-untyped-def]
    a, b, pending, fired = world
    before = await _snapshot(a, [pending, fired])
    md = b.metadata
    everything = sms_pb2.ListSmsRecordsRequest(show_full_phone_number=True)
    a_page = await a.sms.ListSmsRecords(sms_pb2.ListSmsRecordsRequest(page_size=1), metadata=a.metadata)
    assert a_page.next_page_token  # A has two records: a second page exists
    for request in [
        everything,
        sms_pb2.ListSmsRecordsRequest(push_id=fired, show_full_phone_number=True),
        sms_pb2.ListSmsRecordsRequest(push_id=pending),
        sms_pb2.ListSmsRecordsRequest(phone_number=A_PHONES[0], show_full_phone_number=True),
        sms_pb2.ListSmsRecordsRequest(statuses=[sms_pb2.SMS_STATUS_SENT]),
        sms_pb2.ListSmsRecordsRequest(page_size=1, page_token=a_page.next_page_token),
    ]:
        answer = await b.sms.ListSmsRecords(request, metadata=md)
        assert list(answer.records) == [] and answer.next_page_token == ""
    stats = await b.sms.GetStatistics(ALL_TIME, metadata=md)
    zero = sms_pb2.GetStatisticsResponse(
        start_time=ALL_TIME.start_time, end_time=ALL_TIME.end_time, sms=sms_pb2.SmsOutcomeCounts()
    )
    assert stats == zero
    assert await _snapshot(a, [pending, fired]) == before


async def test_tags_and_broadcasts_stay_within_the_app(world, server: Running) -> None:  # type: ignore[no-untyped-def]
    a, b, pending, fired = world
    await a.device.AddTags(device_pb2.AddTagsRequest(tokens=list(A_TOKENS), tags=["vip"]), metadata=a.metadata)
    before = await _snapshot(a, [pending, fired])
    md = b.metadata
    # B's tag calls on A's token names are about B's own devices of that name.
    await b.device.AddTags(device_pb2.AddTagsRequest(tokens=[A_TOKENS[0]], tags=["vip", "b-only"]), metadata=md)
    await b.device.RemoveTags(device_pb2.RemoveTagsRequest(tokens=[A_TOKENS[1]], tags=["vip"]), metadata=md)
    await b.device.ClearTags(device_pb2.ClearTagsRequest(tokens=[A_TOKENS[1]]), metadata=md)
    got = await b.device.SetTags(device_pb2.SetTagsRequest(token=A_TOKENS[0], tags=["vip"]), metadata=md)
    assert list(got.device.tags) == ["vip"] and got.device.phone_number == ""  # B's device, not A's
    # B's ALL and TAG pushes reach B's devices only, and no phone of A's.
    base = sms_push([], delay=1)
    for audience, rules in (
        (push_pb2.AUDIENCE_TYPE_ALL, []),
        (push_pb2.AUDIENCE_TYPE_TAG, [push_pb2.TagRule(tag_items=[push_pb2.TagItem(tags=["vip"])])]),
    ):
        request = push_pb2.PushRequest()
        request.CopyFrom(base)
        request.audience_type = audience
        request.tag_rules.extend(rules)
        answer = await b.push.Push(request, metadata=md)
        await server.service.pushes.broadcasts.drain()
        got = await b.push.GetPush(push_pb2.GetPushRequest(push_id=answer.push_id), metadata=md)
        assert {t.token for t in got.targets} <= {A_TOKENS[0], A_TOKENS[1]}  # B's own devices of these names
        assert all(t.phone_number == "" for t in got.targets)
        await _wait_for_sms(b, answer.push_id)
    assert await _snapshot(a, [pending, fired]) == before


async def test_every_app_rpc_is_covered_here() -> None:
    """A new RPC on an app service must get an isolation test: this list is the reminder."""
    covered = {
        "pushreach.v1.PushService": {"Push", "GetPush", "CancelFallback"},
        "pushreach.v1.DeviceService": {
            "BindPhone", "RegisterDevice", "UnbindPhone", "BindAccount", "UnbindAccount", "GetDevice",
            "AddTags", "RemoveTags", "SetTags", "ClearTags",  # test_tags_and_broadcasts_stay_within_the_app
        },
        "pushreach.v1.EventService": {"ReportEvent", "ReportEvents"},
        "pushreach.v1.SmsService": {"ListSmsRecords", "GetStatistics"},
    }
    for module in (push_pb2, device_pb2, event_pb2, sms_pb2):
        for service in module.DESCRIPTOR.services_by_name.values():
            assert {m.name for m in service.methods} == covered[service.full_name], service.full_name
