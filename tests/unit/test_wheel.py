"""TimingWheel: basics, plus a Hypothesis state machine against a heap-based reference."""

from __future__ import annotations

import heapq
import random
import tracemalloc

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule
from pushreachd.engine.wheel import TimingWheel

DAY_MS = 86_400_000


def test_fires_at_deadline_not_before() -> None:
    wheel = TimingWheel(tick_ms=100, wheel_size=64, start_ms=0)
    wheel.add(300_000, 7)
    assert wheel.advance(299_900) == []
    assert 7 in wheel and len(wheel) == 1
    assert wheel.advance(300_000) == [7]
    assert 7 not in wheel and len(wheel) == 0
    assert wheel.advance(400_000) == []


def test_deadline_between_ticks_waits_for_the_tick_boundary() -> None:
    wheel = TimingWheel(tick_ms=100)
    wheel.add(150, 1)
    assert wheel.advance(149) == []
    # Due, but the wheel only resolves whole ticks: it comes out at the next boundary.
    assert wheel.advance(150) == []
    assert wheel.advance(200) == [1]


def test_readd_replaces_the_deadline_both_ways() -> None:
    wheel = TimingWheel(tick_ms=100)
    wheel.add(1_000, 1)
    wheel.add(500_000, 1)  # later
    wheel.add(500_000, 2)
    wheel.add(2_000, 2)  # earlier
    assert len(wheel) == 2
    assert wheel.advance(1_000) == []
    assert wheel.advance(2_000) == [2]
    assert wheel.advance(499_900) == []
    assert wheel.advance(500_000) == [1]


def test_cancel_is_idempotent_and_the_key_never_fires() -> None:
    wheel = TimingWheel(tick_ms=100)
    wheel.add(1_000, 1)
    wheel.add(1_000, 2)
    assert wheel.cancel(1) is True
    assert wheel.cancel(1) is False
    assert wheel.cancel(99) is False
    assert len(wheel) == 1 and 1 not in wheel
    assert wheel.advance(10_000) == [2]


def test_readd_after_cancel_and_after_firing_ignores_old_copies() -> None:
    wheel = TimingWheel(tick_ms=100)
    wheel.add(1_000, 1)
    wheel.cancel(1)
    wheel.add(9_000, 1)
    wheel.add(500, 2)
    assert wheel.advance(500) == [2]
    wheel.add(20_000, 2)  # the stale copy of 2 was consumed; a new one is pending
    assert wheel.advance(1_000) == []  # the cancelled copy of 1 must not fire
    assert wheel.advance(9_000) == [1]
    assert wheel.advance(20_000) == [2]


def test_deadline_already_due_at_add_comes_out_on_next_advance() -> None:
    wheel = TimingWheel(tick_ms=100, start_ms=1_000_000)
    wheel.advance(2_000_000)
    wheel.add(5, 1)
    wheel.add(2_000_000, 2)
    next_ms = wheel.next_expiry_ms()
    assert next_ms is not None and next_ms <= 2_000_000
    assert sorted(wheel.advance(2_000_000)) == [1, 2]


def test_next_expiry_is_a_lower_bound_and_none_when_empty() -> None:
    wheel = TimingWheel(tick_ms=100, wheel_size=64)
    assert wheel.next_expiry_ms() is None
    wheel.add(250_000, 1)
    while len(wheel):
        next_ms = wheel.next_expiry_ms()
        assert next_ms is not None and next_ms <= 250_000
        fired = wheel.advance(next_ms)
        assert fired == ([1] if next_ms >= 250_000 else [])
    assert wheel.next_expiry_ms() is None


def test_driver_following_next_expiry_fires_exactly_at_tick() -> None:
    # What WheelTimer does: sleep until next_expiry_ms, advance, repeat.
    rng = random.Random(1)
    wheel = TimingWheel(tick_ms=100, wheel_size=8)
    deadlines = {key: rng.randrange(1, 3 * DAY_MS) for key in range(2_000)}
    for key, deadline in deadlines.items():
        wheel.add(deadline, key)
    advances = 0
    while (next_ms := wheel.next_expiry_ms()) is not None:
        advances += 1
        for key in wheel.advance(next_ms):
            assert deadlines[key] <= next_ms < deadlines[key] + 100
            del deadlines[key]
    assert deadlines == {}
    assert advances < 4 * 2_000  # visits non-empty slots, not every tick of three days


def test_huge_jump_returns_everything_without_walking_every_tick() -> None:
    # tick 1 ms and a 30-day jump: a tick-by-tick walk would be 2.6e9 steps.
    wheel = TimingWheel(tick_ms=1, wheel_size=64)
    rng = random.Random(2)
    keys = list(range(50_000))
    for key in keys:
        wheel.add(rng.randrange(0, 3 * DAY_MS), key)
    fired = wheel.advance(30 * DAY_MS)
    assert sorted(fired) == keys
    assert len(wheel) == 0 and wheel.next_expiry_ms() is None


