"""Split a list of phone numbers into provider-sized batches.

Tencent's SendSms takes at most 200 numbers per call, all mainland (+86) or all
international; a mixed call is refused as a whole. Splitting here, before the provider
is called, keeps one bad neighbour from failing a whole batch.
"""

from __future__ import annotations

from collections.abc import Iterable

from pushreachd.phone import is_mainland


def split_batches(phone_numbers: Iterable[str], max_size: int) -> list[tuple[str, ...]]:
    """Group E.164 numbers into batches of at most `max_size`.

    Mainland and international numbers never share a batch; within each group the input
    order is kept; a repeated number is sent once (a phone gets at most one SMS per push).
    Groups appear in the order of their first number.
    """
    if max_size < 1:
        raise ValueError("max_size must be at least 1")
    seen: set[str] = set()
    groups: dict[bool, list[str]] = {}  # dicts keep insertion order: first-seen group first
    for number in phone_numbers:
        if number in seen:
            continue
        seen.add(number)
        groups.setdefault(is_mainland(number), []).append(number)
    return [
        tuple(numbers[start : start + max_size])
        for numbers in groups.values()
        for start in range(0, len(numbers), max_size)
    ]
