"""Who gets the supplementary SMS: the per-phone rules of DESIGN.md, as pure functions.

A phone gets at most one SMS per push, and none if any of its targeted devices satisfied
the push's condition. Targets with no bound phone are counted, not sent.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..model import Recipient, TriggerCondition

__all__ = ["Decision", "Recipient", "condition_met", "decide", "decide_early"]


@dataclass(frozen=True, slots=True)
class Decision:
    phones: tuple[str, ...]  # phones that need an SMS, in first-seen order
    satisfied_phones: int  # phones skipped because a device met the condition
    no_phone_count: int  # targets without a bound phone


def condition_met(r: Recipient, condition: TriggerCondition) -> bool:
    """True when this device needs no SMS: it did what the condition waits for."""
    if condition is TriggerCondition.NOT_ARRIVED:
        return r.arrived or r.clicked  # a click implies arrival
    if condition is TriggerCondition.NOT_CLICKED:
        return r.clicked
    # NOTIFICATION_DISABLED: only a device that reported "enabled" can show the push.
    return r.notifications_enabled is True


def decide(recipients: list[Recipient], condition: TriggerCondition) -> Decision:
    needs: dict[str, bool] = {}  # phone -> still needs an SMS (dict keeps first-seen order)
    no_phone = 0
    for r in recipients:
        if not r.phone_number:
            no_phone += 1
            continue
        met = condition_met(r, condition)
        needs[r.phone_number] = needs.get(r.phone_number, True) and not met
    phones = tuple(p for p, need in needs.items() if need)
    return Decision(phones=phones, satisfied_phones=len(needs) - len(phones), no_phone_count=no_phone)


def decide_early(recipients: list[Recipient]) -> Decision:
    """early_on_push_failure: the phones none of whose targeted devices can get the push
    (every one answered invalid, failed, expired or without channel), whatever the condition."""
    unreachable: dict[str, bool] = {}
    no_phone = 0
    for r in recipients:
        if not r.phone_number:
            no_phone += 1
            continue
        unreachable[r.phone_number] = unreachable.get(r.phone_number, True) and r.unreachable
    phones = tuple(p for p, u in unreachable.items() if u)
    return Decision(phones=phones, satisfied_phones=0, no_phone_count=no_phone)
