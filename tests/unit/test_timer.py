"""WheelTimer on a FakeClock: when it fires, what it hands out, how it survives and stops."""

from __future__ import annotations

import asyncio
import logging

import pytest
from pushreachd.engine.timer import WheelTimer

from tests.fakes import FakeClock


class Recorder:
    """An async on_expired that records (clock time, keys) per call."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.calls: list[tuple[float, list[int]]] = []

    async def __call__(self, keys: list[int]) -> None:
        self.calls.append((self.clock.time(), keys))

    @property
    def keys(self) -> list[int]:
        return [key for _, batch in self.calls for key in batch]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


async def started(clock: FakeClock, recorder: object) -> WheelTimer:
    timer = WheelTimer(clock, recorder, tick_ms=100)  # type: ignore[arg-type]
    timer.start()
    await clock.advance(0)
    return timer


async def test_fires_at_the_deadline_not_before(clock: FakeClock) -> None:
    rec = Recorder(clock)
    timer = await started(clock, rec)
    deadline = clock.time() + 300
    timer.add(deadline, 1)
    await clock.advance(299.9)
    assert rec.calls == [] and len(timer) == 1
    await clock.advance(0.1)
    assert rec.keys == [1]
    fired_at = rec.calls[0][0]
    assert deadline <= fired_at < deadline + 0.1
    assert timer.pending_count == 0 and timer.last_advance_at == fired_at
    await timer.stop()


async def test_deadline_between_ticks_fires_at_the_next_tick(clock: FakeClock) -> None:
    rec = Recorder(clock)
    timer = await started(clock, rec)
    deadline = clock.time() + 1.05
    timer.add(deadline, 1)
    await clock.advance(1.0)
    assert rec.calls == []
    await clock.advance(0.1)
    assert rec.keys == [1]
    assert deadline <= rec.calls[0][0] < deadline + 0.1
    await timer.stop()


async def test_earlier_add_wakes_the_sleeping_loop(clock: FakeClock) -> None:
    rec = Recorder(clock)
    timer = await started(clock, rec)
    timer.add(clock.time() + 3_600, 1)
    await clock.advance(1)  # the loop is now asleep until the hour is up
    timer.add(clock.time() + 2, 2)
    await clock.advance(0)
    await clock.advance(2)
    assert rec.keys == [2]
    await clock.advance(3_600)
    assert rec.keys == [2, 1]
    await timer.stop()


async def test_add_to_an_empty_timer_wakes_it(clock: FakeClock) -> None:
    rec = Recorder(clock)
    timer = await started(clock, rec)
    await clock.advance(10)
    timer.add(clock.time() + 5, 1)
    await clock.advance(5)
    assert rec.keys == [1]
    await timer.stop()


async def test_cancelled_key_does_not_fire(clock: FakeClock) -> None:
    rec = Recorder(clock)
    timer = await started(clock, rec)
    timer.add(clock.time() + 10, 1)
    timer.add(clock.time() + 10, 2)
    assert timer.cancel(1) is True
    assert timer.cancel(1) is False
    assert len(timer) == 1
    await clock.advance(20)
    assert rec.keys == [2]
    await timer.stop()


async def test_many_keys_due_together_come_as_one_batch(clock: FakeClock) -> None:
    rec = Recorder(clock)
    timer = await started(clock, rec)
    now = clock.time()
    for key in range(20_000):
        timer.add(now + 300 + (key % 50) / 1000, key)  # all within one 100 ms tick
    await clock.advance(301)
    assert len(rec.calls) == 1
    assert sorted(rec.keys) == list(range(20_000))
    await timer.stop()


async def test_overdue_keys_added_before_start_fire_at_once(clock: FakeClock) -> None:
    rec = Recorder(clock)
    timer = WheelTimer(clock, rec)
    timer.add(clock.time() - 60, 1)  # e.g. reloaded from the store after downtime
    timer.start()
    await clock.advance(0)
    assert rec.keys == [1]
    await timer.stop()


async def test_sync_callback_is_supported(clock: FakeClock) -> None:
    seen: list[int] = []
    timer = WheelTimer(clock, seen.extend)
    timer.start()
    timer.add(clock.time() + 1, 5)
    await clock.advance(1)
    assert seen == [5]
    await timer.stop()


async def test_failing_callback_is_logged_and_the_loop_keeps_running(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[int] = []

    async def flaky(keys: list[int]) -> None:
        seen.extend(keys)
        if keys == [1]:
            raise RuntimeError("store unavailable")

    timer = WheelTimer(clock, flaky)
    timer.start()
    timer.add(clock.time() + 1, 1)
    timer.add(clock.time() + 2, 2)
    with caplog.at_level(logging.ERROR, logger="pushreachd.engine.timer"):
        await clock.advance(1)
        await clock.advance(1)
    assert seen == [1, 2]
    assert any("on_expired failed" in r.message and r.exc_info for r in caplog.records)
    await timer.stop()


async def test_stop_ends_the_task_and_leaves_no_sleeper_behind(clock: FakeClock) -> None:
    rec = Recorder(clock)
    timer = await started(clock, rec)
    timer.add(clock.time() + 60, 1)
    await clock.advance(1)
    before = {t for t in asyncio.all_tasks() if t is not asyncio.current_task()}
    assert before  # the loop and its sleep/wake race
    await asyncio.wait_for(timer.stop(), timeout=1)
    after = {t for t in asyncio.all_tasks() if t is not asyncio.current_task()}
    assert after == set()
    await clock.advance(120)
    assert rec.calls == []  # stopped: nothing fires any more
    assert len(timer) == 1  # the key stays in the wheel (the store is the truth)


async def test_start_twice_is_an_error(clock: FakeClock) -> None:
    timer = await started(clock, Recorder(clock))
    with pytest.raises(RuntimeError):
        timer.start()
    await timer.stop()
