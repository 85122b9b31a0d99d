"""TAG / ALL pushes on both stores (fixture `store_db`): targets resolved in pages, durably; the
fallback waits for them. Several instances resolving one push: test_store_postgres.py."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from pushreachd.channels.base import PushDelivery
from pushreachd.channels.log import LogPushChannel
from pushreachd.errors import FailedPrecondition, InvalidArgument
from pushreachd.model import (
    App,
    AudienceType,
    FallbackState,
    TagItem,
    TagOperator,
    TagRule,
)
from pushreachd.services.devices import DeviceService
from pushreachd.services.pushes import PushService
from pushreachd.services.validation import PushDraft, TagItemDraft, TagRuleDraft
from pushreachd.store import Store, make_store

from tests.fakes import FakeClock


class Arming:
    def __init__(self) -> None:
        self.armed: dict[int, float] = {}

    def arm(self, push: int, due_at: float) -> None:
        self.armed[push] = due_at

    def disarm(self, push: int) -> None:
        self.armed.pop(push, None)


class Channel(LogPushChannel):
    """Records every token handed over; can fail the n-th send (a crash mid-resolution)."""

    def __init__(self, fail_on: int = 0) -> None:
        super().__init__()
        self.tokens: list[str] = []
        self.sends = 0
        self.fail_on = fail_on

    async def send(self, delivery: PushDelivery):  # type: ignore[no-untyped-def]
        self.sends += 1
        if self.sends == self.fail_on:
            raise ConnectionError("channel down")
        self.tokens.extend(delivery.tokens)
        return await super().send(delivery)


@pytest.fixture
async def store(store_db: str) -> AsyncIterator[Store]:
    s = make_store(store_db)
    await s.open()
    try:
        yield s
    finally:
        await s.close()


def draft(audience: AudienceType, rules: list[TagRuleDraft] | None = None, sms: bool = True) -> PushDraft:
    return PushDraft(
        audience_type=int(audience),
        has_message=True,
        title="t",
        content="c",
        resend_by_sms=sms,
        has_sms_info=sms,
        delay_trigger_time=300,
        trigger_condition=2,
        sms_template_id="1",
        sms_app_id="1400000001",
        tag_rules=rules or [],
    )


async def setup(store: Store, clock: FakeClock, devices: int) -> tuple[App, DeviceService]:
    app = await store.create_app("app", "app", "v", clock.time())
    svc = DeviceService(store, clock)
    for i in range(devices):
        await svc.add_tags(app, [f"tok{i:03}"], ["even" if i % 2 == 0 else "odd"])
    return app, svc


def service(store: Store, channel: Channel, arming: Arming, clock: FakeClock, page: int = 3) -> PushService:
    pushes = PushService(store, channel, arming, clock)
    pushes.broadcasts._page = page  # small pages: many transactions even with few devices
    return pushes


async def test_all_push_is_accepted_without_targets_then_resolved_in_pages(store: Store) -> None:
    clock, arming, channel = FakeClock(), Arming(), Channel()
    app, _ = await setup(store, clock, 10)
    pushes = service(store, channel, arming, clock)
    receipt = await pushes.push(app, draft(AudienceType.ALL))
    assert receipt.target_count == 0
    await pushes.drain()
    push = await store.get_push(app.id, receipt.push_id)
    assert push is not None and push.target_count == 10 and not push.targets_pending
    assert sorted(channel.tokens) == [f"tok{i:03}" for i in range(10)]
    assert channel.sends == 4  # pages of 3, 3, 3, 1
    assert arming.armed == {push.id: receipt.fallback_due_at}
    assert push.spec.token_list == ()  # GetPush does not list a broadcast's targets in its request


async def test_tag_push_targets_only_matching_devices(store: Store) -> None:
    clock, arming, channel = FakeClock(), Arming(), Channel()
    app, devices = await setup(store, clock, 9)
    await devices.add_tags(app, ["tok004"], ["vip"])
    pushes = service(store, channel, arming, clock)
    rules = [
        TagRuleDraft([TagItemDraft(["odd"]), TagItemDraft(["vip"], items_operator=int(TagOperator.OR))]),
    ]
    receipt = await pushes.push(app, draft(AudienceType.TAG, rules))
    await pushes.drain()
    assert sorted(channel.tokens) == ["tok001", "tok003", "tok004", "tok005", "tok007"]
    push = await store.get_push(app.id, receipt.push_id)
    assert push is not None and push.spec.tag_rules == (
        TagRule((TagItem(("odd",)), TagItem(("vip",)))),
    )


async def test_a_resolution_interrupted_resumes_from_its_last_page_and_never_stores_a_target_twice(
    store: Store,
) -> None:
    clock, arming = FakeClock(), Arming()
    app, _ = await setup(store, clock, 10)
    failing = Channel(fail_on=2)  # the second page's hand-over fails
    first = service(store, failing, arming, clock)
    receipt = await first.push(app, draft(AudienceType.ALL))
    for _ in range(1000):  # bounded: until the second page's hand-over has failed
        if failing.sends >= 2:
            break
        await asyncio.sleep(0.01)
    assert failing.sends == 2
    row = (await store.get_push(app.id, receipt.push_id)).id  # type: ignore[union-attr]
    assert (await store.get_push(app.id, receipt.push_id)).targets_pending  # type: ignore[union-attr]
    # The fallback may not be judged on the targets found so far: neither loaded nor claimable.
    assert row not in dict(await store.live_fallbacks())
    assert await store.claim_fallbacks([row], clock.time() + 10_000) == []
    await first.stop()  # the process dies here
    assert row not in arming.armed

    channel = Channel()
    second = service(store, channel, arming, clock)
    await second.start_resume()
    await second.drain()
    # Page 2 (stored, never handed over) is handed over again; pages 3 and 4 for the first time.
    assert channel.tokens == [f"tok{i:03}" for i in range(3, 10)]
    assert sorted(set(failing.tokens) | set(channel.tokens)) == [f"tok{i:03}" for i in range(10)]
    push = await store.get_push(app.id, receipt.push_id)
    assert push is not None and push.target_count == 10 and not push.targets_pending
    assert len(await store.push_targets(push.id, 0, 100)) == 10
    assert arming.armed == {row: receipt.fallback_due_at}
    assert row in dict(await store.live_fallbacks())
    (job,) = await store.claim_fallbacks([row], clock.time() + 10_000)
    assert len((await store.recipients_many([job]))[row]) == 10


async def test_a_page_is_stored_once_even_by_two_resolvers(store: Store) -> None:
    clock = FakeClock()
    app, _ = await setup(store, clock, 4)
    pushes = service(store, Channel(), Arming(), clock)
    pushes.broadcasts.submit = lambda b: None  # type: ignore[method-assign]  # nobody resolves it
    receipt = await pushes.push(app, draft(AudienceType.ALL))
    (b,) = await store.open_broadcasts()
    assert b.push_id == receipt.push_id
    await store.store_broadcast_page(b.push, "", ["tok000"], "tok000")
    with pytest.raises(FailedPrecondition):
        await store.store_broadcast_page(b.push, "", ["tok000"], "tok000")


async def test_cancelled_before_resolution_ends_is_never_claimed(store: Store) -> None:
    clock, arming = FakeClock(), Arming()
    app, _ = await setup(store, clock, 4)
    pushes = service(store, Channel(), arming, clock)
    receipt = await pushes.push(app, draft(AudienceType.ALL))
    assert await pushes.cancel_fallback(app, receipt.push_id) is FallbackState.CANCELLED
    await pushes.drain()
    row = (await store.get_push(app.id, receipt.push_id)).id  # type: ignore[union-attr]
    assert await store.claim_fallbacks([row], clock.time() + 10_000) == []


@pytest.mark.parametrize(
    ("d", "field"),
    [
        (draft(AudienceType.TAG), "tag_rules"),
        (draft(AudienceType.ALL, [TagRuleDraft([TagItemDraft(["a"])])]), "tag_rules"),
        (PushDraft(**{**draft(AudienceType.ALL).__dict__, "token_list": ["t"]}), "token_list"),
        (draft(AudienceType.TAG, [TagRuleDraft([TagItemDraft(["a"], tag_type="xg_auto_province")])]), "tag_rules[0].tag_items[0].tag_type"),
        (draft(AudienceType.TAG, [TagRuleDraft([TagItemDraft(["x" * 51])])]), "tag_rules[0].tag_items[0].tags[0]"),
        (draft(AudienceType.TAG, [TagRuleDraft([])]), "tag_rules[0].tag_items"),
        (draft(AudienceType.TAG, [TagRuleDraft([TagItemDraft(["a"], tags_operator=7)])]), "tag_rules[0].tag_items[0].tags_operator"),
        (draft(AudienceType.TOKEN_LIST, [TagRuleDraft([TagItemDraft(["a"])])]), "token_list"),
    ],
)
async def test_broadcast_validation_names_the_field(store: Store, d: PushDraft, field: str) -> None:
    clock = FakeClock()
    app = await store.create_app("app", "app", "v", clock.time())
    with pytest.raises(InvalidArgument) as err:
        await PushService(store, Channel(), Arming(), clock).push(app, d)
    assert field in [v.field for v in err.value.violations]


async def test_tag_limits_as_tpns(store: Store) -> None:
    clock = FakeClock()
    app = await store.create_app("app", "app", "v", clock.time())
    devices = DeviceService(store, clock)
    await devices.add_tags(app, ["t1"], [f"tag{i}" for i in range(100)])
    with pytest.raises(FailedPrecondition):
        await devices.add_tags(app, ["t1"], ["one-too-many"])
    assert len((await devices.get_device(app, "t1")).tags) == 100  # the refused call changed nothing
    device = await devices.set_tags(app, "t1", ["a", "b"])
    assert device.tags == ("a", "b")
    await devices.remove_tags(app, [], [], pairs=[("t1", "a")])
    assert (await devices.get_device(app, "t1")).tags == ("b",)
    await devices.clear_tags(app, ["t1"])
    assert (await devices.get_device(app, "t1")).tags == ()
    with pytest.raises(InvalidArgument) as err:
        await devices.add_tags(app, ["t1"], [])
    assert [v.field for v in err.value.violations] == ["tags"]
    with pytest.raises(InvalidArgument) as err:
        await devices.add_tags(app, [f"t{i}" for i in range(501)], ["a"])
    assert [v.field for v in err.value.violations] == ["tokens"]
