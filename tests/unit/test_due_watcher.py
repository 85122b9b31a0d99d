"""DueWatcher: pushes accepted elsewhere and fires left by a dead instance reach this wheel."""

from __future__ import annotations

from pushreachd.engine.sharing import DueWatcher

from tests.fakes import FakeClock

NOW = 1_750_000_000.0


class FakeIndex:
    def __init__(self, due: list[tuple[int, float]], expired: list[int]) -> None:
        self.due, self.expired = due, expired
        self.pages: list[tuple[float, tuple[float, int] | None]] = []

    async def due_fallbacks(self, through: float, after: tuple[float, int] | None, limit: int) -> list[tuple[int, float]]:
        self.pages.append((through, after))
        rows = sorted((d, p) for p, d in self.due if d <= through and (after is None or (d, p) > after))
        return [(p, d) for d, p in rows[:limit]]

    async def expired_leases(self, limit: int) -> list[int]:
        return self.expired[:limit]


class FakeScheduler:
    def __init__(self, known: set[int]) -> None:
        self.known = known
        self.armed: dict[int, float] = {}

    def arm(self, push: int, due_at: float) -> None:
        self.armed[push] = due_at

    def knows(self, push: int) -> bool:
        return push in self.known or push in self.armed


async def test_unknown_due_pushes_are_armed_late_known_ones_left_alone_expired_leases_at_once() -> None:
    index = FakeIndex(due=[(i, NOW + i) for i in range(1, 8)] + [(99, NOW + 500)], expired=[50, 3])
    scheduler = FakeScheduler(known={2, 3})
    watcher = DueWatcher(index, scheduler, FakeClock(NOW), horizon=60, takeover=1.5, page=3)
    assert await watcher.poll_once() == 6
    # Beyond the horizon: not yet. Known here (armed by this instance's own Push): untouched.
    assert scheduler.armed == {**{i: NOW + i + 1.5 for i in (1, 4, 5, 6, 7)}, 50: NOW}
    # Paged through the index by (due, id), never re-reading a page.
    assert [after for _, after in index.pages] == [None, (NOW + 3, 3), (NOW + 6, 6)]
    assert await watcher.poll_once() == 0, "nothing new"
