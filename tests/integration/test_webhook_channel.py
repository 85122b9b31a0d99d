"""The webhook channel (the app's own sender) against the loopback receiver: real HTTP, real
signatures checked on the receiver's side, a fake clock for signature times and retries
(backoff delays of 0, so nothing sleeps); and the signature scheme's invariant (Hypothesis)."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pushreachd.channels import webhook
from pushreachd.channels.base import Backoff, PushDelivery, TargetPayload
from pushreachd.channels.emulator.webhook import WebhookReceiverState, running
from pushreachd.channels.registry import ChannelContext
from pushreachd.channels.webhook import sign, verify_signature
from pushreachd.model import AudienceType, MessageType, PushOutcome, PushSpec

from tests.fakes import FakeClock

NO_WAIT = Backoff(base=0.0, attempts=3)
SECRET = "whsec-0123456789abcdef"


@pytest.fixture
async def receiver():  # type: ignore[no-untyped-def]
    clock = FakeClock()
    state = WebhookReceiverState(now=clock.time)
    state.add_endpoint("app", SECRET)
    async with running(state) as url:
        yield state, url, clock


def open_channel(url: str, clock: FakeClock, *, secret: str = SECRET, timeout: float = 5.0) -> webhook.WebhookChannel:
    creds = webhook.validate_credentials({"url": url, "secret": secret})
    ch = webhook.create(creds, ChannelContext(clock, timeout=timeout))
    ch.backoff = NO_WAIT
    return ch


def delivery(clock: FakeClock, tokens: list[str], *, push_id: str = "p-1", ttl: float = 3600,
             message_type: MessageType = MessageType.NOTIFY, collapse_id: str = "") -> PushDelivery:
    spec = PushSpec(
        audience_type=AudienceType.TOKEN_LIST, token_list=tuple(tokens), account_list=(),
        title="Approval needed", content="Expense #42 waits for you",
        message_type=message_type, collapse_id=collapse_id,
    )
    return PushDelivery("acc-1", push_id, spec, tuple(TargetPayload(t, f"r-{t}") for t in tokens), clock.time() + ttl)


async def test_signed_body_accepted_with_the_apps_id(receiver) -> None:  # type: ignore[no-untyped-def]
    state, url, clock = receiver
    ch = open_channel(f"{url}/webhook/app", clock)
    push = delivery(clock, ["tok-a", "tok-b"], message_type=MessageType.MESSAGE, collapse_id="expense-42")
    try:
        outcomes = await ch.send(push)
    finally:
        await ch.aclose()
    assert {o.token: o.outcome for o in outcomes} == {"tok-a": PushOutcome.ACCEPTED, "tok-b": PushOutcome.ACCEPTED}
    [got] = state.delivered_to("tok-a")
    assert next(o.vendor_id for o in outcomes if o.token == "tok-a") == got.id
    assert (got.push_id, got.token, got.receipt) == ("p-1", "tok-a", "r-tok-a")
    assert got.message == {"title": "Approval needed", "content": "Expense #42 waits for you",
                           "message_type": "message", "collapse_id": "expense-42"}
    assert got.expire_time == int(push.expires_at)
    assert got.payload == {"pushreach_push_id": "p-1", "pushreach_receipt": "r-tok-a"}
    assert got.user_agent == webhook.USER_AGENT


async def test_wrong_secret_is_refused_by_the_app(receiver) -> None:  # type: ignore[no-untyped-def]
    state, url, clock = receiver
    ch = open_channel(f"{url}/webhook/app", clock, secret="another-secret-of-16+")
    missing = open_channel(f"{url}/webhook/nobody", clock)
    try:
        [wrong] = await ch.send(delivery(clock, ["tok-a"]))
        [unknown] = await missing.send(delivery(clock, ["tok-a"]))
    finally:
        await ch.aclose()
        await missing.aclose()
    assert (wrong.outcome, wrong.code) == (PushOutcome.FAILED, "http_401")  # other 4xx: not retried
    assert (unknown.outcome, unknown.code) == (PushOutcome.FAILED, "http_404")
    assert state.refused == [("app", 401), ("nobody", 404)]
    assert state.delivered == []


async def test_gone_token_is_invalid(receiver) -> None:  # type: ignore[no-untyped-def]
    state, url, clock = receiver
    state.mark_gone("tok-gone")
    ch = open_channel(f"{url}/webhook/app", clock)
    try:
        outcomes = await ch.send(delivery(clock, ["tok-gone", "tok-ok"]))
    finally:
        await ch.aclose()
    by_token = {o.token: (o.outcome, o.code) for o in outcomes}
    assert by_token == {"tok-gone": (PushOutcome.INVALID_TOKEN, "http_410"), "tok-ok": (PushOutcome.ACCEPTED, "")}
    assert state.requests == 2  # a 410 is not retried


async def test_unavailable_then_ok_is_delivered_once(receiver) -> None:  # type: ignore[no-untyped-def]
    state, url, clock = receiver
    state.fail_next("unavailable", 2)
    ch = open_channel(f"{url}/webhook/app", clock)
    try:
        [outcome] = await ch.send(delivery(clock, ["tok-a"]))
    finally:
        await ch.aclose()
    assert outcome.outcome == PushOutcome.ACCEPTED
    assert len(state.delivered_to("tok-a")) == 1
    assert state.requests == 3


async def test_retry_after_past_expiry_is_expired(receiver) -> None:  # type: ignore[no-untyped-def]
    state, url, clock = receiver
    state.retry_after = 600
    state.fail_next("unavailable")
    ch = open_channel(f"{url}/webhook/app", clock)
    try:
        [outcome] = await ch.send(delivery(clock, ["tok-a"], ttl=60))
    finally:
        await ch.aclose()
    assert (outcome.outcome, outcome.code) == (PushOutcome.EXPIRED, "http_503")
    assert state.requests == 1


async def test_timeout_is_retried(receiver) -> None:  # type: ignore[no-untyped-def]
    state, url, clock = receiver
    state.slow_seconds = 1.0
    state.fail_next("slow")
    ch = open_channel(f"{url}/webhook/app", clock, timeout=0.2)
    try:
        [outcome] = await ch.send(delivery(clock, ["tok-a"]))
    finally:
        await ch.aclose()
    assert outcome.outcome == PushOutcome.ACCEPTED
    assert state.requests == 2
    assert len(state.delivered_to("tok-a")) == 1


async def test_expired_push_is_not_posted(receiver) -> None:  # type: ignore[no-untyped-def]
    state, url, clock = receiver
    ch = open_channel(f"{url}/webhook/app", clock)
    try:
        [outcome] = await ch.send(delivery(clock, ["tok-a"], ttl=-1))
    finally:
        await ch.aclose()
    assert outcome.outcome == PushOutcome.EXPIRED
    assert state.requests == 0


async def test_signature_header_verifies_and_tampering_fails() -> None:
    clock = FakeClock()
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(204)

    ch = webhook.WebhookChannel({"url": "https://app.test/hook", "secret": SECRET}, clock=clock,
                                http=httpx.AsyncClient(transport=httpx.MockTransport(handler)), own_http=True)
    try:
        [outcome] = await ch.send(delivery(clock, ["tok-a"]))
    finally:
        await ch.aclose()
    assert (outcome.outcome, outcome.vendor_id) == (PushOutcome.ACCEPTED, "")  # a 204 has no id
    [request] = seen
    header, body = request.headers[webhook.SIGNATURE_HEADER], request.content
    assert header.startswith(f"t={int(clock.time())},v1=")
    assert request.headers["content-type"] == "application/json"
    assert json.loads(body)["token"] == "tok-a"
    assert verify_signature(SECRET, header, body, clock.time())
    assert not verify_signature(SECRET, header, body.replace(b"tok-a", b"tok-b"), clock.time())
    assert not verify_signature("another-secret-of-16+", header, body, clock.time())
    assert not verify_signature(SECRET, header, body, clock.time() + webhook.TOLERANCE + 1)  # replayed later


# -- the signature scheme (Hypothesis) -----------------------------------------------------------

secrets_ = st.text(min_size=16, max_size=64)
bodies = st.binary(max_size=512)
times = st.integers(min_value=0, max_value=4_000_000_000)


@given(secret=secrets_, body=bodies, t=times, skew=st.integers(min_value=-300, max_value=300))
def test_verify_accepts_what_sign_produced_within_tolerance(secret: str, body: bytes, t: int, skew: int) -> None:
    assert verify_signature(secret, sign(secret, body, t), body, t + skew, tolerance=300)


@given(secret=secrets_, body=bodies, t=times, skew=st.integers(min_value=301, max_value=10**6), sign_bit=st.booleans())
def test_verify_refuses_outside_tolerance(secret: str, body: bytes, t: int, skew: int, sign_bit: bool) -> None:
    assert not verify_signature(secret, sign(secret, body, t), body, t + (skew if sign_bit else -skew), tolerance=300)


@given(secret=secrets_, other=secrets_, body=bodies, other_body=bodies, t=times)
def test_verify_refuses_another_body_or_secret(secret: str, other: str, body: bytes, other_body: bytes, t: int) -> None:
    header = sign(secret, body, t)
    assert verify_signature(other, header, other_body, t) == (other == secret and other_body == body)


@given(header=st.text(max_size=200), body=bodies)
def test_verify_never_raises_on_junk(header: str, body: bytes) -> None:
    assert verify_signature(SECRET, header, body, 1_750_000_000) in (True, False)


def test_several_v1_values_allow_a_secret_rotation() -> None:
    body, t = b'{"push_id":"p"}', 1_750_000_000
    old, new = sign("old-secret-0123456789", body, t), sign("new-secret-0123456789", body, t)
    both = f"{new},{old.split(',')[1]}"
    assert verify_signature("old-secret-0123456789", both, body, t)
    assert verify_signature("new-secret-0123456789", both, body, t)


# -- the verification snippets docs/CHANNELS.md shows app developers ------------------------------

DOCS = Path(__file__).resolve().parents[2] / "docs" / "CHANNELS.md"


def _snippet(lang: str) -> str:
    section = DOCS.read_text(encoding="utf-8").split("\n## Webhook\n", 1)[1]
    return section.split(f"```{lang}\n", 1)[1].split("```", 1)[0]


def test_python_snippet_in_docs_verifies_our_signatures() -> None:
    namespace: dict[str, object] = {}
    exec(_snippet("python"), namespace)  # noqa: S102 - our own docs
    verify = namespace["verify"]
    body, now = b'{"push_id":"p-1","token":"t"}', int(time.time())
    header = sign(SECRET, body, now)
    assert verify(SECRET, header, body)  # type: ignore[operator]
    assert not verify(SECRET, header, body + b" ")  # type: ignore[operator]
    assert not verify(SECRET, sign(SECRET, body, now - 301), body)  # type: ignore[operator]


@pytest.mark.skipif(shutil.which("node") is None, reason="node not installed")
def test_node_snippet_in_docs_verifies_our_signatures() -> None:
    body, now = '{"push_id":"p-1","token":"t","title":"caf\u00e9"}', int(time.time())
    cases = [(sign(SECRET, body, now), body, True), (sign(SECRET, body, now), body + " ", False),
             (sign(SECRET, body, now - 301), body, False), ("t=1,v1=zz", body, False)]
    script = _snippet("js") + "".join(
        f"console.log(verify({json.dumps(SECRET)}, {json.dumps(h)}, Buffer.from({json.dumps(b)}, 'utf8')));\n"
        for h, b, _ in cases
    )
    out = subprocess.run(["node", "-e", script], capture_output=True, text=True, timeout=60, check=True).stdout
    assert out.split() == [str(ok).lower() for _, _, ok in cases]
