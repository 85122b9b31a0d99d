"""The gRPC server factory: every servicer, health (overall and per service) and reflection."""

from __future__ import annotations

from collections.abc import Sequence

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection
from pushreach.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    device_pb2,
    device_pb2_grpc,
    event_pb2,
    event_pb2_grpc,
    push_pb2,
    push_pb2_grpc,
    sms_pb2,
    sms_pb2_grpc,
)

from .admin import AdminServicer
from .device import DeviceServicer
from .event import EventServicer
from .push import PushServicer
from .sms import SmsServicer

SERVICE_NAMES = (
    push_pb2.DESCRIPTOR.services_by_name["PushService"].full_name,
    device_pb2.DESCRIPTOR.services_by_name["DeviceService"].full_name,
    event_pb2.DESCRIPTOR.services_by_name["EventService"].full_name,
    sms_pb2.DESCRIPTOR.services_by_name["SmsService"].full_name,
    admin_pb2.DESCRIPTOR.services_by_name["AdminService"].full_name,
)
MAX_MESSAGE_BYTES = 4 * 1024 * 1024


# Health name that stays SERVING while the process runs, even while the database is away (when
# "" and every service turn NOT_SERVING): for liveness probes, which must not restart an
# instance that only waits for its database.
LIVENESS = "liveness"


class GrpcServer:
    """A started-or-not grpc.aio server with its health servicer."""

    def __init__(
        self,
        push: PushServicer,
        device: DeviceServicer,
        event: EventServicer,
        sms: SmsServicer,
        admin: AdminServicer,
        *,
        interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
    ) -> None:
        self.server = grpc.aio.server(
            interceptors=list(interceptors),
            options=[
                ("grpc.so_reuseport", 0),  # two servers never share a port (parallel tests)
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ]
        )
        push_pb2_grpc.add_PushServiceServicer_to_server(push, self.server)
        device_pb2_grpc.add_DeviceServiceServicer_to_server(device, self.server)
        event_pb2_grpc.add_EventServiceServicer_to_server(event, self.server)
        sms_pb2_grpc.add_SmsServiceServicer_to_server(sms, self.server)
        admin_pb2_grpc.add_AdminServiceServicer_to_server(admin, self.server)
        self.started = False
        self.failed = False  # not_serving() was called: a stop is under way
        self.health = health_aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            (*SERVICE_NAMES, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME),
            self.server,
        )
        self.port = 0
        self.status: int = health_pb2.HealthCheckResponse.NOT_SERVING

    def bind(self, listen: str, credentials: grpc.ServerCredentials | None = None) -> int:
        try:
            if credentials is None:
                self.port = self.server.add_insecure_port(listen)
            else:
                self.port = self.server.add_secure_port(listen, credentials)
        except RuntimeError:  # grpc's "Failed to bind to address"
            self.port = 0
        if not self.port:
            raise OSError(f"listen={listen}: cannot listen there (address in use?); choose another with --listen")
        return self.port

    async def start(self) -> None:
        await self.server.start()
        self.started = True
        await self._set_all(health_pb2.HealthCheckResponse.SERVING)
        await self.health.set(LIVENESS, health_pb2.HealthCheckResponse.SERVING)

    async def not_serving(self) -> None:
        """Health NOT_SERVING (overall and per service); calls are still taken. For good: a
        database coming back does not turn it SERVING again (see set_serving)."""
        self.failed = True
        await self.health.set(LIVENESS, health_pb2.HealthCheckResponse.NOT_SERVING)
        await self._set_all(health_pb2.HealthCheckResponse.NOT_SERVING)

    async def stop(self, grace: float) -> None:
        # Health first, so load balancers stop routing here while calls in flight finish.
        self.started = False
        await self.not_serving()
        await self.server.stop(grace)

    @property
    def serving(self) -> bool:
        """Overall health is SERVING (the HTTP surface's /healthz follows it)."""
        return self.status == health_pb2.HealthCheckResponse.SERVING

    async def set_serving(self, serving: bool) -> None:
        """Health of every service: NOT_SERVING while a dependency (the database) is away."""
        if not self.started or self.failed:
            return
        await self._set_all(
            health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        )

    async def _set_all(self, status: int) -> None:
        self.status = status
        await self.health.set("", status)
        for name in SERVICE_NAMES:
            await self.health.set(name, status)
