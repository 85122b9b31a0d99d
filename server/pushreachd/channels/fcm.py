"""Firebase Cloud Messaging, HTTP v1 API: a service account's OAuth 2.0 token + messages:send.

- Credentials: the service-account JSON exactly as Firebase gives it (Project settings >
  Service accounts > Generate new private key).
- Token: google-auth signs a JWT (RS256) with the account's key and exchanges it at the
  account's `token_uri` (JWT-bearer grant) for an access token with the firebase.messaging
  scope, about an hour long. google-auth is synchronous, so the exchange runs in a thread;
  the token is cached by `vendor.TokenCache` (one exchange at a time, renewed before expiry
  on the injected clock, at once after a 401, a refusal remembered for a minute).
- Send: POST `<fcm_endpoint>/v1/projects/<project_id>/messages:send`, one message per token
  (v1 has no multicast), up to MAX_CONCURRENT_SENDS in flight per push. Success answers
  `{"name": "projects/<p>/messages/<id>"}`, kept as the vendor id.
- Errors: `error.details[]` of type FcmError carries `errorCode`: UNREGISTERED and an
  INVALID_ARGUMENT about the token -> INVALID_TOKEN; QUOTA_EXCEEDED, UNAVAILABLE, INTERNAL
  (and any 429/5xx) retried honouring Retry-After; a 401 renews the access token once;
  THIRD_PARTY_AUTH_ERROR, SENDER_ID_MISMATCH and other codes -> FAILED with the code; a
  token endpoint refusing the account -> FAILED `oauth:<error>` (e.g. `oauth:invalid_grant`).
"""

from __future__ import annotations

import asyncio
import datetime
import re
import ssl
import urllib.parse
from collections.abc import Mapping, Sequence
from typing import Any

import httpx
import requests
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from google.auth import exceptions as auth_exceptions
from google.auth.transport.requests import Request as AuthRequest
from google.oauth2 import service_account
from requests.adapters import HTTPAdapter

from ..clock import Clock
from ..config import is_loopback
from ..errors import FieldViolation, InvalidArgument
from ..model import Channel, MessageType, PushOutcome
from . import vendor
from .base import Backoff, PushDelivery, TargetPayload, TokenOutcome
from .vendor import AuthExpired, Failed, Retry, TokenCache

DEFAULT_ENDPOINT = "https://fcm.googleapis.com"
SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
channel = Channel.FCM
MAX_CONCURRENT_SENDS = 100  # one request per token: a push to many devices needs many in flight
MAX_TTL = 28 * 86400  # FCM keeps a message for an offline device at most four weeks
FCM_ERROR = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
BAD_REQUEST = "type.googleapis.com/google.rpc.BadRequest"
RETRIED = frozenset({"QUOTA_EXCEEDED", "UNAVAILABLE", "INTERNAL"})
# A token endpoint that is down is asked again after this long, not once by every waiting send:
# TokenCache serialises its callers, and a push to 10,000 devices has 10,000 of them.
UNAVAILABLE_MEMORY = 5.0

# -- credentials ---------------------------------------------------------------------------------

REQUIRED = ("type", "project_id", "client_email", "token_uri")  # and private_key, checked apart
# The other fields of Firebase's file: accepted (a file is pasted whole) and kept, unused.
STANDARD = ("private_key_id", "client_id", "auth_uri", "auth_provider_x509_cert_url", "client_x509_cert_url")
MAX_KEY_LENGTH = 16384
_PROJECT_ID = re.compile(r"[a-z0-9][a-z0-9.:-]{0,99}")  # includes domain-scoped "example.com:proj"


