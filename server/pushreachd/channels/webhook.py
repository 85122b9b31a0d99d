"""The app's own push sender: one signed HTTP POST per token to a URL the app runs.

For apps whose devices pushreach cannot reach itself (their own push stack, a desktop
client, an in-house gateway). The body names the push, the token and the receipt:

    {"push_id", "token", "receipt",
     "message": {"title", "content", "message_type": "notify" | "message", "collapse_id"?},
     "expire_time": <epoch seconds>,
     "payload": {"pushreach_push_id", "pushreach_receipt"}}

`payload` is what the app should put in the device notification's data (the same keys as
FCM's), so one device-side handler reports arrival and click for every channel.

Signature (Stripe's scheme): `X-Pushreach-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of
"<t>.<body>" under the secret>`; `verify_signature` checks it in constant time within a
tolerance. Answers: 2xx -> ACCEPTED (vendor id from an `id` in a JSON answer); 410 ->
INVALID_TOKEN; 429, 5xx, timeouts and connection errors retried with backoff (Retry-After
honoured), never past the push's expiry; any other status -> FAILED `http_<status>`. A retry
after a timeout may deliver twice: the app dedupes on (push_id, token).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import urllib.parse
from collections.abc import Mapping, Sequence
from typing import Any

import httpx

from ..clock import Clock
from ..config import is_loopback
from ..errors import FieldViolation, InvalidArgument
from ..model import Channel, MessageType, PushOutcome
from . import vendor
from .base import Backoff, PushDelivery, TargetPayload, TokenOutcome
from .vendor import Failed, Retry

channel = Channel.WEBHOOK
SIGNATURE_HEADER = "X-Pushreach-Signature"
USER_AGENT = "pushreach-webhook/1"
MIN_SECRET_LENGTH = 16
TOLERANCE = 300  # seconds a signature stays valid either side of the receiver's clock
MAX_CONCURRENT_POSTS = 32  # one POST per token; the app's server, not a vendor's QPS budget


# -- credentials ---------------------------------------------------------------------------------


def validate_credentials(data: Mapping[str, Any]) -> Mapping[str, Any]:
    """`{"url", "secret"}`: where to POST (https, or http to a loopback address) and the
    shared secret that signs every body (at least 16 characters)."""
    kept = vendor.check_credentials(data, ("url", "secret"))
    problems = []
    url_problem = _check_url(kept["url"])
    if url_problem:
        problems.append(("credentials.url", url_problem))
    if len(kept["secret"]) < MIN_SECRET_LENGTH:
        problems.append(("credentials.secret", f"at least {MIN_SECRET_LENGTH} characters"))
    if problems:
        raise InvalidArgument([FieldViolation(f, d) for f, d in problems])
    return kept


def _check_url(value: str) -> str | None:
    try:
        parts = urllib.parse.urlsplit(value)
        parts.port  # raises ValueError for a bad port
    except ValueError:
        return "must be an https URL"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "must be an https URL"
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        return "must be https (http only to a loopback address)"
    if parts.username or parts.password or parts.fragment:
        return "must not carry a user, password or fragment"
    return None


# -- signatures ----------------------------------------------------------------------------------


def _digest(secret: str, timestamp: int, body: bytes) -> str:
    return hmac.new(secret.encode("utf-8"), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def sign(secret: str, body: bytes | str, timestamp: int) -> str:
    """The X-Pushreach-Signature value for `body` sent at `timestamp` (unix seconds)."""
    raw = body.encode("utf-8") if isinstance(body, str) else body
    return f"t={int(timestamp)},v1={_digest(secret, int(timestamp), raw)}"


def verify_signature(secret: str, header: str, body: bytes | str, now: float, tolerance: float = TOLERANCE) -> bool:
    """True when `header` signs exactly `body` under `secret` and its time is within
    `tolerance` seconds of `now`. Several v1= values are allowed (a secret being rotated);
    comparisons are constant-time."""
    raw = body.encode("utf-8") if isinstance(body, str) else body
    timestamp: int | None = None
    candidates: list[str] = []
    for item in header.split(","):
        key, _, value = item.strip().partition("=")
        if key == "t" and value.isascii() and value.isdigit() and timestamp is None:
            timestamp = int(value)
        elif key == "v1":
            candidates.append(value)
    if timestamp is None or not candidates or abs(now - timestamp) > tolerance:
        return False
    expected = _digest(secret, timestamp, raw).encode()
    matched = False
    for candidate in candidates:  # no early exit: the time taken does not tell which one matched
        matched |= hmac.compare_digest(expected, candidate.encode("utf-8", "replace"))
    return matched


# -- the channel ---------------------------------------------------------------------------------


class WebhookChannel(vendor.VendorChannel):
    channel = Channel.WEBHOOK
    max_batch = 1  # one POST per token: each carries its own receipt
    shared_payload = False

    def __init__(
        self,
        credentials: Mapping[str, Any],
        *,
        clock: Clock,
        http: httpx.AsyncClient | None = None,
        own_http: bool | None = None,
        backoff: Backoff | None = None,
        verify: str | bool = True,
    ) -> None:
        super().__init__(credentials, clock=clock, http=http, own_http=own_http, backoff=backoff, verify=verify)
        self._limit = asyncio.Semaphore(MAX_CONCURRENT_POSTS)
        self.url = str(self.credentials["url"])
        self._secret = str(self.credentials["secret"])

    async def _send_batch(self, delivery: PushDelivery, batch: Sequence[TargetPayload]) -> list[TokenOutcome]:
        [target] = batch
        body = json.dumps(self.body(delivery, target), separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            SIGNATURE_HEADER: sign(self._secret, body, int(self.clock.time())),
        }
        response = await self.http.post(self.url, content=body, headers=headers)
        return [_outcome(response, target)]

    @staticmethod
    def body(delivery: PushDelivery, target: TargetPayload) -> dict[str, Any]:
        spec = delivery.spec
        message: dict[str, Any] = {
            "title": spec.title,
            "content": spec.content,
            "message_type": "message" if spec.message_type == MessageType.MESSAGE else "notify",
        }
        if spec.collapse_id:
            message["collapse_id"] = spec.collapse_id
        return {
            "push_id": delivery.push_id,
            "token": target.token,
            "receipt": target.receipt,
            "message": message,
            "expire_time": int(delivery.expires_at),
            "payload": vendor.receipt_data(delivery.push_id, target.receipt),
        }


def _outcome(response: httpx.Response, target: TargetPayload) -> TokenOutcome:
    status = response.status_code
    if 200 <= status < 300:
        answer_id = vendor.json_body(response).get("id")
        vendor_id = str(answer_id) if isinstance(answer_id, (str, int)) and not isinstance(answer_id, bool) else ""
        return TokenOutcome(target.token, PushOutcome.ACCEPTED, vendor_id=vendor_id[:200])
    if status == 410:  # the app says this token is gone for good
        return TokenOutcome(target.token, PushOutcome.INVALID_TOKEN, "http_410", _reason(response))
    if status == 429 or status >= 500:
        raise Retry(f"http_{status}", _reason(response), vendor.retry_after(response))
    raise Failed(f"http_{status}", _reason(response))


def _reason(response: httpx.Response) -> str:
    """A short, printable reason: the answer's `error`/`message` if it is JSON, else the phrase."""
    body = vendor.json_body(response)
    text = body.get("error") or body.get("message") or response.reason_phrase
    return str(text)[:200]


def create(credentials: Mapping[str, Any], context: Any) -> WebhookChannel:
    """The channel for one app (registry's ChannelKind): the context's CA file, timeout and clock."""
    return WebhookChannel(credentials, clock=context.clock, http=vendor.client_for(context), own_http=True)
