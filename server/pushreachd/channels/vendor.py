"""What the five Android vendor channels (Huawei, Honor, Xiaomi, OPPO, vivo) share.

Each vendor module (hms.py, honor.py, ...) only turns a batch of targets into its vendor's
HTTP call and its answer into outcomes; this module owns the rest, once:
- the auth-token cache (one token per app's credentials, renewed before it expires and at
  once when the vendor says it has expired, fetched by one caller while the others wait);
- batching: targets that may share one payload go out together, up to the vendor's limit,
  a few calls at a time;
- retries: flow control, 5xx and network errors are retried with `Backoff` on the injected
  clock, never past the push's expiry; an expired auth token is renewed once per call;
- the per-push vendor fields (`channel_rules`, classification) and the app's defaults;
- credentials-file checks that name `credentials.<field>`.

A vendor call answers by returning outcomes or raising one of `Retry`, `AuthExpired` or
`Failed`; nothing else escapes `send()` except a bug.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import ssl
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any

import certifi
import httpx

from ..clock import Clock
from ..errors import FieldViolation, InvalidArgument
from ..model import Channel, PushOutcome, VendorOptions
from .base import Backoff, PushDelivery, TargetPayload, TokenOutcome

log = logging.getLogger(__name__)

# The same keys as FCM's data (DESIGN "Push channels"), so one device-side handler reads all.
PUSH_ID_KEY = "pushreach_push_id"
RECEIPT_KEY = "pushreach_receipt"

MAX_CONCURRENT_CALLS = 8  # vendor calls in flight per send()
HTTP_TIMEOUT = httpx.Timeout(30.0, connect=10.0)


# -- how a vendor call answers, besides returning outcomes --------------------------------------


class Retry(Exception):
    """Flow control, a 5xx, a network error: nothing was sent, try again later."""

    def __init__(self, code: str, message: str = "", retry_after: float | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.retry_after = retry_after


class AuthExpired(Exception):
    """The vendor says the auth token we sent has expired or is not valid any more."""

    def __init__(self, code: str, token: str, message: str = "") -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.token = token
        self.message = message


class Failed(Exception):
    """A permanent failure for every target of the call (wrong secret, quota exhausted...)."""

    def __init__(self, code: str, message: str = "") -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


# -- the auth-token cache ------------------------------------------------------------------------


class TokenCache:
    """One vendor auth token, fetched on first use and renewed before it expires.

    `fetch()` returns (token, lifetime in seconds) or raises Retry/Failed. Concurrent
    callers share one fetch. The token is renewed once a tenth of its life is left (at most
    an hour early), or at once after `invalidate(token)`. A refusal (Failed: wrong secret)
    is remembered for FAILURE_MEMORY seconds, so a push to many tokens asks once, not once
    per batch.
    """

    FAILURE_MEMORY = 60.0

    def __init__(self, fetch: Callable[[], Awaitable[tuple[str, float]]], clock: Clock) -> None:
        self._fetch = fetch
        self._clock = clock
        self._token = ""
        self._renew_at = 0.0
        self._lock = asyncio.Lock()
        self._refused: tuple[Failed, float] | None = None  # (the refusal, until when)
        self.fetches = 0  # how many tokens were fetched (metrics, tests)

    async def get(self) -> str:
        async with self._lock:
            now = self._clock.time()
            if self._token and now < self._renew_at:
                return self._token
            if self._refused is not None and now < self._refused[1]:
                raise self._refused[0]
            try:
                token, lifetime = await self._fetch()
            except Failed as exc:
                self._refused = (exc, now + self.FAILURE_MEMORY)
                raise
            self._refused = None
            self.fetches += 1
            self._token = token
            self._renew_at = self._clock.time() + lifetime - min(3600.0, max(lifetime * 0.1, 1.0))
            return token

    def invalidate(self, token: str) -> None:
        """Forget `token` if it is still the current one (another caller may have renewed)."""
        if token and token == self._token:
            self._token = ""


# -- credentials --------------------------------------------------------------------------------

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
MAX_CREDENTIAL_LENGTH = 4096
_UPPER_NAME = re.compile(r"[A-Z][A-Z_]{0,31}")
_CHANNEL_ID = re.compile(r"[!-~]{1,64}")


def check_credentials(
    data: Mapping[str, Any],
    required: Sequence[str],
    optional: Mapping[str, Callable[[Any], str | None]] | None = None,
) -> dict[str, Any]:
    """Check a parsed credentials file: every `required` field a non-empty string, each
    optional field passing its check, nothing unknown. Returns what is kept."""
    optional = optional or {}
    if not isinstance(data, Mapping):
        raise InvalidArgument.one("credentials", "must be a JSON object")
    violations: list[FieldViolation] = []
    kept: dict[str, Any] = {}
    for name in required:
        value = data.get(name)
        problem = _credential_string(value)
        if problem:
            violations.append(FieldViolation(f"credentials.{name}", problem))
        else:
            kept[name] = value
    for name, check in optional.items():
        if name in data and data[name] not in (None, ""):
            problem = check(data[name])
            if problem:
                violations.append(FieldViolation(f"credentials.{name}", problem))
            else:
                kept[name] = data[name]
    known = set(required) | set(optional)
    for name in sorted(set(data) - known):
        violations.append(
            FieldViolation(f"credentials.{name}", f"unknown field; expected {', '.join(sorted(known))}")
        )
    if violations:
        raise InvalidArgument(violations)
    return kept


def _credential_string(value: Any) -> str | None:
    if value is None:
        return "required"
    if not isinstance(value, str):
        return "must be a string"
    if not value.strip():
        return "required, must not be empty"
    if len(value) > MAX_CREDENTIAL_LENGTH:
        return f"at most {MAX_CREDENTIAL_LENGTH} characters"
    if _CONTROL.search(value) or value != value.strip():
        return "must not contain control characters or surrounding spaces"
    return None


def upper_name(value: Any) -> str | None:
    """A vendor category such as WORK or ACCOUNT."""
    if not isinstance(value, str) or _UPPER_NAME.fullmatch(value) is None:
        return "must be a category name in capitals, such as WORK or ACCOUNT"
    return None


def channel_id(value: Any) -> str | None:
    """A notification channel id as registered in the vendor's console."""
    if not isinstance(value, str) or _CHANNEL_ID.fullmatch(value) is None:
        return "must be 1 to 64 printable ASCII characters without spaces"
    return None


