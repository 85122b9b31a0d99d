"""Apple Push Notification service (APNs), HTTP/2 provider API with token (.p8 key) auth.

- Endpoints: `apns_endpoint` (production, https://api.push.apple.com) and
  `apns_sandbox_endpoint` (https://api.sandbox.push.apple.com); a push whose
  `environment` is DEV goes to the sandbox. One HTTP/2 client per endpoint, so the
  requests of a push share a connection or two as concurrent streams.
- Provider token: a JWT signed ES256 with the app's .p8 key (`kid` key id, `iss` team id,
  `iat`). One per key, reused by every request and renewed after 40 minutes (Apple refuses
  one older than an hour and answers 429 TooManyProviderTokenUpdates to a provider that
  mints them too often); a 403 ExpiredProviderToken renews it at once and retries that
  request once.
- Send: `POST /3/device/<token>` per target, all targets of a delivery concurrently (at most
  MAX_STREAMS requests in flight per channel). Headers `apns-topic`, `apns-push-type`
  (alert for NOTIFY, background for MESSAGE), `apns-priority` (10 / 5), `apns-expiration`
  (the push's expiry) and `apns-collapse-id`. The payload's top-level `pushreach` key
  carries the push id and the target's receipt.
- Answers: 200 ACCEPTED with the `apns-id`; 410 Unregistered, 400 BadDeviceToken and
  DeviceTokenNotForTopic INVALID_TOKEN; 429 and 5xx retried with backoff on the injected
  clock, never past the push's expiry; network errors (a dropped connection, GOAWAY) retried
  on a fresh connection; anything else FAILED with Apple's `reason`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import ssl
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from ..clock import Clock
from ..errors import FieldViolation, InvalidArgument
from ..model import Channel, Environment, MessageType, PushOutcome, PushSpec
from . import vendor
from .base import Backoff, PushDelivery, TargetPayload, TokenOutcome

log = logging.getLogger(__name__)

channel = Channel.APNS
DEFAULT_ENDPOINT = "https://api.push.apple.com"
DEFAULT_SANDBOX_ENDPOINT = "https://api.sandbox.push.apple.com"

MAX_PAYLOAD_BYTES = 4096  # Apple's limit for every push type pushreach sends (VoIP's 5 KB is not one)
# Requests in flight per channel. Apple allows ~1,000 streams a connection, but httpcore caps
# one connection at 100 and queues the rest inside its pool, where each waiting request costs
# a scan of the queue: beyond 100 only costs CPU (bench/apns.py).
MAX_STREAMS = 100
TOKEN_REFRESH_AFTER = 40 * 60.0  # Apple: refresh between 20 and 60 minutes
REFUSAL_MEMORY = 60.0  # a provider token Apple called invalid is not sent again for this long
HTTP_TIMEOUT = httpx.Timeout(30.0, connect=10.0)

# Apple's reasons that say the device token will never work for this app.
INVALID_TOKEN_REASONS = frozenset({"Unregistered", "BadDeviceToken", "DeviceTokenNotForTopic"})

_KEY_OR_TEAM_ID = re.compile(r"[A-Z0-9]{10}")
# A bundle id, optionally with the suffix of another push type (.voip, .complication...).
_TOPIC = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*")
MAX_TOPIC = 255
MAX_KEY_PEM = 4096
PRIVATE_KEY_PROBLEM = "must be the .p8 key (PEM) of an APNs auth key: a P-256 EC private key"


# -- credentials ---------------------------------------------------------------------------------


def validate_credentials(data: Mapping[str, Any]) -> Mapping[str, Any]:
    """`{"key_id", "team_id", "topic", "private_key"}`: the key's id and the team id from
    the Apple developer account, the app's bundle id, and the .p8 file's text (PEM)."""
    if not isinstance(data, Mapping):
        raise InvalidArgument.one("credentials", "must be a JSON object")
    violations: list[FieldViolation] = []
    kept: dict[str, Any] = {}
    # private_key is PEM (newlines), which check_credentials' plain-string check refuses:
    # it goes through as an optional field with its own check, and is required here.
    try:
        kept = vendor.check_credentials(data, ("key_id", "team_id", "topic"), {"private_key": _private_key_problem})
    except InvalidArgument as exc:
        violations.extend(exc.violations)
    if data.get("private_key") in (None, ""):
        violations.append(FieldViolation("credentials.private_key", "required"))
    for name in ("key_id", "team_id"):
        if name in kept and _KEY_OR_TEAM_ID.fullmatch(kept[name]) is None:
            violations.append(FieldViolation(f"credentials.{name}", "must be 10 upper-case letters and digits"))
    if "topic" in kept and (len(kept["topic"]) > MAX_TOPIC or _TOPIC.fullmatch(kept["topic"]) is None):
        violations.append(
            FieldViolation("credentials.topic", "must be the app's bundle id, such as com.example.app")
        )
    if violations:
        raise InvalidArgument(sorted(violations, key=lambda v: v.field))
    return kept


def _private_key_problem(value: Any) -> str | None:
    """None when `value` is the PEM text of a P-256 EC private key. Never echoes the value."""
    if not isinstance(value, str) or len(value) > MAX_KEY_PEM:
        return PRIVATE_KEY_PROBLEM
    try:
        key = load_pem_private_key(value.strip().encode(), password=None)
    except (ValueError, TypeError):  # not PEM, encrypted, or an unsupported key
        return PRIVATE_KEY_PROBLEM
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        return PRIVATE_KEY_PROBLEM
    return None


# -- payload -------------------------------------------------------------------------------------


def payload(spec: PushSpec, push_id: str, receipt: str) -> bytes:
    """The JSON body one device gets. NOTIFY shows an alert; MESSAGE wakes the app silently
    (`content-available`). `pushreach` is ours: the app hands `receipt` back on arrival/click."""
    aps: dict[str, Any]
    if spec.message_type == MessageType.MESSAGE:
        aps = {"content-available": 1}
    else:
        alert = {"title": spec.title, "body": spec.content} if spec.title else {"body": spec.content}
        aps = {"alert": alert, "sound": "default"}
    body = {"aps": aps, "pushreach": {"push_id": push_id, "receipt": receipt}}
    # Not ASCII-escaped: a CJK character is 3 bytes of UTF-8 but 6 as \uXXXX, and 4 KB is tight.
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()


# -- the provider token --------------------------------------------------------------------------


class ProviderToken:
    """One APNs provider token (JWT) per key, minted on first use and every REFRESH_AFTER
    seconds of the injected clock, or at once when Apple calls the current one expired."""

    def __init__(self, team_id: str, key_id: str, private_key_pem: str, clock: Clock,
                 refresh_after: float = TOKEN_REFRESH_AFTER) -> None:
        self.team_id = team_id
        self.key_id = key_id
        self._key: Any = load_pem_private_key(private_key_pem.strip().encode(), password=None)  # checked: P-256
        self._clock = clock
        self._refresh_after = refresh_after
        self._token = ""
        self._issued_at = 0.0
        self.minted = 0  # tokens made (tests, metrics)

    def get(self) -> str:
        if not self._token or self._clock.time() - self._issued_at >= self._refresh_after:
            self._mint()
        return self._token

    def renew(self, stale: str) -> str:
        """A new token unless another request already replaced `stale`: concurrent 403s
        on the same token make one new token, not one each."""
        if stale == self._token:
            self._mint()
        return self._token

    def _mint(self) -> None:
        now = self._clock.time()
        claims = {"iss": self.team_id, "iat": int(now)}
        self._token = jwt.encode(claims, self._key, algorithm="ES256", headers={"kid": self.key_id})
        self._issued_at = now
        self.minted += 1


# -- the channel ---------------------------------------------------------------------------------


class _RenewToken(Exception):
    """Apple called the provider token expired: make a new one and send again, once."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _Retry(Exception):
    """Apple is busy or the connection broke: try again after a backoff delay."""

    def __init__(self, code: str, message: str = "", retry_after: float | None = None) -> None:
        super().__init__(code)
        self.code = code
        self.message = message
        self.retry_after = retry_after


