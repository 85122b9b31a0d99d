"""A pure hierarchical timing wheel: which keys are due at a given time.

No asyncio, no clock reads, no I/O: the caller says what time it is (`advance(now_ms)`),
and pushreachd.engine.timer.WheelTimer is the small driver that owns a clock and sleeps.
"""

from __future__ import annotations

import heapq
from array import array

from .keyset import KeySet


class TimingWheel:
    """Hierarchical timing wheel (Kafka TimingWheel / Linux timer.c style) over int keys.

    Time is cut into ticks of `tick_ms`. A deadline is rounded *up* to its tick
    t = ceil(deadline_ms / tick_ms), so a key is due at tick t and never before its deadline.

    Level n is a ring of `wheel_size` slots, each `wheel_size**n` ticks wide, so level n spans
    `wheel_size**(n+1)` ticks from the start of its current slot. With tick 100 ms, size 64:

        level 0: slots of 100 ms      spanning 6.4 s
        level 1: slots of 6.4 s       spanning 409.6 s   (the 300 s default delay lands here)
        level 2: slots of 409.6 s     spanning 26,214 s  (7.3 h)
        level 3: slots of 26,214 s    spanning 19.4 days (the 3-day maximum lands here)

    A key goes to the lowest level whose span still reaches its tick (O(levels) per add,
    levels are created lazily). When time reaches the start of a slot at level n > 0, the slot
    is emptied and its keys cascade to lower levels, where they land in finer slots; a level-0
    slot is the single tick t, so emptying it returns its keys. Non-empty slots are also kept
    in a small heap by start tick (at most levels * wheel_size of them), so `advance` over a
    jump of days visits only non-empty slots instead of every tick in between.

    Memory (1M pending must fit well under 100 MB, so no per-entry objects): the live keys in a
    `KeySet` (about 9 bytes a key, see keyset.py), and slots that are flat int64 arrays of
    (key, tick) pairs, so a pending entry costs about 25 bytes, whatever its deadline.
    Removal is lazy: `cancel` only drops the key from the set and a re-add leaves the old copy
    behind. `_moved` records the current tick of keys that were cancelled or re-added (-1: not
    pending), which is how a copy is recognised as stale; a key absent from `_moved` has no
    stale copy.
    `_maybe_compact` drops stale copies and clears `_moved` once they outnumber live keys.

    Invariants (tested against a heap-based reference in tests/unit/test_wheel.py):
      * never early: `advance(now_ms)` returns a key only if deadline_ms <= now_ms;
      * within one tick: a key is returned by the first `advance` whose now_ms >= its deadline
        rounded up to the tick, so lateness < tick_ms when `advance` runs at every tick
        boundary (with `now_ms` between boundaries, keys of the current partial tick wait);
      * exactly once: each add is returned at most once and is never lost;
      * `next_expiry_ms()` is a lower bound of the first time `advance` returns or cascades.
    """

    # Compact when stale copies exceed live keys by this many (amortised O(1) per cancel).
    _COMPACT_SLACK = 1024

    def __init__(self, tick_ms: int = 100, wheel_size: int = 64, start_ms: int = 0) -> None:
        if tick_ms <= 0 or wheel_size < 2:
            raise ValueError("tick_ms must be > 0 and wheel_size >= 2")
        self._tick_ms = tick_ms
        self._size = wheel_size
        self._tick = start_ms // tick_ms  # every slot starting at or before this tick is done
        self._live = KeySet()
        self._moved: dict[int, int] = {}  # key -> current tick (-1 once cancelled)
        self._due_now = _pairs()  # copies whose tick was already reached when placed
        self._widths: list[int] = []  # level n: slot width in ticks (wheel_size ** n)
        self._slots: list[list[array[int]]] = []  # level -> ring of slots of (key, tick)
        self._starts: list[list[int]] = []  # level -> start tick per slot, -1 when empty
        self._heap: list[tuple[int, int]] = []  # (start tick, level) of each non-empty slot
        self._copies = 0  # (key, tick) pairs held in slots + _due_now, live or stale

    def __len__(self) -> int:
        return len(self._live)

    def __contains__(self, key: object) -> bool:
        return key in self._live

    def add(self, deadline_ms: int, key: int) -> None:
        """Schedule `key` (an int64) at `deadline_ms`, replacing its previous deadline."""
        t = -(-deadline_ms // self._tick_ms)
        was_live = not self._live.add(key)
        replaced = was_live or key in self._moved
        if replaced:
            if was_live and self._moved.get(key) == t:
                return  # same tick: the existing copy already stands for it
            self._moved[key] = t  # every older copy with another tick is now stale
        self._place(key, t)
        if replaced:
            self._maybe_compact()

    def cancel(self, key: int) -> bool:
        """Forget `key`; True if it was pending. Its slot copy is dropped lazily."""
        if not self._live.discard(key):
            return False
        self._moved[key] = -1
        self._maybe_compact()
        return True

    def next_expiry_ms(self) -> int | None:
        """Earliest time `advance` may return keys or must cascade; None when empty."""
        if not self._live:
            return None
        if self._due_now:
            return self._tick * self._tick_ms
        return self._heap[0][0] * self._tick_ms

    def advance(self, now_ms: int) -> list[int]:
        """Move time to `now_ms` and return (and remove) every key due by then, each once."""
        target = now_ms // self._tick_ms
        moved = self._moved
        expired: list[int] = []
        if self._due_now:
            pairs, self._due_now = self._due_now, _pairs()
            self._copies -= len(pairs) // 2
            it = iter(pairs)
            for key, t in zip(it, it):
                if moved.get(key, t) == t:
                    self._fire(key, expired)
        heap = self._heap
        while heap and heap[0][0] <= target:
            start, level = heapq.heappop(heap)
            index = start // self._widths[level] % self._size
            pairs = self._slots[level][index]
            self._slots[level][index] = _pairs()
            self._starts[level][index] = -1
            self._copies -= len(pairs) // 2
            # Time moves to this slot's start, so cascaded keys land relative to it and
            # everything still ahead of it goes to a finer slot (possibly this same advance).
            self._tick = start
            it = iter(pairs)
            for key, t in zip(it, it):
                if moved.get(key, t) != t:
                    continue  # cancelled, or re-added with another tick
                if t == start:
                    self._fire(key, expired)
                else:
                    self._place(key, t)
        if target > self._tick:
            self._tick = target
        return expired

    def _fire(self, key: int, expired: list[int]) -> None:
        # Copies of one add all carry the same tick and so all come due in this same
        # advance: the first takes the key out of `live`, the others find it gone and are
        # skipped, never re-fired. (So `advance` looks a key up once, when it fires: a copy
        # whose key is not in `_moved` is neither cancelled nor stale.)
        if self._live.discard(key):
            expired.append(key)

    def _place(self, key: int, t: int) -> None:
        self._copies += 1
        if t <= self._tick:
            self._due_now.extend((key, t))
            return
        level, width = 0, 1
        while True:
            if level == len(self._widths):  # lazily grow an overflow level
                self._widths.append(width)
                self._slots.append([_pairs() for _ in range(self._size)])
                self._starts.append([-1] * self._size)
            # The current slot of this level starts at self._tick rounded down to width;
            # t fits if it lies within wheel_size slots of it. It then never lands in the
            # current slot itself (that range fits a lower level), so slot indices of
            # pending slots are distinct and a non-empty slot always has the same start.
            if t < self._tick - self._tick % width + width * self._size:
                break
            level += 1
            width *= self._size
        start = t - t % width
        index = start // width % self._size
        if self._starts[level][index] != start:
            self._starts[level][index] = start
            heapq.heappush(self._heap, (start, level))
        self._slots[level][index].extend((key, t))

    def _maybe_compact(self) -> None:
        # Lazy deletion leaves stale copies until their slot comes due (up to days away);
        # rebuild once they outnumber live keys so memory stays O(pending).
        slack = len(self._live) + self._COMPACT_SLACK
        if self._copies <= len(self._live) + slack and len(self._moved) <= slack:
            return
        live, moved = self._live, self._moved
        old = [self._due_now] + [pairs for ring in self._slots for pairs in ring]
        self._due_now = _pairs()
        self._slots = [[_pairs() for _ in range(self._size)] for _ in self._widths]
        self._starts = [[-1] * self._size for _ in self._widths]
        self._heap = []
        self._copies = 0
        for pairs in old:
            it = iter(pairs)
            for key, t in zip(it, it):
                if key in live and moved.get(key, t) == t:
                    self._place(key, t)  # duplicates of one add share a slot: harmless
            del pairs[:]  # hand memory back as we go
        moved.clear()  # no stale copy is left


def _pairs() -> array[int]:
    return array("q")
