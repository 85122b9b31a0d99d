"""Loopback emulators of the Android vendor push services (Huawei, Honor, Xiaomi, OPPO, vivo).

One aiohttp application serves all five on one port (their paths do not collide), so every
`*_endpoint` setting can point at it. Each vendor module (hms.py, honor.py, ...) speaks its
vendor's wire protocol, authentication included: a wrong secret gets the vendor's own
error, an auth token is checked on every send and expires. What the emulator does not know
about a vendor it does not pretend: every well-formed token reaches a "device" unless a
test marked it invalid.

Faults are programmable per vendor: tokens the vendor calls invalid, flow control for the
next N sends, an exhausted daily quota for the next N sends, every issued auth token
expired at once (from tests through EmulatorState, from the command line through flags, at
run time through POST /_emulator/faults). GET /_emulator/delivered lists what devices got.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import logging
import secrets
import signal
import sys
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from . import serving

log = logging.getLogger(__name__)

VENDORS = ("hms", "honor", "xiaomi", "oppo", "vivo")
FAULTS = ("flow_control", "quota")
AUTH_TOKEN_LIFETIME = 3600.0


@dataclass(frozen=True, slots=True)
class Delivered:
    """One message a device would have received."""

    vendor: str
    app: str  # the vendor's app id / key / package
    token: str
    title: str
    body: str
    data: dict[str, str]  # the custom key/values (receipt, push id)
    classification: dict[str, Any]  # category, channel id, importance... as the vendor got them


@dataclass(slots=True)
class _Issued:
    vendor: str
    app: str
    expires_at: float


@dataclass
class EmulatorState:
    """Everything the emulator knows; tests read and program it directly."""

    apps: dict[tuple[str, str], dict[str, str]] = field(default_factory=dict)
    invalid: dict[str, set[str]] = field(default_factory=lambda: {v: set() for v in VENDORS})
    faults: dict[str, deque[str]] = field(default_factory=lambda: {v: deque() for v in VENDORS})
    delivered: list[Delivered] = field(default_factory=list)
    send_calls: Counter[str] = field(default_factory=Counter)
    auth_calls: Counter[str] = field(default_factory=Counter)  # auth tokens issued
    auth_requests: Counter[str] = field(default_factory=Counter)  # token requests, refused ones too
    _issued: dict[str, _Issued] = field(default_factory=dict)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    # -- programming -------------------------------------------------------------------------

    def add_app(self, vendor: str, key: str, **secrets_: str) -> None:
        """Register an app: `key` is how the vendor names it (Huawei/Honor/vivo app id,
        Xiaomi package name, OPPO app key); `secrets_` what it must present."""
        self.apps[(vendor, key)] = dict(secrets_)

    def mark_invalid(self, vendor: str, *tokens: str) -> None:
        self.invalid[vendor].update(tokens)

    def fail_next(self, vendor: str, fault: str, times: int = 1) -> None:
        if fault not in FAULTS:
            raise ValueError(f"fault must be one of {FAULTS}")
        self.faults[vendor].extend([fault] * times)

    def expire_auth_tokens(self, vendor: str | None = None) -> None:
        for issued in self._issued.values():
            if vendor is None or issued.vendor == vendor:
                issued.expires_at = 0.0

    def delivered_to(self, vendor: str, token: str) -> list[Delivered]:
        return [d for d in self.delivered if d.vendor == vendor and d.token == token]

    # -- used by the vendor modules -----------------------------------------------------------

    def app(self, vendor: str, key: str) -> dict[str, str] | None:
        return self.apps.get((vendor, key))

    def issue(self, vendor: str, app: str, lifetime: float = AUTH_TOKEN_LIFETIME) -> str:
        self.auth_calls[vendor] += 1
        token = f"{vendor}-{secrets.token_urlsafe(24)}"
        self._issued[token] = _Issued(vendor, app, time.time() + lifetime)
        return token

    def auth(self, vendor: str, token: str) -> tuple[str, str]:
        """('ok', app) for a live token of this vendor, ('expired', app) or ('unknown', '')."""
        issued = self._issued.get(token)
        if issued is None or issued.vendor != vendor:
            return "unknown", ""
        if issued.expires_at <= time.time():
            return "expired", issued.app
        return "ok", issued.app

    def next_fault(self, vendor: str) -> str | None:
        queue = self.faults[vendor]
        return queue.popleft() if queue else None

    def next_id(self, prefix: str) -> str:
        return f"{prefix}{next(self._ids):012d}"

    def deliver(
        self, vendor: str, app: str, tokens: list[str], title: str, body: str, data: dict[str, str], classification: dict[str, Any]
    ) -> tuple[list[str], list[str]]:
        """Deliver to the valid tokens; answer (delivered, invalid)."""
        self.send_calls[vendor] += 1
        ok, bad = [], []
        for token in tokens:
            if token in self.invalid[vendor] or not token.strip():
                bad.append(token)
                continue
            ok.append(token)
            self.delivered.append(Delivered(vendor, app, token, title, body, dict(data), dict(classification)))
        return ok, bad


def parse_data(text: Any) -> dict[str, str]:
    """A JSON-object string of custom data, as several vendors carry it; {} otherwise."""
    if isinstance(text, dict):
        return {str(k): str(v) for k, v in text.items()}
    if not isinstance(text, str) or not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}


def create_app(state: EmulatorState) -> web.Application:
    from . import hms, honor, oppo, vivo, xiaomi

    app = web.Application(client_max_size=4 * 1024 * 1024)
    for module in (hms, honor, xiaomi, oppo, vivo):
        module.add_routes(app, state)
    add_control_routes(app, state)
    return app


def add_control_routes(app: web.Application, state: EmulatorState) -> None:
    """/_emulator/...: what a device received, and faults, for people and scripts."""

    async def delivered(request: web.Request) -> web.Response:
        vendor, token = request.query.get("vendor", ""), request.query.get("token", "")
        items = [
            {"vendor": d.vendor, "app": d.app, "token": d.token, "title": d.title, "body": d.body,
             "data": d.data, "classification": d.classification}
            for d in state.delivered
            if (not vendor or d.vendor == vendor) and (not token or d.token == token)
        ]
        return web.json_response({"delivered": items, "send_calls": dict(state.send_calls)})

    async def faults(request: web.Request) -> web.Response:
        try:
            body = await request.json()
            vendor, fault, times = body["vendor"], body["fault"], int(body.get("times", 1))
            if vendor not in VENDORS or not 1 <= times <= 10_000:
                raise ValueError(f"vendor must be one of {', '.join(VENDORS)}, times 1..10000")
            if fault == "invalid_token":
                state.mark_invalid(vendor, *[str(t) for t in body["tokens"]])
            elif fault == "expire_auth":
                state.expire_auth_tokens(vendor)
            else:
                state.fail_next(vendor, fault, times)
        except (ValueError, KeyError, TypeError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response({"ok": True})

    app.router.add_get("/_emulator/delivered", delivered)
    app.router.add_post("/_emulator/faults", faults)


@contextlib.asynccontextmanager
async def running(state: EmulatorState, host: str = "127.0.0.1", port: int = 0):  # type: ignore[no-untyped-def]
    """Serve the emulator for the duration of the block; yields its base URL."""
    async with serving(create_app(state), host, port, shutdown_timeout=60.0) as url:  # aiohttp's default grace
        yield url


# -- command line -----------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--listen", default="127.0.0.1:8088", metavar="HOST:PORT", help="address to serve on")
    add_vendor_arguments(parser, apps_required=True)
    parser.add_argument(
        "--seconds", type=float, default=0, metavar="SECONDS", help="stop after this long (0 = until SIGTERM)"
    )


def add_vendor_arguments(parser: argparse.ArgumentParser, *, apps_required: bool) -> None:
    """The vendors' own flags (also mounted by `pushreach push-emulator`)."""
    parser.add_argument(
        "--apps",
        metavar="PATH",
        required=apps_required,
        default="",
        help='JSON file: {"hms": [{"app_id", "client_secret"}], "honor": [{"app_id", "client_id", '
        '"client_secret"}], "xiaomi": [{"app_secret", "package_name"}], "oppo": [{"app_key", '
        '"master_secret"}], "vivo": [{"app_id", "app_key", "app_secret"}]} (the credentials files)',
    )
    parser.add_argument(
        "--invalid-token", action="append", default=[], metavar="VENDOR:TOKEN", help="a token the vendor calls invalid"
    )
    parser.add_argument(
        "--flow-control", action="append", default=[], metavar="VENDOR:N", help="answer the next N sends with flow control"
    )
    parser.add_argument(
        "--quota", action="append", default=[], metavar="VENDOR:N", help="answer the next N sends with quota exhausted"
    )


