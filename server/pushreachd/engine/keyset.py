"""A set of int64 keys in about 9 bytes each, for the timing wheel's live keys.

A Python `set[int]` of a million keys costs ~64 bytes a key (a 32-byte int object and a
16-byte slot in a table kept under 60 % full): 64 MB of the wheel's ~82 MB at 1,000,000 pending
fallbacks. Here keys are kept in one ascending `array('q')` (8 bytes) with a `bytearray` of
alive flags beside it (1 byte). The wheel's keys are push row ids, which arrive in ascending
order (the start pages through them by id, new pushes get larger ids), so an add is an append
and a lookup of a new key is one comparison. Keys added out of order go to a small `set`;
removal leaves a tombstone. Both are folded back into the array once they grow past a share of
it, in one pass that makes no list of the keys.

Lookups of keys inside the array are a binary search (~1 us instead of ~50 ns): the wheel does
one per key it fires or cascades, not per tick.
"""

from __future__ import annotations

import heapq
from array import array
from bisect import bisect_left
from itertools import compress

_SLACK = 1024  # out-of-order keys or tombstones tolerated beyond the share below


class KeySet:
    def __init__(self) -> None:
        self._keys = array("q")  # ascending, unique
        self._alive = bytearray()  # 1 where _keys[i] is in the set, 0: removed (a tombstone)
        self._extra: set[int] = set()  # keys added below the array's last key and not in it
        self._len = 0
        self._dead = 0  # tombstones in _keys

    def __len__(self) -> int:
        return self._len

    def __bool__(self) -> bool:
        return self._len > 0

    def _find(self, key: int) -> int:
        """Index of `key` in the array, or -1."""
        keys = self._keys
        if not keys or key > keys[-1]:
            return -1
        i = bisect_left(keys, key)
        return i if keys[i] == key else -1

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, int):
            return False
        i = self._find(key)
        if i >= 0:
            return self._alive[i] == 1
        return key in self._extra

    def add(self, key: int) -> bool:
        """Add `key`; True if it was not in the set."""
        keys = self._keys
        if not keys or key > keys[-1]:  # the usual case: a larger id than any so far
            keys.append(key)
            self._alive.append(1)
            self._len += 1
            return True
        i = self._find(key)
        if i >= 0:
            if self._alive[i]:
                return False
            self._alive[i] = 1
            self._dead -= 1
            self._len += 1
            return True
        if key in self._extra:
            return False
        self._extra.add(key)
        self._len += 1
        if len(self._extra) > len(keys) // 8 + _SLACK:
            self._rebuild()
        return True

    def discard(self, key: int) -> bool:
        """Remove `key`; True if it was in the set."""
        i = self._find(key)
        if i >= 0:
            if not self._alive[i]:
                return False
            self._alive[i] = 0
            self._dead += 1
            self._len -= 1
            if self._dead > len(self._keys) // 2 + _SLACK:
                self._rebuild()
            return True
        if key in self._extra:
            self._extra.remove(key)
            self._len -= 1
            return True
        return False

    def _rebuild(self) -> None:
        """Drop tombstones and merge the out-of-order keys into the array, streaming."""
        alive = compress(self._keys, self._alive)
        merged = heapq.merge(alive, sorted(self._extra)) if self._extra else alive
        self._keys = array("q", merged)
        self._alive = bytearray(b"\x01") * len(self._keys)
        self._extra = set()
        self._dead = 0
