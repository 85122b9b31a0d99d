from __future__ import annotations

import grpc
from pushreach.v1 import event_pb2, event_pb2_grpc

from .. import limits
from ..errors import ResourceExhausted
from ..model import App
from ..services.events import EventService
from ..services.validation import EventDraft
from . import convert
from .auth import Authenticator
from .rpc import app_rpc


def _draft(e: event_pb2.ReportEventRequest | event_pb2.Event) -> EventDraft:
    return EventDraft(
        push_id=e.push_id,
        token=e.token,
        event_type=e.event_type,
        event_time=convert.seconds(e.event_time) if e.HasField("event_time") else None,
    )


class EventServicer(event_pb2_grpc.EventServiceServicer):
    def __init__(self, auth: Authenticator, events: EventService) -> None:
        self.auth = auth
        self._events = events

    @app_rpc
    async def ReportEvent(self, request: event_pb2.ReportEventRequest, app: App, context: grpc.aio.ServicerContext):
        return event_pb2.ReportEventResponse(outcome=int(await self._events.report(app, _draft(request))))

    @app_rpc
    async def ReportEvents(self, request_iterator, app: App, context: grpc.aio.ServicerContext):
        stream = self._events.stream(app)
        messages = 0
        try:
            async for message in request_iterator:
                messages += 1
                events = len(message.events)
                if messages > limits.MAX_MESSAGES_PER_STREAM or stream.tally.seen + events > limits.MAX_EVENTS_PER_STREAM:
                    # What came before is recorded; the caller learns how far it got and starts a new stream.
                    tally = await stream.finish()
                    raise ResourceExhausted(
                        f"a ReportEvents stream carries at most {limits.MAX_MESSAGES_PER_STREAM} messages and "
                        f"{limits.MAX_EVENTS_PER_STREAM} events; the first {messages - 1} messages "
                        f"({tally.seen} events: {tally.accepted} accepted, {tally.duplicate} duplicate) were recorded"
                    )
                # Stored while the next message is read; finish() waits until all are committed.
                await stream.add([_draft(e) for e in message.events])
            tally = await stream.finish()
        finally:
            stream.abandon()  # after an error: writes under way still land, unwatched
        return event_pb2.ReportEventsResponse(
            accepted_count=tally.accepted,
            duplicate_count=tally.duplicate,
            unknown_push_count=tally.unknown_push,
            unknown_token_count=tally.unknown_token,
            invalid_count=tally.invalid,
            rejected=[
                event_pb2.RejectedEvent(index=r.index, outcome=int(r.outcome), reason=r.reason) for r in tally.rejected
            ],
        )