APP_KEYS = {"hms": "app_id", "honor": "app_id", "xiaomi": "package_name", "oppo": "app_key", "vivo": "app_id"}


def load_apps(state: EmulatorState, doc: dict[str, Any]) -> None:
    for vendor, apps in doc.items():
        if vendor not in VENDORS or not isinstance(apps, list):
            raise ValueError(f"--apps: {vendor!r} is not one of {', '.join(VENDORS)} with a list of apps")
        for entry in apps:
            state.add_app(vendor, str(entry[APP_KEYS[vendor]]), **{k: str(v) for k, v in entry.items()})


def configure(state: EmulatorState, args: argparse.Namespace) -> None:
    """Apply the flags of `add_vendor_arguments` (raises ValueError/OSError naming the flag)."""
    if args.apps:
        with open(args.apps, encoding="utf-8") as f:
            load_apps(state, json.load(f))
    for item in args.invalid_token:
        vendor, _, token = item.partition(":")
        state.mark_invalid(vendor, token)
    for fault, items in (("flow_control", args.flow_control), ("quota", args.quota)):
        for item in items:
            vendor, _, times = item.partition(":")
            if vendor not in VENDORS or not times.isdigit():
                raise ValueError(f"--{fault.replace('_', '-')} {item!r}: VENDOR:N with VENDOR one of {', '.join(VENDORS)}")
            state.fail_next(vendor, fault, int(times))


async def serve_from_args(args: argparse.Namespace) -> None:
    from ...config import parse_host_port

    host, port = parse_host_port(args.listen)
    state = EmulatorState()
    configure(state, args)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    async with running(state, host, port) as url:
        print(f"android push emulator on {url}", file=sys.stderr, flush=True)
        if args.seconds > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), args.seconds)
        else:
            await stop.wait()


def main(argv: list[str] | None = None) -> int:
    """`python -m pushreachd.channels.emulator.android --apps FILE [--listen HOST:PORT]`."""
    parser = argparse.ArgumentParser(prog="python -m pushreachd.channels.emulator.android", description=__doc__.split("\n")[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    try:
        asyncio.run(serve_from_args(args))
    except (OSError, ValueError, KeyError) as exc:
        print(f"android push emulator: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
