"""Per-app request budget and per-peer authentication-failure slowdown, on a fake clock."""

from __future__ import annotations

import pytest
from pushreachd.admission import AppRequestLimiter, AuthFailureThrottle, peer_host

from tests.fakes import FakeClock


async def test_token_bucket_allows_a_burst_then_the_rate() -> None:
    clock = FakeClock()
    limiter = AppRequestLimiter(clock, rate=10, burst=5)
    assert [limiter.allow(1) for _ in range(6)] == [True] * 5 + [False]
    assert limiter.retry_after(1) == pytest.approx(0.1)
    await clock.advance(0.1)  # one token back
    assert limiter.allow(1) and not limiter.allow(1)
    await clock.advance(60)  # refills up to the burst, not beyond
    assert sum(limiter.allow(1) for _ in range(20)) == 5


async def test_a_noisy_app_does_not_spend_another_apps_budget() -> None:
    clock = FakeClock()
    limiter = AppRequestLimiter(clock, rate=100, burst=100)
    noisy = sum(limiter.allow(1) for _ in range(10_000))
    assert noisy == 100
    assert all(limiter.allow(2) for _ in range(100))


async def test_rate_zero_is_off_and_burst_defaults_to_one_second() -> None:
    clock = FakeClock()
    assert all(AppRequestLimiter(clock, rate=0).allow(1) for _ in range(10_000))
    limiter = AppRequestLimiter(clock, rate=50)
    assert sum(limiter.allow(1) for _ in range(1000)) == 50


async def test_limiter_memory_is_bounded() -> None:
    limiter = AppRequestLimiter(FakeClock(), rate=1, max_keys=100)
    for app in range(10_000):
        limiter.allow(app)
    assert len(limiter) == 100


async def test_failures_below_the_limit_cost_nothing_then_delays_double_then_refusal() -> None:
    clock = FakeClock()
    throttle = AuthFailureThrottle(clock, limit=3, window=300, base_delay=0.5, max_delay=4)
    delays = []
    for _ in range(8):
        delays.append(throttle.delay("10.0.0.7"))
        throttle.failed("10.0.0.7")
    assert delays == [0, 0, 0, 0.5, 1, 2, 4, AuthFailureThrottle.REFUSE]
    assert throttle.delay("10.0.0.8") == 0  # another peer is not affected


async def test_the_window_ends_and_the_peer_starts_over() -> None:
    clock = FakeClock()
    throttle = AuthFailureThrottle(clock, limit=2, window=60)
    for _ in range(10):
        throttle.failed("p")
    assert throttle.delay("p") == AuthFailureThrottle.REFUSE
    await clock.advance(59)
    assert throttle.delay("p") == AuthFailureThrottle.REFUSE
    await clock.advance(1)
    assert throttle.delay("p") == 0 and throttle.failures("p") == 0


async def test_throttle_memory_is_bounded_and_off_at_zero() -> None:
    clock = FakeClock()
    throttle = AuthFailureThrottle(clock, limit=1, max_keys=50)
    for i in range(5000):
        throttle.failed(f"10.0.{i // 256}.{i % 256}")
    assert len(throttle) == 50
    off = AuthFailureThrottle(clock, limit=0)
    for _ in range(100):
        off.failed("p")
    assert off.delay("p") == 0 and len(off) == 0


@pytest.mark.parametrize(
    ("peer", "host"),
    [
        ("ipv4:10.0.0.7:5123", "10.0.0.7"),
        ("ipv6:[::1]:5123", "::1"),
        ("ipv6:%5B2001:db8::1%5D:443", "2001:db8::1"),
        ("unix:/tmp/sock", "unix:/tmp/sock"),
        ("", ""),
    ],
)
def test_peer_host(peer: str, host: str) -> None:
    assert peer_host(peer) == host
