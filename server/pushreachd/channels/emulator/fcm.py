"""FCM HTTP v1 emulator: the OAuth 2.0 token endpoint and messages:send, on loopback.

- `POST /fcm/token`: the JWT-bearer grant (RFC 7523) as Google's token endpoint takes it:
  the assertion must be signed RS256 by a registered service account's key, with `iss` =
  its client_email, `aud` = its token_uri (or this endpoint's URL), a scope including
  firebase.messaging, at most an hour long. Answers `{"access_token", "expires_in",
  "token_type"}`, or 400 `{"error": "invalid_grant", ...}` (unknown account, bad signature,
  wrong audience, expired assertion) as Google does.
- `POST /v1/projects/{project}/messages:send`: the bearer token must be one this emulator
  issued and still live (else 401 UNAUTHENTICATED) and for this project (else 403
  SENDER_ID_MISMATCH); one message to one well-formed token (else 400 INVALID_ARGUMENT,
  the token's case told in the message text, as FCM does); a token marked unregistered gets
  404 UNREGISTERED. A delivered message is recorded and answered
  `{"name": "projects/<p>/messages/<id>"}`.

Faults: unregistered tokens, tokens of another sender (403 SENDER_ID_MISMATCH), the next N
sends answered 429 QUOTA_EXCEEDED (with Retry-After), 503 UNAVAILABLE or 500 INTERNAL, a
slow answer, every issued access token expired now. Programmed from tests through
`FcmEmulatorState`, from the command line through `add_arguments` flags, at run time through
`POST /_emulator/fcm/faults`; `GET /_emulator/fcm/delivered` lists what devices got. The
paths do not collide with the Android vendors' (emulator/android.py), so both mount on one
aiohttp application.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import re
import secrets
import ssl
import time
from collections import deque
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import jwt
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from . import serving

TOKEN_PATH = "/fcm/token"
SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
FCM_ERROR = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
BAD_REQUEST = "type.googleapis.com/google.rpc.BadRequest"
FAULTS = ("quota", "unavailable", "internal", "slow")
MAX_TTL = 28 * 86400
MAX_DATA = 4096  # FCM's limit for a message's data and notification, keys included
_TOKEN = re.compile(r"[A-Za-z0-9_:.\-]{1,4096}")  # what real registration tokens are made of
_TTL = re.compile(r"(\d{1,9})(\.\d{1,9})?s")
_RESERVED_DATA = ("from", "notification", "message_type")


@dataclass(frozen=True, slots=True)
class FcmDelivered:
    """One message a device would have received."""

    project: str
    token: str
    notification: dict[str, str]  # {} for a data-only message
    data: dict[str, str]
    android: dict[str, Any]
    name: str  # the message name FCM answered


@dataclass(frozen=True, slots=True)
class _Account:
    email: str
    project_id: str
    token_uri: str
    public_key: rsa.RSAPublicKey


@dataclass(slots=True)
class _Issued:
    email: str
    project_id: str
    expires_at: float


@dataclass
class FcmEmulatorState:
    """Everything the FCM emulator knows; tests read and program it directly."""

    accounts: dict[str, _Account] = field(default_factory=dict)  # by client_email
    unregistered: set[str] = field(default_factory=set)
    foreign: set[str] = field(default_factory=set)  # tokens of another sender
    faults: deque[str] = field(default_factory=deque)
    retry_after: int = 7  # seconds, in the Retry-After of a QUOTA_EXCEEDED answer
    slow_seconds: float = 5.0  # how long a "slow" fault holds its answer
    access_token_lifetime: int = 3600
    delivered: list[FcmDelivered] = field(default_factory=list)
    token_requests: int = 0  # every token request, refused ones too
    tokens_issued: int = 0
    send_calls: int = 0
    _issued: dict[str, _Issued] = field(default_factory=dict)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    # -- programming -------------------------------------------------------------------------

    def add_account(self, info: Mapping[str, Any]) -> None:
        """Register a service account (its JSON, as Firebase gives it): the emulator checks
        assertions with the public half of its `private_key`."""
        key = serialization.load_pem_private_key(str(info["private_key"]).encode(), password=None)
        if not isinstance(key, rsa.RSAPrivateKey):
            raise ValueError("private_key: not an RSA key")
        email = str(info["client_email"])
        token_uri = str(info.get("token_uri", ""))
        self.accounts[email] = _Account(email, str(info["project_id"]), token_uri, key.public_key())

    def mark_unregistered(self, *tokens: str) -> None:
        self.unregistered.update(tokens)

    def mark_foreign(self, *tokens: str) -> None:
        """Tokens registered by another project's sender: 403 SENDER_ID_MISMATCH."""
        self.foreign.update(tokens)

    def fail_next(self, fault: str, times: int = 1) -> None:
        if fault not in FAULTS:
            raise ValueError(f"fault must be one of {', '.join(FAULTS)}")
        self.faults.extend([fault] * times)

    def expire_access_tokens(self) -> None:
        for issued in self._issued.values():
            issued.expires_at = 0.0

    def delivered_to(self, token: str) -> list[FcmDelivered]:
        return [d for d in self.delivered if d.token == token]

    # -- used by the routes -------------------------------------------------------------------

    def issue(self, account: _Account) -> str:
        self.tokens_issued += 1
        token = f"ya29.emu-{secrets.token_urlsafe(32)}"
        self._issued[token] = _Issued(account.email, account.project_id, time.time() + self.access_token_lifetime)
        return token

    def auth(self, token: str) -> tuple[str, _Issued | None]:
        """('ok', issued) for a live token, ('expired', issued) or ('unknown', None)."""
        issued = self._issued.get(token)
        if issued is None:
            return "unknown", None
        return ("expired" if issued.expires_at <= time.time() else "ok"), issued

    def next_fault(self) -> str | None:
        return self.faults.popleft() if self.faults else None

    def next_name(self, project: str) -> str:
        return f"projects/{project}/messages/0:{int(time.time() * 1000)}{next(self._ids):08d}%emu"


