"""KeySet behaves as a set of ints, whatever the order of adds and removes (and across the
rebuilds that fold tombstones and out-of-order keys back into its array)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pushreachd.engine import keyset
from pushreachd.engine.keyset import KeySet

ops = st.lists(st.tuples(st.sampled_from(["add", "discard", "contains"]), st.integers(-50, 200)), max_size=400)


@pytest.mark.parametrize("slack", [0, 3, keyset._SLACK])
@settings(max_examples=150, deadline=None)
@given(ops=ops, ascending=st.lists(st.integers(0, 2**62), max_size=50))
def test_keyset_is_a_set(slack: int, ops: list[tuple[str, int]], ascending: list[int]) -> None:
    keyset._SLACK, saved = slack, keyset._SLACK
    try:
        ks, ref = KeySet(), set()
        for key in sorted(set(ascending)):  # the usual way in: ascending ids
            ks.add(key)
            ref.add(key)
        for op, key in ops:
            if op == "add":
                assert ks.add(key) == (key not in ref)
                ref.add(key)
            elif op == "discard":
                assert ks.discard(key) == (key in ref)
                ref.discard(key)
            assert (key in ks) == (key in ref)
            assert len(ks) == len(ref) and bool(ks) == bool(ref)
        assert all(k in ks for k in ref)
        assert not any(k in ks for k in range(-60, 210) if k not in ref)
    finally:
        keyset._SLACK = saved


def test_a_million_ascending_keys_take_about_nine_bytes_each() -> None:
    ks = KeySet()
    for key in range(1_000_000):
        ks.add(key * 3)
    size = ks._keys.buffer_info()[1] * ks._keys.itemsize + len(ks._alive)
    assert len(ks) == 1_000_000 and size < 11 * 1_000_000
    assert 2_999_997 in ks and 2_999_998 not in ks and -1 not in ks
