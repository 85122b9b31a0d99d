"""The FCM HTTP v1 channel against the loopback FCM emulator: real HTTP, a real service-account
key and google-auth's JWT-bearer exchange, FCM's error bodies; a fake clock for access-token
lifetimes and retries (backoff delays of 0, so nothing sleeps)."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import ssl
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pushreachd.channels import fcm
from pushreachd.channels.base import Backoff, PushDelivery, TargetPayload
from pushreachd.channels.emulator import serving
from pushreachd.channels.emulator.fcm import TOKEN_PATH, FcmEmulatorState, new_service_account, running
from pushreachd.channels.registry import ChannelContext
from pushreachd.model import AudienceType, MessageType, PushOutcome, PushSpec

from tests.fakes import FakeClock

NO_WAIT = Backoff(base=0.0, attempts=3)
PROJECT = "pushreach-test"


@pytest.fixture(scope="module")
def keys() -> tuple[dict[str, str], dict[str, str]]:
    """Two service accounts' worth of keys (RSA generation is the slow part: once per module)."""
    other = f"second@{PROJECT}.iam.gserviceaccount.com"
    return (
        new_service_account(PROJECT, "http://placeholder"),
        new_service_account(PROJECT, "http://placeholder", client_email=other),
    )


@pytest.fixture
async def emulator(keys):  # type: ignore[no-untyped-def]
    state = FcmEmulatorState()
    async with running(state) as url:
        account = {**keys[0], "token_uri": f"{url}{TOKEN_PATH}"}
        state.add_account(account)
        yield state, url, account


def open_channel(url: str, account: dict[str, Any], clock: FakeClock, **kwargs: Any) -> fcm.FcmChannel:
    return fcm.FcmChannel(fcm.validate_credentials(account), endpoint=url, clock=clock, backoff=NO_WAIT, **kwargs)


def delivery(clock: FakeClock, tokens: list[str], *, push_id: str = "p-1", ttl: float = 3600,
             message_type: MessageType = MessageType.NOTIFY, collapse_id: str = "") -> PushDelivery:
    spec = PushSpec(
        audience_type=AudienceType.TOKEN_LIST, token_list=tuple(tokens), account_list=(),
        title="Approval needed", content="Expense #42 waits for you",
        message_type=message_type, collapse_id=collapse_id,
    )
    return PushDelivery("acc-1", push_id, spec, tuple(TargetPayload(t, f"r-{t}") for t in tokens), clock.time() + ttl)


async def test_notification_accepted_with_message_name(emulator) -> None:  # type: ignore[no-untyped-def]
    state, url, account = emulator
    clock = FakeClock()
    ch = open_channel(url, account, clock)
    try:
        [outcome] = await ch.send(delivery(clock, ["tok-a"], ttl=600))
    finally:
        await ch.aclose()
    [got] = state.delivered_to("tok-a")
    assert outcome.outcome == PushOutcome.ACCEPTED
    assert outcome.vendor_id == got.name and got.name.startswith(f"projects/{PROJECT}/messages/")
    assert got.notification == {"title": "Approval needed", "body": "Expense #42 waits for you"}
    assert got.data == {"pushreach_push_id": "p-1", "pushreach_receipt": "r-tok-a"}
    assert got.android == {"ttl": "600s", "priority": "high"}  # ttl: what is left until the push expires


async def test_message_type_is_data_only_with_collapse_key(emulator) -> None:  # type: ignore[no-untyped-def]
    state, url, account = emulator
    clock = FakeClock()
    ch = open_channel(url, account, clock)
    try:
        push = delivery(clock, ["tok-a"], message_type=MessageType.MESSAGE, collapse_id="expense-42")
        [outcome] = await ch.send(push)
    finally:
        await ch.aclose()
    assert outcome.outcome == PushOutcome.ACCEPTED
    [got] = state.delivered_to("tok-a")
    assert got.notification == {}
    assert got.data == {"pushreach_push_id": "p-1", "pushreach_receipt": "r-tok-a",
                        "title": "Approval needed", "content": "Expense #42 waits for you"}
    assert got.android == {"ttl": "3600s", "priority": "normal", "collapse_key": "expense-42"}