def test_many_cancels_compact_without_losing_live_keys() -> None:
    wheel = TimingWheel(tick_ms=100)
    for key in range(10_000):
        wheel.add(600_000 + key, key)
    for key in range(0, 10_000, 2):
        assert wheel.cancel(key)
    for key in range(1, 10_000, 4):
        wheel.add(700_000, key)  # re-adds leave stale copies too
    assert len(wheel) == 5_000
    assert sorted(wheel.advance(700_000)) == list(range(1, 10_000, 2))


def test_cancelled_copies_do_not_pile_up() -> None:
    # Lazy deletion leaves a copy per cancel until its slot comes due, here days away;
    # compaction must keep that garbage proportional to what is pending.
    wheel = TimingWheel(tick_ms=100)
    keys = list(range(1_000_000, 1_050_000))  # created up front: only the wheel's cost counts
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for key in keys:
            wheel.add(2 * DAY_MS, key)
            wheel.cancel(key)
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(wheel) == 0
    assert grown < 200_000  # 50k stale (key, tick) copies would be 800 kB


def test_rejects_nonsense_configuration() -> None:
    with pytest.raises(ValueError):
        TimingWheel(tick_ms=0)
    with pytest.raises(ValueError):
        TimingWheel(wheel_size=1)


class ReferenceTimer:
    """The obvious heap timer: the model the wheel must agree with."""

    def __init__(self) -> None:
        self.deadlines: dict[int, int] = {}
        self._heap: list[tuple[int, int]] = []

    def add(self, deadline_ms: int, key: int) -> None:
        self.deadlines[key] = deadline_ms
        heapq.heappush(self._heap, (deadline_ms, key))

    def cancel(self, key: int) -> bool:
        return self.deadlines.pop(key, None) is not None

    def advance(self, now_ms: int) -> set[int]:
        fired: set[int] = set()
        while self._heap and self._heap[0][0] <= now_ms:
            deadline, key = heapq.heappop(self._heap)
            if self.deadlines.get(key) == deadline:  # skip cancelled / replaced entries
                del self.deadlines[key]
                fired.add(key)
        return fired


keys = st.integers(0, 15)
delays_ms = st.one_of(
    st.integers(-1_000, 1_000),  # already due, or within the first level
    st.integers(0, 600_000),  # the common 300 s fallback range
    st.integers(0, 3 * DAY_MS + 10_000_000),  # up to the 3-day maximum and beyond
)
steps_ms = st.one_of(
    st.integers(0, 500), st.integers(0, 100_000), st.integers(0, 5 * DAY_MS)
)


class WheelVersusHeap(RuleBasedStateMachine):
    @initialize(
        tick=st.sampled_from([1, 7, 100]),
        size=st.sampled_from([2, 3, 8, 64]),
        start=st.integers(0, 2_000_000_000_000),
        compact_slack=st.sampled_from([0, 1024]),
    )
    def setup(self, tick: int, size: int, start: int, compact_slack: int) -> None:
        self.tick = tick
        self.now = start
        self.wheel = TimingWheel(tick_ms=tick, wheel_size=size, start_ms=start)
        self.wheel._COMPACT_SLACK = compact_slack  # 0 exercises compaction constantly
        self.ref = ReferenceTimer()

    @rule(key=keys, delay=delays_ms)
    def add(self, key: int, delay: int) -> None:
        self.wheel.add(self.now + delay, key)
        self.ref.add(self.now + delay, key)

    @rule(key=keys)
    def cancel(self, key: int) -> None:
        assert self.wheel.cancel(key) == self.ref.cancel(key)

    @rule(step=steps_ms, aligned=st.booleans())
    def advance(self, step: int, aligned: bool) -> None:
        now = self.now + step
        if aligned:
            now = -(-now // self.tick) * self.tick
        self.now = now
        deadlines = dict(self.ref.deadlines)
        fired = self.wheel.advance(now)
        assert len(fired) == len(set(fired)), "a key came out twice"
        assert all(deadlines[key] <= now for key in fired), "fired early"
        # The wheel resolves whole ticks: it owes exactly what is due by the last boundary.
        assert set(fired) == self.ref.advance(now - now % self.tick)

    @invariant()
    def same_pending(self) -> None:
        if not hasattr(self, "wheel"):
            return
        assert len(self.wheel) == len(self.ref.deadlines)
        assert all(key in self.wheel for key in self.ref.deadlines)
        next_ms = self.wheel.next_expiry_ms()
        if not self.ref.deadlines:
            assert next_ms is None
        else:
            earliest = min(self.ref.deadlines.values())
            assert next_ms is not None
            # A lower bound: the tick of the earliest deadline, or now if it is already due.
            assert next_ms <= max(-(-earliest // self.tick) * self.tick, self.now)


WheelVersusHeap.TestCase.settings = settings(
    max_examples=200,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_wheel_matches_heap_reference = WheelVersusHeap.TestCase
