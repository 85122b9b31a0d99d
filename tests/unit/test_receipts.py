"""Receipts and device keys on a real SQLite store and a fake clock: what verifies, what does
not (one byte changed, another push, token or app, expired, retired key), rotation with its
overlap, keys sealed at rest, master key rotation."""

from __future__ import annotations

import base64
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pushreachd.secrets import SecretBox, SecretError
from pushreachd.services.apps import AppService
from pushreachd.services.receipts import (
    CACHE_SECONDS,
    ReceiptClaims,
    ReceiptError,
    Receipts,
    decode_receipt,
    encode_receipt,
    state_mac,
)
from pushreachd.store.sqlite import SqliteStore

from tests.fakes import FakeClock

APNS_TOKEN = "a3f1" * 16
FCM_TOKEN = "fcm:APA91bH-" + "x_Y" * 50


@pytest.fixture
async def env(tmp_path):  # type: ignore[no-untyped-def]
    store = SqliteStore(str(tmp_path / "r.db"))
    await store.open()
    clock = FakeClock()
    box = SecretBox(os.urandom(32))
    apps = AppService(store, box, clock)
    a, _ = await apps.create_app("a")
    b, _ = await apps.create_app("b")
    yield Receipts(store, box, clock), store, clock, box, a, b, str(tmp_path / "r.db")
    await store.close()


def _flip(text: str, index: int) -> str:
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    c = text[index]
    return text[:index] + alphabet[(alphabet.index(c) + 1) % 64] + text[index + 1 :]


async def test_a_receipt_carries_its_claims_and_verifies(env) -> None:  # type: ignore[no-untyped-def]
    receipts, _, clock, _, a, _, _ = env
    exp = clock.time() + 3600
    for token in (APNS_TOKEN, FCM_TOKEN, "t1"):
        text = await receipts.mint(a.id, "0123456789abcdef0123", token, exp)
        claims = await receipts.verify(text)
        assert (claims.app_id, claims.push_id, claims.token, claims.expires_at) == (
            a.id, "0123456789abcdef0123", token, float(int(exp))
        )
        assert text.isascii() and "=" not in text and "+" not in text and "/" not in text
    apns = await receipts.mint(a.id, "0123456789abcdef0123", APNS_TOKEN, exp)
    assert len(apns) <= 92  # hex tokens are packed: compact enough for any payload


async def test_every_single_character_change_is_refused(env) -> None:  # type: ignore[no-untyped-def]
    receipts, _, clock, _, a, _, _ = env
    text = await receipts.mint(a.id, "p1", APNS_TOKEN, clock.time() + 60)
    for i in range(len(text)):
        with pytest.raises(ReceiptError):
            await receipts.verify(_flip(text, i))
    for broken in ("", text[:-1], text + "A", text + "=", "!" + text[1:], "é" * 10, text[:10]):
        with pytest.raises(ReceiptError):
            await receipts.verify(broken)


async def test_claims_cannot_be_moved_to_another_push_token_or_app(env) -> None:  # type: ignore[no-untyped-def]
    receipts, _, clock, _, a, b, _ = env
    exp = clock.time() + 60
    genuine = await receipts.mint(a.id, "p1", "t1", exp)
    claims, _, _ = decode_receipt(genuine)
    assert claims.key_id == 1
    # Re-encoding other claims under a guessed key does not verify...
    for other in (
        ReceiptClaims(a.id, 1, "p2", "t1", exp),
        ReceiptClaims(a.id, 1, "p1", "t2", exp),
        ReceiptClaims(b.id, 1, "p1", "t1", exp),
        ReceiptClaims(a.id, 1, "p1", "t1", exp + 86400),
    ):
        with pytest.raises(ReceiptError) as caught:
            await receipts.verify(encode_receipt(os.urandom(32), other))
        assert caught.value.cause in ("bad_mac", "unknown_key")
    # ...nor does app B's genuine receipt passed off as app A's (same layout, B's key).
    of_b = await receipts.mint(b.id, "p1", "t1", exp)
    b_claims, body, mac = decode_receipt(of_b)
    forged_body = body.replace(bytes([1, b.id]), bytes([1, a.id]), 1)
    forged = base64.urlsafe_b64encode(forged_body + mac).rstrip(b"=").decode()
    with pytest.raises(ReceiptError):
        await receipts.verify(forged)


async def test_expired_receipts_are_refused(env) -> None:  # type: ignore[no-untyped-def]
    receipts, _, clock, _, a, _, _ = env
    text = await receipts.mint(a.id, "p1", "t1", clock.time() + 10)
    await receipts.verify(text)
    await clock.advance(11)
    with pytest.raises(ReceiptError) as caught:
        await receipts.verify(text)
    assert caught.value.cause == "expired"


