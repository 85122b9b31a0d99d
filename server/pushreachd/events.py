"""Recording what devices report: arrival, click, notification setting.

Events never touch the fallback's timer: the scheduler reads them when the fallback fires.
A malformed or unknown event is counted and described, never an error that drops the rest.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from . import limits
from .clock import Clock
from .model import App, EventIn, EventOutcome
from .store.base import Store
from .validation import EventDraft, Violations, validate_event


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

    async def report_many(self, app: App, drafts: list[EventDraft], tally: EventTally) -> None:
        """One message of a stream: valid events are stored together, the rest counted."""
        now = self._clock.time()
        valid: list[tuple[int, EventIn]] = []
        invalid: dict[int, str] = {}
        if len(drafts) > limits.MAX_EVENTS_PER_MESSAGE:
            for i in range(len(drafts)):
                tally.add(tally.seen + i, EventOutcome.INVALID, f"message carries more than {limits.MAX_EVENTS_PER_MESSAGE} events")
            tally.seen += len(drafts)
            return
        for i, draft in enumerate(drafts):
            index = tally.seen + i
            v = Violations()
            event = validate_event(v, f"events[{index}].", draft, now)
            if event is None:
                invalid[index] = "; ".join(f"{x.field}: {x.description}" for x in v.items)
            else:
                valid.append((index, event))
        outcomes = await self._store.record_events(app.id, [e for _, e in valid], now) if valid else []
        # Tally in stream order, so `rejected` lists the first rejections of the stream.
        stored = {index: outcome for (index, _), outcome in zip(valid, outcomes, strict=True)}
        for index in range(tally.seen, tally.seen + len(drafts)):
            if index in invalid:
                tally.add(index, EventOutcome.INVALID, invalid[index])
            else:
                tally.add(index, stored[index])
        tally.seen += len(drafts)