async def test_unregistered_and_malformed_tokens_are_invalid(emulator) -> None:  # type: ignore[no-untyped-def]
    state, url, account = emulator
    clock = FakeClock()
    state.mark_unregistered("tok-gone")
    ch = open_channel(url, account, clock)
    try:
        outcomes = await ch.send(delivery(clock, ["tok-ok", "tok-gone", "not a token"]))
    finally:
        await ch.aclose()
    by_token = {o.token: (o.outcome, o.code) for o in outcomes}
    assert by_token == {
        "tok-ok": (PushOutcome.ACCEPTED, ""),
        "tok-gone": (PushOutcome.INVALID_TOKEN, "UNREGISTERED"),
        "not a token": (PushOutcome.INVALID_TOKEN, "INVALID_ARGUMENT"),
    }
    assert state.delivered_to("tok-gone") == []


async def test_unavailable_then_ok_is_delivered_once(emulator) -> None:  # type: ignore[no-untyped-def]
    state, url, account = emulator
    clock = FakeClock()
    state.fail_next("unavailable")
    state.fail_next("internal")
    ch = open_channel(url, account, clock)
    try:
        [outcome] = await ch.send(delivery(clock, ["tok-a"]))
    finally:
        await ch.aclose()
    assert outcome.outcome == PushOutcome.ACCEPTED
    assert len(state.delivered_to("tok-a")) == 1
    assert state.send_calls == 3


async def test_quota_exceeded_waits_for_retry_after(emulator) -> None:  # type: ignore[no-untyped-def]
    state, url, account = emulator
    clock = FakeClock()
    state.retry_after = 7
    state.fail_next("quota")
    ch = open_channel(url, account, clock)
    try:
        task = asyncio.create_task(ch.send(delivery(clock, ["tok-a"])))
        for _ in range(200):  # the first answer (429) arrives over real loopback HTTP
            if clock._sleepers:
                break
            await asyncio.sleep(0.01)
        await clock.advance(6.5)
        assert not task.done() and state.send_calls == 1
        await clock.advance(1)
        [outcome] = await asyncio.wait_for(task, 10)
    finally:
        await ch.aclose()
    assert outcome.outcome == PushOutcome.ACCEPTED
    assert state.send_calls == 2


async def test_quota_retry_after_past_expiry_is_expired(emulator) -> None:  # type: ignore[no-untyped-def]
    state, url, account = emulator
    clock = FakeClock()
    state.retry_after = 120
    state.fail_next("quota")
    ch = open_channel(url, account, clock)
    try:
        [outcome] = await ch.send(delivery(clock, ["tok-a"], ttl=60))
    finally:
        await ch.aclose()
    assert (outcome.outcome, outcome.code) == (PushOutcome.EXPIRED, "QUOTA_EXCEEDED")
    assert state.send_calls == 1


async def test_access_token_reused_and_refreshed(emulator) -> None:  # type: ignore[no-untyped-def]
    state, url, account = emulator
    clock = FakeClock()
    ch = open_channel(url, account, clock)
    try:
        outcomes = await ch.send(delivery(clock, [f"tok-{n}" for n in range(50)]))
        assert {o.outcome for o in outcomes} == {PushOutcome.ACCEPTED}
        assert (state.token_requests, state.tokens_issued) == (1, 1)  # 50 concurrent sends, one exchange

        state.expire_access_tokens()  # FCM stops taking it early; our cache still trusts it
        [outcome] = await ch.send(delivery(clock, ["tok-x"], push_id="p-2"))
        assert outcome.outcome == PushOutcome.ACCEPTED
        assert state.tokens_issued == 2  # the 401 renewed it once, and the retry went through
        await ch.send(delivery(clock, ["tok-y"], push_id="p-3"))
        assert state.tokens_issued == 2

        await clock.advance(3600)  # past the token's hour: renewed before FCM refuses it
        await ch.send(delivery(clock, ["tok-z"], push_id="p-4"))
        assert state.tokens_issued == 3
    finally:
        await ch.aclose()
    assert len(state.delivered_to("tok-x")) == 1


