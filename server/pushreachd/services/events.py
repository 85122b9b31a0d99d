"""Recording what devices report: arrival, click, notification setting.

Events never touch the fallback's timer: the scheduler reads them when the fallback fires.
A malformed or unknown event is counted and described, never an error that drops the rest.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field

from .. import limits
from ..clock import Clock
from ..model import App, EventIn, EventOutcome
from ..store.base import Store
from .validation import EventDraft, Violations, validate_event

STREAM_DEPTH = 4  # messages of one ReportEvents stream being stored at once


@dataclass(frozen=True, slots=True)
class Rejection:
    index: int
    outcome: EventOutcome
    reason: str


@dataclass
class EventTally:
    """What a ReportEvents stream did, summed over its messages."""

    accepted: int = 0
    duplicate: int = 0
    unknown_push: int = 0
    unknown_token: int = 0
    invalid: int = 0
    rejected: list[Rejection] = field(default_factory=list)
    seen: int = 0  # events numbered so far across the stream

    def add(self, index: int, outcome: EventOutcome, reason: str = "") -> None:
        if outcome is EventOutcome.ACCEPTED:
            self.accepted += 1
        elif outcome is EventOutcome.DUPLICATE:
            self.duplicate += 1
        else:
            if outcome is EventOutcome.UNKNOWN_PUSH:
                self.unknown_push += 1
            elif outcome is EventOutcome.UNKNOWN_TOKEN:
                self.unknown_token += 1
            else:
                self.invalid += 1
            if len(self.rejected) < limits.MAX_RECORD_REJECTS:
                self.rejected.append(Rejection(index, outcome, reason or outcome.name.lower()))


class EventService:
    def __init__(self, store: Store, clock: Clock) -> None:
        self._store = store
        self._clock = clock

    async def report(self, app: App, draft: EventDraft) -> EventOutcome:
        """One event (unary RPC): a malformed one is an INVALID_ARGUMENT error."""
        v = Violations()
        event = validate_event(v, "", draft, self._clock.time())
        v.raise_if_any()
        assert event is not None
        (outcome,) = await self._store.record_events(app.id, [event], self._clock.time())
        return outcome

    async def report_proven(self, app_id: int, drafts: list[tuple[str, EventDraft]]) -> list[EventOutcome]:
        """Events of one app whose push and token a credential already proved (a receipt, a
        device MAC): recorded exactly as ReportEvent records them, in one write. Each draft
        comes with the field prefix its violations are named under; any violation raises
        INVALID_ARGUMENT before anything is recorded."""
        now = self._clock.time()
        v = Violations()
        events = [validate_event(v, prefix, draft, now) for prefix, draft in drafts]
        v.raise_if_any()
        return await self._store.record_events(app_id, [e for e in events if e is not None], now)

    async def report_many(self, app: App, drafts: list[EventDraft], tally: EventTally) -> None:
        """One message of a stream: valid events are stored together, the rest counted."""
        await self._begin(app, drafts, tally).finish(tally)

    def stream(self, app: App, depth: int = STREAM_DEPTH) -> EventStream:
        """A ReportEvents stream whose messages are stored while the next ones are read."""
        return EventStream(self, app, depth)

    def _begin(self, app: App, drafts: list[EventDraft], tally: EventTally) -> _Message:
        """Validate one message and hand its valid events to the store (not waiting for it);
        its events are numbered from `tally.seen`, which moves past them at once."""
        start = tally.seen
        tally.seen += len(drafts)
        if len(drafts) > limits.MAX_EVENTS_PER_MESSAGE:
            reason = f"message carries more than {limits.MAX_EVENTS_PER_MESSAGE} events"
            return _Message(start, len(drafts), [], {i: reason for i in range(start, start + len(drafts))}, None)
        now = self._clock.time()
        indices: list[int] = []
        valid: list[EventIn] = []
        invalid: dict[int, str] = {}
        v = Violations()  # one for the message; an event's own violations are those it added
        for i, draft in enumerate(drafts):
            index = start + i
            before = len(v.items)
            event = validate_event(v, f"events[{index}].", draft, now)
            if event is None:
                invalid[index] = "; ".join(f"{x.field}: {x.description}" for x in v.items[before:])
            else:
                indices.append(index)
                valid.append(event)
        write = asyncio.ensure_future(self._store.record_events(app.id, valid, now)) if valid else None
        return _Message(start, len(drafts), indices, invalid, write)


@dataclass
class _Message:
    """One message of a stream, validated, its valid events on their way to the store."""

    start: int  # stream index of its first event
    count: int
    indices: list[int]  # stream indices of the valid events, in order
    invalid: dict[int, str]  # stream index -> reason
    write: asyncio.Future[list[EventOutcome]] | None

    async def finish(self, tally: EventTally) -> None:
        """Wait until the events are committed, then tally them in stream order (so that
        `rejected` lists the stream's first rejections)."""
        outcomes = await self.write if self.write is not None else []
        stored = dict(zip(self.indices, outcomes, strict=True))
        for index in range(self.start, self.start + self.count):
            if index in self.invalid:
                tally.add(index, EventOutcome.INVALID, self.invalid[index])
            else:
                tally.add(index, stored[index])


class EventStream:
    """The messages of one ReportEvents stream, pipelined: each message is validated as it
    arrives and its events handed to the store at once, so the next message is read while
    earlier ones commit (at most `depth` in flight; `add` waits for the oldest beyond that).
    `finish` returns only when every message is committed, so the answer still means durable."""

    def __init__(self, service: EventService, app: App, depth: int) -> None:
        self.tally = EventTally()
        self._service = service
        self._app = app
        self._depth = max(1, depth)
        self._pending: deque[_Message] = deque()

    async def add(self, drafts: list[EventDraft]) -> None:
        self._pending.append(self._service._begin(self._app, drafts, self.tally))
        while len(self._pending) > self._depth:
            await self._pending.popleft().finish(self.tally)

    async def finish(self) -> EventTally:
        """Wait for every message added; the tally then counts all of them."""
        while self._pending:
            await self._pending[0].finish(self.tally)
            self._pending.popleft()
        return self.tally

    def abandon(self) -> None:
        """The stream ended in an error: writes under way still land; nobody waits for them."""
        for message in self._pending:
            if message.write is not None:
                message.write.add_done_callback(_consume)
        self._pending.clear()


def _consume(f: asyncio.Future[object]) -> None:
    if not f.cancelled():
        f.exception()