def one_of(*choices: Any) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        if isinstance(value, bool) or value not in choices:
            return f"must be one of {', '.join(json.dumps(c) for c in choices)}"
        return None

    return check


# -- payload helpers -----------------------------------------------------------------------------


def receipt_data(push_id: str, receipt: str) -> dict[str, str]:
    """The custom key/values every vendor payload carries, as FCM's data does: the push id, and
    the receipt unless there is none (a one-payload vendor's targets carry none)."""
    return {PUSH_ID_KEY: push_id, RECEIPT_KEY: receipt} if receipt else {PUSH_ID_KEY: push_id}


def options(delivery: PushDelivery) -> VendorOptions:
    return delivery.spec.vendor or VendorOptions()


def ttl_seconds(delivery: PushDelivery, now: float, cap: int) -> int:
    """Seconds the vendor should keep the message for an offline device: until the push
    expires, at least 1, at most the vendor's cap."""
    return max(1, min(cap, int(delivery.expires_at - now)))


def json_body(response: httpx.Response) -> dict[str, Any]:
    """The response's JSON object, or {} when it is not one (a gateway's HTML page...)."""
    try:
        data = response.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after", "")
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if 0 <= seconds <= 3600 else None


def chunks(items: Sequence[TargetPayload], size: int) -> Iterable[Sequence[TargetPayload]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def all_outcomes(
    targets: Iterable[TargetPayload], outcome: PushOutcome, code: str = "", message: str = "", vendor_id: str = ""
) -> list[TokenOutcome]:
    return [TokenOutcome(t.token, outcome, code, message, vendor_id) for t in targets]


def trust(ca_file: str = "") -> ssl.SSLContext | bool:
    """What every channel verifies its servers with: the public CAs (certifi), plus `ca_file`
    (PEM) beside them when given (the emulator's CA, a private gateway); True without one."""
    if not ca_file:
        return True
    context = ssl.create_default_context(cafile=certifi.where())
    context.load_verify_locations(cafile=ca_file)
    return context


def client_for(context: Any) -> httpx.AsyncClient:
    """The HTTP client a channel built by `create(credentials, context)` owns: the context's
    timeout, and its `ca_file` trusted beside the public CAs (tests, private gateways)."""
    verify = trust(getattr(context, "ca_file", ""))
    timeout = float(getattr(context, "timeout", 0) or 0)
    return httpx.AsyncClient(
        timeout=httpx.Timeout(timeout) if timeout > 0 else HTTP_TIMEOUT, verify=verify, follow_redirects=False
    )


def endpoint(context: Any, name: str, default: str) -> str:
    """The endpoint setting `name` from a ChannelContext, or the vendor's default."""
    pick = getattr(context, "endpoint", None)
    if pick is not None:
        return str(pick(name, default))
    return str(getattr(context, "endpoints", {}).get(name) or default).rstrip("/")


# -- the channel ---------------------------------------------------------------------------------


class VendorChannel:
    """A vendor channel bound to one app's credentials. Subclasses set `channel`,
    `max_batch` and `shared_payload`, and implement `_send_batch`."""

    channel: Channel
    max_batch: int
    # True when the vendor sends one payload to many tokens (Huawei, Honor, Xiaomi, vivo):
    # then only targets with the same receipt can share a call. False when each message of
    # a batch has its own payload (OPPO unicast_batch, FCM, webhook).
    shared_payload: bool = True
    # Derived from shared_payload for every subclass (below): a one-payload vendor carries
    # the push id only, so deliveries mint no receipts for it and its targets batch 1,000 a call.
    per_token_receipts: bool = not shared_payload

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "per_token_receipts" not in cls.__dict__:
            cls.per_token_receipts = not cls.shared_payload

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
        self.credentials = dict(credentials)
        self.clock = clock
        self.backoff = backoff or Backoff()
        self._own_http = http is None if own_http is None else own_http
        self.http = http or httpx.AsyncClient(timeout=HTTP_TIMEOUT, verify=verify)
        self.calls = 0  # vendor send calls made (tests, metrics)
        self._limit = asyncio.Semaphore(MAX_CONCURRENT_CALLS)

    async def aclose(self) -> None:
        if self._own_http:
            await self.http.aclose()

    async def send(self, delivery: PushDelivery) -> list[TokenOutcome]:
        if not delivery.targets:
            return []
        if self.channel in options(delivery).disabled_channels:
            return all_outcomes(
                delivery.targets, PushOutcome.NO_CHANNEL, "channel_rules", "channel disabled for this push"
            )
        groups: dict[str, list[TargetPayload]] = {}
        for target in delivery.targets:
            groups.setdefault(target.receipt if self.shared_payload else "", []).append(target)
        batches = [b for group in groups.values() for b in chunks(group, self.max_batch)]
        results = await asyncio.gather(*(self._guarded(delivery, b) for b in batches))
        return [outcome for batch in results for outcome in batch]

    async def _guarded(self, delivery: PushDelivery, batch: Sequence[TargetPayload]) -> list[TokenOutcome]:
        async with self._limit:
            return await self._with_retries(delivery, batch)

    async def _with_retries(self, delivery: PushDelivery, batch: Sequence[TargetPayload]) -> list[TokenOutcome]:
        delays = iter(self.backoff.delays())
        renewed = False
        while True:
            if self.clock.time() >= delivery.expires_at:
                return all_outcomes(batch, PushOutcome.EXPIRED, "expired", "the push expired before the vendor took it")
            try:
                self.calls += 1
                outcomes = await self._send_batch(delivery, batch)
            except AuthExpired as exc:
                self.tokens().invalidate(exc.token)
                if renewed:  # a fresh token refused as expired: the credentials are at fault
                    return all_outcomes(batch, PushOutcome.FAILED, exc.code, exc.message)
                renewed = True
                log.info("%s: auth token expired (%s), renewing", self.channel.name, exc.code)
                continue
            except Failed as exc:
                return all_outcomes(batch, PushOutcome.FAILED, exc.code, exc.message)
            except (Retry, httpx.TransportError) as exc:
                retry = exc if isinstance(exc, Retry) else Retry("network", type(exc).__name__)
                delay = next(delays, None)
                if delay is None:
                    return all_outcomes(
                        batch, PushOutcome.FAILED, retry.code, f"still failing after retries: {retry.message}"
                    )
                if retry.retry_after is not None:
                    delay = max(delay, retry.retry_after)
                if self.clock.time() + delay >= delivery.expires_at:
                    return all_outcomes(batch, PushOutcome.EXPIRED, retry.code, "the push would expire before a retry")
                log.info("%s: %s, retrying in %.1fs", self.channel.name, retry.code, delay)
                await self.clock.sleep(delay)
                continue
            return _complete(batch, outcomes)

    def tokens(self) -> TokenCache:
        """The auth-token cache; vendors without auth tokens (Xiaomi) never raise AuthExpired."""
        raise NotImplementedError

    async def _send_batch(self, delivery: PushDelivery, batch: Sequence[TargetPayload]) -> list[TokenOutcome]:
        raise NotImplementedError


def _complete(batch: Sequence[TargetPayload], outcomes: list[TokenOutcome]) -> list[TokenOutcome]:
    """Exactly one outcome per target: a vendor answer that leaves a token out is not taken
    as success for it."""
    by_token = {o.token: o for o in outcomes}
    return [
        by_token.get(t.token) or TokenOutcome(t.token, PushOutcome.FAILED, "no_result", "the vendor's answer left this token out")
        for t in batch
    ]
