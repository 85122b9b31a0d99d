"""The HTTP surface (aiohttp), served on `http_listen` beside the gRPC API.

One root application (`app.create_app`) owns what every endpoint shares:

- errors: raise a domain error (`errors.InvalidArgument`, `Unauthenticated`, ...) or let
  aiohttp refuse (404, 405, 413); the middleware answers every failure in one JSON shape,
  `{"error": {"code", "message", "field", "violations"?}}` (`errors.py`); an unexpected
  exception is logged and answers 500 INTERNAL without details;
- metrics: `pushreach_http_requests{endpoint, code}` and a latency histogram per route pattern,
  on the service's Prometheus registry;
- request size: `http_max_body_bytes` for the whole app; `body.read_json(request, max_bytes)`
  for a smaller limit per route (413 before reading past it);
- budgets: `check_address_budget(request)` (per client address) and
  `check_key_budget(request, key)` (per device token or any key) answer 429 with Retry-After;
  `authenticate_app(request)` checks `Authorization: Basic base64(access_id:secret_key)`
  through the same authenticator as gRPC (login cache, failure throttle, per-app budget);
- health: `GET /healthz` is 200 `{"status": "SERVING"}` while serving, 503 once the service
  stops (before requests in flight finish) or turns unhealthy.

Adding endpoints: write a class with `mount(app: web.Application) -> None` (the `HttpPart`
protocol) that adds routes, or a sub-app under its own prefix
(`app.add_subapp("/v3/", sub)`; the root's middlewares still apply), and append an instance to
`Service.http_parts` in wiring.py before the service starts. Handlers read the shared parts with
`context(request)` and their own dependencies from their class:

    class Things:
        def __init__(self, things: ThingService) -> None:
            self._things = things

        def mount(self, app: web.Application) -> None:
            app.router.add_post("/v1/things", self.create)

        async def create(self, request: web.Request) -> web.Response:
            app = await authenticate_app(request)
            v = Violations()
            f = Fields.root(await read_json(request, 64 * 1024), v)
            name = f.string("name", required=True, max_length=128)
            v.raise_if_any()
            return json_response({"id": await self._things.create(app, name)})

Handlers stay thin like the gRPC servicers: JSON in, one domain call, JSON out.
"""

from .app import (
    CONTEXT,
    HttpContext,
    HttpPart,
    authenticate_admin,
    authenticate_app,
    check_address_budget,
    check_key_budget,
    client_address,
    context,
    create_app,
    failed_authentication,
)
from .body import Fields, Violations, parse_rfc3339, read_json
from .errors import error_response, json_response
from .server import HttpServer, server_ssl_context

__all__ = [
    "CONTEXT",
    "Fields",
    "HttpContext",
    "HttpPart",
    "HttpServer",
    "Violations",
    "authenticate_admin",
    "authenticate_app",
    "check_address_budget",
    "check_key_budget",
    "client_address",
    "context",
    "create_app",
    "error_response",
    "failed_authentication",
    "json_response",
    "parse_rfc3339",
    "read_json",
    "server_ssl_context",
]
