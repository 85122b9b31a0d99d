"""The client-streaming ReportEvents on a real server: bad events are counted, never fatal."""

from __future__ import annotations

from collections.abc import AsyncIterator

from google.protobuf import timestamp_pb2
from pushreach.v1 import event_pb2, push_pb2

from tests.harness import Running, sms_push

E = event_pb2


def event(token: str, event_type: int, push_id: str = "", event_time: float | None = None) -> event_pb2.Event:
    e = E.Event(push_id=push_id, token=token, event_type=event_type)
    if event_time is not None:
        e.event_time.CopyFrom(timestamp_pb2.Timestamp(seconds=int(event_time)))
    return e


async def stream(messages: list[list[event_pb2.Event]]) -> AsyncIterator[event_pb2.ReportEventsRequest]:
    for events in messages:
        yield E.ReportEventsRequest(events=events)


async def test_a_long_stream_with_bad_and_unknown_events_is_counted_and_never_aborted(server: Running) -> None:
    app = await server.new_app()
    tokens = [f"tok{i}" for i in range(500)]
    pushed = await app.push.Push(sms_push(tokens, delay=60), metadata=app.metadata)
    pid = pushed.push_id

    messages: list[list[event_pb2.Event]] = []
    expected_rejected: dict[int, int] = {}
    index = 0

    def add(events: list[event_pb2.Event], bad: dict[int, int] | None = None) -> None:
        nonlocal index
        for offset, outcome in (bad or {}).items():
            expected_rejected[index + offset] = outcome
        messages.append(events)
        index += len(events)

    # 1: 500 arrivals, all new.
    add([event(t, E.EVENT_TYPE_ARRIVED, pid) for t in tokens])
    # 2: the same 500 again: duplicates, harmless.
    add([event(t, E.EVENT_TYPE_ARRIVED, pid) for t in tokens])
    # 3: clicks for 100 tokens, with malformed and unknown ones in between.
    third = [event(t, E.EVENT_TYPE_CLICKED, pid) for t in tokens[:100]]
    third[10] = event("tok10", 0, pid)  # no event type
    third[20] = event("tok 20", E.EVENT_TYPE_CLICKED, pid)  # a space in the token
    third[30] = event("tok30", E.EVENT_TYPE_CLICKED, "")  # a click without a push
    third[40] = event("tok40", E.EVENT_TYPE_CLICKED, "no-such-push")
    third[50] = event("stranger", E.EVENT_TYPE_CLICKED, pid)  # not a target of the push
    third[60] = event("tok60", 99, pid)  # an event type from the future
    add(
        third,
        {
            10: E.EVENT_OUTCOME_INVALID,
            20: E.EVENT_OUTCOME_INVALID,
            30: E.EVENT_OUTCOME_INVALID,
            40: E.EVENT_OUTCOME_UNKNOWN_PUSH,
            50: E.EVENT_OUTCOME_UNKNOWN_TOKEN,
            60: E.EVENT_OUTCOME_INVALID,
        },
    )
    # 4: an empty message, then notification states for devices (no push needed).
    add([])
    add([event(t, E.EVENT_TYPE_NOTIFICATION_DISABLED) for t in tokens[:50]])
    # 5: an event dated far in the future, among good ones.
    add(
        [event("tok1", E.EVENT_TYPE_NOTIFICATION_ENABLED), event("tok2", E.EVENT_TYPE_ARRIVED, pid, 4_000_000_000)],
        {1: E.EVENT_OUTCOME_INVALID},
    )

    answer = await app.event.ReportEvents(stream(messages), metadata=app.metadata)

    assert answer.accepted_count == 500 + (100 - 6) + 50 + 1
    assert answer.duplicate_count == 500
    assert answer.unknown_push_count == 1
    assert answer.unknown_token_count == 1
    assert answer.invalid_count == 4 + 1
    assert {r.index: r.outcome for r in answer.rejected} == expected_rejected
    assert all(r.reason for r in answer.rejected)
    got = await app.push.GetPush(push_pb2.GetPushRequest(push_id=pid), metadata=app.metadata)
    assert (got.funnel.arrived_count, got.funnel.clicked_count) == (500, 94)


async def test_a_message_with_too_many_events_is_refused_but_the_stream_goes_on(server: Running) -> None:
    app = await server.new_app()
    pushed = await app.push.Push(sms_push(["tok0"], delay=60), metadata=app.metadata)
    too_many = [event("tok0", E.EVENT_TYPE_ARRIVED, pushed.push_id)] * 1001
    answer = await app.event.ReportEvents(
        stream([too_many, [event("tok0", E.EVENT_TYPE_ARRIVED, pushed.push_id)]]), metadata=app.metadata
    )
    assert (answer.invalid_count, answer.accepted_count) == (1001, 1)
    assert len(answer.rejected) == 100, "described up to a bound"


async def test_an_empty_stream_answers_zero_counts(server: Running) -> None:
    app = await server.new_app()
    answer = await app.event.ReportEvents(stream([]), metadata=app.metadata)
    assert answer == E.ReportEventsResponse()
