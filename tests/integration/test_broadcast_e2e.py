"""TAG and ALL pushes over gRPC on a real server: tags, background resolution, SMS judged per phone."""

from __future__ import annotations

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from pushreach.v1 import device_pb2, event_pb2, push_pb2, sms_pb2

from tests.harness import Caller, Running, sms_push, wait_done


async def sent_phones(app: Caller, push_id: str) -> list[str]:
    records = await app.sms.ListSmsRecords(
        sms_pb2.ListSmsRecordsRequest(push_id=push_id, show_full_phone_number=True), metadata=app.metadata
    )
    return sorted(r.phone_number for r in records.records if r.status == sms_pb2.SMS_STATUS_SENT)


def broadcast(audience: int, **extra: object) -> push_pb2.PushRequest:
    r = sms_push([], delay=2, **extra)
    r.audience_type = audience
    return r


async def test_all_push_fallback_is_judged_per_phone_over_every_device(server: Running) -> None:
    app = await server.new_app()
    # Two devices share a phone: one arrival spares that phone.
    await app.bind("tokA1", "+8613800000001")
    await app.bind("tokA2", "+8613800000001")
    await app.bind("tokB", "+8613800000002")
    await app.bind("tokC", "+8613800000003")
    other = await server.new_app("other")
    await other.bind("tokX", "+8613800000009")  # another app's device is never a target

    pushed = await app.push.Push(broadcast(push_pb2.AUDIENCE_TYPE_ALL), metadata=app.metadata)
    assert pushed.target_count == 0  # found after acceptance
    await server.service.pushes.broadcasts.drain()
    await app.event.ReportEvent(
        event_pb2.ReportEventRequest(push_id=pushed.push_id, token="tokA2", event_type=event_pb2.EVENT_TYPE_ARRIVED),
        metadata=app.metadata,
    )
    done = await wait_done(app, pushed.push_id)
    assert done.funnel.target_count == 4 and not done.push.targets_pending
    assert done.push.request.audience_type == push_pb2.AUDIENCE_TYPE_ALL
    assert await sent_phones(app, pushed.push_id) == ["+8613800000002", "+8613800000003"]


async def test_tag_push_with_tags_set_over_grpc(server: Running) -> None:
    app = await server.new_app()
    for i in range(4):
        await app.bind(f"tok{i}", f"+861380000001{i}")
    await app.device.AddTags(
        device_pb2.AddTagsRequest(tokens=["tok0", "tok1"], tags=["beijing"]), metadata=app.metadata
    )
    await app.device.AddTags(
        device_pb2.AddTagsRequest(pairs=[device_pb2.TokenTag(token="tok1", tag="vip")]), metadata=app.metadata
    )
    got = await app.device.SetTags(device_pb2.SetTagsRequest(token="tok3", tags=["vip"]), metadata=app.metadata)
    assert list(got.device.tags) == ["vip"]
    device = await app.device.GetDevice(device_pb2.GetDeviceRequest(token="tok1"), metadata=app.metadata)
    assert sorted(device.device.tags) == ["beijing", "vip"]

    rule = push_pb2.TagRule(
        tag_items=[
            push_pb2.TagItem(tags=["beijing"]),
            push_pb2.TagItem(tags=["vip"], is_not=True, items_operator=push_pb2.TAG_OPERATOR_AND),
        ]
    )
    pushed = await app.push.Push(broadcast(push_pb2.AUDIENCE_TYPE_TAG, tag_rules=[rule]), metadata=app.metadata)
    done = await wait_done(app, pushed.push_id)
    assert [t.token for t in done.targets] == ["tok0"]  # beijing AND NOT vip
    assert await sent_phones(app, pushed.push_id) == ["+8613800000010"]
    assert done.push.request.tag_rules[0].tag_items[1].is_not


async def test_tag_rpcs_name_the_field_at_fault(server: Running) -> None:
    app = await server.new_app()
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await app.device.AddTags(device_pb2.AddTagsRequest(tokens=["t"], tags=["x" * 51]), metadata=app.metadata)
    assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    status = rpc_status.from_call(err.value)
    assert status is not None
    fields = []
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            fields += [v.field for v in bad.field_violations]
    assert fields == ["tags[0]"]
    await app.device.AddTags(
        device_pb2.AddTagsRequest(tokens=["t"], tags=[f"g{i}" for i in range(100)]), metadata=app.metadata
    )
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await app.device.AddTags(device_pb2.AddTagsRequest(tokens=["t"], tags=["more"]), metadata=app.metadata)
    assert err.value.code() is grpc.StatusCode.FAILED_PRECONDITION
