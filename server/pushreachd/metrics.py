"""Prometheus metrics: one CollectorRegistry per Service (never the global one), and the
HTTP endpoint that serves it on `metrics_listen`.

The parts of the service never import this module: they expose hooks (scheduler observers,
the store's `on_commit`, the sender's provider) and `Metrics` plugs into them. Gauges that
mirror live state (pending fallbacks, sender counters) are read at scrape time by a custom
collector, so they can never drift from the truth.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Protocol

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector

from .engine.scheduler import FireReport
from .sms.provider import SmsBatch, SmsProvider, SmsProviderError, SmsResult

log = logging.getLogger(__name__)

PREFIX = "pushreach"
# Latency buckets from 1 ms to 30 s: RPCs and commits sit at the low end, provider calls
# with retries at the high end.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# Lateness of a fire: within one tick is normal; seconds mean the workers fall behind;
# minutes to hours are fallbacks recovered after a downtime.
LATENESS_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class LiveState(Protocol):
    """What the scrape-time collector reads of the scheduler."""

    @property
    def pending_count(self) -> int: ...
    @property
    def backlog(self) -> int: ...


class SenderCounters(Protocol):
    batches: int
    attempts: int
    retries: int
    exhausted: int


class _LiveCollector(Collector):
    """Reads the scheduler and the sender when Prometheus scrapes."""

    def __init__(self) -> None:
        self.scheduler: LiveState | None = None
        self.sender: SenderCounters | None = None

    def collect(self) -> Iterator[Metric]:
        if self.scheduler is not None:
            yield GaugeMetricFamily(
                f"{PREFIX}_fallbacks_pending",
                "SMS fallbacks armed and waiting for their delay to end.",
                value=self.scheduler.pending_count,
            )
            yield GaugeMetricFamily(
                f"{PREFIX}_fallbacks_backlog",
                "SMS fallbacks due and waiting for, or in the hands of, a fire worker.",
                value=self.scheduler.backlog,
            )
        if self.sender is not None:
            for name, attr, text in (
                ("sms_batches", "batches", "SMS batches handed to the sender."),
                ("sms_provider_attempts", "attempts", "Calls made to the SMS provider, retries included."),
                ("sms_provider_retries", "retries", "Provider calls retried after a transient error."),
                ("sms_batches_exhausted", "exhausted", "Batches that failed transiently on every attempt."),
            ):
                yield CounterMetricFamily(f"{PREFIX}_{name}", text, value=getattr(self.sender, attr))

    def describe(self) -> Iterator[Metric]:
        return iter(())  # families depend on what is attached; collected lazily


class Metrics:
    """Every pushreach series, on a registry of its own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.rpcs = Counter(
            f"{PREFIX}_rpc_requests",
            "RPCs handled, by gRPC method and status code.",
            ["method", "code"],
            registry=r,
        )
        self.rpc_seconds = Histogram(
            f"{PREFIX}_rpc_duration_seconds",
            "Time to handle an RPC, by gRPC method and status code.",
            ["method", "code"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.http_requests = Counter(
            f"{PREFIX}_http_requests",
            "HTTP requests handled, by endpoint (route pattern) and status code.",
            ["endpoint", "code"],
            registry=r,
        )
        self.http_seconds = Histogram(
            f"{PREFIX}_http_request_duration_seconds",
            "Time to handle an HTTP request, by endpoint (route pattern) and status code.",
            ["endpoint", "code"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.device_reports = Counter(
            f"{PREFIX}_device_reports",
            "Reports from devices over HTTP (kind: receipt, signed = arrival/click signed with the device "
            "key, state = notification state), by kind and outcome: "
            "accepted, duplicate, unknown_push, unknown_token, refused (bad credential), invalid.",
            ["kind", "outcome"],
            registry=r,
        )
        self.fire_lateness = Histogram(
            f"{PREFIX}_fallback_fire_lateness_seconds",
            "Seconds between a fallback's due time and the start of its fire.",
            buckets=LATENESS_BUCKETS,
            registry=r,
        )
        self.fires = Counter(f"{PREFIX}_fallback_fires", "Fallbacks fired (judged and sent).", registry=r)
        self.sms = Counter(
            f"{PREFIX}_sms",
            "Supplementary SMS by outcome when the fallback fired: sent, failed, rate_limited, unknown.",
            ["outcome"],
            registry=r,
        )
        self.no_phone = Counter(
            f"{PREFIX}_fallback_targets_without_phone",
            "Targets of fired fallbacks that had no phone bound.",
            registry=r,
        )
        self.provider_seconds = Histogram(
            f"{PREFIX}_sms_provider_duration_seconds",
            "Duration of one SMS provider call (one batch, one attempt), by provider and result "
            "(ok, transient, rate_limited, permanent, error).",
            ["provider", "result"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.provider_errors = Counter(
            f"{PREFIX}_sms_provider_errors",
            "SMS provider calls that failed as a whole, by provider and the provider's error code "
            "(AuthFailure.SecretIdNotFound, InternalError, ...).",
            ["provider", "code"],
            registry=r,
        )
        self.commit_seconds = Histogram(
            f"{PREFIX}_store_commit_duration_seconds",
            "Duration of one store transaction (group commit), writes included.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.commit_batch = Histogram(
            f"{PREFIX}_store_commit_batch_size",
            "Writes that shared one store transaction.",
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.pushes = Counter(
            f"{PREFIX}_push",
            "Push targets answered, by channel and outcome (accepted, invalid_token, failed, expired, no_channel).",
            ["channel", "outcome"],
            registry=r,
        )
        self.channel_seconds = Histogram(
            f"{PREFIX}_push_channel_seconds",
            "Duration of one channel send (a batch of targets, the channel's retries included).",
            ["channel"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self._live = _LiveCollector()
        r.register(self._live)
        for code in ("sent", "failed", "rate_limited", "unknown"):
            self.sms.labels(code)  # every outcome shows from the start, at 0

    # -- hooks --------------------------------------------------------------------------

    def watch(self, scheduler: LiveState, sender: SenderCounters | None = None) -> None:
        """Read the scheduler's pending fallbacks and the sender's counters at scrape time."""
        self._live.scheduler = scheduler
        self._live.sender = sender

    def observe_rpc(self, method: str, code: str, seconds: float) -> None:
        self.rpcs.labels(method, code).inc()
        self.rpc_seconds.labels(method, code).observe(seconds)

    def observe_http(self, endpoint: str, code: str, seconds: float) -> None:
        self.http_requests.labels(endpoint, code).inc()
        self.http_seconds.labels(endpoint, code).observe(seconds)

    def observe_device_report(self, kind: str, outcome: str, count: int = 1) -> None:
        self.device_reports.labels(kind, outcome).inc(count)

    def observe_fire(self, report: FireReport) -> None:
        """A scheduler observer."""
        self.fires.inc()
        self.fire_lateness.observe(report.lateness)
        self.sms.labels("sent").inc(report.sent)
        self.sms.labels("failed").inc(report.failed)
        self.sms.labels("rate_limited").inc(report.rate_limited)
        self.sms.labels("unknown").inc(report.unknown)
        self.no_phone.inc(report.no_phone)

    def observe_push(self, channel: str, counts: Mapping[str, int], seconds: float | None) -> None:
        """A delivery observer: one channel send's targets by outcome, and its duration (None
        for targets no channel was called for)."""
        for outcome, count in counts.items():
            self.pushes.labels(channel, outcome).inc(count)
        if seconds is not None:
            self.channel_seconds.labels(channel).observe(seconds)

    def observe_commit(self, batch_size: int, seconds: float) -> None:
        """The store's `on_commit` hook."""
        self.commit_batch.observe(batch_size)
        self.commit_seconds.observe(seconds)

    def observe_provider_call(self, provider: str, result: str, seconds: float, code: str = "") -> None:
        self.provider_seconds.labels(provider, result).observe(seconds)
        if code:
            self.provider_errors.labels(provider, code).inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class TimedSmsProvider:
    """An SmsProvider that times each call of the one it wraps (one call = one attempt)."""

    def __init__(
        self,
        inner: SmsProvider,
        observe: Callable[[str, str, float, str], None],
        timer: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.inner = inner
        self.name = inner.name
        self.max_batch_size = inner.max_batch_size
        self._observe = observe
        self._timer = timer

    async def send(self, batch: SmsBatch) -> list[SmsResult]:
        started = self._timer()
        result, code = "error", ""
        try:
            results = await self.inner.send(batch)
            result = "ok"
            return results
        except SmsProviderError as exc:
            result, code = exc.kind.value.lower(), exc.code
            raise
        finally:
            self._observe(self.name, result, self._timer() - started, code)

    async def close(self) -> None:
        await self.inner.close()


class MetricsServer:
    """`GET /metrics` (and `/`) over HTTP, in the service's event loop."""

    def __init__(self, metrics: Metrics, host: str, port: int) -> None:
        self._metrics = metrics
        self._host = host
        self._port = port
        self._runner: web.AppRunner | None = None
        self.port = 0  # the bound port, set by start()

    async def start(self) -> int:
        app = web.Application()
        app.router.add_get("/metrics", self._handle)
        app.router.add_get("/", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self._host, self._port).start()
        self.port = int(self._runner.addresses[0][1])
        return self.port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _handle(self, request: web.Request) -> web.Response:
        body = self._metrics.exposition()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
