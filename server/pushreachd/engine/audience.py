"""Does a device's tag set match a TAG push's `tag_rules`? Pure, as TPNS defines it.

An item is true when its `tags` are all (AND) or any (OR) in the device's tags, negated by
`is_not`. Items are joined left to right by each item's `items_operator` (the first item's is
ignored), with AND binding tighter than OR: `a OR b AND c` is `a OR (b AND c)`. A rule is its
items' value negated by `is_not`; rules are joined the same way by their `operator`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

from ..model import TagItem, TagOperator, TagRule

T = TypeVar("T")


def _join(parts: Sequence[T], operator_of: Callable[[T], TagOperator], value_of: Callable[[T], bool]) -> bool:
    """OR of AND-groups: a new group starts at every part joined by OR."""
    group = True
    for i, part in enumerate(parts):
        if i > 0 and operator_of(part) is TagOperator.OR:
            if group:
                return True  # one true AND-group makes the whole OR true
            group = True
        group = group and value_of(part)
    return group


def item_matches(item: TagItem, tags: frozenset[str] | set[str]) -> bool:
    if item.tags_operator is TagOperator.AND:
        hit = all(t in tags for t in item.tags)
    else:
        hit = any(t in tags for t in item.tags)
    return hit != item.is_not


def rule_matches(rule: TagRule, tags: frozenset[str] | set[str]) -> bool:
    return _join(rule.tag_items, lambda i: i.items_operator, lambda i: item_matches(i, tags)) != rule.is_not


def matches(rules: Sequence[TagRule], tags: frozenset[str] | set[str]) -> bool:
    """True when a device with these tags is a target of a push with these rules."""
    return _join(rules, lambda r: r.operator, lambda r: rule_matches(r, tags))
