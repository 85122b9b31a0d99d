"""Who may make a call right now: a per-app request budget and a per-peer slowdown after
failed authentications. Pure bookkeeping on an injected clock; the API layer acts on it.

Both keep bounded memory: at most `max_keys` apps or peers, least recently seen dropped first
(a dropped peer starts over, which costs an attacker nothing it could not get by waiting).
"""

from __future__ import annotations

import urllib.parse
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass

from .clock import Clock


@dataclass
class _Bucket:
    tokens: float
    updated: float


class AppRequestLimiter:
    """A token bucket per key (an app id; for the HTTP surface also a client address or a
    device token): `rate` requests per second on average, `burst` at once.

    A noisy app runs its own bucket dry and gets RESOURCE_EXHAUSTED; other apps' buckets are
    untouched, so it cannot starve them. rate 0 turns the limit off.
    """

    def __init__(self, clock: Clock, rate: float, burst: int = 0, *, max_keys: int = 100_000) -> None:
        self._clock = clock
        self.rate = rate
        self.burst = float(burst or max(1, int(rate)))  # default: one second's worth
        # Epoch seconds as floats step by ~0.2 µs: count a token as whole 1 µs early.
        self._one = 1 - rate * 1e-6
        self._max_keys = max_keys
        self._buckets: OrderedDict[Hashable, _Bucket] = OrderedDict()

    def allow(self, app_id: Hashable) -> bool:
        if self.rate <= 0:
            return True
        now = self._clock.time()
        b = self._buckets.get(app_id)
        if b is None:
            b = self._buckets[app_id] = _Bucket(self.burst, now)
            while len(self._buckets) > self._max_keys:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(app_id)
            b.tokens = min(self.burst, b.tokens + max(0.0, now - b.updated) * self.rate)
            b.updated = now
        if b.tokens >= self._one:
            b.tokens = max(0.0, b.tokens - 1)
            return True
        return False

    def retry_after(self, app_id: Hashable) -> float:
        """Seconds until the app's next request would be allowed."""
        b = self._buckets.get(app_id)
        if b is None or self.rate <= 0 or b.tokens >= self._one:
            return 0.0
        return (1 - b.tokens) / self.rate

    def __len__(self) -> int:
        return len(self._buckets)


@dataclass
class _Failures:
    count: int
    since: float


class AuthFailureThrottle:
    """Slows down a peer (an IP address) that keeps failing to authenticate.

    Failures are counted per peer in a window that starts with its first failure and lasts
    `window` seconds. Below `limit` failures nothing happens. From then on every attempt from
    that peer waits `base_delay * 2**(failures - limit)` seconds before its credentials are
    even checked (so a guesser also cannot make us burn scrypt time at full speed); once that
    delay would exceed `max_delay`, attempts are refused outright until the window ends.
    limit 0 turns the throttle off.
    """

    REFUSE = -1.0

    def __init__(
        self,
        clock: Clock,
        limit: int = 10,
        *,
        window: float = 300.0,
        base_delay: float = 0.5,
        max_delay: float = 8.0,
        max_keys: int = 10_000,
    ) -> None:
        self._clock = clock
        self.limit = limit
        self.window = window
        self.base_delay = base_delay
        self.max_delay = max_delay
        self._max_keys = max_keys
        self._peers: OrderedDict[str, _Failures] = OrderedDict()

    def _current(self, peer: str) -> _Failures | None:
        f = self._peers.get(peer)
        if f is not None and self._clock.time() - f.since >= self.window:
            del self._peers[peer]
            return None
        return f

    def delay(self, peer: str) -> float:
        """Seconds to wait before checking this peer's credentials; REFUSE to not check them."""
        if self.limit <= 0:
            return 0.0
        f = self._current(peer)
        if f is None or f.count < self.limit:
            return 0.0
        wait = self.base_delay * 2 ** (f.count - self.limit)
        return self.REFUSE if wait > self.max_delay else wait

    def failed(self, peer: str) -> None:
        if self.limit <= 0:
            return
        f = self._current(peer)
        if f is None:
            self._peers[peer] = _Failures(1, self._clock.time())
            while len(self._peers) > self._max_keys:
                self._peers.popitem(last=False)
        else:
            f.count += 1
            self._peers.move_to_end(peer)

    def failures(self, peer: str) -> int:
        f = self._current(peer)
        return f.count if f is not None else 0

    def __len__(self) -> int:
        return len(self._peers)


def peer_host(peer: str) -> str:
    """The address part of a gRPC peer string: "ipv4:10.0.0.7:5123" -> "10.0.0.7",
    "ipv6:[::1]:5123" (or "ipv6:%5B::1%5D:5123") -> "::1"; anything else (e.g. "unix:/path")
    is returned whole."""
    kind, _, rest = urllib.parse.unquote(peer).partition(":")
    if kind == "ipv4":
        return rest.rpartition(":")[0] or rest
    if kind == "ipv6":
        host = rest.rpartition(":")[0] if rest.startswith("[") else rest
        return host.strip("[]") or rest
    return urllib.parse.unquote(peer)
