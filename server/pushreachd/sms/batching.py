"""Split a list of phone numbers into provider-sized batches.

Tencent's SendSms takes at most 200 numbers per call, all mainland (+86) or all
international; a mixed call is refused as a whole. Splitting here, before the provider
is called, keeps one bad neighbour from failing a whole batch.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from typing import TypeVar

from pushreachd.phone import is_mainland

K = TypeVar("K", bound=Hashable)
R = TypeVar("R")


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


def coalesce(items: Iterable[tuple[K, R, str]], max_size: int) -> list[tuple[K, list[tuple[R, str]]]]:
    """Merge the numbers of many fires into as few provider calls as the rules allow.

    `items` are (key, ref, number): `key` says what must be equal within one call (app,
    credentials, SMS app, signature, template and parameters), `ref` says whose number it
    is (the push). Every item lands in exactly one batch; a batch has one key, at most
    `max_size` items, only mainland or only international numbers, and never the same
    number twice (its result could not be told apart; the second goes in another call).
    Batches keep the input order within a (key, region) group, groups in first-seen order.
    """
    if max_size < 1:
        raise ValueError("max_size must be at least 1")
    # (key, mainland) -> layers; layer k holds the k-th occurrence of each number.
    groups: dict[tuple[K, bool], list[list[tuple[R, str]]]] = {}
    seen: dict[tuple[K, bool], dict[str, int]] = {}
    for key, ref, number in items:
        group = (key, is_mainland(number))
        layers = groups.setdefault(group, [])
        counts = seen.setdefault(group, {})
        k = counts.get(number, 0)
        counts[number] = k + 1
        if k == len(layers):
            layers.append([])
        layers[k].append((ref, number))
    return [
        (key, layer[start : start + max_size])
        for (key, _), layers in groups.items()
        for layer in layers
        for start in range(0, len(layer), max_size)
    ]
