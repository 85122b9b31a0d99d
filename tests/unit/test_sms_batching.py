from hypothesis import given
from hypothesis import strategies as st
from pushreachd.phone import is_mainland
from pushreachd.sms.batching import split_batches

mainland = st.integers(13800000000, 13800000099).map(lambda n: f"+86{n}")
international = st.integers(2025550100, 2025550199).map(lambda n: f"+1{n}")
numbers = st.lists(st.one_of(mainland, international), max_size=300)


@given(numbers, st.integers(1, 250))
def test_split_batches_invariants(phones: list[str], max_size: int) -> None:
    batches = split_batches(phones, max_size)
    flat = [n for b in batches for n in b]
    assert all(0 < len(b) <= max_size for b in batches)
    # every distinct number exactly once
    assert sorted(flat) == sorted(set(phones))
    # a batch is all mainland or all international
    assert all(len({is_mainland(n) for n in b}) == 1 for b in batches)
    # order within each group follows the first occurrence in the input
    first_seen = list(dict.fromkeys(phones))
    for group in (True, False):
        assert [n for n in flat if is_mainland(n) == group] == [
            n for n in first_seen if is_mainland(n) == group
        ]


def test_split_batches_example() -> None:
    phones = ["+8613800000001", "+12025550101", "+8613800000002", "+8613800000001", "+8613800000003"]
    assert split_batches(phones, 2) == [
        ("+8613800000001", "+8613800000002"),
        ("+8613800000003",),
        ("+12025550101",),
    ]


def test_split_batches_empty() -> None:
    assert split_batches([], 200) == []
