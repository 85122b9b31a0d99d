"""Arrival and click reports signed with the device key (`event_mac`), on a real SQLite store
and a fake clock: the exact bytes signed, what verifies and what does not (another push, token,
event, time, app or key; a stale timestamp; a key retired past its overlap), and the
Hypothesis invariant that a MAC made for (push, token, event, t) verifies for exactly that."""

from __future__ import annotations

import hashlib
import hmac
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pushreachd.channels import apns, fcm, hms, honor, log, oppo, vendor, vivo, webhook, xiaomi
from pushreachd.secrets import SecretBox
from pushreachd.services.apps import AppService
from pushreachd.services.receipts import (
    ROTATION_OVERLAP,
    STATE_SKEW_SECONDS,
    ReceiptError,
    Receipts,
    event_mac,
    event_message,
    state_mac,
)
from pushreachd.store.sqlite import SqliteStore

from tests.fakes import FakeClock

EVENTS = ("arrived", "clicked")


@pytest.fixture
async def env(tmp_path):  # type: ignore[no-untyped-def]
    store = SqliteStore(str(tmp_path / "r.db"))
    await store.open()
    clock = FakeClock()
    box = SecretBox(os.urandom(32))
    apps = AppService(store, box, clock)
    a, _ = await apps.create_app("a")
    b, _ = await apps.create_app("b")
    yield Receipts(store, box, clock), clock, a, b
    await store.close()


def test_the_signed_bytes_are_six_lines() -> None:
    assert event_message("1500000001", "tok", "p-1", "arrived", 1764639000) == (
        b"pushreach-device-event-v1\n1500000001\ntok\np-1\narrived\n1764639000"
    )
    expected = hmac.new(b"1.key", event_message("1", "t", "p", "clicked", 5), hashlib.sha256).hexdigest()
    assert event_mac("1.key", "1", "t", "p", "clicked", 5) == expected
    # Not interchangeable with a notification-state MAC (another first line).
    assert event_mac("k", "1", "t", "p", "arrived", 5) != state_mac("k", "1", "t", "arrived", 5)


async def test_a_genuine_report_verifies_and_any_change_is_refused(env) -> None:  # type: ignore[no-untyped-def]
    receipts, clock, a, b = env
    key = await receipts.device_key(a.id, "t1")
    other_key = await receipts.device_key(a.id, "t2")
    ts = int(clock.time())
    mac = event_mac(key, a.access_id, "t1", "p1", "arrived", ts)
    await receipts.check_event_mac(a.id, a.access_id, "t1", "p1", "arrived", ts, mac)
    bad = [
        (a.id, a.access_id, "t2", "p1", "arrived", ts, mac),  # another token
        (a.id, a.access_id, "t1", "p2", "arrived", ts, mac),  # another push
        (a.id, a.access_id, "t1", "p1", "clicked", ts, mac),  # another event
        (a.id, a.access_id, "t1", "p1", "arrived", ts + 1, mac),  # another time
        (b.id, b.access_id, "t1", "p1", "arrived", ts, mac),  # another app
        (a.id, a.access_id, "t1", "p1", "arrived", ts, event_mac(other_key, a.access_id, "t1", "p1", "arrived", ts)),
        (a.id, a.access_id, "t1", "p1", "arrived", ts, state_mac(key, a.access_id, "t1", "arrived", ts)),
        (a.id, a.access_id, "t1", "p1", "arrived", ts, "0" * 64),
        (a.id, a.access_id, "t1", "p1", "arrived", ts, ""),
    ]
    for args in bad:
        with pytest.raises(ReceiptError) as refused:
            await receipts.check_event_mac(*args)
        assert refused.value.cause == "bad_mac" and refused.value.message == "invalid device MAC"
    old = ts - STATE_SKEW_SECONDS - 1
    with pytest.raises(ReceiptError) as stale:
        await receipts.check_event_mac(
            a.id, a.access_id, "t1", "p1", "arrived", old, event_mac(key, a.access_id, "t1", "p1", "arrived", old)
        )
    assert stale.value.cause == "stale"


async def test_a_device_key_outlives_a_rotation_by_the_overlap_only(env) -> None:  # type: ignore[no-untyped-def]
    receipts, clock, a, _ = env
    old_key = await receipts.device_key(a.id, "t1")
    await receipts.rotate(a.id)
    new_key = await receipts.device_key(a.id, "t1")
    assert new_key != old_key
    for key in (old_key, new_key):
        ts = int(clock.time())
        await receipts.check_event_mac(
            a.id, a.access_id, "t1", "p", "clicked", ts, event_mac(key, a.access_id, "t1", "p", "clicked", ts)
        )
    await clock.advance(ROTATION_OVERLAP + 1)
    ts = int(clock.time())
    with pytest.raises(ReceiptError):
        await receipts.check_event_mac(
            a.id, a.access_id, "t1", "p", "clicked", ts, event_mac(old_key, a.access_id, "t1", "p", "clicked", ts)
        )
    await receipts.check_event_mac(
        a.id, a.access_id, "t1", "p", "clicked", ts, event_mac(new_key, a.access_id, "t1", "p", "clicked", ts)
    )


tokens = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=40)
push_ids = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=64)
reports = st.tuples(push_ids, tokens, st.sampled_from(EVENTS), st.integers(-STATE_SKEW_SECONDS, STATE_SKEW_SECONDS))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(made=reports, checked=reports)
async def test_a_mac_verifies_for_exactly_the_report_it_was_made_for(env, made, checked) -> None:  # type: ignore[no-untyped-def]
    receipts, clock, a, _ = env
    now = int(clock.time())
    push, token, event, dt = made
    mac = event_mac(await receipts.device_key(a.id, token), a.access_id, token, push, event, now + dt)
    c_push, c_token, c_event, c_dt = checked
    check = receipts.check_event_mac(a.id, a.access_id, c_token, c_push, c_event, now + c_dt, mac)
    if checked == made:
        await check
    else:
        with pytest.raises(ReceiptError):
            await check


def test_channels_say_whether_they_carry_per_token_receipts() -> None:
    one_payload = [hms.HmsChannel, honor.HonorChannel, xiaomi.XiaomiChannel, vivo.VivoChannel]
    per_message = [oppo.OppoChannel, fcm.FcmChannel, webhook.WebhookChannel, apns.ApnsChannel, log.LogPushChannel]
    assert [c.per_token_receipts for c in one_payload] == [False] * 4
    assert [c.per_token_receipts for c in per_message] == [True] * 5
    assert vendor.receipt_data("p", "") == {"pushreach_push_id": "p"}
    assert vendor.receipt_data("p", "r") == {"pushreach_push_id": "p", "pushreach_receipt": "r"}
