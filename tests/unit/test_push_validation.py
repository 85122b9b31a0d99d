"""Push validation: every rule names its field path; request_id makes a retry idempotent."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pushreachd import limits
from pushreachd.channels import apns
from pushreachd.channels.log import LogPushChannel
from pushreachd.errors import AlreadyExists, InvalidArgument
from pushreachd.model import (
    App,
    AudienceType,
    Environment,
    MessageType,
    TriggerCondition,
    UnusedTarget,
    UnusedTargetReason,
)
from pushreachd.services.pushes import PushService
from pushreachd.services.validation import PushDraft, validate_push
from pushreachd.store.sqlite import SqliteStore

from tests.builders import sms_push_draft
from tests.fakes import FakeClock

MIN_DELAY = 300


def draft(**changes: object) -> PushDraft:
    return sms_push_draft(["tok0", "tok1"], MIN_DELAY, **changes)


def violations(d: PushDraft) -> dict[str, str]:
    with pytest.raises(InvalidArgument) as caught:
        validate_push(d, MIN_DELAY)
    return {v.field: v.description for v in caught.value.violations}


def test_a_valid_draft_becomes_a_spec_with_tpns_defaults() -> None:
    spec = validate_push(draft(), MIN_DELAY)
    assert spec.message_type is MessageType.NOTIFY
    assert spec.environment is Environment.PRODUCT
    assert spec.expire_time == limits.DEFAULT_EXPIRE_SECONDS
    assert spec.sms_info is not None
    assert spec.sms_info.trigger_condition is TriggerCondition.NOT_ARRIVED
    assert spec.sms_info.sms_template_params == ("42",)


def test_a_message_too_large_for_apns_with_its_receipt_is_refused_up_front() -> None:
    fits = "x" * 3400  # with the alert's keys and the longest receipt: under 4,096 bytes
    spec = validate_push(draft(content=fits, collapse_id="order-7"), MIN_DELAY)
    longest = apns.payload(spec, "0" * 20, "z" * 414)
    assert len(longest) <= apns.MAX_PAYLOAD_BYTES and spec.collapse_id == "order-7"
    found = violations(draft(content="x" * 3900))  # within the 4 KB message, not within APNs's
    assert found["message"].startswith("too large for APNs") and "4096" in found["message"]
    assert "collapse_id" in violations(draft(collapse_id="c" * 65))
    assert "collapse_id" in violations(draft(collapse_id="a\nb"))


def test_sms_info_is_ignored_without_resend_by_sms() -> None:
    spec = validate_push(draft(resend_by_sms=False, delay_trigger_time=0, sms_template_id=""), MIN_DELAY)
    assert spec.sms_info is None


@pytest.mark.parametrize(
    ("changes", "path"),
    [
        ({"request_id": "r" * (limits.MAX_REQUEST_ID_LENGTH + 1)}, "request_id"),
        ({"audience_type": 0}, "audience_type"),
        ({"audience_type": 99}, "audience_type"),
        ({"account_list": ["alice"]}, "account_list"),  # must be empty for a token audience
        ({"token_list": []}, "token_list"),
        ({"audience_type": int(AudienceType.TOKEN)}, "token_list"),  # exactly one
        ({"token_list": [f"t{i}" for i in range(limits.MAX_TARGETS + 1)]}, "token_list"),
        ({"token_list": ["tok0", ""]}, "token_list[1]"),
        ({"token_list": ["tok 0"]}, "token_list[0]"),
        ({"token_list": ["t" * (limits.MAX_TOKEN_LENGTH + 1)]}, "token_list[0]"),
        ({"audience_type": int(AudienceType.ACCOUNT_LIST), "token_list": [], "account_list": []}, "account_list"),
        ({"audience_type": int(AudienceType.ACCOUNT_LIST), "account_list": ["a"]}, "token_list"),  # must be empty
        ({"audience_type": int(AudienceType.ACCOUNT), "token_list": [], "account_list": ["a", "b"]}, "account_list"),
        ({"audience_type": int(AudienceType.ACCOUNT_LIST), "token_list": [], "account_list": ["a", " "]}, "account_list[1]"),
        ({"audience_type": int(AudienceType.ACCOUNT_LIST), "token_list": [], "account_list": ["a\x00"]}, "account_list[0]"),
        ({"has_message": False}, "message"),
        ({"title": "  "}, "message.title"),
        ({"title": "t" * (limits.MAX_TITLE_LENGTH + 1)}, "message.title"),
        ({"title": "bell\x07"}, "message.title"),
        ({"content": ""}, "message.content"),
        ({"content": "c" * (limits.MAX_CONTENT_LENGTH + 1)}, "message.content"),
        ({"content": "好" * 1400}, "message"),  # 4,200 bytes of UTF-8: over the 4 KB message
        ({"message_type": 7}, "message_type"),
        ({"environment": 7}, "environment"),
        ({"expire_time": -1}, "expire_time"),
        ({"expire_time": limits.MAX_EXPIRE_SECONDS + 1}, "expire_time"),
        ({"has_sms_info": False}, "sms_info"),
        ({"delay_trigger_time": MIN_DELAY - 1}, "sms_info.delay_trigger_time"),
        ({"delay_trigger_time": limits.MAX_DELAY_SECONDS + 1}, "sms_info.delay_trigger_time"),
        ({"trigger_condition": 0}, "sms_info.trigger_condition"),
        ({"trigger_condition": 9}, "sms_info.trigger_condition"),
        ({"sms_sign_name": "s" * (limits.MAX_SIGN_NAME_LENGTH + 1)}, "sms_info.sms_sign_name"),
        ({"sms_template_id": ""}, "sms_info.sms_template_id"),
        ({"sms_template_id": "12a4"}, "sms_info.sms_template_id"),
        ({"sms_template_id": "１２３"}, "sms_info.sms_template_id"),  # full-width digits
        ({"sms_template_id": "1" * (limits.MAX_TEMPLATE_ID_LENGTH + 1)}, "sms_info.sms_template_id"),
        ({"sms_app_id": ""}, "sms_info.sms_app_id"),
        ({"sms_template_params": ["p"] * (limits.MAX_TEMPLATE_PARAMS + 1)}, "sms_info.sms_template_params"),
        ({"sms_template_params": ["ok", "p" * (limits.MAX_TEMPLATE_PARAM_LENGTH + 1)]}, "sms_info.sms_template_params[1]"),
    ],
)
def test_each_rule_names_its_field_path(changes: dict[str, object], path: str) -> None:
    assert list(violations(draft(**changes))) == [path]


@pytest.mark.parametrize("delay", [MIN_DELAY, limits.MAX_DELAY_SECONDS])
def test_delay_bounds_are_inclusive(delay: int) -> None:
    spec = validate_push(draft(delay_trigger_time=delay), MIN_DELAY)
    assert spec.sms_info is not None and spec.sms_info.delay_trigger_time == delay


def test_the_minimum_delay_is_the_configured_one() -> None:
    assert validate_push(draft(delay_trigger_time=1), 1).sms_info is not None
    assert "sms_info.delay_trigger_time" in violations(draft(delay_trigger_time=1))


def test_every_violation_is_reported_at_once() -> None:
    found = violations(draft(title="", delay_trigger_time=0, sms_template_id="x", sms_app_id=""))
    assert set(found) == {
        "message.title",
        "sms_info.delay_trigger_time",
        "sms_info.sms_template_id",
        "sms_info.sms_app_id",
    }


# -- request_id idempotency, through PushService and a real store ---------------------------


class Arming:
    def __init__(self) -> None:
        self.armed: list[tuple[int, float]] = []

    def arm(self, push: int, due_at: float) -> None:
        self.armed.append((push, due_at))

    def disarm(self, push: int) -> None:
        pass


class Pushes:
    def __init__(self, store: SqliteStore, clock: FakeClock) -> None:
        self.store = store
        self.clock = clock
        self.channel = LogPushChannel()
        self.arming = Arming()
        self.service = PushService(store, self.channel, self.arming, clock, min_delay_seconds=MIN_DELAY)


@pytest.fixture
async def pushes(tmp_path: Path) -> AsyncIterator[Pushes]:
    store = SqliteStore(str(tmp_path / "unit.db"))
    await store.open()
    try:
        yield Pushes(store, FakeClock())
    finally:
        await store.close()


async def new_app(p: Pushes, access_id: str = "app-1") -> App:
    return await p.store.create_app(access_id, access_id, "verifier", p.clock.time())


async def test_the_same_request_id_and_body_returns_the_first_response(pushes: Pushes) -> None:
    app = await new_app(pushes)
    first = await pushes.service.push(app, draft(request_id="req-1"))
    await pushes.clock.advance(5)
    again = await pushes.service.push(app, draft(request_id="req-1"))
    assert again == first  # same push_id, same accept and due times
    assert len(pushes.arming.armed) == 1, "the retry arms nothing"
    await pushes.service.drain()
    assert pushes.channel.delivered_count == 1, "the retry delivers nothing"


async def test_the_same_request_id_with_another_body_is_refused(pushes: Pushes) -> None:
    app = await new_app(pushes)
    await pushes.service.push(app, draft(request_id="req-1"))
    with pytest.raises(AlreadyExists):
        await pushes.service.push(app, draft(request_id="req-1", content="another text"))
    with pytest.raises(AlreadyExists):
        await pushes.service.push(app, draft(request_id="req-1", sms_template_params=["43"]))


async def test_request_ids_belong_to_one_app_and_an_empty_one_is_not_idempotent(pushes: Pushes) -> None:
    a, b = await new_app(pushes, "app-a"), await new_app(pushes, "app-b")
    first = await pushes.service.push(a, draft(request_id="req-1"))
    other_app = await pushes.service.push(b, draft(request_id="req-1"))
    assert other_app.push_id != first.push_id
    x, y = await pushes.service.push(a, draft()), await pushes.service.push(a, draft())
    assert x.push_id != y.push_id


async def test_concurrent_retries_of_one_request_create_one_push(pushes: Pushes) -> None:
    app = await new_app(pushes)
    receipts = await asyncio.gather(*(pushes.service.push(app, draft(request_id="same")) for _ in range(20)))
    assert len({r.push_id for r in receipts}) == 1
    assert len(pushes.arming.armed) == 1


async def test_the_receipt_counts_targets_and_names_unused_ones(pushes: Pushes) -> None:
    app = await new_app(pushes)
    receipt = await pushes.service.push(app, draft(token_list=["a", "b", "a"]))
    assert receipt.target_count == 2
    assert receipt.unused_targets == (UnusedTarget("a", UnusedTargetReason.DUPLICATE),)
    assert receipt.fallback_due_at == pushes.clock.time() + MIN_DELAY

    await pushes.store.bind_account(app.id, "tok-alice", "alice", pushes.clock.time(), 100)
    by_account = await pushes.service.push(
        app,
        draft(audience_type=int(AudienceType.ACCOUNT_LIST), token_list=[], account_list=["alice", "bob", "alice"]),
    )
    assert by_account.target_count == 1
    assert set(by_account.unused_targets) == {
        UnusedTarget("bob", UnusedTargetReason.ACCOUNT_HAS_NO_DEVICE),
        UnusedTarget("alice", UnusedTargetReason.DUPLICATE),
    }
