"""End to end on a real server: push, events, the wheel fires, SMS to exactly the right phones."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from pushreach.v1 import event_pb2, sms_pb2

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
async def server(tmp_path, store_db: str) -> AsyncIterator[Running]:  # type: ignore[no-untyped-def]
    """The whole flow once per store: SQLite, and PostgreSQL (`store_db`)."""
    running = await start_service(test_settings(tmp_path, db=store_db))
    try:
        yield running
    finally:
        await running.close()
        await running.service.stop()




async def sms_phones(caller: Caller, push_id: str) -> list[str]:
    records = await caller.sms.ListSmsRecords(
        sms_pb2.ListSmsRecordsRequest(push_id=push_id, show_full_phone_number=True), metadata=caller.metadata
    )
    return sorted(r.phone_number for r in records.records if r.status == sms_pb2.SMS_STATUS_SENT)


async def report(caller: Caller, push_id: str, token: str, event_type: int) -> int:
    answer = await caller.event.ReportEvent(
        event_pb2.ReportEventRequest(push_id=push_id, token=token, event_type=event_type), metadata=caller.metadata
    )
    return answer.outcome


async def test_not_arrived_sends_to_the_phones_that_did_not_report(server: Running) -> None:
    app = await server.new_app()
    for i, phone in enumerate(PHONES):
        await app.bind(f"tok{i}", phone)
    pushed = await app.push.Push(sms_push(["tok0", "tok1", "tok2"], delay=2), metadata=app.metadata)
    assert pushed.target_count == 3
    assert await report(app, pushed.push_id, "tok0", event_pb2.EVENT_TYPE_ARRIVED) == event_pb2.EVENT_OUTCOME_ACCEPTED
    done = await wait_done(app, pushed.push_id)
    assert await sms_phones(app, pushed.push_id) == PHONES[1:]
    assert done.funnel.sms_sent_count == 2 and done.funnel.arrived_count == 1
    records = await app.sms.ListSmsRecords(
        sms_pb2.ListSmsRecordsRequest(push_id=pushed.push_id), metadata=app.metadata
    )
    for r in records.records:
        assert (r.sms_template_id, r.sms_sign_name, r.sms_app_id) == ("123456", "Pushreach", "1400000001")
        assert list(r.sms_template_params) == ["42", "Alice"]
        assert "****" in r.phone_number  # masked unless asked



async def test_a_push_accepted_but_not_delivered_is_delivered_on_restart(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from pushreachd.channels.log import LogPushChannel
    from pushreachd.wiring import Overrides

    from tests.harness import start_service, test_settings

    class StuckChannel(LogPushChannel):
        async def send(self, delivery):  # type: ignore[no-untyped-def]
            raise ConnectionError("channel down")

    settings = test_settings(tmp_path)
    first = await start_service(settings, Overrides(channel=StuckChannel()))
    app = await first.new_app()
    pushed = await app.push.Push(sms_push(["tok-x"], delay=60), metadata=app.metadata)
    await first.close()
    await first.service.stop()

    channel = LogPushChannel()
    second = await start_service(settings, Overrides(channel=channel))
    try:
        await second.service.pushes.drain()
        assert [d.push_id for d in channel.deliveries] == [pushed.push_id]
        assert channel.deliveries[0].tokens == ("tok-x",)
    finally:
        await second.close()
        await second.service.stop()
    third = await start_service(settings, Overrides(channel=(again := LogPushChannel())))
    await third.service.pushes.drain()
    assert list(again.deliveries) == []  # delivered once is remembered
    await third.close()
    await third.service.stop()
