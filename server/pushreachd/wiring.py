"""One function builds everything: settings in, a running service out. No singletons."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

import grpc

from .admission import AppRequestLimiter, AuthFailureThrottle
from .api.admin import AdminServicer
from .api.auth import Authenticator
from .api.decoding import DecodeGuardInterceptor
from .api.device import DeviceServicer
from .api.event import EventServicer
from .api.interceptors import MetricsInterceptor
from .api.push import PushServicer
from .api.server import GrpcServer
from .api.sms import SmsServicer
from .channels.base import PushChannel
from .channels.log import LogPushChannel
from .channels.registry import ENDPOINT_SETTINGS, ChannelContext
from .clock import Clock, SystemClock
from .config import Settings, parse_host_port
from .engine.ratelimit import RateLimiter
from .engine.scheduler import Scheduler
from .engine.sharing import DueWatcher
from .http import HttpContext, HttpPart, HttpServer, create_app, server_ssl_context
from .http.console import Console, SessionCodec
from .http.devices import DeviceReports
from .http.tpns import TpnsApi
from .metrics import Metrics, MetricsServer, TimedSmsProvider
from .ports import check_listen_addresses
from .secrets import SecretBox, load_master_key
from .services.apps import AppService
from .services.channels import AppChannels
from .services.devices import DeviceService
from .services.events import EventService
from .services.pushes import PushService
from .services.receipts import Receipts
from .services.reporting import ReportingService
from .services.retention import RetentionPurger
from .sms.console import ConsoleSmsProvider
from .sms.provider import SmsCredentials, SmsProvider
from .sms.receipts import ReceiptPoller, ReceiptServer
from .sms.sender import SmsSender
from .sms.tencent import TencentSmsProvider
from .store import is_postgres_url, make_store
from .store.instance_lock import InstanceLock
from .supervisor import Supervisor

log = logging.getLogger(__name__)


@dataclass
class Overrides:
    """Parts a test may swap for fakes behind the same protocols."""

    clock: Clock = field(default_factory=SystemClock)
    sms_provider: SmsProvider | None = None
    channel: PushChannel | None = None


def make_sms_provider(settings: Settings) -> SmsProvider:
    if settings.sms_provider == "tencent":
        return TencentSmsProvider(
            region=settings.tencent_sms_region, endpoint=settings.tencent_sms_endpoint or None
        )
    return ConsoleSmsProvider()


def server_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    if not settings.tls_enabled:
        return None
    with open(settings.tls_key, "rb") as f:
        key = f.read()
    with open(settings.tls_cert, "rb") as f:
        cert = f.read()
    client_ca = None
    if settings.tls_client_ca:
        with open(settings.tls_client_ca, "rb") as f:
            client_ca = f.read()
    return grpc.ssl_server_credentials(
        [(key, cert)], root_certificates=client_ca, require_client_auth=client_ca is not None
    )


class Service:
    """The whole of pushreach in one process."""

    def __init__(self, settings: Settings, overrides: Overrides | None = None) -> None:
        o = overrides or Overrides()
        self.settings = settings
        self.clock = o.clock
        self.metrics = Metrics()
        # The one owner of every background task: a death turns health NOT_SERVING and sets
        # `supervisor.failed`, on which `serve` stops with a non-zero status.
        self.supervisor = Supervisor()
        self.supervisor.on_failure.append(self._on_task_death)
        self.store = make_store(
            settings.db,
            supervisor=self.supervisor,
            owner=settings.instance_id,
            lease_seconds=settings.fire_lease_seconds,
            pool_size=settings.db_pool_size,
            prepare_threshold=settings.db_prepare_threshold,
        )
        # One instance per SQLite file (its scheduler assumes it is alone): held from start to stop.
        # PostgreSQL is shared by design: no lock.
        self.instance_lock = (
            None if is_postgres_url(settings.db) else InstanceLock(settings.db, f"pushreach serve on {settings.listen}")
        )
        self.store.on_commit = self.metrics.observe_commit
        self.box = SecretBox(load_master_key(settings.master_key, settings.resolved_master_key_file))
        self.apps = AppService(self.store, self.box, self.clock)
        self.provider = o.sms_provider or make_sms_provider(settings)
        self.sender = SmsSender(
            TimedSmsProvider(self.provider, self.metrics.observe_provider_call),
            self.clock,
            per_app_concurrency=settings.sms_per_app_concurrency,
        )
        self.scheduler = Scheduler(
            self.store,
            self.sender,
            self.clock,
            limiter=RateLimiter(settings.rate_limit_time_zone),
            credentials=self.apps.sms_credentials,
            tick_ms=settings.tick_ms,
            workers=settings.fire_workers,
            group_size=settings.fire_group_size,
            per_app=settings.sms_per_app_concurrency,
            supervisor=self.supervisor,
        )
        self.scheduler.observers.append(self.metrics.observe_fire)
        self.metrics.watch(self.scheduler, self.sender)
        self.channel = o.channel or LogPushChannel()
        self.receipts = Receipts(self.store, self.box, self.clock)
        self.channels = AppChannels(
            self.store,
            self.box,
            self.clock,
            ChannelContext(
                self.clock,
                endpoints={name: getattr(settings, name) for name in ENDPOINT_SETTINGS},
                ca_file=settings.channel_ca_file,
            ),
        )
        self.pushes = PushService(
            self.store,
            self.channel,
            self.scheduler,
            self.clock,
            min_delay_seconds=settings.min_delay_seconds,
            receipts=self.receipts,
            supervisor=self.supervisor,
            channels=self.channels,
        )
        self.pushes.deliveries.early = self.scheduler  # early_on_push_failure
        self.pushes.deliveries.observers.append(self.metrics.observe_push)
        self.devices = DeviceService(self.store, self.clock)
        self.events = EventService(self.store, self.clock)
        self.reporting = ReportingService(self.store, self.clock)
        # TPNS's REST API v3 (routes for the HTTP surface on http_listen).
        self.tpns = TpnsApi(
            self.apps, self.pushes, self.devices, self.clock, window=settings.tpns_signature_window_seconds
        )
        self.auth = auth = Authenticator(
            self.apps,
            settings.admin_token,
            clock=self.clock,
            throttle=AuthFailureThrottle(self.clock, settings.auth_failure_limit),
            limiter=AppRequestLimiter(self.clock, settings.app_rate_limit, settings.app_rate_burst),
        )
        self.grpc = GrpcServer(
            PushServicer(auth, self.pushes),
            DeviceServicer(auth, self.devices, self.receipts),
            EventServicer(auth, self.events),
            SmsServicer(auth, self.reporting),
            AdminServicer(auth, self.apps, self.channels, self.receipts, self.clock),
            # Metrics outermost, so a refused malformed request is counted too.
            interceptors=[MetricsInterceptor(self.metrics.observe_rpc), DecodeGuardInterceptor()],
        )
        self.http_context = HttpContext(
            auth,
            self.clock,
            observe=self.metrics.observe_http,
            address_limiter=AppRequestLimiter(self.clock, settings.http_address_rate_limit),
            token_limiter=AppRequestLimiter(
                self.clock, settings.http_token_rate_limit, int(settings.http_token_rate_limit * 10)
            ),
            max_body_bytes=settings.http_max_body_bytes,
            healthy=lambda: self.grpc.serving,  # whatever turns gRPC health NOT_SERVING turns this too
        )
        # The HTTP surface's parts (see http/__init__.py); mounted when the service starts.
        self.http_parts: list[HttpPart] = [
            DeviceReports(self.receipts, self.events, self.apps, self.metrics.observe_device_report),
            Console(
                SessionCodec(self.box.derive_key(b"console sessions")),
                self.apps,
                self.pushes,
                self.devices,
                self.reporting,
                admin_token=settings.admin_token,
                secure_cookie=settings.tls_enabled,
            ),
            self.tpns,  # TPNS's REST API v3: /v3/push/app, /v3/device/..., /v3/statistics/...
        ]
        self.http_server: HttpServer | None = None
        self.http_port = 0  # bound port of the HTTP surface; 0 when off
        self.metrics_server: MetricsServer | None = None
        self.metrics_port = 0  # bound port of the metrics endpoint; 0 when off
        self.receipt_server: ReceiptServer | None = None
        self.receipt_poller: ReceiptPoller | None = None
        self._poller_task: asyncio.Task[None] | None = None
        self.retention = RetentionPurger(self.store, self.clock, settings.retention_days)
        self._retention_task: asyncio.Task[None] | None = None
        # On a shared (PostgreSQL) store: pushes other instances accepted and fires dead ones
        # left reach this wheel too; health follows the database connection.
        self.watcher: DueWatcher | None = None
        self._watcher_task: asyncio.Task[None] | None = None
        if is_postgres_url(settings.db):
            # Imported only here: the PostgreSQL driver is ~17 MB of an SQLite server's RSS.
            from .store.postgres import PostgresStore

            assert isinstance(self.store, PostgresStore)
            self.watcher = DueWatcher(self.store, self.scheduler, self.clock, takeover=settings.tick_ms / 1000 * 5)
            self.store.database.on_health = self._database_health
        self.port = 0

    async def start(self) -> int:
        """Open the store, arm the live fallbacks, then take calls. Returns the gRPC port.

        Before anything starts, the database's instance lock is taken and every listening address
        is checked, so that a second instance or a port in use is one clear error (InstanceLocked,
        AddressUnavailable) and nothing has run."""
        if self.instance_lock is not None:
            self.instance_lock.acquire()
        try:
            check_listen_addresses(self.settings)
            await self.store.open()
        except BaseException:
            if self.instance_lock is not None:
                self.instance_lock.release()
            raise
        key_setting = (
            "master_key" if self.settings.master_key else f"master_key_file ({self.settings.resolved_master_key_file})"
        )
        try:
            await self.apps.check_sealed_credentials(key_setting)
        except BaseException:
            await self.store.close()
            if self.instance_lock is not None:
                self.instance_lock.release()
            raise
        await self.scheduler.start()
        self._retention_task = self.supervisor.spawn(self.retention.run(), name="pushreach-retention", forever=True)
        if self.watcher is not None:
            self._watcher_task = self.supervisor.spawn(self.watcher.run(), name="pushreach-due-watcher", forever=True)
        # Pushes that never reached the channel are redelivered in the background, in pages.
        await self.pushes.start_resume()
        if self.settings.metrics_listen:
            host, port = parse_host_port(self.settings.metrics_listen)
            self.metrics_server = MetricsServer(self.metrics, host, port)
            self.metrics_port = await self.metrics_server.start()
            log.info("Prometheus metrics at http://%s:%d/metrics", host, self.metrics_port)
        self.port = self.grpc.bind(self.settings.listen, server_credentials(self.settings))
        await self.grpc.start()
        await self._start_http()
        await self._start_receipts()
        if self.supervisor.failure is not None:  # a task died while starting: never SERVING
            await self.grpc.not_serving()
            self.http_context.serving = False
        log.info("pushreach listening on %s (port %d)", self.settings.listen, self.port)
        return self.port

    async def _start_http(self) -> None:
        if not self.settings.http_listen:
            return
        host, port = parse_host_port(self.settings.http_listen)
        tls = server_ssl_context(self.settings.tls_cert, self.settings.tls_key) if self.settings.tls_enabled else None
        self.http_server = HttpServer(
            create_app(self.http_context, self.http_parts),
            host,
            port,
            ssl_context=tls,
            grace=self.settings.shutdown_grace_seconds,
        )
        self.http_port = await self.http_server.start()
        log.info("HTTP API at %s://%s:%d", self.http_server.scheme, host, self.http_port)

    async def _start_receipts(self) -> None:
        if self.settings.sms_receipt_listen:
            host, port = parse_host_port(self.settings.sms_receipt_listen)
            tls = server_ssl_context(self.settings.tls_cert, self.settings.tls_key) if self.settings.tls_enabled else None
            self.receipt_server = ReceiptServer(self.store.apply_receipts, host, port, ssl_context=tls)
            await self.receipt_server.start()
            log.info("SMS delivery receipts accepted at %s", self.receipt_server.callback_url)
        if self.settings.sms_receipt_poll_seconds > 0 and isinstance(self.provider, TencentSmsProvider):
            self.receipt_poller = ReceiptPoller(
                self.clock,
                self.provider,
                self._receipt_sources,
                self.store.apply_receipts,
                interval=self.settings.sms_receipt_poll_seconds,
            )
            self._poller_task = self.supervisor.spawn(
                self.receipt_poller.run(), name="pushreach-receipt-poller", forever=True
            )

    def _on_task_death(self, name: str, exc: BaseException) -> None:
        # Health first: load balancers and orchestrators stop routing here at once; `serve`
        # then stops the process with a non-zero status (it waits on supervisor.failed).
        self.http_context.serving = False  # /healthz answers 503
        loop = asyncio.get_running_loop()
        self.supervisor.watch(loop.create_task(self.grpc.not_serving(), name="pushreach-not-serving"))

    def _database_health(self, healthy: bool) -> None:
        # Calls answer UNAVAILABLE meanwhile; orchestrators route elsewhere until it is back.
        if not self.grpc.started:
            return
        self.supervisor.spawn(self.grpc.set_serving(healthy), name="pushreach-database-health")

    async def _receipt_sources(self) -> list[tuple[SmsCredentials, str]]:
        sources = []
        for access_id, blob, sms_app_id in await self.store.sms_sources():
            credentials = self.apps.sms_credentials(access_id, blob)
            if credentials is not None:
                sources.append((credentials, sms_app_id))
        return sources

    async def _stop_http(self) -> None:
        if self.http_server is not None:
            await self.http_server.stop()

    async def stop(self) -> None:
        """Health NOT_SERVING and stop firing at once; then, within the grace, finish the calls
        and the provider calls in flight (what was not dispatched stays reserved for the next
        start); flush the store."""
        grace = self.settings.shutdown_grace_seconds
        self.supervisor.stop()
        await self.grpc.not_serving()
        self.http_context.serving = False  # /healthz answers 503 at once, like gRPC health
        self.scheduler.begin_stop()
        # Both front doors and the firing at once: calls and sends in flight finish.
        await asyncio.gather(self.grpc.stop(grace), self._stop_http(), self.scheduler.stop(grace))
        if self._poller_task is not None:
            self._poller_task.cancel()
        if self._retention_task is not None:
            self._retention_task.cancel()
            await asyncio.gather(self._retention_task, return_exceptions=True)
        if self._watcher_task is not None:
            self._watcher_task.cancel()
            await asyncio.gather(self._watcher_task, return_exceptions=True)
        if self.receipt_server is not None:
            await self.receipt_server.stop()
        await self.pushes.stop()
        await self.channels.aclose()
        await self.provider.close()
        await self.store.close()
        if self.instance_lock is not None:
            self.instance_lock.release()
        if self.metrics_server is not None:
            await self.metrics_server.stop()

