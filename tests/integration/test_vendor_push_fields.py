"""TPNS's per-vendor push fields through the real API: `message.android` classification and
`channel_rules`, stored with the push, shown by GetPush, and refused with the field named."""

from __future__ import annotations

import grpc
import pytest
from pushreach.v1 import push_pb2

from tests.harness import Running, sms_push
from tests.integration.test_conditions_e2e import bad_request


async def test_vendor_fields_are_kept_and_shown(server: Running) -> None:
    app = await server.new_app()
    request = sms_push(["tok0"], delay=3600)
    request.message.android.CopyFrom(
        push_pb2.AndroidMessage(hw_category="WORK", hw_importance=2, xm_ch_id="service", oppo_ch_id="orders",
                                oppo_category="ORDER", vivo_ch_id="1", vivo_category="TODO")
    )
    request.channel_rules.add(channel="xm", disable=True)
    request.channel_rules.add(channel="hw", disable=False)
    pushed = await app.push.Push(request, metadata=app.metadata)
    got = await app.push.GetPush(push_pb2.GetPushRequest(push_id=pushed.push_id), metadata=app.metadata)
    shown = got.push.request
    assert shown.message.android == request.message.android
    assert [(r.channel, r.disable) for r in shown.channel_rules] == [("xm", True)]


async def test_a_push_without_vendor_fields_shows_none(server: Running) -> None:
    app = await server.new_app()
    pushed = await app.push.Push(sms_push(["tok0"], delay=3600), metadata=app.metadata)
    got = await app.push.GetPush(push_pb2.GetPushRequest(push_id=pushed.push_id), metadata=app.metadata)
    assert not got.push.request.message.HasField("android")
    assert list(got.push.request.channel_rules) == []


async def test_bad_vendor_fields_are_refused_naming_each(server: Running) -> None:
    app = await server.new_app()
    request = sms_push(["tok0"], delay=3600)
    request.message.android.CopyFrom(
        push_pb2.AndroidMessage(hw_category="work", hw_importance=3, xm_ch_id="has space", vivo_ch_id="2")
    )
    request.channel_rules.add(channel="mz", disable=True)
    request.channel_rules.add(channel="oppo", disable=True)
    request.channel_rules.add(channel="oppo", disable=False)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await app.push.Push(request, metadata=app.metadata)
    assert set(bad_request(caught.value)) == {
        "message.android.hw_category",
        "message.android.hw_importance",
        "message.android.xm_ch_id",
        "message.android.vivo_ch_id",
        "channel_rules[0].channel",
        "channel_rules[2].channel",
    }
