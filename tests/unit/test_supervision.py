"""No silent deaths: a failure injected into each kind of background task is logged with its
traceback, recorded by the one Supervisor, turns health NOT_SERVING and makes `serve` stop
with a non-zero status."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path

import pytest
from grpc_health.v1 import health_pb2
from pushreachd import cli
from pushreachd.channels.log import LogPushChannel
from pushreachd.engine.ratelimit import RateLimiter
from pushreachd.engine.scheduler import Scheduler
from pushreachd.engine.timer import WheelTimer
from pushreachd.services.pushes import PushService
from pushreachd.services.retention import RetentionPurger
from pushreachd.sms.receipts import ReceiptPoller
from pushreachd.sms.sender import SmsSender
from pushreachd.store.sqlite import SqliteStore
from pushreachd.supervisor import Supervisor, TaskDied
from pushreachd.wiring import Service

from tests.builders import sms_push_draft
from tests.fakes import FakeClock, FakeSmsProvider
from tests.harness import test_settings


class Injected(RuntimeError):
    """The failure a test injects."""


async def died(supervisor: Supervisor, timeout: float = 10.0) -> str:
    """Wait (bounded) for a death; the name of the task that died."""
    await asyncio.wait_for(supervisor.failed.wait(), timeout)
    return supervisor.failed_task


def boom(*_: object, **__: object) -> None:
    raise Injected("injected")


async def aboom(*_: object, **__: object) -> None:
    raise Injected("injected")


# -- the supervisor itself ------------------------------------------------------------------------


async def test_a_task_that_raises_is_logged_with_its_traceback(caplog: pytest.LogCaptureFixture) -> None:
    supervisor = Supervisor()
    seen: list[str] = []
    supervisor.on_failure.append(lambda name, exc: seen.append(name))
    with caplog.at_level(logging.CRITICAL):
        supervisor.spawn(aboom(), name="pushreach-test")
        assert await died(supervisor) == "pushreach-test"
    assert isinstance(supervisor.failure, Injected) and seen == ["pushreach-test"]
    (record,) = [r for r in caplog.records if r.levelno == logging.CRITICAL]
    assert "pushreach-test" in record.getMessage() and record.exc_info is not None  # the traceback


async def test_a_forever_task_may_end_only_when_released_and_a_cancel_is_no_death() -> None:
    supervisor = Supervisor()

    async def quick() -> None:
        return None

    released = supervisor.spawn(quick(), name="released", forever=True)
    supervisor.release(released)
    cancelled = supervisor.spawn(asyncio.sleep(60), name="cancelled", forever=True)
    cancelled.cancel()
    ordinary = supervisor.spawn(quick(), name="ordinary")
    await asyncio.gather(released, ordinary, cancelled, return_exceptions=True)
    assert supervisor.failure is None
    supervisor.spawn(quick(), name="fell-out", forever=True)
    assert await died(supervisor) == "fell-out"
    assert isinstance(supervisor.failure, TaskDied)


# -- each kind of task --------------------------------------------------------------------------------


async def test_store_writer_death_fails_callers_instead_of_leaving_them_waiting(tmp_path: Path) -> None:
    supervisor = Supervisor()
    store = SqliteStore(str(tmp_path / "w.db"), supervisor=supervisor)
    await store.open()
    store.on_commit = boom  # a bug after the commit: the write is durable, the writer dies
    app = await asyncio.wait_for(store.create_app("a", "a", "v", 1.0), 10)
    assert app.access_id == "a"
    assert await died(supervisor) == "pushreach-db-writer"
    with pytest.raises(RuntimeError, match="writer died"):
        await asyncio.wait_for(store.create_app("b", "b", "v", 1.0), 10)
    await store.close()


async def test_timer_death(tmp_path: Path) -> None:
    supervisor = Supervisor()
    clock = FakeClock()
    clock.sleep = aboom  # type: ignore[method-assign]
    timer = WheelTimer(clock, lambda keys: None, supervisor=supervisor)
    timer.add(clock.time() + 10, 1)
    timer.start()
    assert await died(supervisor) == "pushreach-wheel-timer"
    await timer.stop()


async def _scheduler(tmp_path: Path, supervisor: Supervisor) -> tuple[SqliteStore, Scheduler, PushService, FakeClock]:
    clock = FakeClock()
    store = SqliteStore(str(tmp_path / "s.db"), supervisor=supervisor)
    await store.open()
    scheduler = Scheduler(
        store,
        SmsSender(FakeSmsProvider(), clock),
        clock,
        limiter=RateLimiter(),
        credentials=lambda access_id, blob: None,
        supervisor=supervisor,
    )
    pushes = PushService(store, LogPushChannel(), scheduler, clock, min_delay_seconds=1, supervisor=supervisor)
    return store, scheduler, pushes, clock


@pytest.mark.parametrize(
    ("inject", "task"),
    [("_kick", "pushreach-fire-"), ("_run_chunk", "pushreach-lane-")],
    ids=["claim-worker", "sms-lane"],
)
async def test_claim_worker_and_lane_deaths(tmp_path: Path, inject: str, task: str) -> None:
    supervisor = Supervisor()
    store, scheduler, pushes, clock = await _scheduler(tmp_path, supervisor)
    setattr(scheduler, inject, aboom if inject == "_run_chunk" else boom)
    await scheduler.start()
    app = await store.create_app("a", "a", "v", clock.time())
    await store.bind_phone(app.id, "t", "+8613800000001", clock.time())
    await pushes.push(app, sms_push_draft(["t"], 1))
    await clock.advance(1)
    assert (await died(supervisor)).startswith(task)
    await scheduler.stop(grace=0)
    await pushes.stop()
    await store.close()


async def test_delivery_death_when_the_store_cannot_record_it(tmp_path: Path) -> None:
    supervisor = Supervisor()
    store, scheduler, pushes, clock = await _scheduler(tmp_path, supervisor)
    app = await store.create_app("a", "a", "v", clock.time())
    store.record_outcomes = aboom  # type: ignore[method-assign]  # outcomes and the delivered mark: one write
    await pushes.push(app, sms_push_draft(["t"], 1))
    assert (await died(supervisor)).startswith("pushreach-delivery-")
    await pushes.stop()
    await store.close()


async def test_redelivery_on_start_death(tmp_path: Path) -> None:
    supervisor = Supervisor()
    store, scheduler, pushes, clock = await _scheduler(tmp_path, supervisor)
    store.expire_undelivered = aboom  # type: ignore[method-assign]
    await pushes.start_resume()
    assert await died(supervisor) == "pushreach-redelivery"
    await pushes.stop()
    await store.close()


# -- in the service: health NOT_SERVING, and `serve` exits non-zero -------------------------------------


@pytest.mark.parametrize(
    ("patch", "task", "changes"),
    [
        (lambda mp: mp.setattr(RetentionPurger, "run", aboom), "pushreach-retention", {}),
        (
            lambda mp: mp.setattr(ReceiptPoller, "run", aboom),
            "pushreach-receipt-poller",
            {"sms_provider": "tencent", "tencent_sms_endpoint": "http://127.0.0.1:9", "sms_receipt_poll_seconds": 60},
        ),
    ],
    ids=["retention", "receipt-poller"],
)
async def test_a_death_in_the_service_turns_health_not_serving(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, patch: Callable[[pytest.MonkeyPatch], None], task: str,
    changes: dict[str, object],
) -> None:
    patch(monkeypatch)
    service = Service(test_settings(tmp_path, **changes))
    await service.start()
    try:
        assert await died(service.supervisor) == task
        for _ in range(500):  # bounded: the health update is a task of its own
            answer = await service.grpc.health.Check(health_pb2.HealthCheckRequest(), None)
            if answer.status == health_pb2.HealthCheckResponse.NOT_SERVING:
                break
            await asyncio.sleep(0.01)
        assert answer.status == health_pb2.HealthCheckResponse.NOT_SERVING
    finally:
        await service.stop()


async def test_serve_stops_with_a_non_zero_status_when_a_task_dies(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(RetentionPurger, "run", aboom)
    assert await asyncio.wait_for(cli._serve(test_settings(tmp_path)), 30) == 1
