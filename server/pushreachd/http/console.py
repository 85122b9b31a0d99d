"""The console at /console/: the built pages (console/, `make console`) and their JSON API.

People sign in with an app's access id and secret key (they see that app) or with the admin
token (they choose among apps, `?app=ACCESS_ID` on each call). The session is a signed cookie,
not server state, so any instance behind a load balancer accepts it: HttpOnly, SameSite=Strict,
Secure under TLS, 8 hours, and bound to the app's current secret (or the admin token), so
rotating the secret ends the app's sessions. Requests that change state (sign out, cancel a
fallback) must echo the session's CSRF token in `X-CSRF-Token`.

Every figure comes from the same domain operations as the gRPC API (GetStatistics, GetPush,
CancelFallback, ListSmsRecords, GetDevice); phone numbers are always masked here.
"""

from __future__ import annotations

import base64
import dataclasses
import enum
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from ..errors import InvalidArgument, NotFound, PermissionDenied, Unauthenticated
from ..model import App, SmsCounts, SmsRecordFilter, SmsStatus, Statistics, StatisticsInterval
from ..phone import mask_phone
from ..services.apps import AppService
from ..services.devices import DeviceService
from ..services.pushes import PushService
from ..services.reporting import ReportingService
from ..services.validation import Violations
from .app import authenticate_admin, authenticate_app, client_address, context
from .body import read_json
from .errors import json_response

STATIC = Path(__file__).with_name("console_static")
COOKIE = "pushreach_console"
SESSION_SECONDS = 8 * 3600
CSRF_HEADER = "X-CSRF-Token"
_STATIC_FILES = {"index.html": "text/html", "app.js": "text/javascript", "app.css": "text/css"}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclasses.dataclass(frozen=True)
class Session:
    kind: str  # "app" or "admin"
    access_id: str  # the app's, for kind "app"
    binding: str  # digest of the app's secret verifier, or of the admin token
    csrf: str
    expires: float


class SessionCodec:
    """Session cookies: JSON, then an HMAC-SHA256 tag, both base64url. The key is derived from
    the master key, so sessions survive restarts and cross instances that share it."""

    def __init__(self, key: bytes, clock: Callable[[], float] = time.time) -> None:
        self._key = key
        self._clock = clock

    def issue(self, kind: str, access_id: str, binding: str) -> Session:
        return Session(kind, access_id, binding, secrets.token_urlsafe(24), self._clock() + SESSION_SECONDS)

    def encode(self, s: Session) -> str:
        body = json.dumps(dataclasses.asdict(s), separators=(",", ":")).encode()
        return f"{_b64(body)}.{_b64(hmac.new(self._key, body, hashlib.sha256).digest())}"

    def decode(self, cookie: str) -> Session | None:
        try:
            body_text, tag_text = cookie.split(".")
            body = _unb64(body_text)
            if not hmac.compare_digest(_unb64(tag_text), hmac.new(self._key, body, hashlib.sha256).digest()):
                return None
            s = Session(**json.loads(body))
        except (ValueError, TypeError):
            return None
        return s if s.expires > self._clock() else None


def binding_of(secret: str) -> str:
    return hashlib.sha256(b"pushreach console binding\0" + secret.encode()).hexdigest()[:32]