def new_service_account(project_id: str, token_uri: str, *, client_email: str = "") -> dict[str, str]:
    """A fresh service-account JSON (a new 2048-bit RSA key) in Firebase's format, for tests
    and trials: register it with `FcmEmulatorState.add_account` and give it to pushreach."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    email = client_email or f"firebase-adminsdk-emu@{project_id}.iam.gserviceaccount.com"
    return {
        "type": "service_account",
        "project_id": project_id,
        "private_key_id": secrets.token_hex(20),
        "private_key": pem.decode(),
        "client_email": email,
        "client_id": str(secrets.randbelow(10**21)),
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": token_uri,
        "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
        "client_x509_cert_url": f"https://www.googleapis.com/robot/v1/metadata/x509/{email}",
        "universe_domain": "googleapis.com",
    }


# -- routes ---------------------------------------------------------------------------------------


def add_routes(app: web.Application, state: FcmEmulatorState) -> None:
    """Mount the token endpoint, messages:send and /_emulator/fcm/... on `app`."""

    async def token(request: web.Request) -> web.Response:
        state.token_requests += 1
        form = await request.post()
        if form.get("grant_type") != JWT_BEARER:
            return _oauth_error("unsupported_grant_type", "Invalid grant_type")
        assertion = str(form.get("assertion", ""))
        try:
            unverified = jwt.decode(assertion, options={"verify_signature": False})
            account = state.accounts.get(str(unverified.get("iss", "")))
            if account is None:
                return _oauth_error("invalid_grant", "Invalid grant: account not found")
            audiences = [a for a in (account.token_uri, str(request.url)) if a]
            claims = jwt.decode(
                assertion, account.public_key, algorithms=["RS256"], audience=audiences, leeway=60,
                options={"require": ["iss", "aud", "iat", "exp"]},
            )
        except jwt.InvalidSignatureError:
            return _oauth_error("invalid_grant", "Invalid JWT Signature.")
        except jwt.InvalidTokenError as exc:
            return _oauth_error("invalid_grant", f"Invalid JWT: {type(exc).__name__}")
        if int(claims["exp"]) - int(claims["iat"]) > 3600:
            return _oauth_error("invalid_grant", "Invalid JWT: Token must be a short-lived token (60 minutes)")
        if SCOPE not in str(claims.get("scope", "")).split():
            return _oauth_error("invalid_scope", f"the assertion's scope must include {SCOPE}")
        return web.json_response(
            {"access_token": state.issue(account), "expires_in": state.access_token_lifetime, "token_type": "Bearer"}
        )

    async def send(request: web.Request) -> web.Response:
        project = request.match_info["project"]
        state.send_calls += 1
        auth = request.headers.get("Authorization", "")
        status, issued = state.auth(auth[7:].strip()) if auth[:7].lower() == "bearer " else ("unknown", None)
        if status != "ok" or issued is None:
            return _error(401, "UNAUTHENTICATED", "Request had invalid authentication credentials. Expected OAuth 2 "
                          "access token, login cookie or other valid authentication credential.")
        if issued.project_id != project:
            return _error(403, "PERMISSION_DENIED", "SenderId mismatch", "SENDER_ID_MISMATCH")
        fault = state.next_fault()
        if fault == "quota":
            return _error(429, "RESOURCE_EXHAUSTED", "Quota exceeded for sending messages", "QUOTA_EXCEEDED",
                          headers={"Retry-After": str(state.retry_after)})
        if fault == "unavailable":
            return _error(503, "UNAVAILABLE", "The service is currently unavailable.", "UNAVAILABLE")
        if fault == "internal":
            return _error(500, "INTERNAL", "Internal error encountered.", "INTERNAL")
        if fault == "slow":
            await asyncio.sleep(state.slow_seconds)
            if request.transport is None or request.transport.is_closing():
                return web.Response(status=499)  # the sender gave up: nothing reached the device
        try:
            message = (await request.json())["message"]
            if not isinstance(message, dict):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            return _error(400, "INVALID_ARGUMENT", "Invalid JSON payload received.",
                          violations=[("message", "required")])
        problem = _check(message)
        if problem is not None:
            return problem
        target = message["token"]
        if target in state.unregistered:
            return _error(404, "NOT_FOUND", "Requested entity was not found.", "UNREGISTERED")
        if target in state.foreign:
            return _error(403, "PERMISSION_DENIED", "SenderId mismatch", "SENDER_ID_MISMATCH")
        name = state.next_name(project)
        state.delivered.append(
            FcmDelivered(project, target, dict(message.get("notification") or {}), dict(message.get("data") or {}),
                         dict(message.get("android") or {}), name)
        )
        return web.json_response({"name": name})

    async def delivered(request: web.Request) -> web.Response:
        token_ = request.query.get("token", "")
        items = [
            {"project": d.project, "token": d.token, "notification": d.notification, "data": d.data,
             "android": d.android, "name": d.name}
            for d in state.delivered
            if not token_ or d.token == token_
        ]
        return web.json_response({"delivered": items, "send_calls": state.send_calls})

    async def faults(request: web.Request) -> web.Response:
        try:
            body = await request.json()
            fault, times = body["fault"], int(body.get("times", 1))
            if not 1 <= times <= 10_000:
                raise ValueError("times must be 1..10000")
            if fault == "unregistered":
                state.mark_unregistered(*[str(t) for t in body["tokens"]])
            elif fault == "foreign":
                state.mark_foreign(*[str(t) for t in body["tokens"]])
            elif fault == "expire_access_tokens":
                state.expire_access_tokens()
            else:
                state.fail_next(fault, times)
        except (ValueError, KeyError, TypeError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response({"ok": True})

    app.router.add_post(TOKEN_PATH, token)
    app.router.add_post("/v1/projects/{project}/messages:send", send)
    app.router.add_get("/_emulator/fcm/delivered", delivered)
    app.router.add_post("/_emulator/fcm/faults", faults)


def _check(message: dict[str, Any]) -> web.Response | None:
    """FCM's own refusals of a message addressed to one token; None when it is acceptable."""
    target = message.get("token")
    if not isinstance(target, str) or _TOKEN.fullmatch(target) is None:
        return _error(400, "INVALID_ARGUMENT", "The registration token is not a valid FCM registration token",
                      "INVALID_ARGUMENT")
    data = message.get("data", {})
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        return _error(400, "INVALID_ARGUMENT", "Invalid value at 'message.data' (TYPE_STRING)",
                      violations=[("message.data", "values must be strings")])
    reserved = [k for k in data if k in _RESERVED_DATA or k.startswith(("google", "gcm"))]
    if reserved:
        return _error(400, "INVALID_ARGUMENT", f"Invalid data payload key: {reserved[0]}", "INVALID_ARGUMENT")
    notification = message.get("notification", {})
    if not isinstance(notification, dict):
        return _error(400, "INVALID_ARGUMENT", "Invalid value at 'message.notification'",
                      violations=[("message.notification", "must be an object")])
    if len(json.dumps({"data": data, "notification": notification}).encode()) > MAX_DATA:
        return _error(400, "INVALID_ARGUMENT", "Message is too big", "INVALID_ARGUMENT")
    android = message.get("android", {})
    if not isinstance(android, dict):
        return _error(400, "INVALID_ARGUMENT", "Invalid value at 'message.android'",
                      violations=[("message.android", "must be an object")])
    ttl = android.get("ttl")
    match = _TTL.fullmatch(ttl) if isinstance(ttl, str) else None
    if ttl is not None and (match is None or int(match.group(1)) > MAX_TTL):
        return _error(400, "INVALID_ARGUMENT", f"Invalid value at 'message.android.ttl' ({ttl!r})",
                      violations=[("message.android.ttl", "a duration such as 3600s, at most 4 weeks")])
    if android.get("priority", "normal") not in ("normal", "high", "NORMAL", "HIGH"):
        return _error(400, "INVALID_ARGUMENT", "Invalid value at 'message.android.priority'",
                      violations=[("message.android.priority", "must be normal or high")])
    return None


