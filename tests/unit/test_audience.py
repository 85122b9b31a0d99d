"""TAG push rules: the pure matcher against a reference built from Python's own and/or precedence."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from pushreachd.engine.audience import matches
from pushreachd.model import TagItem, TagOperator, TagRule

TAGS = ["a", "b", "c", "d"]

items = st.builds(
    TagItem,
    tags=st.lists(st.sampled_from(TAGS), min_size=1, max_size=3).map(tuple),
    is_not=st.booleans(),
    tags_operator=st.sampled_from(list(TagOperator)),
    items_operator=st.sampled_from(list(TagOperator)),
)
rules = st.builds(
    TagRule,
    tag_items=st.lists(items, min_size=1, max_size=4).map(tuple),
    operator=st.sampled_from(list(TagOperator)),
    is_not=st.booleans(),
)


def _expr(parts: list[tuple[TagOperator, str]]) -> str:
    """`x0 op1 x1 op2 x2 ...` as Python text: Python's `and` binds tighter than `or`, as TPNS's AND."""
    text = parts[0][1]
    for op, term in parts[1:]:
        text += f" {'and' if op is TagOperator.AND else 'or'} {term}"
    return f"({text})"


def reference(rs: list[TagRule], tags: frozenset[str]) -> bool:
    def item(i: TagItem) -> str:
        joiner = " and " if i.tags_operator is TagOperator.AND else " or "
        inner = "(" + joiner.join(repr(t in tags) for t in i.tags) + ")"
        return f"(not {inner})" if i.is_not else inner

    def rule(r: TagRule) -> str:
        inner = _expr([(i.items_operator, item(i)) for i in r.tag_items])
        return f"(not {inner})" if r.is_not else inner

    return bool(eval(_expr([(r.operator, rule(r)) for r in rs])))  # noqa: S307 - text built above from booleans


@given(st.lists(rules, min_size=1, max_size=4), st.frozensets(st.sampled_from(TAGS)))
def test_matches_the_reference(rs: list[TagRule], tags: frozenset[str]) -> None:
    assert matches(rs, tags) == reference(rs, tags)


def test_tpns_sample_and_binds_tighter_than_or() -> None:
    # (guangdong OR hunan) AND active AND NOT male  -- items joined by AND
    rule = TagRule(
        (
            TagItem(("guangdong", "hunan")),
            TagItem(("20200408",), items_operator=TagOperator.AND),
            TagItem(("male",), is_not=True, items_operator=TagOperator.AND),
        )
    )
    assert matches([rule], frozenset({"hunan", "20200408"}))
    assert not matches([rule], frozenset({"hunan", "20200408", "male"}))
    assert not matches([rule], frozenset({"hunan"}))
    # a OR b AND c == a OR (b AND c)
    r2 = TagRule((TagItem(("a",)), TagItem(("b",)), TagItem(("c",), items_operator=TagOperator.AND)))
    assert matches([r2], frozenset({"a"}))
    assert not matches([r2], frozenset({"b"}))
    assert matches([r2], frozenset({"b", "c"}))