async def test_wrong_key_fails_all_after_one_exchange(emulator, keys) -> None:  # type: ignore[no-untyped-def]
    state, url, account = emulator
    clock = FakeClock()
    forged = {**account, "private_key": keys[1]["private_key"]}  # same account, another key
    ch = open_channel(url, forged, clock)
    try:
        outcomes = await ch.send(delivery(clock, [f"tok-{n}" for n in range(1000)]))
    finally:
        await ch.aclose()
    assert len(outcomes) == 1000
    assert {(o.outcome, o.code) for o in outcomes} == {(PushOutcome.FAILED, "oauth:invalid_grant")}
    assert state.token_requests == 1
    assert state.send_calls == 0


async def test_unknown_account_is_refused(emulator, keys) -> None:  # type: ignore[no-untyped-def]
    state, url, account = emulator
    clock = FakeClock()
    ch = open_channel(url, {**keys[1], "token_uri": account["token_uri"]}, clock)  # never registered
    try:
        [outcome] = await ch.send(delivery(clock, ["tok-a"]))
    finally:
        await ch.aclose()
    assert (outcome.outcome, outcome.code) == (PushOutcome.FAILED, "oauth:invalid_grant")


async def test_sender_id_mismatch_fails(emulator) -> None:  # type: ignore[no-untyped-def]
    state, url, account = emulator
    clock = FakeClock()
    state.mark_foreign("tok-other-app")
    ch = open_channel(url, account, clock)
    wrong_project = open_channel(url, {**account, "project_id": "someone-elses"}, clock)
    try:
        outcomes = await ch.send(delivery(clock, ["tok-other-app", "tok-a"]))
        [mismatch] = await wrong_project.send(delivery(clock, ["tok-b"]))
    finally:
        await ch.aclose()
        await wrong_project.aclose()
    by_token = {o.token: (o.outcome, o.code) for o in outcomes}
    assert by_token == {
        "tok-other-app": (PushOutcome.FAILED, "SENDER_ID_MISMATCH"),
        "tok-a": (PushOutcome.ACCEPTED, ""),
    }
    assert (mismatch.outcome, mismatch.code) == (PushOutcome.FAILED, "SENDER_ID_MISMATCH")
    assert state.delivered_to("tok-b") == []


async def test_expired_push_is_not_sent(emulator) -> None:  # type: ignore[no-untyped-def]
    state, url, account = emulator
    clock = FakeClock()
    ch = open_channel(url, account, clock)
    late = delivery(clock, ["tok-a", "tok-b"], ttl=-1)
    try:
        outcomes = await ch.send(late)
    finally:
        await ch.aclose()
    assert {o.outcome for o in outcomes} == {PushOutcome.EXPIRED}
    assert (state.token_requests, state.send_calls) == (0, 0)


# -- answers the emulator does not give: FCM faked at the HTTP seam, the token still real --------


def _fcm_error(status: int, code: str, message: str, extra: list[dict[str, Any]] | None = None) -> httpx.Response:
    details = [{"@type": fcm.FCM_ERROR, "errorCode": code}] + (extra or [])
    return httpx.Response(status, json={"error": {"code": status, "message": message, "details": details}})


TOKEN_VIOLATION = {"@type": fcm.BAD_REQUEST, "fieldViolations": [{"field": "message.token", "description": "bad"}]}
ANSWERS = {
    "third_party_auth": (_fcm_error(401, "THIRD_PARTY_AUTH_ERROR", "APNs certificate rejected"),
                         (PushOutcome.FAILED, "THIRD_PARTY_AUTH_ERROR")),
    "token_field_violation": (_fcm_error(400, "INVALID_ARGUMENT", "Invalid value", [TOKEN_VIOLATION]),
                              (PushOutcome.INVALID_TOKEN, "INVALID_ARGUMENT")),
    "other_invalid_argument": (_fcm_error(400, "INVALID_ARGUMENT", "Message is too big"),
                               (PushOutcome.FAILED, "INVALID_ARGUMENT")),
    "unauthenticated_twice": (httpx.Response(401, json={"error": {"code": 401, "status": "UNAUTHENTICATED"}}),
                              (PushOutcome.FAILED, "UNAUTHENTICATED")),
    "gateway_page": (httpx.Response(502, text="<html>bad gateway</html>"), (PushOutcome.FAILED, "http_502")),
}


