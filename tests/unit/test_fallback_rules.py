"""The per-phone rules of DESIGN.md ("Semantics"), as properties of fallback.decide."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from pushreachd.engine.fallback import Recipient, condition_met, decide
from pushreachd.model import TriggerCondition

PHONES = ["", "+8613800000001", "+8613800000002", "+8613800000003", "+14155550100"]

recipients = st.lists(
    st.builds(
        Recipient,
        token=st.text(alphabet="abcdef", min_size=1, max_size=4),
        phone_number=st.sampled_from(PHONES),
        arrived=st.booleans(),
        clicked=st.booleans(),
        notifications_enabled=st.sampled_from([None, True, False]),
    ),
    max_size=30,
)
conditions = st.sampled_from(list(TriggerCondition))


@given(recipients, conditions)
def test_a_phone_is_chosen_iff_no_device_of_it_met_the_condition(rs: list[Recipient], c: TriggerCondition) -> None:
    d = decide(rs, c)
    assert len(d.phones) == len(set(d.phones)), "a phone appears at most once"
    with_phone = {r.phone_number for r in rs if r.phone_number}
    expected = {p for p in with_phone if not any(condition_met(r, c) for r in rs if r.phone_number == p)}
    assert set(d.phones) == expected
    assert d.satisfied_phones == len(with_phone) - len(expected)
    assert d.no_phone_count == sum(1 for r in rs if not r.phone_number)
    assert "" not in d.phones


@given(recipients, conditions)
def test_phones_come_in_first_seen_order(rs: list[Recipient], c: TriggerCondition) -> None:
    first_seen = list(dict.fromkeys(r.phone_number for r in rs if r.phone_number))
    d = decide(rs, c)
    assert list(d.phones) == [p for p in first_seen if p in d.phones]


def r(phone: str = "+8613800000001", *, arrived=False, clicked=False, enabled=None) -> Recipient:  # type: ignore[no-untyped-def]
    return Recipient("t", phone, arrived, clicked, enabled)


def test_not_arrived_is_met_by_arrival_or_by_a_click_alone() -> None:
    c = TriggerCondition.NOT_ARRIVED
    assert not condition_met(r(), c)
    assert condition_met(r(arrived=True), c)
    assert condition_met(r(clicked=True), c), "a click implies arrival"
    assert not condition_met(r(enabled=True), c), "the notification setting is not an arrival"


def test_not_clicked_is_met_only_by_a_click() -> None:
    c = TriggerCondition.NOT_CLICKED
    assert not condition_met(r(arrived=True), c)
    assert condition_met(r(clicked=True), c)


def test_notification_disabled_is_met_only_by_an_enabled_report() -> None:
    c = TriggerCondition.NOTIFICATION_DISABLED
    assert condition_met(r(enabled=True), c)
    assert not condition_met(r(enabled=False), c)
    assert not condition_met(r(enabled=None), c), "never reported: the push may not have shown"
    assert not condition_met(r(arrived=True, enabled=False), c)


def test_two_devices_sharing_a_phone_get_one_sms_and_none_if_either_satisfied() -> None:
    c = TriggerCondition.NOT_ARRIVED
    shared = "+8613800000009"
    a, b = Recipient("a", shared, False, False, None), Recipient("b", shared, False, False, None)
    assert decide([a, b], c).phones == (shared,)
    b_arrived = Recipient("b", shared, True, False, None)
    assert decide([a, b_arrived], c).phones == ()
    assert decide([b_arrived, a], c).phones == ()
    assert decide([b_arrived, a], c).satisfied_phones == 1


def test_targets_without_phone_are_counted_not_sent() -> None:
    d = decide([r(""), r(""), r("+8613800000001")], TriggerCondition.NOT_ARRIVED)
    assert d.phones == ("+8613800000001",)
    assert d.no_phone_count == 2
