"""The baseline: a grpc.aio server with the same generated servicer base classes, answering
at once with an empty response (it reads every streamed message, stores nothing).

    python -m bench.noop 127.0.0.1:PORT
"""

from __future__ import annotations

import asyncio
import signal
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from pushreach.v1 import event_pb2, event_pb2_grpc, push_pb2, push_pb2_grpc


class NoopPush(push_pb2_grpc.PushServiceServicer):
    async def Push(self, request, context):  # type: ignore[no-untyped-def]
        return push_pb2.PushResponse(push_id="0" * 20, target_count=len(request.token_list))


class NoopEvent(event_pb2_grpc.EventServiceServicer):
    async def ReportEvent(self, request, context):  # type: ignore[no-untyped-def]
        return event_pb2.ReportEventResponse(outcome=1)

    async def ReportEvents(self, request_iterator, context):  # type: ignore[no-untyped-def]
        n = 0
        async for message in request_iterator:
            n += len(message.events)
        return event_pb2.ReportEventsResponse(accepted_count=n)


async def serve(listen: str) -> None:
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    push_pb2_grpc.add_PushServiceServicer_to_server(NoopPush(), server)
    event_pb2_grpc.add_EventServiceServicer_to_server(NoopEvent(), server)
    health = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    server.add_insecure_port(listen)
    await server.start()
    await health.set("", health_pb2.HealthCheckResponse.SERVING)
    stopped = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stopped.set)
    loop.add_signal_handler(signal.SIGINT, stopped.set)
    await stopped.wait()
    await server.stop(1)


if __name__ == "__main__":
    asyncio.run(serve(sys.argv[1]))