@pytest.mark.parametrize(("answer", "expected"), list(ANSWERS.values()), ids=list(ANSWERS))
async def test_fcm_answers_become_outcomes(emulator, answer, expected) -> None:  # type: ignore[no-untyped-def]
    state, url, account = emulator
    clock = FakeClock()
    calls: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return answer

    http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    ch = open_channel("https://fcm.test", account, clock, http=http, own_http=True)
    try:
        [outcome] = await ch.send(delivery(clock, ["tok-a"]))
    finally:
        await ch.aclose()
    assert (outcome.outcome, outcome.code) == expected
    assert calls[0].url == f"https://fcm.test/v1/projects/{PROJECT}/messages:send"
    if expected[1] == "UNAUTHENTICATED":  # renewed once, then the credentials are at fault
        assert (len(calls), state.tokens_issued) == (2, 2)
    elif expected[1] == "http_502":  # retried to the last attempt
        assert len(calls) == NO_WAIT.attempts + 1


# -- the CA file: trusted for the token endpoint (requests) and for FCM (httpx) -----------------


def _issue_certs(tmp_path: Path) -> tuple[ssl.SSLContext, str]:
    """A CA and a server certificate for 127.0.0.1; the server's SSL context and the CA's file."""
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pushreach test CA")])
    ca = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    cert = (
        x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    (tmp_path / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "server.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "server.key").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(tmp_path / "server.pem", tmp_path / "server.key")
    return server, str(tmp_path / "ca.pem")


async def test_ca_file_is_trusted_for_token_endpoint_and_fcm(tmp_path, keys) -> None:  # type: ignore[no-untyped-def]
    server_ssl, ca_file = _issue_certs(tmp_path)
    state = FcmEmulatorState()
    clock = FakeClock()
    async with running(state, ssl_context=server_ssl) as url:
        assert url.startswith("https://")
        account = {**keys[0], "token_uri": f"{url}{TOKEN_PATH}"}
        state.add_account(account)
        endpoints = {"fcm_endpoint": url}
        trusting = fcm.create(account, ChannelContext(clock, endpoints=endpoints, ca_file=ca_file, timeout=5))
        stranger = fcm.create(account, ChannelContext(clock, endpoints=endpoints, timeout=5))
        stranger.backoff = NO_WAIT
        try:
            [ok] = await trusting.send(delivery(clock, ["tok-a"]))
            [refused] = await stranger.send(delivery(clock, ["tok-b"]))
        finally:
            await trusting.aclose()
            await stranger.aclose()
    assert ok.outcome == PushOutcome.ACCEPTED
    assert (refused.outcome, refused.code) == (PushOutcome.FAILED, "oauth_network")  # certificate not trusted
    assert state.tokens_issued == 1


def test_token_session_verifies_with_ca_file(tmp_path) -> None:  # type: ignore[no-untyped-def]
    _, ca_file = _issue_certs(tmp_path)
    adapter = fcm.token_session(ca_file).get_adapter("https://oauth2.googleapis.com/token")
    assert isinstance(adapter, fcm.TrustingAdapter)
    subjects = {dict(item[0] for item in c["subject"]).get("commonName") for c in adapter._context.get_ca_certs()}
    assert "pushreach test CA" in subjects and len(subjects) > 10  # the test CA beside certifi's
    assert not isinstance(fcm.token_session("").get_adapter("https://x.test"), fcm.TrustingAdapter)


async def test_mounts_beside_android_vendors_and_webhook(keys) -> None:  # type: ignore[no-untyped-def]
    """What `pushreach push-emulator` composes: one application, one port, no path collisions."""
    from pushreachd.channels import hms, webhook
    from pushreachd.channels.emulator import android
    from pushreachd.channels.emulator import fcm as fcm_emulator
    from pushreachd.channels.emulator import webhook as webhook_emulator

    clock = FakeClock()
    vendors, fcm_state = android.EmulatorState(), FcmEmulatorState()
    receiver = webhook_emulator.WebhookReceiverState(now=clock.time)
    vendors.add_app("hms", "10086", app_id="10086", client_secret="hms-secret")
    receiver.add_endpoint("app", "0123456789abcdef")
    app = android.create_app(vendors)
    fcm_emulator.add_routes(app, fcm_state)
    webhook_emulator.add_routes(app, receiver)
    async with serving(app) as url:
        account = {**keys[0], "token_uri": f"{url}{TOKEN_PATH}"}
        fcm_state.add_account(account)
        channels = [
            open_channel(url, account, clock),
            hms.HmsChannel({"app_id": "10086", "client_secret": "hms-secret"}, endpoint=url,
                           token_endpoint=f"{url}/oauth2/v3/token", clock=clock, backoff=NO_WAIT),
            webhook.WebhookChannel({"url": f"{url}/webhook/app", "secret": "0123456789abcdef"}, clock=clock),
        ]
        try:
            results = [await ch.send(delivery(clock, ["tok-a"])) for ch in channels]
        finally:
            for ch in channels:
                await ch.aclose()
    assert [r[0].outcome for r in results] == [PushOutcome.ACCEPTED] * 3
    assert (len(fcm_state.delivered), len(vendors.delivered), len(receiver.delivered)) == (1, 1, 1)


def test_command_line_flags_program_the_emulators(tmp_path, keys) -> None:  # type: ignore[no-untyped-def]
    import argparse
    import json

    from pushreachd.channels.emulator import fcm as fcm_emulator
    from pushreachd.channels.emulator import webhook as webhook_emulator

    (tmp_path / "accounts.json").write_text(json.dumps([keys[0], keys[1]]))
    parser = argparse.ArgumentParser()
    fcm_emulator.add_arguments(parser)
    webhook_emulator.add_arguments(parser)
    args = parser.parse_args([
        "--fcm-accounts", str(tmp_path / "accounts.json"), "--fcm-unregistered", "gone", "--fcm-quota", "2",
        "--webhook", "app:0123456789abcdef", "--webhook", "ops:s3cret:with:colons", "--webhook-gone", "old",
        "--webhook-unavailable", "1",
    ])
    fcm_state, receiver = FcmEmulatorState(), webhook_emulator.WebhookReceiverState()
    fcm_emulator.configure(fcm_state, args)
    webhook_emulator.configure(receiver, args)
    assert set(fcm_state.accounts) == {keys[0]["client_email"], keys[1]["client_email"]}
    assert (fcm_state.unregistered, list(fcm_state.faults)) == ({"gone"}, ["quota", "quota"])
    assert receiver.secrets == {"app": "0123456789abcdef", "ops": "s3cret:with:colons"}
    assert (receiver.gone, list(receiver.faults)) == ({"old"}, ["unavailable"])
    with pytest.raises(ValueError, match="--webhook"):
        webhook_emulator.configure(receiver, parser.parse_args(["--webhook", "no-secret"]))


async def test_token_endpoint_down_is_asked_once_per_window(emulator) -> None:  # type: ignore[no-untyped-def]
    import socket

    state, url, account = emulator
    with socket.socket() as s:  # a loopback port nothing listens on: connection refused at once
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}/fcm/token"
    clock = FakeClock()
    ch = open_channel(url, {**account, "token_uri": dead}, clock)
    refreshes = 0
    real_refresh = ch._google.refresh

    def counting_refresh(request: Any) -> None:
        nonlocal refreshes
        refreshes += 1
        real_refresh(request)

    ch._google.refresh = counting_refresh  # type: ignore[method-assign]
    try:
        outcomes = await ch.send(delivery(clock, [f"tok-{n}" for n in range(200)]))
        assert {(o.outcome, o.code) for o in outcomes} == {(PushOutcome.FAILED, "oauth_network")}
        assert refreshes == 1  # 200 sends x 4 attempts, within one window of the fake clock
        await clock.advance(fcm.UNAVAILABLE_MEMORY)
        await ch.send(delivery(clock, ["tok-late"], push_id="p-2"))
        assert refreshes == 2
    finally:
        await ch.aclose()
    assert state.send_calls == 0
