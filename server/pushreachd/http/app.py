"""The aiohttp application: one factory, one place for errors, metrics, budgets and auth.

Handlers reach the shared parts through `context(request)`; see the package docstring for
how to add routes or a sub-app.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

from aiohttp import web

from ..admission import AppRequestLimiter
from ..clock import Clock
from ..errors import DomainError
from ..model import App
from ..services.callers import CallerAuthenticator, RateLimited
from .errors import (
    domain_error_response,
    error_response,
    http_exception_response,
    json_response,
)

log = logging.getLogger(__name__)

Observe = Callable[[str, str, float], None]  # (endpoint, HTTP status, seconds)


@dataclass
class HttpContext:
    """What every part of the HTTP surface shares."""

    auth: CallerAuthenticator
    clock: Clock
    observe: Observe = lambda endpoint, code, seconds: None
    # Unauthenticated (device) requests per client address, and per device token.
    address_limiter: AppRequestLimiter | None = None
    token_limiter: AppRequestLimiter | None = None
    max_body_bytes: int = 1024 * 1024
    healthy: Callable[[], bool] = field(default=lambda: True)
    serving: bool = False  # set by HttpServer: True between start and the start of stop


class HttpPart(Protocol):
    """A piece of the HTTP surface: adds its routes (or a sub-app) to the root app."""

    def mount(self, app: web.Application) -> None: ...


CONTEXT = web.AppKey("pushreach_context", HttpContext)


def context(request: web.Request) -> HttpContext:
    """The shared context, from any app or sub-app."""
    return request.config_dict[CONTEXT]


def client_address(request: web.Request) -> str:
    """The TCP peer's address. Proxies' X-Forwarded-For is not trusted (anyone can send it)."""
    return request.remote or ""


def check_address_budget(request: web.Request) -> None:
    """429 (Retry-After) once this client address has spent its unauthenticated budget."""
    limiter = context(request).address_limiter
    address = client_address(request)
    if limiter is not None and not limiter.allow(address):
        wait = limiter.retry_after(address)
        raise RateLimited("too many requests from this address", wait)


def check_key_budget(request: web.Request, key: object) -> None:
    """429 (Retry-After) once `key` (e.g. ("token", app, token)) has spent its budget."""
    limiter = context(request).token_limiter
    if limiter is not None and not limiter.allow(key):
        wait = limiter.retry_after(key)
        raise RateLimited("too many requests for this device", wait)


async def authenticate_app(request: web.Request) -> App:
    """The app of the request's `Authorization: Basic base64(access_id:secret_key)`, under the
    same login cache, failure throttle and per-app budget as the gRPC API."""
    return await context(request).auth.app_from(request.headers.get("Authorization", ""), client_address(request))


async def authenticate_admin(request: web.Request) -> None:
    await context(request).auth.admin_from(request.headers.get("Authorization", ""), client_address(request))


def failed_authentication(request: web.Request) -> None:
    """Count a refused device credential (receipt, device key) against the client address."""
    context(request).auth.failed(client_address(request))


def _endpoint(request: web.Request) -> str:
    # The route's pattern, never the raw path: the label set stays bounded.
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def _errors_and_metrics(request: web.Request, handler: Handler) -> web.StreamResponse:
    started = time.perf_counter()
    try:
        response = await handler(request)
    except DomainError as exc:
        response = domain_error_response(exc)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        response = http_exception_response(exc)
    except Exception:
        log.exception("HTTP %s %s failed", request.method, _endpoint(request))
        response = error_response(500, "INTERNAL", "internal error")
    context(request).observe(_endpoint(request), str(response.status), time.perf_counter() - started)
    return response


async def _health(request: web.Request) -> web.Response:
    ctx = context(request)
    if ctx.serving and ctx.healthy():
        return json_response({"status": "SERVING"})
    return json_response({"status": "NOT_SERVING"}, status=503)


def create_app(ctx: HttpContext, parts: Iterable[HttpPart] = ()) -> web.Application:
    """The root application: `GET /healthz`, then each part's routes."""
    app = web.Application(middlewares=[_errors_and_metrics], client_max_size=ctx.max_body_bytes)
    app[CONTEXT] = ctx
    app.router.add_get("/healthz", _health)
    for part in parts:
        part.mount(app)
    return app
