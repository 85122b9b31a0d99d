"""A webhook receiver as an app would run one, on loopback: `POST /webhook/{name}`.

Each endpoint `name` has its secret (`add_endpoint`); a body whose X-Pushreach-Signature does
not verify under it, or is older than the tolerance, gets 401; a body that is not the
webhook's JSON gets 400; an unknown name 404. An accepted body is recorded and answered
`{"id": "wh-<n>"}`. Faults: tokens the app calls gone (410), the next N deliveries answered
503 (with Retry-After when set), a slow answer (a delivery whose sender gave up waiting is
not recorded). Programmed from tests through `WebhookReceiverState`, from the command line
through `add_arguments` flags, at run time through `POST /_emulator/webhook/faults`;
`GET /_emulator/webhook/delivered` lists what was received. Mounts beside the FCM and
Android vendor emulators on one aiohttp application.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import ssl
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from ..webhook import SIGNATURE_HEADER, TOLERANCE, verify_signature
from . import serving

FAULTS = ("unavailable", "slow")
MAX_BODY = 64 * 1024


@dataclass(frozen=True, slots=True)
class WebhookDelivered:
    """One webhook body the app received (signature verified)."""

    endpoint: str
    push_id: str
    token: str
    receipt: str
    message: dict[str, Any]
    expire_time: int
    payload: dict[str, str]
    user_agent: str
    id: str


@dataclass
class WebhookReceiverState:
    """Everything the receiver knows; tests read and program it directly. `now` is the clock
    signatures are checked against (tests pass their fake clock's `time`)."""

    now: Callable[[], float] = time.time
    tolerance: float = TOLERANCE
    secrets: dict[str, str] = field(default_factory=dict)  # endpoint name -> secret
    gone: set[str] = field(default_factory=set)  # tokens answered 410
    faults: deque[str] = field(default_factory=deque)
    retry_after: int | None = None  # Retry-After of a 503, when set
    slow_seconds: float = 5.0
    delivered: list[WebhookDelivered] = field(default_factory=list)
    requests: int = 0  # every POST, refused ones too
    refused: list[tuple[str, int]] = field(default_factory=list)  # (endpoint, status) of refusals
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def add_endpoint(self, name: str, secret: str) -> None:
        self.secrets[name] = secret

    def mark_gone(self, *tokens: str) -> None:
        self.gone.update(tokens)

    def fail_next(self, fault: str, times: int = 1) -> None:
        if fault not in FAULTS:
            raise ValueError(f"fault must be one of {', '.join(FAULTS)}")
        self.faults.extend([fault] * times)

    def delivered_to(self, token: str) -> list[WebhookDelivered]:
        return [d for d in self.delivered if d.token == token]


def add_routes(app: web.Application, state: WebhookReceiverState) -> None:
    """Mount POST /webhook/{name} and /_emulator/webhook/... on `app`."""

    async def receive(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        state.requests += 1
        secret = state.secrets.get(name)
        if secret is None:
            return _refuse(state, name, 404, "no such webhook endpoint")
        body = await request.read()
        if len(body) > MAX_BODY:
            return _refuse(state, name, 413, "body too large")
        if not verify_signature(secret, request.headers.get(SIGNATURE_HEADER, ""), body, state.now(), state.tolerance):
            return _refuse(state, name, 401, "bad or expired signature")
        try:
            doc = json.loads(body)
            push_id, token, receipt = str(doc["push_id"]), str(doc["token"]), str(doc["receipt"])
            message, payload, expire_time = dict(doc["message"]), dict(doc["payload"]), int(doc["expire_time"])
        except (ValueError, KeyError, TypeError):
            return _refuse(state, name, 400, "not a pushreach webhook body")
        fault = state.faults.popleft() if state.faults else None
        if fault == "unavailable":
            headers = {"Retry-After": str(state.retry_after)} if state.retry_after is not None else None
            return web.json_response({"error": "unavailable"}, status=503, headers=headers)
        if fault == "slow":
            await asyncio.sleep(state.slow_seconds)
            if request.transport is None or request.transport.is_closing():
                return web.Response(status=499)  # the sender gave up: the app never took it
        if token in state.gone:
            return _refuse(state, name, 410, "token unregistered")
        delivered = WebhookDelivered(name, push_id, token, receipt, message, expire_time, payload,
                                     request.headers.get("User-Agent", ""), f"wh-{next(state._ids):06d}")
        state.delivered.append(delivered)
        return web.json_response({"id": delivered.id})

    async def delivered(request: web.Request) -> web.Response:
        token = request.query.get("token", "")
        items = [
            {"endpoint": d.endpoint, "push_id": d.push_id, "token": d.token, "receipt": d.receipt, "message": d.message,
             "expire_time": d.expire_time, "payload": d.payload, "id": d.id}
            for d in state.delivered
            if not token or d.token == token
        ]
        return web.json_response({"delivered": items, "requests": state.requests})

    async def faults(request: web.Request) -> web.Response:
        try:
            body = await request.json()
            fault, times = body["fault"], int(body.get("times", 1))
            if not 1 <= times <= 10_000:
                raise ValueError("times must be 1..10000")
            if fault == "gone":
                state.mark_gone(*[str(t) for t in body["tokens"]])
            else:
                state.fail_next(fault, times)
        except (ValueError, KeyError, TypeError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response({"ok": True})

    app.router.add_post("/webhook/{name}", receive)
    app.router.add_get("/_emulator/webhook/delivered", delivered)
    app.router.add_post("/_emulator/webhook/faults", faults)


def _refuse(state: WebhookReceiverState, name: str, status: int, error: str) -> web.Response:
    state.refused.append((name, status))
    return web.json_response({"error": error}, status=status)


@contextlib.asynccontextmanager
async def running(
    state: WebhookReceiverState, host: str = "127.0.0.1", port: int = 0, ssl_context: ssl.SSLContext | None = None
) -> AsyncIterator[str]:
    """Serve the receiver alone; yields its base URL (an endpoint is base + /webhook/<name>)."""
    app = web.Application(client_max_size=MAX_BODY * 2)
    add_routes(app, state)
    async with serving(app, host, port, ssl_context) as url:
        yield url


# -- command line -------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The receiver's flags for `pushreach push-emulator` (no --listen: the host command has it)."""
    parser.add_argument(
        "--webhook", action="append", default=[], metavar="NAME:SECRET",
        help="serve POST /webhook/NAME, checking signatures with SECRET (repeatable)",
    )
    parser.add_argument("--webhook-gone", action="append", default=[], metavar="TOKEN", help="a token answered 410")
    parser.add_argument(
        "--webhook-unavailable", type=int, default=0, metavar="N", help="answer the next N deliveries 503"
    )


def configure(state: WebhookReceiverState, args: argparse.Namespace) -> None:
    """Apply the flags of `add_arguments` to `state` (raises ValueError naming the flag)."""
    for item in args.webhook:
        name, _, secret = item.partition(":")
        if not name or not secret or "/" in name:
            raise ValueError(f"--webhook {item.split(':')[0]!r}:...: NAME:SECRET with a NAME without '/'")
        state.add_endpoint(name, secret)
    state.mark_gone(*args.webhook_gone)
    if args.webhook_unavailable < 0:
        raise ValueError("--webhook-unavailable: must be >= 0")
    state.fail_next("unavailable", args.webhook_unavailable)


def load_endpoints(state: WebhookReceiverState, doc: Any) -> None:
    """Register endpoints from parsed JSON `{"name": "secret", ...}` (a file a script writes)."""
    if not isinstance(doc, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in doc.items()):
        raise ValueError('webhook endpoints: expected {"name": "secret", ...}')
    for name, secret in doc.items():
        state.add_endpoint(name, secret)