def validate_credentials(data: Mapping[str, Any]) -> Mapping[str, Any]:
    """The service-account JSON: `type` "service_account", `project_id`, `client_email`,
    `private_key` (an RSA key in PEM), `token_uri` (https, or http to a loopback emulator);
    Firebase's other standard fields are kept as they are, unknown ones dropped. Messages
    never quote the key."""
    if not isinstance(data, Mapping):
        raise InvalidArgument.one("credentials", "must be a JSON object")
    optional: dict[str, Any] = {name: _text for name in STANDARD}
    # The PEM has line breaks, which check_credentials refuses in a plain field: checked here.
    optional["private_key"] = _private_key
    optional["universe_domain"] = _universe_domain
    # Fields Google may add later are dropped, not refused: the file is machine-made and pasted
    # whole (universe_domain arrived in 2023), and a typo in a field we read shows as "required".
    known = {k: v for k, v in data.items() if k in REQUIRED or k in optional}
    violations: list[FieldViolation] = []
    try:
        kept = vendor.check_credentials(known, REQUIRED, optional)
    except InvalidArgument as exc:
        violations.extend(exc.violations)
        kept = {}
    if data.get("private_key") in (None, ""):
        violations.append(FieldViolation("credentials.private_key", "required"))
    named = {v.field for v in violations}
    for name, check in (("type", _type), ("project_id", _project_id), ("client_email", _email), ("token_uri", _url)):
        value = data.get(name)
        if f"credentials.{name}" not in named and isinstance(value, str):  # the string checks passed
            problem = check(value)
            if problem:
                violations.append(FieldViolation(f"credentials.{name}", problem))
    if violations:
        raise InvalidArgument(sorted(violations, key=lambda v: v.field))
    return kept


def _text(value: Any) -> str | None:
    return None if isinstance(value, str) and len(value) <= vendor.MAX_CREDENTIAL_LENGTH else "must be a string"


def _type(value: str) -> str | None:
    if value != "service_account":
        return (
            'must be "service_account": the key file of a service account '
            "(Firebase console > Project settings > Service accounts)"
        )
    return None


def _project_id(value: str) -> str | None:
    return None if _PROJECT_ID.fullmatch(value) else "must be the Firebase project id, such as my-app-1a2b3"


def _email(value: str) -> str | None:
    return None if "@" in value.strip("@") else "must be the service account's e-mail address"


def _url(value: str) -> str | None:
    try:
        parts = urllib.parse.urlsplit(value)
    except ValueError:
        parts = None
    if parts is None or not parts.hostname or parts.scheme not in ("http", "https"):
        return "must be an https URL such as https://oauth2.googleapis.com/token"
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        return "must be https (http only to a loopback address)"
    return None


def _universe_domain(value: Any) -> str | None:
    # Another universe makes google-auth self-sign tokens instead of asking token_uri; FCM lives here.
    return None if value == "googleapis.com" else 'must be "googleapis.com"'


def _private_key(value: Any) -> str | None:
    problem = "must be the service account's RSA private key in PEM (-----BEGIN PRIVATE KEY-----...)"
    if not isinstance(value, str) or len(value) > MAX_KEY_LENGTH:
        return problem
    try:
        key = load_pem_private_key(value.encode("utf-8"), password=None)
    except (ValueError, TypeError, UnicodeError, UnsupportedAlgorithm):  # never echo the library's text
        return problem
    return None if isinstance(key, rsa.RSAPrivateKey) else problem


# -- transport ------------------------------------------------------------------------------------


class TrustingAdapter(HTTPAdapter):
    """A requests adapter that verifies servers with the given SSL context."""

    def __init__(self, context: ssl.SSLContext) -> None:
        self._context = context
        super().__init__()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["ssl_context"] = self._context
        super().init_poolmanager(*args, **kwargs)


def token_session(ca_file: str) -> requests.Session:
    """The requests session google-auth's token exchange runs on: with `ca_file`, it
    verifies servers against certifi and that file (tests, private gateways)."""
    session = requests.Session()
    context = vendor.trust(ca_file)
    if isinstance(context, ssl.SSLContext):
        session.mount("https://", TrustingAdapter(context))
    return session