def to_json(value: Any) -> Any:
    """Domain values as JSON: enums by name, dataclasses as objects, phones masked."""
    if isinstance(value, enum.Enum):
        return value.name
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out = {}
        for f in dataclasses.fields(value):
            if f.name in ("id", "app_id", "secret_verifier") or not f.repr:
                continue  # internal row ids and secrets never leave the service
            v = getattr(value, f.name)
            out[f.name] = mask_phone(v) if f.name == "phone_number" else to_json(v)
        return out
    if isinstance(value, dict):
        return {(k.name if isinstance(k, enum.Enum) else str(k)): to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    return value


def statistics_json(s: Statistics) -> dict[str, Any]:
    return {
        "start_time": s.start_time,
        "end_time": s.end_time,
        "push_count": s.push_count,
        "target_count": s.target_count,
        "arrived_count": s.arrived_count,
        "clicked_count": s.clicked_count,
        "arrival_rate": s.arrived_count / s.target_count if s.target_count else 0.0,
        "click_rate": s.clicked_count / s.target_count if s.target_count else 0.0,
        # The one mapping of statuses that GetStatistics and GetPush's funnel use.
        "sms": dataclasses.asdict(SmsCounts.of(s.sms_by_status)),
        "sms_fee": s.sms_fee,
        "pending_fallback_count": s.pending_fallback_count,
    }


def _number(v: Violations, request: web.Request, name: str) -> float | None:
    raw = request.query.get(name, "")
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        v.add(name, "seconds since the epoch")
        return None
    if not -62135596800 <= value <= 253402300799:
        v.add(name, "between the years 1 and 9999")
        return None
    return value


def _int(v: Violations, request: web.Request, name: str) -> int:
    raw = request.query.get(name, "")
    if not raw:
        return 0
    if not raw.isdigit() or len(raw) > 6:
        v.add(name, "a whole number")
        return 0
    return int(raw)


class Console:
    """The console's pages and API, an HttpPart."""

    def __init__(
        self,
        codec: SessionCodec,
        apps: AppService,
        pushes: PushService,
        devices: DeviceService,
        reporting: ReportingService,
        *,
        admin_token: str = "",
        secure_cookie: bool = False,
    ) -> None:
        self._codec = codec
        self._apps = apps
        self._pushes = pushes
        self._devices = devices
        self._reporting = reporting
        self._admin_binding = binding_of(admin_token) if admin_token else ""
        self._secure = secure_cookie

    def mount(self, app: web.Application) -> None:
        r = app.router
        r.add_get("/console", self.redirect)
        r.add_get("/console/", self.page)
        r.add_get("/console/{file:app\\.(js|css)}", self.static)
        r.add_get("/console/api/session", self.whoami)
        r.add_post("/console/api/session", self.sign_in)
        r.add_delete("/console/api/session", self.sign_out)
        r.add_get("/console/api/apps", self.list_apps)
        r.add_get("/console/api/overview", self.overview)
        r.add_get("/console/api/pushes", self.list_pushes)
        r.add_get("/console/api/pushes/{push_id}", self.get_push)
        r.add_post("/console/api/pushes/{push_id}/cancel", self.cancel)
        r.add_get("/console/api/sms", self.list_sms)
        r.add_get("/console/api/devices/{token}", self.get_device)

    # -- pages ---------------------------------------------------------------------------------

    async def redirect(self, request: web.Request) -> web.Response:
        raise web.HTTPFound("/console/")

    async def page(self, request: web.Request) -> web.Response:
        return self._file("index.html")

    async def static(self, request: web.Request) -> web.Response:
        return self._file(request.match_info["file"])

    def _file(self, name: str) -> web.Response:
        path = STATIC / name
        if not path.is_file():
            return json_response(
                {"error": {"code": "UNAVAILABLE", "message": "the console is not built: run `make console`", "field": ""}},
                status=503,
            )
        headers = {
            "Cache-Control": "no-cache",
            "X-Content-Type-Options": "nosniff",
            "X-Frame-Options": "DENY",
            "Content-Security-Policy": "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:",
            "Referrer-Policy": "no-referrer",
        }
        return web.Response(body=path.read_bytes(), content_type=_STATIC_FILES[name], headers=headers)

    # -- session -------------------------------------------------------------------------------

    async def sign_in(self, request: web.Request) -> web.Response:
        body = await read_json(request, 4096)
        v = Violations()
        if not isinstance(body, dict):
            raise InvalidArgument.one("body", "a JSON object")
        admin_token = body.get("admin_token")
        if admin_token is not None:
            if not isinstance(admin_token, str) or not admin_token:
                raise InvalidArgument.one("admin_token", "required")
            await authenticate_admin(_with_authorization(request, f"Bearer {admin_token}"))
            session = self._codec.issue("admin", "", binding_of(admin_token))
        else:
            access_id, secret = body.get("access_id"), body.get("secret_key")
            for name, value in (("access_id", access_id), ("secret_key", secret)):
                if not isinstance(value, str) or not value:
                    v.add(name, "required")
            v.raise_if_any()
            basic = base64.b64encode(f"{access_id}:{secret}".encode()).decode()
            app = await authenticate_app(_with_authorization(request, f"Basic {basic}"))
            session = self._codec.issue("app", app.access_id, binding_of(app.secret_verifier))
        response = self._session_json(session, await self._app_or_none(session))
        response.set_cookie(
            COOKIE,
            self._codec.encode(session),
            max_age=SESSION_SECONDS,
            path="/console/",
            httponly=True,
            samesite="Strict",
            secure=self._secure,
        )
        return response

    async def whoami(self, request: web.Request) -> web.Response:
        session, app = await self._session(request)
        return self._session_json(session, app)

    async def sign_out(self, request: web.Request) -> web.Response:
        await self._session(request, changes_state=True)
        response = json_response({})
        response.del_cookie(COOKIE, path="/console/")
        return response

    def _session_json(self, session: Session, app: App | None) -> web.Response:
        return json_response(
            {
                "kind": session.kind,
                "access_id": app.access_id if app else "",
                "name": app.name if app else "",
                "csrf": session.csrf,
            }
        )

    async def _app_or_none(self, session: Session) -> App | None:
        return await self._apps.get_app(session.access_id) if session.kind == "app" else None

    async def _session(self, request: web.Request, *, changes_state: bool = False) -> tuple[Session, App | None]:
        session = self._codec.decode(request.cookies.get(COOKIE, ""))
        if session is None:
            raise Unauthenticated("sign in to the console")
        if changes_state and not hmac.compare_digest(request.headers.get(CSRF_HEADER, ""), session.csrf):
            context(request).auth.failed(client_address(request))
            raise PermissionDenied(f"missing or wrong {CSRF_HEADER} header")
        if session.kind == "admin":
            if not self._admin_binding or not hmac.compare_digest(session.binding, self._admin_binding):
                raise Unauthenticated("the admin token changed: sign in again")
            return session, None
        try:
            app = await self._apps.get_app(session.access_id)
        except NotFound:
            raise Unauthenticated("sign in to the console") from None
        if not hmac.compare_digest(session.binding, binding_of(app.secret_verifier)):
            raise Unauthenticated("the app's secret key changed: sign in again")
        return session, app

    async def _app(self, request: web.Request, *, changes_state: bool = False) -> App:
        """The app the request is about: the session's, or for an admin the `app` parameter."""
        session, app = await self._session(request, changes_state=changes_state)
        if app is not None:
            return app
        access_id = request.query.get("app", "")
        if not access_id:
            raise InvalidArgument.one("app", "required for an admin session: the access id of an app")
        return await self._apps.get_app(access_id)

    # -- API -----------------------------------------------------------------------------------

    async def list_apps(self, request: web.Request) -> web.Response:
        session, _ = await self._session(request)
        if session.kind != "admin":
            raise PermissionDenied("only an admin session lists apps")
        apps = await self._apps.list_apps(0, 1000)
        return json_response({"apps": [{"access_id": a.access_id, "name": a.name} for a in apps]})

    async def overview(self, request: web.Request) -> web.Response:
        app = await self._app(request)
        v = Violations()
        start, end = _number(v, request, "start"), _number(v, request, "end")
        names = {"hour": StatisticsInterval.HOUR, "day": StatisticsInterval.DAY}
        interval = names.get(request.query.get("interval", "day"))
        if interval is None:
            v.add("interval", "hour or day")
        v.raise_if_any()
        assert interval is not None
        total, buckets = await self._reporting.statistics_series(
            app, start, end, interval, request.query.get("time_zone", "")
        )
        return json_response({"statistics": statistics_json(total), "buckets": [statistics_json(b) for b in buckets]})

    async def list_pushes(self, request: web.Request) -> web.Response:
        app = await self._app(request)
        v = Violations()
        size = _int(v, request, "page_size")
        v.raise_if_any()
        items, token = await self._reporting.list_pushes(
            app, request.query.get("query", ""), size, request.query.get("page_token", "")
        )
        return json_response({"pushes": to_json(items), "next_page_token": token})

    async def get_push(self, request: web.Request) -> web.Response:
        app = await self._app(request)
        v = Violations()
        size = _int(v, request, "page_size")
        v.raise_if_any()
        push, funnel, targets, token = await self._pushes.get_push(
            app, request.match_info["push_id"], size, request.query.get("page_token", "")
        )
        summary = {
            "push_id": push.push_id,
            "title": push.spec.title,
            "content": push.spec.content,
            "accepted_at": push.accepted_at,
            "target_count": push.target_count,
            "fallback_state": push.fallback_state.name,
            "fallback_due_at": push.fallback_due_at,
            "fallback_ended_at": push.fallback_ended_at,
            "trigger_condition": push.spec.sms_info.trigger_condition.name if push.spec.sms_info else "",
        }
        return json_response(
            {"push": summary, "funnel": to_json(funnel), "targets": to_json(targets), "next_page_token": token}
        )

    async def cancel(self, request: web.Request) -> web.Response:
        app = await self._app(request, changes_state=True)
        state = await self._pushes.cancel_fallback(app, request.match_info["push_id"])
        return json_response({"fallback_state": state.name})

    async def list_sms(self, request: web.Request) -> web.Response:
        app = await self._app(request)
        v = Violations()
        statuses = []
        for i, name in enumerate(request.query.getall("status", [])):
            try:
                statuses.append(SmsStatus[name])
            except KeyError:
                v.add(f"status[{i}]", f"one of {', '.join(s.name for s in SmsStatus)}")
        start, end = _number(v, request, "start"), _number(v, request, "end")
        size = _int(v, request, "page_size")
        v.raise_if_any()
        flt = SmsRecordFilter(
            push_id=request.query.get("push_id", ""),
            phone_number=request.query.get("phone_number", ""),
            statuses=tuple(sorted(set(statuses))),
            start_time=start,
            end_time=end,
        )
        records, token = await self._reporting.list_sms_records(app, flt, size, request.query.get("page_token", ""))
        return json_response({"records": to_json(records), "next_page_token": token})

    async def get_device(self, request: web.Request) -> web.Response:
        app = await self._app(request)
        device = await self._devices.get_device(app, request.match_info["token"])
        return json_response({"device": to_json(device)})


def _with_authorization(request: web.Request, value: str) -> web.Request:
    """The request as if it carried `Authorization: value` (the sign-in form's credentials go
    through the same authenticator, throttle and budget as API calls)."""
    headers = request.headers.copy()
    headers["Authorization"] = value
    return request.clone(headers=headers)