class ApnsChannel:
    """APNs bound to one app's credentials (key, team, topic)."""

    channel = Channel.APNS
    max_batch = 1000  # tokens per send(); each is its own request, sent concurrently
    per_token_receipts = True

    def __init__(
        self,
        credentials: Mapping[str, Any],
        *,
        clock: Clock,
        endpoint: str = DEFAULT_ENDPOINT,
        sandbox_endpoint: str = DEFAULT_SANDBOX_ENDPOINT,
        verify: ssl.SSLContext | bool = True,
        timeout: float = 0.0,
        backoff: Backoff | None = None,
        max_streams: int = MAX_STREAMS,
    ) -> None:
        self.topic = str(credentials["topic"])
        self.clock = clock
        self.backoff = backoff or Backoff()
        self.provider_token = ProviderToken(
            str(credentials["team_id"]), str(credentials["key_id"]), str(credentials["private_key"]), clock
        )
        self._endpoints = {Environment.PRODUCT: endpoint.rstrip("/"), Environment.DEV: sandbox_endpoint.rstrip("/")}
        self._verify = verify
        self._timeout = httpx.Timeout(timeout, connect=min(timeout, 10.0)) if timeout > 0 else HTTP_TIMEOUT
        self._clients: dict[str, httpx.AsyncClient] = {}
        self._streams = asyncio.Semaphore(max_streams)
        self._refused: tuple[str, float] | None = None  # (provider token Apple called invalid, until)
        self.requests = 0  # requests sent to Apple (tests, bench)

    async def aclose(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            await client.aclose()

    def _client(self, base_url: str) -> httpx.AsyncClient:
        client = self._clients.get(base_url)
        if client is None:
            client = httpx.AsyncClient(
                http1=False,  # APNs speaks HTTP/2 only; never fall back to one request per connection
                http2=True,
                verify=self._verify,
                timeout=self._timeout,
                follow_redirects=False,
                # Keep the connection between pushes: Apple prefers long-lived connections.
                limits=httpx.Limits(max_connections=8, max_keepalive_connections=4, keepalive_expiry=300.0),
            )
            self._clients[base_url] = client
        return client

    async def send(self, delivery: PushDelivery) -> list[TokenOutcome]:
        if not delivery.targets:
            return []
        if self.channel in vendor.options(delivery).disabled_channels:
            return vendor.all_outcomes(
                delivery.targets, PushOutcome.NO_CHANNEL, "channel_rules", "channel disabled for this push"
            )
        base_url = self._endpoints.get(delivery.spec.environment, self._endpoints[Environment.PRODUCT])
        client = self._client(base_url)
        headers = self._headers(delivery)
        sends = (self._send_one(client, base_url, headers, delivery, t) for t in delivery.targets)
        return list(await asyncio.gather(*sends))

    def _headers(self, delivery: PushDelivery) -> dict[str, str]:
        background = delivery.spec.message_type == MessageType.MESSAGE
        headers = {
            "apns-topic": self.topic,
            "apns-push-type": "background" if background else "alert",
            "apns-priority": "5" if background else "10",  # Apple refuses background pushes at 10
            "apns-expiration": str(max(1, int(delivery.expires_at))),
        }
        if delivery.spec.collapse_id:
            headers["apns-collapse-id"] = delivery.spec.collapse_id
        return headers

    async def _send_one(
        self, client: httpx.AsyncClient, base_url: str, headers: dict[str, str], delivery: PushDelivery,
        target: TargetPayload,
    ) -> TokenOutcome:
        token = target.token
        body = payload(delivery.spec, delivery.push_id, target.receipt)
        if len(body) > MAX_PAYLOAD_BYTES:
            return TokenOutcome(token, PushOutcome.FAILED, "PayloadTooLarge",
                                f"payload is {len(body)} bytes, APNs takes at most {MAX_PAYLOAD_BYTES}")
        url = f"{base_url}/3/device/{quote(token, safe='')}"  # a token is hex; never a path
        delays = iter(self.backoff.delays())
        renewed = False
        while True:
            if self.clock.time() >= delivery.expires_at:
                return TokenOutcome(token, PushOutcome.EXPIRED, "expired", "the push expired before APNs took it")
            bearer = self.provider_token.get()
            refused = self._refused
            if refused is not None and refused[0] == bearer:
                if self.clock.time() < refused[1]:
                    return TokenOutcome(token, PushOutcome.FAILED, "InvalidProviderToken",
                                        "APNs refused this app's provider token (key id, team id or key wrong)")
                bearer = self.provider_token.renew(bearer)  # try a fresh one now and then
            try:
                async with self._streams:
                    self.requests += 1
                    response = await client.post(
                        url, content=body, headers={**headers, "authorization": f"bearer {bearer}"}
                    )
                return self._outcome(response, token, bearer)
            except _Retry as exc:
                retry = exc
            except httpx.TransportError as exc:
                # A dropped connection or GOAWAY: httpx opens a new connection for the retry, so
                # one broken connection never fails every later send (aioapns#63).
                retry = _Retry("network", type(exc).__name__)
            except _RenewToken as exc:
                if renewed:  # a fresh token called expired: the clocks disagree or the key is at fault
                    return TokenOutcome(token, PushOutcome.FAILED, exc.reason, "APNs refused a fresh provider token")
                renewed = True
                self.provider_token.renew(bearer)
                continue
            delay = next(delays, None)
            if delay is None:
                message = f"still failing after retries: {retry.message}"
                return TokenOutcome(token, PushOutcome.FAILED, retry.code, message)
            if retry.retry_after is not None:
                delay = max(delay, retry.retry_after)
            if self.clock.time() + delay >= delivery.expires_at:
                return TokenOutcome(token, PushOutcome.EXPIRED, retry.code, "the push would expire before a retry")
            log.debug("apns: %s, retrying in %.1fs", retry.code, delay)
            await self.clock.sleep(delay)

    def _outcome(self, response: httpx.Response, token: str, bearer: str) -> TokenOutcome:
        status = response.status_code
        if status == 200:
            return TokenOutcome(token, PushOutcome.ACCEPTED, vendor_id=response.headers.get("apns-id", ""))
        body = vendor.json_body(response)
        reason = str(body.get("reason") or f"http_{status}")
        if status == 429 or status >= 500:
            raise _Retry(reason, f"HTTP {status}", vendor.retry_after(response))
        if status == 403 and reason == "ExpiredProviderToken":
            raise _RenewToken(reason)
        if status == 403 and reason == "InvalidProviderToken":
            # Every request with this token would be refused alike: stop sending it for a while.
            self._refused = (bearer, self.clock.time() + REFUSAL_MEMORY)
            log.warning("apns: provider token refused (InvalidProviderToken) for key %s team %s",
                        self.provider_token.key_id, self.provider_token.team_id)
        if reason in INVALID_TOKEN_REASONS and status in (400, 410):
            message = f"unregistered since {body['timestamp']}" if status == 410 and "timestamp" in body else ""
            return TokenOutcome(token, PushOutcome.INVALID_TOKEN, reason, message, response.headers.get("apns-id", ""))
        return TokenOutcome(token, PushOutcome.FAILED, reason, f"HTTP {status}", response.headers.get("apns-id", ""))


def create(credentials: Mapping[str, Any], context: Any) -> ApnsChannel:
    """The channel for one app (registry's ChannelKind): endpoints from the context's
    settings (apns_endpoint, apns_sandbox_endpoint), its CA file, timeout and clock."""
    return ApnsChannel(
        credentials,
        clock=context.clock,
        endpoint=vendor.endpoint(context, "apns_endpoint", DEFAULT_ENDPOINT),
        sandbox_endpoint=vendor.endpoint(context, "apns_sandbox_endpoint", DEFAULT_SANDBOX_ENDPOINT),
        verify=vendor.trust(getattr(context, "ca_file", "")),
        timeout=float(getattr(context, "timeout", 0) or 0),
    )