class TimedRequest(AuthRequest):
    """google-auth's requests transport with our timeout (google-auth's default is 120 s)."""

    def __init__(self, session: requests.Session, timeout: float) -> None:
        super().__init__(session)
        self.default_timeout = timeout

    def __call__(self, url: str, method: str = "GET", body: Any = None, headers: Any = None,
                 timeout: float | None = None, **kwargs: Any) -> Any:
        return super().__call__(url, method, body, headers, timeout=timeout or self.default_timeout, **kwargs)


# -- the channel ---------------------------------------------------------------------------------


class FcmChannel(vendor.VendorChannel):
    channel = Channel.FCM
    max_batch = 1  # FCM HTTP v1 takes one token per request
    shared_payload = False

    def __init__(
        self,
        credentials: Mapping[str, Any],
        *,
        endpoint: str = DEFAULT_ENDPOINT,
        clock: Clock,
        http: httpx.AsyncClient | None = None,
        own_http: bool | None = None,
        backoff: Backoff | None = None,
        ca_file: str = "",
        timeout: float = 30.0,
    ) -> None:
        if http is None:
            # HTTP/2 where FCM speaks it (one connection carries the many concurrent sends);
            # plain http to a loopback emulator stays HTTP/1.1.
            http = httpx.AsyncClient(
                http2=True, verify=vendor.trust(ca_file), timeout=httpx.Timeout(timeout), follow_redirects=False
            )
            own_http = True
        super().__init__(credentials, clock=clock, http=http, own_http=own_http, backoff=backoff)
        self._limit = asyncio.Semaphore(MAX_CONCURRENT_SENDS)
        self.project_id = str(self.credentials["project_id"])
        project = urllib.parse.quote(self.project_id, safe=":.")
        self.send_url = f"{endpoint.rstrip('/')}/v1/projects/{project}/messages:send"
        self.token_uri = str(self.credentials["token_uri"])
        # aud = the endpoint the assertion goes to (RFC 7523 3); google-auth would put Google's
        # own token URL there whatever token_uri says, which an emulator or proxy cannot accept.
        self._google = service_account.Credentials.from_service_account_info(
            self.credentials, scopes=[SCOPE], additional_claims={"aud": self.token_uri}
        )
        self._session = token_session(ca_file)
        self._request = TimedRequest(self._session, timeout)
        self._tokens = TokenCache(self._fetch_token, clock)
        self._unavailable: tuple[Retry, float] | None = None  # (the last transient failure, until when)

    async def aclose(self) -> None:
        await super().aclose()
        self._session.close()

    def tokens(self) -> TokenCache:
        return self._tokens

    async def _fetch_token(self) -> tuple[str, float]:
        """One JWT-bearer exchange (TokenCache runs one at a time). google-auth's refresh blocks,
        and itself retries a 429/5xx of the token endpoint a few times, so it runs in a thread."""
        now = self.clock.time()
        if self._unavailable is not None and now < self._unavailable[1]:
            raise self._unavailable[0]
        try:
            await asyncio.to_thread(self._google.refresh, self._request)
        except auth_exceptions.RefreshError as exc:
            answer = exc.args[1] if len(exc.args) > 1 and isinstance(exc.args[1], Mapping) else {}
            if not getattr(exc, "retryable", False):
                code = answer.get("error") if isinstance(answer.get("error"), str) else "refused"
                raise Failed(f"oauth:{code}", str(answer.get("error_description") or "token request refused")) from None
            retry = Retry("oauth_unavailable", str(answer.get("error", "token endpoint unavailable")))
        except auth_exceptions.TransportError as exc:
            retry = Retry("oauth_network", type(exc.__cause__ or exc).__name__)
        else:
            self._unavailable = None
            return str(self._google.token), _lifetime(self._google.expiry)
        self._unavailable = (retry, now + UNAVAILABLE_MEMORY)
        raise retry

    async def _send_batch(self, delivery: PushDelivery, batch: Sequence[TargetPayload]) -> list[TokenOutcome]:
        [target] = batch
        token = await self._tokens.get()
        response = await self.http.post(
            self.send_url, json=self.message(delivery, target), headers={"Authorization": f"Bearer {token}"}
        )
        return [self._outcome(response, target, token)]

    def message(self, delivery: PushDelivery, target: TargetPayload) -> dict[str, Any]:
        spec = delivery.spec
        data = vendor.receipt_data(delivery.push_id, target.receipt)
        android: dict[str, Any] = {"ttl": f"{vendor.ttl_seconds(delivery, self.clock.time(), MAX_TTL)}s"}
        message: dict[str, Any] = {"token": target.token, "data": data, "android": android}
        if spec.message_type == MessageType.MESSAGE:
            # A data-only message: the app's handler runs and decides what (if anything) to show.
            data["title"], data["content"] = spec.title, spec.content
            android["priority"] = "normal"
        else:
            message["notification"] = {"title": spec.title, "body": spec.content}
            android["priority"] = "high"
        if spec.collapse_id:
            android["collapse_key"] = spec.collapse_id
        return {"message": message}

    def _outcome(self, response: httpx.Response, target: TargetPayload, token: str) -> TokenOutcome:
        body = vendor.json_body(response)
        status = response.status_code
        if status == 200:
            return TokenOutcome(target.token, PushOutcome.ACCEPTED, vendor_id=str(body.get("name", "")))
        error = body.get("error") if isinstance(body.get("error"), dict) else {}
        code = error_code(error) or str(error.get("status") or "") or f"http_{status}"
        message = str(error.get("message") or response.reason_phrase)
        if code == "THIRD_PARTY_AUTH_ERROR":  # a 401 about the app's APNs/web-push credentials, not ours
            raise Failed(code, message)
        if status == 401:
            raise AuthExpired(code, token, message)
        if code in RETRIED or status == 429 or status >= 500:
            raise Retry(code, message, vendor.retry_after(response))
        if code == "UNREGISTERED" or (code == "INVALID_ARGUMENT" and names_token(error)):
            return TokenOutcome(target.token, PushOutcome.INVALID_TOKEN, code, message)
        raise Failed(code, message)