async def test_keys_are_sealed_at_rest_and_bound_to_their_row(env) -> None:  # type: ignore[no-untyped-def]
    receipts, store, clock, box, a, b, path = env
    await receipts.mint(a.id, "p", "t", clock.time() + 60)
    await receipts.mint(b.id, "p", "t", clock.time() + 60)
    (ka,) = await store.receipt_keys(a.id)
    secret_a = receipts._cache[a.id].keys[1][0]
    assert secret_a not in ka.blob and len(ka.blob) > 32
    with open(path, "rb") as f:
        assert secret_a not in f.read()
    with pytest.raises(SecretError):  # a blob copied onto another app's row does not open
        box.open(ka.blob, f"receipt_key:{b.id}:1".encode())


async def test_rotation_keeps_old_receipts_for_the_overlap_only(env) -> None:  # type: ignore[no-untyped-def]
    receipts, _, clock, _, a, _, _ = env
    far = clock.time() + 30 * 86400
    old = await receipts.mint(a.id, "p1", "t1", far)
    old_key = await receipts.device_key(a.id, "t1")
    assert await receipts.rotate(a.id) == 2
    new = await receipts.mint(a.id, "p1", "t1", far)
    assert decode_receipt(new)[0].key_id == 2 and old_key != await receipts.device_key(a.id, "t1")
    await receipts.verify(old)
    await receipts.verify(new)
    await clock.advance(receipts.overlap + 1)
    with pytest.raises(ReceiptError) as caught:
        await receipts.verify(old)
    assert caught.value.cause == "retired_key"
    await receipts.verify(new)


async def test_another_instance_sees_a_rotation(env) -> None:  # type: ignore[no-untyped-def]
    receipts, store, clock, box, a, _, _ = env
    other = Receipts(store, box, clock)
    await receipts.mint(a.id, "p", "t", clock.time() + 60)
    await other.mint(a.id, "p", "t", clock.time() + 60)  # same key, created once
    assert len(await store.receipt_keys(a.id)) == 1
    await receipts.rotate(a.id)
    fresh = await receipts.mint(a.id, "p", "t", clock.time() + 600)
    await clock.advance(6)  # an unknown key id reads the store again (not more often than 5 s)
    await other.verify(fresh)
    await clock.advance(CACHE_SECONDS)
    assert decode_receipt(await other.mint(a.id, "p", "t", clock.time() + 60))[0].key_id == 2


async def test_device_state_mac(env) -> None:  # type: ignore[no-untyped-def]
    receipts, _, clock, _, a, b, _ = env
    key = await receipts.device_key(a.id, "t1")
    ts = int(clock.time())
    mac = state_mac(key, a.access_id, "t1", "disabled", ts)
    await receipts.check_state_mac(a.id, a.access_id, "t1", "disabled", ts, mac)
    bad = [
        (a.id, a.access_id, "t2", "disabled", ts, mac),  # another token
        (a.id, a.access_id, "t1", "enabled", ts, mac),  # another state
        (a.id, a.access_id, "t1", "disabled", ts + 1, mac),  # another time
        (b.id, b.access_id, "t1", "disabled", ts, mac),  # another app
        (a.id, a.access_id, "t1", "disabled", ts, "0" * 64),
        (a.id, a.access_id, "t1", "disabled", ts - 301, state_mac(key, a.access_id, "t1", "disabled", ts - 301)),
    ]
    for args in bad:
        with pytest.raises(ReceiptError):
            await receipts.check_state_mac(*args)


async def test_master_key_rotation_reseals_receipt_keys(env) -> None:  # type: ignore[no-untyped-def]
    receipts, store, clock, box, a, _, _ = env
    text = await receipts.mint(a.id, "p", "t", clock.time() + 60)
    new_box = SecretBox(os.urandom(32))
    assert await receipts.reseal(new_box) == 1
    assert await receipts.reseal(new_box) == 0  # idempotent
    await Receipts(store, new_box, clock).verify(text)
    with pytest.raises(SecretError):
        await Receipts(store, SecretBox(os.urandom(32)), clock).reseal(new_box.__class__(os.urandom(32)))


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(max_size=600) | st.binary(max_size=400).map(lambda b: base64.urlsafe_b64encode(b).decode().rstrip("=")))
async def test_any_text_is_refused_without_a_crash(env, text: str) -> None:  # type: ignore[no-untyped-def]
    receipts = env[0]
    with pytest.raises(ReceiptError):
        await receipts.verify(text)




def test_receipts_minted_together_are_the_ones_minted_one_by_one() -> None:
    from pushreachd.services.receipts import ReceiptClaims, encode_receipt, encode_receipts

    key = bytes(range(32))
    tokens = ["tok-1", "ab" * 32, "é-token", ""]
    together = encode_receipts(key, 7, 300, "0123456789abcdef0123", tokens, 1_750_000_000.5)
    alone = [encode_receipt(key, ReceiptClaims(7, 300, "0123456789abcdef0123", t, 1_750_000_000.5)) for t in tokens]
    assert together == alone and len(set(together)) == len(tokens)
