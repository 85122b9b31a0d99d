"""TPNS's REST API v3 on aiohttp: a TPNS server SDK moves here by changing its host name.

Authentication both ways TPNS accepts: `Authorization: Basic base64(AccessId:SecretKey)`,
or the `AccessId`, `TimeStamp` and `Sign` headers, where Sign is Base64 of the hex digest of
HMAC-SHA256(SecretKey, TimeStamp + AccessId + body) over the body bytes exactly as sent.
A TimeStamp more than `window` seconds away from now is refused, and a Sign already seen
within the window is refused too (a replayed request).

Mounted on the HTTP surface (`http_listen`), Basic credentials go through the same login cache,
failure throttle and per-app budget as gRPC; a failed Sign counts against the client address
like a failed login; a spent budget answers HTTP 429 with Retry-After (and ret_code 1008004).

Answers are HTTP 200 with TPNS's JSON (`ret_code` 0 on success, a TPNS error code and an
`err_msg` naming the field otherwise); `/v3/statistics/get_push_record` answers in camelCase
as TPNS does. Every push goes through PushService.push, the domain operation gRPC Push uses.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from google.protobuf import json_format
from pushreach.v1 import push_pb2

from ..api.convert import push_draft
from ..clock import Clock
from ..errors import (
    AlreadyExists,
    DomainError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Unauthenticated,
)
from ..model import App, Push
from ..services.apps import AppService
from ..services.callers import RateLimited
from ..services.devices import DeviceService
from ..services.pushes import PushService
from ..services.tpns import TpnsBodyError, from_tpns
from .app import CONTEXT, HttpContext, client_address
from .errors import retry_after_header

log = logging.getLogger(__name__)

# TPNS server-side error codes (its "Server-Side Error Codes" table).
OK = 0
PARSE_ERROR = 1008001  # the body is not valid JSON
MISSING_PARAMETER = 1008002  # a required field is absent
AUTH_FAILED = 1008003  # AccessId / SecretKey / Sign wrong, TimeStamp outside the window
SERVICE_FAILED = 1008004  # the service could not do it (here: an internal error)
INVALID_TOKEN = 1008006
INVALID_PARAMETER = 1008007  # a field's value is refused
PUSH_NOT_FOUND = 1008015  # no such push id

MAX_BODY = 1 << 20  # 1 MiB: a push body is a few KB; a tag or account call at most ~100 KB
REQUEST_ID_HEADER = "X-Request-Id"  # idempotency key, as gRPC's request_id (AIP-155)
PHONE_ACCOUNT_TYPE = 1002  # TPNS's account type for phone numbers: bound as the device's phone

Handler = Callable[[web.Request, App, bytes], Awaitable[dict[str, Any]]]


class TpnsError(Exception):
    def __init__(self, ret_code: int, err_msg: str) -> None:
        super().__init__(err_msg)
        self.ret_code = ret_code
        self.err_msg = err_msg


def tpns_sign(secret_key: str, timestamp: str, access_id: str, body: bytes) -> str:
    """TPNS's Sign: Base64 of the hex HMAC-SHA256 digest of TimeStamp + AccessId + body."""
    digest = hmac.new(secret_key.encode(), timestamp.encode() + access_id.encode() + body, hashlib.sha256)
    return base64.b64encode(digest.hexdigest().encode()).decode()


class ReplayGuard:
    """Signs seen within the time window: the same signed request twice is a replay."""

    def __init__(self, window: float, capacity: int = 100_000) -> None:
        self._window = window
        self._capacity = capacity
        self._seen: OrderedDict[str, float] = OrderedDict()  # sign -> when it stops mattering

    def first_use(self, sign: str, now: float) -> bool:
        while self._seen and next(iter(self._seen.values())) <= now:
            self._seen.popitem(last=False)
        if sign in self._seen:
            return False
        if len(self._seen) >= self._capacity:
            self._seen.popitem(last=False)
        self._seen[sign] = now + 2 * self._window  # a TimeStamp is good for +-window
        return True


