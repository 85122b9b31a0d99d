"""What devices call, with no app secret: `POST /v1/receipts` (arrived, clicked; one report
or a batch of up to 100, each proven by a receipt or signed with the device key) and
`POST /v1/devices/state` (notifications enabled or disabled, signed with the device key).
docs/DEVICES.md is the user's view of both.

A request first passes the client address's budget and failure throttle, then its body is
read (bounded) and every field checked (400 naming the field, nothing verified yet); then the
credentials are verified (HMAC with the app's cached keys; a signed report also reads its app
by access id) and the device token's budget spent; only then is anything recorded, exactly as
ReportEvent records it. A device MAC proves (app, token) only: the store then says whether the
push is the app's and the token one of its targets, and a report that is not is refused like a
bad MAC and records nothing.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from .. import limits
from ..errors import NotFound
from ..model import EventOutcome, EventType
from ..services.apps import AppService
from ..services.events import EventService
from ..services.receipts import MAX_RECEIPT_LENGTH, ReceiptError, Receipts
from ..services.validation import EventDraft
from .app import (
    check_address_budget,
    check_key_budget,
    client_address,
    context,
    failed_authentication,
)
from .body import Fields, Violations, read_json
from .errors import error_response, json_response

MAX_BATCH = 100
RECEIPTS_BODY_BYTES = 128 * 1024  # 100 receipts of ~420 characters each, with room to spare
STATE_BODY_BYTES = 4 * 1024
EVENTS = {"arrived": EventType.ARRIVED, "clicked": EventType.CLICKED}
EVENT_NAMES = {event: name for name, event in EVENTS.items()}  # the lower-case names a device signs
_SIGNED_FIELDS = ("access_id", "push_id", "token", "timestamp", "mac")
_NOT_A_TARGET = {EventOutcome.UNKNOWN_PUSH, EventOutcome.UNKNOWN_TOKEN}
BAD_DEVICE_MAC = "invalid device MAC"
STATES = {"enabled": EventType.NOTIFICATION_ENABLED, "disabled": EventType.NOTIFICATION_DISABLED}
# Causes that are not anyone guessing: they do not count toward the address's failure throttle.
_HONEST = {"expired", "stale"}

ObserveReport = Callable[[str, str, int], None]  # (kind, outcome, count)


class DeviceReports:
    """The device endpoints, as an HttpPart."""

    def __init__(
        self,
        receipts: Receipts,
        events: EventService,
        apps: AppService,
        observe: ObserveReport = lambda kind, outcome, count: None,
    ) -> None:
        self._receipts = receipts
        self._events = events
        self._apps = apps
        self._observe = observe

    def mount(self, app: web.Application) -> None:
        app.router.add_post("/v1/receipts", self.post_receipts)
        app.router.add_post("/v1/devices/state", self.post_state)

    async def _admit(self, request: web.Request) -> None:
        check_address_budget(request)
        await context(request).auth.admit(client_address(request))

    def _refused(self, request: web.Request, kind: str, exc: ReceiptError) -> None:
        if exc.cause not in _HONEST:
            failed_authentication(request)
        self._observe(kind, "refused", 1)

    # -- POST /v1/receipts ---------------------------------------------------------------

    async def post_receipts(self, request: web.Request) -> web.Response:
        await self._admit(request)
        data = await read_json(request, RECEIPTS_BODY_BYTES)
        v = Violations()
        root = Fields.root(data, v)
        batch = "receipts" in data
        items = root.objects("receipts", max_items=MAX_BATCH, required=True) if batch else [root]
        parsed = [_parse_report(f) for f in items]
        if v.items:
            self._observe("receipt", "invalid", max(1, len(parsed)))
        v.raise_if_any()

        results: list[dict[str, Any] | None] = [None] * len(parsed)
        proven: dict[int, list[tuple[int, str, EventDraft]]] = defaultdict(list)
        apps: dict[str, int | None] = {}  # access id -> app id, looked up once per request
        for i, (prefix, credential, event, when) in enumerate(parsed):
            assert event is not None
            try:
                app_id, push_id, token = await self._verify(credential, event, apps)
            except ReceiptError as exc:
                results[i] = self._refusal(request, prefix, credential, exc)
                continue
            proven[app_id].append((i, prefix, EventDraft(push_id, token, int(event), when)))
        if not proven:  # no valid credential in the request at all
            return _unauthenticated(results)

        for app_id, entries in proven.items():
            for token in {d.token for _, _, d in entries}:
                check_key_budget(request, ("token", app_id, token))
        counts: dict[tuple[str, str], int] = defaultdict(int)
        for app_id, entries in proven.items():
            outcomes = await self._events.report_proven(app_id, [(prefix, d) for _, prefix, d in entries])
            for (i, prefix, d), outcome in zip(entries, outcomes, strict=True):
                credential = parsed[i][1]
                if isinstance(credential, SignedReport) and outcome in _NOT_A_TARGET:
                    # A genuine device key, but the push is not the app's or the token not one of
                    # its targets: answered exactly like a bad MAC, so that no one learns from the
                    # answer whether a push exists. Nothing was recorded.
                    results[i] = self._refusal(request, prefix, credential, ReceiptError("not_target", BAD_DEVICE_MAC))
                    continue
                results[i] = {"outcome": outcome.name, "push_id": d.push_id}
                counts[(_kind(credential), outcome.name.lower())] += 1
        for (kind, outcome_name), count in counts.items():  # one metric update per outcome, not per report
            self._observe(kind, outcome_name, count)
        if not any(r is not None and "outcome" in r for r in results):
            return _unauthenticated(results)
        if batch:
            return json_response({"results": results})
        return json_response(results[0])

    async def _verify(
        self, credential: str | SignedReport, event: EventType, apps: dict[str, int | None]
    ) -> tuple[int, str, str]:
        """(app id, push id, token) a receipt or a device MAC proves; ReceiptError otherwise."""
        if isinstance(credential, str):
            claims = await self._receipts.verify(credential)
            return claims.app_id, claims.push_id, claims.token
        s = credential
        if s.access_id not in apps:
            try:
                apps[s.access_id] = (await self._apps.get_app(s.access_id)).id
            except NotFound:
                apps[s.access_id] = None
        app_id = apps[s.access_id]
        if app_id is None:
            raise ReceiptError("unknown_app", BAD_DEVICE_MAC)
        await self._receipts.check_event_mac(app_id, s.access_id, s.token, s.push_id, EVENT_NAMES[event], s.timestamp, s.mac)
        return app_id, s.push_id, s.token

    def _refusal(
        self, request: web.Request, prefix: str, credential: str | SignedReport, exc: ReceiptError
    ) -> dict[str, Any]:
        self._refused(request, _kind(credential), exc)
        if isinstance(credential, str):
            field = "receipt"
        else:
            field = "timestamp" if exc.cause == "stale" else "mac"
        return {"error": {"code": exc.reason, "message": exc.message, "field": f"{prefix}{field}"}}

    # -- POST /v1/devices/state ----------------------------------------------------------

    async def post_state(self, request: web.Request) -> web.Response:
        await self._admit(request)
        v = Violations()
        f = Fields.root(await read_json(request, STATE_BODY_BYTES), v)
        access_id = f.string("access_id", required=True, max_length=32)
        token = f.string("token", required=True, max_length=256)
        state = f.choice("notification_state", STATES, required=True)
        timestamp = f.integer("timestamp", required=True, low=1, high=2**32)
        mac = f.string("mac", required=True, max_length=128)
        if v.items:
            self._observe("state", "invalid", 1)
        v.raise_if_any()
        assert state is not None and timestamp is not None
        check_key_budget(request, ("device", access_id, token))
        state_text = "enabled" if state is EventType.NOTIFICATION_ENABLED else "disabled"
        try:
            try:
                app = await self._apps.get_app(access_id)
            except NotFound:
                raise ReceiptError("unknown_app", BAD_DEVICE_MAC) from None
            await self._receipts.check_state_mac(app.id, access_id, token, state_text, timestamp, mac.lower())
        except ReceiptError as exc:
            self._refused(request, "state", exc)
            field = "timestamp" if exc.cause == "stale" else "mac"
            return error_response(401, "UNAUTHENTICATED", exc.message, field)
        (outcome,) = await self._events.report_proven(
            app.id, [("", EventDraft("", token, int(state), float(timestamp)))]
        )
        self._observe("state", outcome.name.lower(), 1)
        return json_response({"outcome": outcome.name})


@dataclass(frozen=True, slots=True)
class SignedReport:
    """An arrival or click signed with the device key, in place of a receipt."""

    access_id: str
    push_id: str
    token: str
    timestamp: int
    mac: str


def _parse_report(f: Fields) -> tuple[str, str | SignedReport, EventType | None, float | None]:
    """(field prefix, credential, event, event_time) of one report. The receipt form unless the
    report carries a device-signed field (and no receipt), so that a bare `{"event"}` asks for
    the receipt as before."""
    credential: str | SignedReport
    if "receipt" in f.data or not any(name in f.data for name in _SIGNED_FIELDS):
        credential = f.string("receipt", required=True, max_length=MAX_RECEIPT_LENGTH)
        if "mac" in f.data:
            f.v.add(f.path("mac"), "give either a receipt or the device-signed fields, not both")
    else:
        credential = SignedReport(
            f.string("access_id", required=True, max_length=32),
            f.string("push_id", required=True, max_length=64),
            f.string("token", required=True, max_length=limits.MAX_TOKEN_LENGTH),
            f.integer("timestamp", required=True, low=1, high=2**32) or 0,
            f.string("mac", required=True, max_length=128).lower(),
        )
    return f.prefix, credential, f.choice("event", EVENTS, required=True), f.time("event_time")


def _kind(credential: str | SignedReport) -> str:
    """The `kind` label of pushreach_device_reports_total."""
    return "receipt" if isinstance(credential, str) else "signed"


def _unauthenticated(results: list[dict[str, Any] | None]) -> web.Response:
    """401 naming the request's first refused credential (none of its reports was recorded)."""
    first = next((r["error"] for r in results if r is not None and "error" in r), {})
    return error_response(401, "UNAUTHENTICATED", first.get("message", "invalid receipt"), first.get("field", ""))