def _error(
    status: int, grpc_status: str, message: str, fcm_code: str = "", *,
    violations: list[tuple[str, str]] | None = None, headers: dict[str, str] | None = None,
) -> web.Response:
    """A Google API error body: {"error": {"code", "message", "status", "details"}}."""
    details: list[dict[str, Any]] = []
    if fcm_code:
        details.append({"@type": FCM_ERROR, "errorCode": fcm_code})
    if violations:
        found = [{"field": f, "description": d} for f, d in violations]
        details.append({"@type": BAD_REQUEST, "fieldViolations": found})
    error: dict[str, Any] = {"code": status, "message": message, "status": grpc_status}
    if details:
        error["details"] = details
    return web.json_response({"error": error}, status=status, headers=headers)


def _oauth_error(error: str, description: str) -> web.Response:
    return web.json_response({"error": error, "error_description": description}, status=400)


# -- serving (tests) and the command line -------------------------------------------------------


@contextlib.asynccontextmanager
async def running(
    state: FcmEmulatorState, host: str = "127.0.0.1", port: int = 0, ssl_context: ssl.SSLContext | None = None
) -> AsyncIterator[str]:
    """Serve the FCM emulator alone; yields its base URL (the token endpoint is base + TOKEN_PATH)."""
    app = web.Application(client_max_size=1024 * 1024)
    add_routes(app, state)
    async with serving(app, host, port, ssl_context) as url:
        yield url


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The FCM emulator's flags for `pushreach push-emulator` (no --listen: the host command has it)."""
    parser.add_argument(
        "--fcm-accounts", metavar="PATH", default="",
        help="JSON file: a service-account JSON, or a list of them, that the FCM token endpoint accepts "
        "(token_uri pointing at this emulator's /fcm/token)",
    )
    parser.add_argument(
        "--fcm-unregistered", action="append", default=[], metavar="TOKEN", help="a token FCM answers UNREGISTERED"
    )
    parser.add_argument("--fcm-quota", type=int, default=0, metavar="N", help="answer the next N sends QUOTA_EXCEEDED")
    parser.add_argument(
        "--fcm-unavailable", type=int, default=0, metavar="N", help="answer the next N sends UNAVAILABLE"
    )


def load_accounts(state: FcmEmulatorState, doc: Any) -> None:
    """Register the service accounts of a parsed --fcm-accounts file."""
    accounts = doc if isinstance(doc, list) else [doc]
    for n, info in enumerate(accounts):
        if not isinstance(info, dict) or not {"client_email", "project_id", "private_key"} <= set(info):
            raise ValueError(
                f"--fcm-accounts: entry {n} is not a service-account JSON (client_email, project_id, private_key)"
            )
        state.add_account(info)


def configure(state: FcmEmulatorState, args: argparse.Namespace) -> None:
    """Apply the flags of `add_arguments` to `state` (raises ValueError/OSError naming the flag)."""
    if args.fcm_accounts:
        with open(args.fcm_accounts, encoding="utf-8") as f:
            load_accounts(state, json.load(f))
    state.mark_unregistered(*args.fcm_unregistered)
    for fault, times in (("quota", args.fcm_quota), ("unavailable", args.fcm_unavailable)):
        if times < 0:
            raise ValueError(f"--fcm-{fault}: must be >= 0")
        state.fail_next(fault, times)