class TpnsApi:
    def __init__(
        self,
        apps: AppService,
        pushes: PushService,
        devices: DeviceService,
        clock: Clock,
        *,
        window: float = 300.0,
    ) -> None:
        self._apps = apps
        self._pushes = pushes
        self._devices = devices
        self._clock = clock
        self._window = window
        self._replays = ReplayGuard(window)

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/v3/push/app", self._wrap(self.push_app)),
            web.post("/v3/device/account/batchoperate", self._wrap(self.account_batchoperate)),
            web.post("/v3/device/tag", self._wrap(self.device_tag)),
            web.post("/v3/statistics/get_push_record", self._wrap(self.get_push_record, camel=True)),
        ]

    def mount(self, app: web.Application) -> None:
        """Add the routes to the HTTP surface's root app (the HttpPart protocol)."""
        app.router.add_routes(self.routes())

    def application(self) -> web.Application:
        """A stand-alone app with only these routes (tests, and until the HTTP surface mounts them)."""
        app = web.Application(client_max_size=MAX_BODY)
        app.add_routes(self.routes())
        return app

    # -- the envelope: read, authenticate, answer TPNS's way ---------------------------------

    def _wrap(self, handler: Handler, *, camel: bool = False) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def run(request: web.Request) -> web.Response:
            status, headers = 200, {}
            try:
                body = await request.read()
                app = await self._authenticate(request, body)
                answer = await handler(request, app, body)
                answer = {"ret_code": OK, "err_msg": "", **answer}
            except TpnsError as e:
                answer = {"ret_code": e.ret_code, "err_msg": e.err_msg}
            except RateLimited as e:
                status, headers = 429, retry_after_header(e.retry_after)
                answer = {"ret_code": SERVICE_FAILED, "err_msg": e.message}
            except web.HTTPException:
                raise
            except Exception:
                log.exception("TPNS API %s failed", request.path)
                answer = {"ret_code": SERVICE_FAILED, "err_msg": "internal error"}
            if camel:
                answer = {_camel(k): v for k, v in answer.items()}
            return web.json_response(answer, status=status, headers=headers)

        return run

    async def _authenticate(self, request: web.Request, body: bytes) -> App:
        h = request.headers
        ctx: HttpContext | None = request.config_dict.get(CONTEXT)
        peer = client_address(request)
        if "Sign" in h or "AccessId" in h or "TimeStamp" in h:
            if ctx is not None:
                await ctx.auth.admit(peer)  # an address that failed too often waits, then is refused
            try:
                return await self._by_signature(h.get("AccessId", ""), h.get("TimeStamp", ""), h.get("Sign", ""), body)
            except TpnsError:
                if ctx is not None:
                    ctx.auth.failed(peer)
                raise
        header = h.get("Authorization", "")
        if ctx is not None:  # the HTTP surface's authenticator: login cache, throttle, budget
            try:
                return await ctx.auth.app_from(header, peer)
            except Unauthenticated as e:
                raise TpnsError(AUTH_FAILED, f"authentication failed: {e.message}") from None
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic" or not encoded:
            raise TpnsError(AUTH_FAILED, "authentication failed: send Authorization Basic, or AccessId, TimeStamp and Sign")
        try:
            access_id, sep, secret = base64.b64decode(encoded.strip(), validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            sep = ""
        if not sep:
            raise TpnsError(AUTH_FAILED, "authentication failed: malformed Basic credentials")
        try:
            return await self._apps.authenticate(access_id, secret)
        except Unauthenticated:
            raise TpnsError(AUTH_FAILED, "authentication failed: invalid AccessId or SecretKey") from None

    async def _by_signature(self, access_id: str, timestamp: str, sign: str, body: bytes) -> App:
        for name, value in (("AccessId", access_id), ("TimeStamp", timestamp), ("Sign", sign)):
            if not value:
                raise TpnsError(AUTH_FAILED, f"authentication failed: header {name} is missing")
        if not timestamp.isascii() or not timestamp.isdigit() or len(timestamp) > 12:
            raise TpnsError(AUTH_FAILED, "authentication failed: TimeStamp must be Unix seconds")
        now = self._clock.time()
        if abs(now - int(timestamp)) > self._window:
            raise TpnsError(AUTH_FAILED, f"authentication failed: TimeStamp is more than {self._window:.0f} s from now")
        found = await self._apps.signing_key(access_id)
        expected = tpns_sign(found[1], timestamp, access_id, body) if found else ""
        if found is None or not hmac.compare_digest(expected.encode(), sign.strip().encode()):
            raise TpnsError(AUTH_FAILED, "authentication failed: Sign does not match AccessId, TimeStamp and body")
        if not self._replays.first_use(expected, now):
            raise TpnsError(AUTH_FAILED, "authentication failed: this signed request was already received")
        return found[0]

    # -- POST /v3/push/app -----------------------------------------------------------------------

    async def push_app(self, request: web.Request, app: App, body: bytes) -> dict[str, Any]:
        data = _json_object(body)
        seq = data.get("seq", 0)
        for name in ("audience_type", "message", "message_type"):
            if name not in data:
                raise TpnsError(MISSING_PARAMETER, f"{name}: required")
        try:
            ours, ignored = from_tpns(data)
            message = json_format.ParseDict(ours, push_pb2.PushRequest())
        except TpnsBodyError as e:
            raise TpnsError(MISSING_PARAMETER if e.missing else INVALID_PARAMETER, str(e)) from None
        except json_format.ParseError as e:
            raise TpnsError(INVALID_PARAMETER, str(e)) from None
        draft = push_draft(message)
        draft.request_id = request.headers.get(REQUEST_ID_HEADER, "")
        try:
            receipt = await self._pushes.push(app, draft)
        except DomainError as e:
            raise _tpns_error(e) from None
        result = {"target_count": receipt.target_count, "ignored_fields": ignored}
        if receipt.unused_targets:
            result["unused_targets"] = [u.value for u in receipt.unused_targets]
        return {
            "seq": seq if isinstance(seq, int) and not isinstance(seq, bool) else 0,
            "push_id": receipt.push_id,
            "environment": data.get("environment", "product") if data.get("environment") in ("product", "dev") else "product",
            "result": json.dumps(result, separators=(",", ":")),
        }

    # -- POST /v3/device/account/batchoperate ------------------------------------------------------

    async def account_batchoperate(self, request: web.Request, app: App, body: bytes) -> dict[str, Any]:
        """operator_type 1 / 2: bind each token to its accounts (2 replaces the token's others;
        1, which TPNS retired, acts as 2 as TPNS does); 3: unbind them; 4: unbind tokens from
        every account; 5: unbind accounts from every token. An account of account_type 1002
        is a phone number: it is the token's phone for the SMS fallback."""
        data = _json_object(body)
        op = _operator_type(data, range(1, 6))
        results: list[str] = []
        try:
            if op in (1, 2, 3):
                pairs = data.get("token_accounts")
                if not isinstance(pairs, list) or not pairs:
                    raise TpnsError(MISSING_PARAMETER, "token_accounts: required for operator_type 1, 2 and 3")
                if len(pairs) > 20:
                    raise TpnsError(INVALID_PARAMETER, "token_accounts: at most 20 tokens a call")
                for i, entry in enumerate(pairs):
                    token, accounts = _token_accounts(i, entry, data.get("account_type", 0))
                    await self._apply_accounts(app, op, token, accounts)
                    results.append("0")
            elif op == 4:
                tokens = _strings(data, "token_list")
                for token in tokens:
                    device = await self._devices.get_device_or_none(app, token)
                    for account in device.accounts if device else ():
                        await self._devices.unbind_account(app, token, account)
                    results.append("0")
            else:
                accounts = data.get("account_list")
                if not isinstance(accounts, list) or not accounts:
                    raise TpnsError(MISSING_PARAMETER, "account_list: required for operator_type 5")
                for i, entry in enumerate(accounts):
                    account = entry.get("account") if isinstance(entry, dict) else None
                    if not isinstance(account, str) or not account:
                        raise TpnsError(INVALID_PARAMETER, f"account_list[{i}].account: required")
                    await self._devices.unbind_account_everywhere(app, account)
                    results.append("0")
        except DomainError as e:
            raise _tpns_error(e) from None
        return {"result": results}

    async def _apply_accounts(self, app: App, op: int, token: str, accounts: list[tuple[str, int]]) -> None:
        phones = [a for a, kind in accounts if kind == PHONE_ACCOUNT_TYPE]
        names = [a for a, kind in accounts if kind != PHONE_ACCOUNT_TYPE]
        if op == 3:
            device = await self._devices.get_device_or_none(app, token)
            if phones and device is not None and device.phone_number:
                await self._devices.unbind_phone(app, token)
            for account in names:
                await self._devices.unbind_account(app, token, account)
            return
        if op in (1, 2) and names:  # replace the token's accounts by these
            device = await self._devices.get_device_or_none(app, token)
            for old in device.accounts if device else ():
                if old not in names:
                    await self._devices.unbind_account(app, token, old)
        for account in names:
            await self._devices.bind_account(app, token, account)
        if phones:
            await self._devices.bind_phone(app, token, phones[-1])  # TPNS: one per type, the last wins

    # -- POST /v3/device/tag ---------------------------------------------------------------------

    async def device_tag(self, request: web.Request, app: App, body: bytes) -> dict[str, Any]:
        """TPNS operator_type 1-10 onto DeviceService's tag operations."""
        data = _json_object(body)
        op = _operator_type(data, range(1, 11))
        try:
            if op in (9, 10):
                raw = data.get("tag_token_list")
                if not isinstance(raw, list) or not raw:
                    raise TpnsError(MISSING_PARAMETER, "tag_token_list: required for operator_type 9 and 10")
                pairs = []
                for i, entry in enumerate(raw):
                    if not isinstance(entry, dict) or not isinstance(entry.get("tag"), str) or not isinstance(entry.get("token"), str):
                        raise TpnsError(INVALID_PARAMETER, f"tag_token_list[{i}]: needs string tag and token")
                    pairs.append((entry["token"], entry["tag"]))
                if op == 9:
                    await self._devices.add_tags(app, [], [], pairs)
                else:
                    await self._devices.remove_tags(app, [], [], pairs)
                return {}
            tokens = _strings(data, "token_list")
            if op in (1, 2, 3, 4, 5, 6):
                tokens = tokens[:1]  # TPNS: only the first token counts for these
            if op == 5:
                await self._devices.clear_tags(app, tokens)
                return {}
            tags = _strings(data, "tag_list")
            if op in (1, 2, 7, 8):
                tags = tags[:1]  # TPNS: only the first tag counts for these
            if op in (1, 3, 7):
                await self._devices.add_tags(app, tokens, tags)
            elif op in (2, 4, 8):
                await self._devices.remove_tags(app, tokens, tags)
            else:
                await self._devices.set_tags(app, tokens[0], tags)
        except DomainError as e:
            raise _tpns_error(e) from None
        return {}

    # -- POST /v3/statistics/get_push_record ------------------------------------------------------

    async def get_push_record(self, request: web.Request, app: App, body: bytes) -> dict[str, Any]:
        data = _json_object(body)
        ids = data.get("pushIds", data.get("pushId", data.get("push_id")))
        if isinstance(ids, str):
            ids = [ids]
        if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
            raise TpnsError(MISSING_PARAMETER, "pushId: required (a push id, or pushIds: a list of them)")
        if len(ids) > 100:
            raise TpnsError(INVALID_PARAMETER, "pushIds: at most 100")
        records = []
        for push_id in ids:
            try:
                push, funnel, _, _ = await self._pushes.get_push(app, push_id, 1)
            except NotFound:
                raise TpnsError(PUSH_NOT_FOUND, f"pushId {push_id!r}: no such push") from None
            except DomainError as e:
                raise _tpns_error(e) from None
            records.append(_push_record(push, funnel))
        return {"pushRecords": records}


# -- helpers ----------------------------------------------------------------------------------------


def _camel(key: str) -> str:
    head, *rest = key.split("_")
    return head + "".join(w.title() for w in rest)


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise TpnsError(PARSE_ERROR, f"the body is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise TpnsError(PARSE_ERROR, "the body must be a JSON object")
    return data


def _operator_type(data: dict[str, Any], allowed: range) -> int:
    op = data.get("operator_type")
    if op is None:
        raise TpnsError(MISSING_PARAMETER, "operator_type: required")
    if isinstance(op, bool) or not isinstance(op, int) or op not in allowed:
        raise TpnsError(INVALID_PARAMETER, f"operator_type: {op!r} is not {allowed.start} to {allowed.stop - 1}")
    return op


def _strings(data: dict[str, Any], name: str) -> list[str]:
    value = data.get(name)
    if value is None:
        raise TpnsError(MISSING_PARAMETER, f"{name}: required for this operator_type")
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise TpnsError(INVALID_PARAMETER, f"{name}: must be an array of strings")
    return value


def _token_accounts(i: int, entry: Any, default_type: Any) -> tuple[str, list[tuple[str, int]]]:
    path = f"token_accounts[{i}]"
    if not isinstance(entry, dict) or not isinstance(entry.get("token"), str):
        raise TpnsError(INVALID_PARAMETER, f"{path}.token: required")
    raw = entry.get("account_list")
    if not isinstance(raw, list):
        raise TpnsError(MISSING_PARAMETER, f"{path}.account_list: required")
    accounts = []
    for j, a in enumerate(raw):
        kind = a.get("account_type", default_type) if isinstance(a, dict) else None
        if not isinstance(a, dict) or not isinstance(a.get("account"), str) or isinstance(kind, bool) or not isinstance(kind, int):
            raise TpnsError(INVALID_PARAMETER, f"{path}.account_list[{j}]: needs a string account and integer account_type")
        accounts.append((a["account"], kind))
    return entry["token"], accounts


def _tpns_error(e: DomainError) -> TpnsError:
    if isinstance(e, InvalidArgument):
        missing = all(v.description.startswith("required") for v in e.violations)
        text = "; ".join(f"{v.field}: {v.description}" for v in e.violations)
        return TpnsError(MISSING_PARAMETER if missing else INVALID_PARAMETER, text)
    if isinstance(e, (AlreadyExists, FailedPrecondition)):
        return TpnsError(INVALID_PARAMETER, e.message)
    if isinstance(e, NotFound):
        return TpnsError(INVALID_PARAMETER, e.message)
    return TpnsError(SERVICE_FAILED, e.message)


def _push_record(push: Push, funnel: Any) -> dict[str, Any]:
    spec = push.spec
    return {
        "pushId": push.push_id,
        "audienceType": spec.audience_type.name.lower(),
        "messageType": spec.message_type.name.lower(),
        "environment": spec.environment.name.lower(),
        "title": spec.title,
        "content": spec.content,
        "createTime": int(push.accepted_at),
        "status": "RESOLVING" if push.targets_pending else "DONE",
        "targetCount": funnel.target_count,
        "arrivedCount": funnel.arrived_count,
        "clickedCount": funnel.clicked_count,
        "fallbackState": push.fallback_state.name,
        "smsSentCount": funnel.sms_sent_count,
        "smsFailedCount": funnel.sms_failed_count,
        "smsRateLimitedCount": funnel.sms_rate_limited_count,
        "noPhoneCount": funnel.no_phone_count,
    }
