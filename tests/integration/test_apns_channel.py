"""The APNs channel against the loopback APNs emulator: real HTTP/2 over TLS, provider-token
auth, a fake clock shared by channel and emulator for token ages and retries (backoff
delays of 0, so nothing sleeps)."""

from __future__ import annotations

import json
import random

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from pushreachd.channels import apns
from pushreachd.channels.base import Backoff, PushDelivery, TargetPayload
from pushreachd.channels.emulator.apns import ApnsEmulatorState, running, sandbox_url
from pushreachd.channels.registry import ChannelContext
from pushreachd.channels.vendor import trust
from pushreachd.model import AudienceType, Channel, Environment, MessageType, PushOutcome, PushSpec, VendorOptions

from tests.fakes import FakeClock

NO_WAIT = Backoff(base=0.0, attempts=3)
TEAM, KID, TOPIC = "TEAM123456", "ABC123DEFG", "com.example.app"


def pem(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


KEY = pem(ec.generate_private_key(ec.SECP256R1()))
OTHER_KEY = pem(ec.generate_private_key(ec.SECP256R1()))
CREDS = {"key_id": KID, "team_id": TEAM, "topic": TOPIC, "private_key": KEY}


def tok(n: int) -> str:
    return f"{n:064x}"


def delivery(clock: FakeClock, tokens: list[str], *, push_id: str = "p-1", ttl: float = 3600,
             message_type: MessageType = MessageType.NOTIFY, environment: Environment = Environment.PRODUCT,
             collapse_id: str = "", title: str = "Approval needed",
             vendor: VendorOptions | None = None) -> PushDelivery:
    spec = PushSpec(AudienceType.TOKEN_LIST, tuple(tokens), (), title, "Expense #42 waits for you",
                    message_type=message_type, environment=environment, collapse_id=collapse_id, vendor=vendor)
    targets = tuple(TargetPayload(t, f"r-{t[-4:]}") for t in tokens)
    return PushDelivery("acc-1", push_id, spec, targets, clock.time() + ttl)


@pytest.fixture
async def emulator():  # type: ignore[no-untyped-def]
    clock = FakeClock()
    state = ApnsEmulatorState(clock=clock)
    state.add_key(TEAM, KID, KEY, [TOPIC])
    async with running(state) as (url, ca_file):
        yield state, url, ca_file, clock


def open_channel(emu, **kw) -> apns.ApnsChannel:  # type: ignore[no-untyped-def]
    _, url, ca_file, clock = emu
    creds = {**CREDS, **kw.pop("creds", {})}
    return apns.ApnsChannel(creds, clock=clock, endpoint=url, sandbox_endpoint=sandbox_url(url),
                            verify=trust(ca_file), backoff=kw.pop("backoff", NO_WAIT), **kw)


async def test_accepted_with_apns_id_exact_headers_and_payload(emulator) -> None:  # type: ignore[no-untyped-def]
    state, url, ca_file, clock = emulator
    context = ChannelContext(clock, {"apns_endpoint": url, "apns_sandbox_endpoint": sandbox_url(url)}, ca_file)
    ch = apns.create(apns.validate_credentials(CREDS), context)
    d = delivery(clock, [tok(1)], collapse_id="expense-42")
    try:
        [outcome] = await ch.send(d)
    finally:
        await ch.aclose()
    [got] = state.delivered_to(tok(1))
    assert outcome.outcome == PushOutcome.ACCEPTED and outcome.vendor_id == got.apns_id and got.apns_id
    assert got.headers == {
        "apns-topic": TOPIC,
        "apns-push-type": "alert",
        "apns-priority": "10",
        "apns-expiration": str(int(d.expires_at)),
        "apns-collapse-id": "expense-42",
    }
    assert got.payload == {
        "aps": {"alert": {"title": "Approval needed", "body": "Expense #42 waits for you"}, "sound": "default"},
        "pushreach": {"push_id": "p-1", "receipt": f"r-{tok(1)[-4:]}"},
    }
    assert (got.topic, got.team_id, got.key_id, got.sandbox) == (TOPIC, TEAM, KID, False)


async def test_message_is_a_background_push(emulator) -> None:  # type: ignore[no-untyped-def]
    state, _, _, clock = emulator
    ch = open_channel(emulator)
    try:
        [outcome] = await ch.send(delivery(clock, [tok(1)], message_type=MessageType.MESSAGE))
    finally:
        await ch.aclose()
    assert outcome.outcome == PushOutcome.ACCEPTED
    [got] = state.delivered_to(tok(1))
    assert (got.headers["apns-push-type"], got.headers["apns-priority"]) == ("background", "5")
    assert "apns-collapse-id" not in got.headers
    assert got.payload == {
        "aps": {"content-available": 1}, "pushreach": {"push_id": "p-1", "receipt": f"r-{tok(1)[-4:]}"}
    }


async def test_dev_environment_goes_to_the_sandbox(emulator) -> None:  # type: ignore[no-untyped-def]
    state, _, _, clock = emulator
    ch = open_channel(emulator)
    try:
        await ch.send(delivery(clock, [tok(1)], environment=Environment.DEV))
        await ch.send(delivery(clock, [tok(2)], environment=Environment.PRODUCT))
    finally:
        await ch.aclose()
    assert [d.sandbox for d in state.delivered_to(tok(1))] == [True]
    assert [d.sandbox for d in state.delivered_to(tok(2))] == [False]


async def test_unregistered_token_is_invalid(emulator) -> None:  # type: ignore[no-untyped-def]
    state, _, _, clock = emulator
    state.unregister(tok(2), since_ms=1_700_000_000_000)
    ch = open_channel(emulator)
    try:
        outcomes = await ch.send(delivery(clock, [tok(1), tok(2)]))
    finally:
        await ch.aclose()
    by_token = {o.token: o for o in outcomes}
    assert by_token[tok(1)].outcome == PushOutcome.ACCEPTED
    assert (by_token[tok(2)].outcome, by_token[tok(2)].code) == (PushOutcome.INVALID_TOKEN, "Unregistered")
    assert "1700000000000" in by_token[tok(2)].message
    assert state.delivered_to(tok(2)) == []
    assert state.requests == 2  # a 410 is never retried


async def test_bad_device_token_and_token_for_another_topic_are_invalid(emulator) -> None:  # type: ignore[no-untyped-def]
    state, _, _, clock = emulator
    state.bind(tok(3), "com.example.other")
    ch = open_channel(emulator)
    try:
        outcomes = await ch.send(delivery(clock, ["not-a-hex-token", tok(3)]))
    finally:
        await ch.aclose()
    assert sorted((o.token, o.outcome, o.code) for o in outcomes) == sorted([
        ("not-a-hex-token", PushOutcome.INVALID_TOKEN, "BadDeviceToken"),
        (tok(3), PushOutcome.INVALID_TOKEN, "DeviceTokenNotForTopic"),
    ])


@pytest.mark.parametrize("status", [503, 500])
async def test_server_error_then_ok_is_delivered_exactly_once(emulator, status) -> None:  # type: ignore[no-untyped-def]
    state, _, _, clock = emulator
    state.fail_next(status, times=2)
    ch = open_channel(emulator)
    try:
        [outcome] = await ch.send(delivery(clock, [tok(1)]))
    finally:
        await ch.aclose()
    assert outcome.outcome == PushOutcome.ACCEPTED
    assert len(state.delivered_to(tok(1))) == 1
    assert state.requests == 3


async def test_too_many_requests_is_retried_then_given_up(emulator) -> None:  # type: ignore[no-untyped-def]
    state, _, _, clock = emulator
    state.fail_next(429, times=1)
    ch = open_channel(emulator)
    try:
        [first] = await ch.send(delivery(clock, [tok(1)]))
        state.fail_next(429, times=10)
        [second] = await ch.send(delivery(clock, [tok(2)], push_id="p-2"))
    finally:
        await ch.aclose()
    assert first.outcome == PushOutcome.ACCEPTED
    assert (second.outcome, second.code) == (PushOutcome.FAILED, "TooManyRequests")
    assert state.requests == 2 + 4  # one retry; then the first try and NO_WAIT's three retries


async def test_expired_push_is_never_sent(emulator) -> None:  # type: ignore[no-untyped-def]
    state, _, _, clock = emulator
    ch = open_channel(emulator)
    d = delivery(clock, [tok(1), tok(2)], ttl=60)
    await clock.advance(61)
    try:
        outcomes = await ch.send(d)
    finally:
        await ch.aclose()
    assert {o.outcome for o in outcomes} == {PushOutcome.EXPIRED}
    assert state.requests == 0 and state.connections == 0


async def test_retry_never_waits_past_expiry(emulator) -> None:  # type: ignore[no-untyped-def]
    state, _, _, clock = emulator
    state.fail_next(503, times=1)
    ch = open_channel(emulator, backoff=Backoff(base=1000.0, cap=1000.0, rng=random.Random(1)))
    try:
        [outcome] = await ch.send(delivery(clock, [tok(1)], ttl=5))
    finally:
        await ch.aclose()
    assert (outcome.outcome, outcome.code) == (PushOutcome.EXPIRED, "ServiceUnavailable")
    assert state.requests == 1


async def test_provider_token_is_reused_and_refreshed_after_40_minutes(emulator) -> None:  # type: ignore[no-untyped-def]
    state, _, _, clock = emulator
    ch = open_channel(emulator)
    try:
        for i in range(3):
            outcomes = await ch.send(delivery(clock, [tok(n) for n in range(i * 20, i * 20 + 20)], push_id=f"p-{i}"))
            assert {o.outcome for o in outcomes} == {PushOutcome.ACCEPTED}
            await clock.advance(10 * 60)
        assert state.requests == 60
        assert state.token_changes(KID) == 1 and ch.provider_token.minted == 1
        await clock.advance(10 * 60 + 1)  # 40 minutes after the token was made
        await ch.send(delivery(clock, [tok(100), tok(101)], push_id="p-late"))
    finally:
        await ch.aclose()
    assert state.token_changes(KID) == 2 and ch.provider_token.minted == 2
    assert state.refused == {}  # refreshed before Apple could call it expired


async def test_expired_provider_token_is_renewed_once_and_the_request_retried(emulator) -> None:  # type: ignore[no-untyped-def]
    state, _, _, clock = emulator
    ch = open_channel(emulator)
    try:
        await ch.send(delivery(clock, [tok(1)]))
        state.expire_provider_tokens()  # Apple says so early; our token still looks fresh to us
        outcomes = await ch.send(delivery(clock, [tok(n) for n in range(2, 12)], push_id="p-2"))
    finally:
        await ch.aclose()
    assert {o.outcome for o in outcomes} == {PushOutcome.ACCEPTED}
    assert ch.provider_token.minted == 2  # ten concurrent 403s made one new token, not ten
    assert state.token_changes(KID) == 2
    assert all(len(state.delivered_to(tok(n))) == 1 for n in range(2, 12))


async def test_provider_token_called_expired_even_when_fresh_fails(emulator) -> None:  # type: ignore[no-untyped-def]
    state, url, ca_file, clock = emulator
    state.clock = FakeClock(clock.time() + 2 * 3600)  # Apple's clock two hours ahead of ours
    ch = open_channel(emulator)
    try:
        [outcome] = await ch.send(delivery(clock, [tok(1)]))
    finally:
        await ch.aclose()
    assert (outcome.outcome, outcome.code) == (PushOutcome.FAILED, "ExpiredProviderToken")
    assert state.requests == 2  # renewed and retried once, not more


async def test_wrong_key_fails_with_invalid_provider_token(emulator) -> None:  # type: ignore[no-untyped-def]
    state, _, _, clock = emulator
    ch = open_channel(emulator, creds={"private_key": OTHER_KEY})  # Apple knows another key under this kid
    try:
        outcomes = await ch.send(delivery(clock, [tok(1), tok(2)]))
        sent = state.requests
        [again] = await ch.send(delivery(clock, [tok(3)], push_id="p-2"))
        assert state.requests == sent  # a refused token is not sent again at once
        await clock.advance(apns.REFUSAL_MEMORY + 1)
        [later] = await ch.send(delivery(clock, [tok(4)], push_id="p-3"))
    finally:
        await ch.aclose()
    assert {(o.outcome, o.code) for o in outcomes} == {(PushOutcome.FAILED, "InvalidProviderToken")}
    assert (again.outcome, again.code) == (PushOutcome.FAILED, "InvalidProviderToken")
    assert (later.outcome, later.code) == (PushOutcome.FAILED, "InvalidProviderToken")
    assert state.requests == sent + 1 and ch.provider_token.minted == 2  # tried again, with a new token
    assert state.delivered == []


async def test_topic_not_of_the_team_fails(emulator) -> None:  # type: ignore[no-untyped-def]
    state, _, _, clock = emulator
    ch = open_channel(emulator, creds={"topic": "com.example.notours"})
    try:
        [outcome] = await ch.send(delivery(clock, [tok(1)]))
    finally:
        await ch.aclose()
    assert (outcome.outcome, outcome.code) == (PushOutcome.FAILED, "TopicDisallowed")


async def test_goaway_mid_run_then_later_sends_succeed(emulator) -> None:  # type: ignore[no-untyped-def]
    state, _, _, clock = emulator
    ch = open_channel(emulator)
    try:
        state.goaway_after(5)
        outcomes = await ch.send(delivery(clock, [tok(n) for n in range(40)]))
        assert {o.outcome for o in outcomes} == {PushOutcome.ACCEPTED}
        assert state.connections >= 2  # the client went on over a new connection
        for i in range(3):  # aioapns#63: after a lost connection every later send failed
            later = await ch.send(delivery(clock, [tok(100 + i)], push_id=f"p-later-{i}"))
            assert [o.outcome for o in later] == [PushOutcome.ACCEPTED]
    finally:
        await ch.aclose()
    assert all(len(state.delivered_to(tok(n))) == 1 for n in range(40))


async def test_dropped_connection_is_retried_on_a_new_one(emulator) -> None:  # type: ignore[no-untyped-def]
    state, _, _, clock = emulator
    ch = open_channel(emulator)
    try:
        await ch.send(delivery(clock, [tok(0)]))
        state.drop_after(1)  # cut without GOAWAY while a request is in flight
        [outcome] = await ch.send(delivery(clock, [tok(1)], push_id="p-2"))
        [later] = await ch.send(delivery(clock, [tok(2)], push_id="p-3"))
    finally:
        await ch.aclose()
    assert outcome.outcome == PushOutcome.ACCEPTED and later.outcome == PushOutcome.ACCEPTED
    assert state.connections == 2
    assert len(state.delivered_to(tok(1))) == 1


async def test_slow_answer_past_the_timeout_is_retried(emulator) -> None:  # type: ignore[no-untyped-def]
    state, _, _, clock = emulator
    state.delay_next(1.0)
    ch = open_channel(emulator, timeout=0.3)
    try:
        [outcome] = await ch.send(delivery(clock, [tok(1)]))
    finally:
        await ch.aclose()
    assert outcome.outcome == PushOutcome.ACCEPTED
    # Apple took the first request too; it answered too late. A retry after a timeout can
    # deliver twice: the price of not losing the push.
    assert len(state.delivered_to(tok(1))) == 2


async def test_thousand_tokens_share_few_connections(emulator) -> None:  # type: ignore[no-untyped-def]
    state, _, _, clock = emulator
    ch = open_channel(emulator)
    tokens = [tok(n) for n in range(1000)]
    try:
        outcomes = await ch.send(delivery(clock, tokens))
    finally:
        await ch.aclose()
    assert len(outcomes) == 1000 and {o.outcome for o in outcomes} == {PushOutcome.ACCEPTED}
    assert len({o.vendor_id for o in outcomes}) == 1000
    assert state.connections <= 2
    assert state.token_changes(KID) == 1


async def test_oversize_payload_fails_without_calling_apple(emulator) -> None:  # type: ignore[no-untyped-def]
    state, _, _, clock = emulator
    ch = open_channel(emulator)
    try:
        [outcome] = await ch.send(delivery(clock, [tok(1)], title="x" * apns.MAX_PAYLOAD_BYTES))
    finally:
        await ch.aclose()
    assert (outcome.outcome, outcome.code) == (PushOutcome.FAILED, "PayloadTooLarge")
    assert state.requests == 0


async def test_emulator_refuses_oversize_payload_itself(emulator) -> None:  # type: ignore[no-untyped-def]
    state, url, ca_file, clock = emulator
    import httpx
    import jwt

    bearer = jwt.encode({"iss": TEAM, "iat": int(clock.time())}, KEY, algorithm="ES256", headers={"kid": KID})
    body = json.dumps({"aps": {"alert": "x" * 5000}}).encode()
    async with httpx.AsyncClient(http1=False, http2=True, verify=trust(ca_file)) as client:
        response = await client.post(f"{url}/3/device/{tok(1)}", content=body,
                                     headers={"authorization": f"bearer {bearer}", "apns-topic": TOPIC})
    assert (response.status_code, response.json()) == (413, {"reason": "PayloadTooLarge"})
    assert response.http_version == "HTTP/2"


async def test_channel_rules_can_disable_apns(emulator) -> None:  # type: ignore[no-untyped-def]
    state, _, _, clock = emulator
    ch = open_channel(emulator)
    try:
        no_apns = VendorOptions(disabled_channels=frozenset({Channel.APNS}))
        [outcome] = await ch.send(delivery(clock, [tok(1)], vendor=no_apns))
    finally:
        await ch.aclose()
    assert (outcome.outcome, outcome.code) == (PushOutcome.NO_CHANNEL, "channel_rules")
    assert state.requests == 0


async def test_command_line_emulator_serves_keys_file(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import argparse
    import asyncio

    from pushreachd.channels.emulator import apns as emulator_cli
    from pushreachd.clock import SystemClock

    keys = tmp_path / "keys.json"
    other = ec.generate_private_key(ec.SECP256R1())
    keys.write_text(json.dumps([
        {"team_id": TEAM, "key_id": KID, "private_key": KEY, "topics": [TOPIC]},
        {"team_id": "TEAM999999", "key_id": "KEY9999999", "topics": ["com.example.b"],
         "public_key": other.public_key().public_bytes(
             serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()},
    ]))
    parser = argparse.ArgumentParser()
    emulator_cli.add_arguments(parser)
    args = parser.parse_args(["--keys", str(keys), "--listen", "127.0.0.1:0", "--seconds", "30",
                              "--ca-file", str(tmp_path / "ca.pem"), "--unregistered", tok(9)])
    ready: asyncio.Future[tuple[str, str]] = asyncio.get_running_loop().create_future()
    server = asyncio.create_task(emulator_cli.serve_from_args(args, lambda url, ca: ready.set_result((url, ca))))
    try:
        url, ca_file = await asyncio.wait_for(ready, 10)
        assert ca_file == str(tmp_path / "ca.pem")
        clock = SystemClock()
        ch = apns.ApnsChannel(CREDS, clock=clock, endpoint=url, verify=trust(ca_file), backoff=NO_WAIT)
        try:
            outcomes = await ch.send(delivery(clock, [tok(1), tok(9)]))  # type: ignore[arg-type]
        finally:
            await ch.aclose()
    finally:
        server.cancel()
        with pytest.raises(asyncio.CancelledError):
            await server
    assert {o.token: o.outcome for o in outcomes} == {tok(1): PushOutcome.ACCEPTED, tok(9): PushOutcome.INVALID_TOKEN}
