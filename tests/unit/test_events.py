"""Events: repeats are harmless, unknown ones are counted, the latest notification state wins."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pushreachd import limits
from pushreachd.errors import InvalidArgument
from pushreachd.model import (
    App,
    AudienceType,
    EventOutcome,
    EventType,
    NewPush,
    PushReceipt,
    PushSpec,
    Target,
)
from pushreachd.services.events import EventService, EventTally
from pushreachd.services.validation import EventDraft
from pushreachd.store.sqlite import SqliteStore

from tests.fakes import FakeClock

ARRIVED, CLICKED = int(EventType.ARRIVED), int(EventType.CLICKED)
ENABLED, DISABLED = int(EventType.NOTIFICATION_ENABLED), int(EventType.NOTIFICATION_DISABLED)


@dataclass
class World:
    store: SqliteStore
    clock: FakeClock
    events: EventService
    app: App
    push_id: str = "push-1"
    push_row: int = 0


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    clock = FakeClock()
    store = SqliteStore(str(tmp_path / "unit.db"))
    await store.open()
    try:
        app = await store.create_app("app-1", "app", "verifier", clock.time())
        w = World(store, clock, EventService(store, clock), app)
        w.push_row = await add_push(w, app, w.push_id, ["tok0", "tok1"])
        yield w
    finally:
        await store.close()


async def add_push(w: World, app: App, push_id: str, tokens: list[str]) -> int:
    now = w.clock.time()
    receipt = PushReceipt(push_id, len(tokens), (), now, None)
    spec = PushSpec(AudienceType.TOKEN_LIST, tuple(tokens), (), "title", "content")
    new = NewPush(push_id, app.id, spec, tuple(Target(t) for t in tokens), now, None, "", receipt)
    _, row = await w.store.create_push(new, spec.fingerprint())
    assert row is not None
    return row


def ev(event_type: int, token: str = "tok0", push_id: str = "push-1", at: float | None = None) -> EventDraft:
    return EventDraft(push_id=push_id, token=token, event_type=event_type, event_time=at)


async def test_a_repeated_arrival_or_click_is_a_harmless_duplicate(world: World) -> None:
    t = world.clock.time()
    assert await world.events.report(world.app, ev(ARRIVED, at=t - 10)) is EventOutcome.ACCEPTED
    assert await world.events.report(world.app, ev(ARRIVED, at=t - 5)) is EventOutcome.DUPLICATE
    assert await world.events.report(world.app, ev(CLICKED, at=t - 4)) is EventOutcome.ACCEPTED
    assert await world.events.report(world.app, ev(CLICKED, at=t - 4)) is EventOutcome.DUPLICATE
    funnel = await world.store.push_funnel(world.push_row)
    assert (funnel.arrived_count, funnel.clicked_count) == (1, 1)
    (view, _) = await world.store.push_targets(world.push_row, 0, 10)
    assert (view.arrived_at, view.clicked_at) == (t - 10, t - 4), "the first arrival time is kept"


async def test_an_earlier_arrival_reported_late_moves_the_arrival_time_back(world: World) -> None:
    t = world.clock.time()
    await world.events.report(world.app, ev(ARRIVED, at=t - 5))
    assert await world.events.report(world.app, ev(ARRIVED, at=t - 20)) is EventOutcome.DUPLICATE
    (view, _) = await world.store.push_targets(world.push_row, 0, 10)
    assert view.arrived_at == t - 20


async def test_a_click_implies_arrival(world: World) -> None:
    t = world.clock.time()
    await world.events.report(world.app, ev(CLICKED, token="tok1", at=t - 3))
    (_, view) = await world.store.push_targets(world.push_row, 0, 10)
    assert (view.arrived_at, view.clicked_at) == (t - 3, t - 3)
    assert await world.events.report(world.app, ev(ARRIVED, token="tok1", at=t - 1)) is EventOutcome.DUPLICATE


async def test_unknown_push_and_unknown_token_are_outcomes_not_errors(world: World) -> None:
    other_app = await world.store.create_app("app-2", "other", "verifier", world.clock.time())
    await add_push(world, other_app, "push-of-other-app", ["tok0"])
    assert await world.events.report(world.app, ev(ARRIVED, push_id="nope")) is EventOutcome.UNKNOWN_PUSH
    assert await world.events.report(world.app, ev(ARRIVED, push_id="push-of-other-app")) is EventOutcome.UNKNOWN_PUSH
    assert await world.events.report(world.app, ev(ARRIVED, token="not-targeted")) is EventOutcome.UNKNOWN_TOKEN
    assert (await world.store.push_funnel(world.push_row)).arrived_count == 0


async def test_the_latest_notification_state_by_event_time_wins(world: World) -> None:
    t = world.clock.time()
    assert await world.events.report(world.app, ev(ENABLED, push_id="", at=t - 10)) is EventOutcome.ACCEPTED
    # An older "disabled" that arrives late does not override the newer "enabled".
    await world.events.report(world.app, ev(DISABLED, push_id="", at=t - 20))
    device = await world.store.get_device(world.app.id, "tok0")
    assert device is not None and device.notifications_enabled is True
    assert device.notification_state_time == t - 10
    # A newer one does.
    assert await world.events.report(world.app, ev(DISABLED, push_id="", at=t - 1)) is EventOutcome.ACCEPTED
    device = await world.store.get_device(world.app.id, "tok0")
    assert device is not None and device.notifications_enabled is False
    assert await world.events.report(world.app, ev(DISABLED, push_id="", at=t - 1)) is EventOutcome.DUPLICATE


async def test_a_notification_state_does_not_touch_the_phone_binding(world: World) -> None:
    await world.store.bind_phone(world.app.id, "tok0", "+8613800000001", world.clock.time())
    await world.events.report(world.app, ev(DISABLED, push_id=""))
    device = await world.store.get_device(world.app.id, "tok0")
    assert device is not None and device.phone_number == "+8613800000001"


@pytest.mark.parametrize(
    ("draft", "path"),
    [
        (EventDraft(push_id="push-1", token="tok0", event_type=0), "event_type"),
        (EventDraft(push_id="push-1", token="tok0", event_type=42), "event_type"),
        (EventDraft(push_id="push-1", token="", event_type=ARRIVED), "token"),
        (EventDraft(push_id="", token="tok0", event_type=CLICKED), "push_id"),
        (EventDraft(push_id="p" * 65, token="tok0", event_type=ARRIVED), "push_id"),
        (EventDraft(push_id="push-1", token="tok0", event_type=ARRIVED, event_time=-1.0), "event_time"),
    ],
)
async def test_a_malformed_unary_event_is_invalid_argument_naming_the_field(
    world: World, draft: EventDraft, path: str
) -> None:
    with pytest.raises(InvalidArgument) as caught:
        await world.events.report(world.app, draft)
    assert [v.field for v in caught.value.violations] == [path]


async def test_an_event_time_far_in_the_future_is_refused(world: World) -> None:
    soon = world.clock.time() + limits.MAX_EVENT_FUTURE_SECONDS
    assert await world.events.report(world.app, ev(ARRIVED, at=soon)) is EventOutcome.ACCEPTED
    with pytest.raises(InvalidArgument) as caught:
        await world.events.report(world.app, ev(ARRIVED, token="tok1", at=soon + 1))
    assert [v.field for v in caught.value.violations] == ["event_time"]


async def test_a_stream_counts_every_outcome_and_numbers_rejections_across_messages(world: World) -> None:
    tally = EventTally()
    await world.events.report_many(
        world.app,
        [ev(ARRIVED), ev(ARRIVED), ev(0), ev(ARRIVED, push_id="nope")],  # indexes 0-3
        tally,
    )
    await world.events.report_many(world.app, [], tally)  # an empty message is fine
    await world.events.report_many(
        world.app,
        [ev(CLICKED, token="stranger"), ev(ENABLED, token="tok1", push_id=""), ev(CLICKED, push_id="")],  # 4-6
        tally,
    )
    assert (tally.accepted, tally.duplicate, tally.unknown_push, tally.unknown_token, tally.invalid) == (2, 1, 1, 1, 1 + 1)
    assert sorted((r.index, r.outcome) for r in tally.rejected) == [
        (2, EventOutcome.INVALID),
        (3, EventOutcome.UNKNOWN_PUSH),
        (4, EventOutcome.UNKNOWN_TOKEN),
        (6, EventOutcome.INVALID),
    ]
    reasons = {r.index: r.reason for r in tally.rejected}
    assert "events[2].event_type" in reasons[2]
    assert "events[6].push_id" in reasons[6]
    assert tally.seen == 7


async def test_a_message_over_the_size_limit_is_counted_invalid_not_raised(world: World) -> None:
    tally = EventTally()
    await world.events.report_many(world.app, [ev(ARRIVED)] * (limits.MAX_EVENTS_PER_MESSAGE + 1), tally)
    assert tally.invalid == limits.MAX_EVENTS_PER_MESSAGE + 1
    assert len(tally.rejected) == limits.MAX_RECORD_REJECTS, "described up to a bound, counted in full"
    await world.events.report_many(world.app, [ev(ARRIVED)], tally)
    assert tally.accepted == 1
    assert tally.seen == limits.MAX_EVENTS_PER_MESSAGE + 2
