"""Allowed state transitions, as tables (h11 style). An illegal transition raises.

The store turns these tables into `WHERE state IN (...)` guards, so a transition that a
concurrent writer already made is a no-op rather than a corruption.
"""

from __future__ import annotations

from typing import TypeVar

from ..model import FallbackState, SmsStatus

S = TypeVar("S")

FALLBACK_TRANSITIONS: dict[FallbackState, frozenset[FallbackState]] = {
    FallbackState.PENDING: frozenset({FallbackState.FIRING, FallbackState.CANCELLED}),
    # FIRING -> FIRING: a fire interrupted by a crash is resumed after restart.
    FallbackState.FIRING: frozenset({FallbackState.FIRING, FallbackState.DONE}),
    FallbackState.DONE: frozenset(),
    FallbackState.CANCELLED: frozenset(),
    FallbackState.NONE: frozenset(),
}

# None is "no record yet": a record is born RESERVED (judged, counted, not yet sent), or
# RATE_LIMITED when a limit stops it. RESERVED -> SENDING is the dispatch, written just before
# the provider call; only a SENDING record can end UNKNOWN (its call may have reached the
# provider). A RESERVED record left by a stop is sent after the next start.
SMS_TRANSITIONS: dict[SmsStatus | None, frozenset[SmsStatus]] = {
    None: frozenset({SmsStatus.RESERVED, SmsStatus.RATE_LIMITED}),
    SmsStatus.RESERVED: frozenset({SmsStatus.SENDING}),
    SmsStatus.SENDING: frozenset(
        {SmsStatus.SENT, SmsStatus.FAILED, SmsStatus.RATE_LIMITED, SmsStatus.UNKNOWN}
    ),
    # A receipt may still tell what became of an SMS whose answer was lost.
    SmsStatus.SENT: frozenset({SmsStatus.DELIVERED, SmsStatus.UNDELIVERED}),
    SmsStatus.UNKNOWN: frozenset({SmsStatus.DELIVERED, SmsStatus.UNDELIVERED}),
    SmsStatus.DELIVERED: frozenset(),
    SmsStatus.UNDELIVERED: frozenset(),
    SmsStatus.FAILED: frozenset(),
    SmsStatus.RATE_LIMITED: frozenset(),
}


class IllegalTransition(RuntimeError):
    pass


def check_transition(table: dict[S, frozenset], old: S, new) -> None:  # type: ignore[type-arg]
    """Raise IllegalTransition unless `old -> new` is in the table."""
    if new not in table.get(old, frozenset()):
        raise IllegalTransition(f"{old!r} -> {new!r} is not allowed")


def guard(table: dict[S, frozenset], new, *olds: S) -> tuple[S, ...]:  # type: ignore[type-arg]
    """The sources a guarded write to `new` may change: `olds` (each checked against the
    table), or every allowed source when none are named. For `WHERE state IN (...)`."""
    for old in olds:
        check_transition(table, old, new)
    return olds or sources_of(table, new)


def sources_of(table: dict[S, frozenset], new) -> tuple[S, ...]:  # type: ignore[type-arg]
    """Every state from which `new` may be reached (for SQL guards)."""
    return tuple(old for old, targets in table.items() if new in targets and old is not None)