def error_code(error: Mapping[str, Any]) -> str:
    """The FcmError `errorCode` of a Google API error, or ""."""
    for detail in _details(error):
        if detail.get("@type") == FCM_ERROR and isinstance(detail.get("errorCode"), str):
            return str(detail["errorCode"])
    return ""


def names_token(error: Mapping[str, Any]) -> bool:
    """Whether an INVALID_ARGUMENT is about the registration token (a malformed one is only
    told in the message text; a field violation may name `message.token`)."""
    for detail in _details(error):
        if detail.get("@type") == BAD_REQUEST:
            for violation in detail.get("fieldViolations") or ():
                if isinstance(violation, dict) and violation.get("field") == "message.token":
                    return True
    return "registration token" in str(error.get("message", "")).lower()


def _details(error: Mapping[str, Any]) -> list[dict[str, Any]]:
    details = error.get("details")
    return [d for d in details if isinstance(d, dict)] if isinstance(details, list) else []


def _lifetime(expiry: datetime.datetime | None) -> float:
    """Seconds left of an access token, from google-auth's expiry (naive UTC)."""
    if expiry is None:
        return 3600.0
    if expiry.tzinfo is None:
        expiry = expiry.replace(tzinfo=datetime.timezone.utc)
    return max(1.0, (expiry - datetime.datetime.now(datetime.timezone.utc)).total_seconds())


def create(credentials: Mapping[str, Any], context: Any) -> FcmChannel:
    """The channel for one app (registry's ChannelKind): `fcm_endpoint` from the context's
    settings, its CA file (trusted for FCM and for the token endpoint), timeout and clock."""
    return FcmChannel(
        credentials,
        endpoint=vendor.endpoint(context, "fcm_endpoint", DEFAULT_ENDPOINT),
        clock=context.clock,
        ca_file=getattr(context, "ca_file", ""),
        timeout=float(getattr(context, "timeout", 0) or 30.0),
    )
