"""What devices call, with no app secret: `POST /v1/receipts` (arrived, clicked; one receipt
or a batch of up to 100) and `POST /v1/devices/state` (notifications enabled or disabled,
signed with the device key). docs/DEVICES.md is the user's view of both.

A request first passes the client address's budget and failure throttle, then its body is
read (bounded) and every field checked (400 naming the field, nothing verified yet); then the
credentials are verified (HMAC, no store access but the app's cached keys) and the device
token's budget spent; only then is anything recorded, exactly as ReportEvent records it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from typing import Any

from aiohttp import web

from ..errors import NotFound
from ..model import EventType
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
        parsed = []
        for f in items:
            receipt = f.string("receipt", required=True, max_length=MAX_RECEIPT_LENGTH)
            event = f.choice("event", EVENTS, required=True)
            when = f.time("event_time")
            parsed.append((f.prefix, receipt, event, when))
        if v.items:
            self._observe("receipt", "invalid", max(1, len(parsed)))
        v.raise_if_any()

        results: list[dict[str, Any] | None] = [None] * len(parsed)
        proven: dict[int, list[tuple[int, str, EventDraft]]] = defaultdict(list)
        for i, (prefix, receipt, event, when) in enumerate(parsed):
            try:
                claims = await self._receipts.verify(receipt)
            except ReceiptError as exc:
                self._refused(request, "receipt", exc)
                results[i] = {"error": {"code": exc.reason, "message": exc.message, "field": f"{prefix}receipt"}}
                continue
            draft = EventDraft(claims.push_id, claims.token, int(event), when)  # type: ignore[arg-type]
            proven[claims.app_id].append((i, prefix, draft))
        if not proven:  # no valid credential in the request at all
            first = results[0]["error"] if results and results[0] else {}  # type: ignore[index]
            return error_response(401, "UNAUTHENTICATED", first.get("message", "invalid receipt"), first.get("field", ""))

        for app_id, entries in proven.items():
            for token in {d.token for _, _, d in entries}:
                check_key_budget(request, ("token", app_id, token))
        counts: dict[str, int] = defaultdict(int)
        for app_id, entries in proven.items():
            outcomes = await self._events.report_proven(app_id, [(prefix, d) for _, prefix, d in entries])
            for (i, _, d), outcome in zip(entries, outcomes, strict=True):
                results[i] = {"outcome": outcome.name, "push_id": d.push_id}
                counts[outcome.name.lower()] += 1
        for outcome_name, count in counts.items():  # one metric update per outcome, not per receipt
            self._observe("receipt", outcome_name, count)
        if batch:
            return json_response({"results": results})
        return json_response(results[0])

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
                raise ReceiptError("unknown_app", "invalid device MAC") from None
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

