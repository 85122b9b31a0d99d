"""Firing in groups: claim, judge and reserve many due pushes at once, and merge their numbers
into shared provider calls, on a fake clock, a fake provider and a real SQLite store.

The invariant (Hypothesis): every (push, phone) that needs an SMS gets exactly one record,
and each SENT record is in exactly one provider call, at the position its serial number
names; no call exceeds the provider's size, mixes mainland and international numbers,
templates, parameters or apps, or holds one number twice.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pushreachd.engine.ratelimit import SAME_CONTENT_RULE
from pushreachd.model import (
    App,
    EventType,
    FallbackState,
    RateLimitPolicy,
    SmsRecordFilter,
    SmsStatus,
)
from pushreachd.phone import is_mainland
from pushreachd.services.validation import PushDraft
from pushreachd.sms.batching import coalesce
from pushreachd.sms.provider import SmsBatch, SmsResult

from tests.builders import sms_push_draft
from tests.fakes import FakeClock, FakeSmsProvider
from tests.unit.test_scheduler import DELAY, Engine, _engine, engine  # noqa: F401  (fixture)

POOL = ["+8613800000001", "+8613800000002", "+8613800000003", "+14155550100", "+447700900123"]
# No daily limit in the way; the same content to a number within 30 s stays limited, also
# between pushes of one group (an earlier push's record counts for a later one).
OPEN = RateLimitPolicy(same_content_interval_seconds=30, daily_limit=1000)


def draft(tokens: list[str], params: tuple[str, ...], template: str = "123456") -> PushDraft:
    return sms_push_draft(tokens, DELAY, sms_template_id=template, sms_template_params=list(params))


# (app index, phone indexes into POOL, template, params) per push
pushes_strategy = st.lists(
    st.tuples(
        st.integers(0, 1),
        st.lists(st.integers(0, len(POOL) - 1), min_size=1, max_size=4),
        st.sampled_from(["123456", "654321"]),
        st.sampled_from([("a",), ("b",), ("a", "b")]),
    ),
    min_size=1,
    max_size=12,
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pushes_strategy, st.sampled_from([1, 2, 3, 200]))
def test_every_phone_gets_one_record_and_one_place_in_one_call(
    spec: list[tuple[int, list[int], str, tuple[str, ...]]], max_batch: int
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(_check_grouped_fire(Path(tmp), spec, max_batch))


async def _check_grouped_fire(
    tmp: Path, spec: list[tuple[int, list[int], str, tuple[str, ...]]], max_batch: int
) -> None:
    async for e in _engine(tmp, FakeClock(), FakeSmsProvider(max_batch_size=max_batch)):
        other = await e.store.create_app("app-2", "other", "verifier", e.clock.time())
        apps: list[App] = []
        for app in (e.app, other):
            apps.append(await e.store.set_rate_limit_policy(app.id, OPEN))
        # One device per (app, phone): token "p<i>" bound to POOL[i] in each app.
        for app in apps:
            for i, phone in enumerate(POOL):
                await e.store.bind_phone(app.id, f"p{i}", phone, e.clock.time())
        rows: list[tuple[App, int, str, str, tuple[str, ...], set[str]]] = []
        for app_index, phones, template, params in spec:
            app = apps[app_index]
            tokens = [f"p{i}" for i in dict.fromkeys(phones)]
            receipt = await e.pushes.push(app, draft(tokens, params, template))
            row = (await e.store.get_push(app.id, receipt.push_id)).id  # type: ignore[union-attr]
            e.scheduler.disarm(row)  # fired by hand below, as one group
            rows.append((app, row, receipt.push_id, template, params, {POOL[i] for i in phones}))
        await e.clock.advance(DELAY)

        reports = await e.scheduler.fire_many([row for _, row, *_ in rows])
        assert len(reports) == len(rows)

        batches = e.provider.batches
        for b in batches:
            assert 0 < len(b.phone_numbers) <= max_batch
            assert len({is_mainland(p) for p in b.phone_numbers}) == 1, "mainland and international never mixed"
            assert len(set(b.phone_numbers)) == len(b.phone_numbers), "a number at most once per call"
        # Every (push, phone) has exactly one record; a SENT one names its place in one call.
        placed: Counter[tuple[int, int]] = Counter()
        seen: set[tuple[int, str, str, tuple[str, ...]]] = set()  # (app, phone, template, params)
        for app, _, push_id, template, params, phones in rows:  # in push order, as fired
            push = await e.store.get_push(app.id, push_id)
            assert push is not None and push.fallback_state is FallbackState.DONE
            records = await e.store.list_sms_records(app.id, SmsRecordFilter(push_id=push_id), None, 100)
            assert sorted(r.phone_number for r in records) == sorted(phones)
            for r in sorted(records, key=lambda r: r.phone_number):
                content = (app.id, r.phone_number, template, params)
                if content in seen:
                    assert (r.status, r.rate_limit_rule) == (SmsStatus.RATE_LIMITED, SAME_CONTENT_RULE)
                    continue
                seen.add(content)
                assert r.status is SmsStatus.SENT
                _, batch_no, pos = r.serial_no.split("-")
                b = batches[int(batch_no) - 1]
                assert b.phone_numbers[int(pos)] == r.phone_number
                assert (b.app_access_id, b.template_id, b.template_params) == (app.access_id, template, params)
                placed[(int(batch_no), int(pos))] += 1
        assert sum(len(b.phone_numbers) for b in batches) == len(placed)
        assert set(placed.values()) <= {1}, "no place in a call serves two records"
        assert sum(r.sent for r in reports) == len(placed)


def test_coalesce_example_merges_pushes_and_splits_repeats_and_regions() -> None:
    k1, k2 = ("app", "tpl-1"), ("app", "tpl-2")
    items = [
        (k1, "p1", "+8613800000001"),
        (k1, "p2", "+8613800000002"),
        (k1, "p3", "+8613800000001"),  # the same number again: another call
        (k1, "p3", "+14155550100"),  # international: another call
        (k2, "p4", "+8613800000003"),  # another template: another call
    ]
    assert coalesce(items, 200) == [
        (k1, [("p1", "+8613800000001"), ("p2", "+8613800000002")]),
        (k1, [("p3", "+8613800000001")]),
        (k1, [("p3", "+14155550100")]),
        (k2, [("p4", "+8613800000003")]),
    ]


numbers = st.sampled_from(POOL + ["+8613900000009", "+6591234567"])


@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 50), numbers), max_size=400), st.integers(1, 250))
def test_coalesce_invariants(items: list[tuple[int, int, str]], max_size: int) -> None:
    batches = coalesce(items, max_size)
    flat = [(key, ref, n) for key, refs in batches for ref, n in refs]
    assert Counter(flat) == Counter(items), "every item in exactly one batch"
    for key, refs in batches:
        assert 0 < len(refs) <= max_size
        assert len({is_mainland(n) for _, n in refs}) == 1
        assert len({n for _, n in refs}) == len(refs)
    # As few calls as the rules allow: per (key, region), ceil(most repeats of one number ... ).
    for key in {k for k, _, _ in items}:
        for region in (True, False):
            group = [n for k, _, n in items if k == key and is_mainland(n) == region]
            if not group:
                continue
            calls = [refs for k, refs in batches if k == key and is_mainland(refs[0][1]) == region]
            repeats = max(Counter(group).values())
            assert len(calls) <= repeats * -(-len(group) // max_size)


def test_coalesce_refuses_a_zero_size() -> None:
    with pytest.raises(ValueError):
        coalesce([], 0)


# -- lanes: per app, bounded, a slow app slows only itself ------------------------------------------


class GatedProvider(FakeSmsProvider):
    """Holds every call of one app until released; other apps are answered at once."""

    def __init__(self, slow_app: str) -> None:
        super().__init__()
        self.slow_app = slow_app
        self.gate = asyncio.Event()
        self.held = 0

    def release(self) -> None:
        self.gate.set()
        super().release()

    async def send(self, batch: SmsBatch) -> list[SmsResult]:
        if batch.app_access_id == self.slow_app:
            self.held += 1
            await self.gate.wait()
        return await super().send(batch)


async def test_a_slow_app_does_not_hold_up_the_fires_of_another(tmp_path: Path) -> None:
    provider = GatedProvider(slow_app="app-1")
    async for e in _engine(tmp_path, FakeClock(), provider, group_size=4, per_app=2):
        fast = await e.store.create_app("app-2", "fast", "verifier", e.clock.time())
        for i in range(40):
            await e.store.bind_phone(e.app.id, f"s{i}", f"+86138000{i:05d}", e.clock.time())
            await e.store.bind_phone(fast.id, f"f{i}", f"+86139000{i:05d}", e.clock.time())
        # Slow app's pushes first, so they come first in every claim.
        slow = [await e.pushes.push(e.app, draft([f"s{i}"], ("x",))) for i in range(40)]
        quick = [await e.pushes.push(fast, draft([f"f{i}"], ("x",))) for i in range(40)]
        await e.clock.advance(DELAY)

        async def fast_done() -> bool:
            for r in quick:
                push = await e.store.get_push(fast.id, r.push_id)
                if push is None or push.fallback_state is not FallbackState.DONE:
                    return False
            return True

        await e.until(fast_done, "the fast app's fires")
        assert provider.held == 2, "the slow app holds only its own per-app slots"
        assert sorted(n for b in provider.batches for n in b.phone_numbers) == [f"+86139000{i:05d}" for i in range(40)]
        states = {(await e.get(r.push_id)).fallback_state for r in slow}
        assert states == {FallbackState.FIRING}
        assert e.scheduler.backlog == 40  # the slow app's fires, claimed and waiting

        provider.gate.set()
        for r in slow:
            await e.done(r.push_id)
        numbers = [n for b in provider.batches for n in b.phone_numbers]
        assert len(numbers) == len(set(numbers)) == 80, "every phone once"


async def test_a_lane_beyond_its_limit_keeps_ids_and_claims_them_again(tmp_path: Path) -> None:
    # group_size 2, per_app 1: the lane holds 2 claimed fires; the rest wait as ids.
    async for e in _engine(tmp_path, FakeClock(), group_size=2, per_app=1, workers=3):
        for i in range(25):
            await e.bind(f"t{i}", f"+86138000{i:05d}")
        receipts = [await e.push([f"t{i}"]) for i in range(25)]
        await e.clock.advance(DELAY)
        for r in receipts:
            await e.done(r.push_id)
        assert sorted(e.provider.numbers) == [f"+86138000{i:05d}" for i in range(25)]
        assert all(len(b.phone_numbers) <= 2 for b in e.provider.batches)
        assert len(e.reports) == 25
        assert e.scheduler.backlog == 0


async def test_a_group_judges_each_push_on_its_own_events(engine: Engine) -> None:
    """Grouping must not leak one push's arrival onto another push to the same phone."""
    await engine.bind("a", "+8613800000001")
    await engine.store.set_rate_limit_policy(engine.app.id, OPEN)
    first = await engine.push(["a"])
    second = await engine.push(["a"], params=("other",))
    await engine.report(first.push_id, "a", EventType.ARRIVED)
    await engine.clock.advance(DELAY)
    await engine.done(first.push_id)
    await engine.done(second.push_id)
    assert await engine.records(first.push_id) == []
    (record,) = await engine.records(second.push_id)
    assert record.status is SmsStatus.SENT
