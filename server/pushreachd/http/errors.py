"""One error shape for every HTTP endpoint:

    {"error": {"code": "INVALID_ARGUMENT", "message": "receipt: required", "field": "receipt",
               "violations": [{"field": "receipt", "description": "required"}]}}

`code` is the gRPC-style name (the same words the gRPC API answers with), `field` the first
field at fault ("" when the request as a whole is), `violations` every field at fault (only
for INVALID_ARGUMENT). Domain errors raised by services map here by class.
"""

from __future__ import annotations

import json
import math
from typing import Any

from aiohttp import web

from .. import errors
from ..services.callers import RateLimited

JSON = "application/json"

# Domain error class -> HTTP status (Google's HTTP mapping of the canonical codes).
_STATUS: dict[type[errors.DomainError], int] = {
    errors.InvalidArgument: 400,
    errors.FailedPrecondition: 400,
    errors.Unauthenticated: 401,
    errors.PermissionDenied: 403,
    errors.NotFound: 404,
    errors.AlreadyExists: 409,
    errors.ResourceExhausted: 429,
    errors.Unavailable: 503,
}
# aiohttp's own refusals (routing, size) -> code words.
_HTTP_CODES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    408: "DEADLINE_EXCEEDED",
    409: "ALREADY_EXISTS",
    413: "PAYLOAD_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
    429: "RESOURCE_EXHAUSTED",
    503: "UNAVAILABLE",
}


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    body = json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()
    return web.Response(body=body, status=status, content_type=JSON, headers=headers)


def error_response(
    status: int,
    code: str,
    message: str,
    field: str = "",
    *,
    violations: list[errors.FieldViolation] | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    error: dict[str, Any] = {"code": code, "message": message, "field": field}
    if violations:
        error["violations"] = [{"field": v.field, "description": v.description} for v in violations]
    return json_response({"error": error}, status, headers)


def retry_after_header(seconds: float) -> dict[str, str]:
    """Retry-After in whole seconds, never 0 (a client told 0 retries at once)."""
    return {"Retry-After": str(max(1, math.ceil(seconds)))}


def domain_error_response(exc: errors.DomainError) -> web.Response:
    status = next((_STATUS[k] for k in type(exc).__mro__ if k in _STATUS), 500)
    if isinstance(exc, errors.InvalidArgument):
        first = exc.violations[0].field if exc.violations else ""
        return error_response(status, exc.reason, exc.message, first, violations=exc.violations)
    headers = retry_after_header(exc.retry_after) if isinstance(exc, RateLimited) else None
    return error_response(status, exc.reason, exc.message, headers=headers)


def http_exception_response(exc: web.HTTPException) -> web.Response:
    """aiohttp's own refusals (404, 405, 413, ...) in the same shape."""
    code = _HTTP_CODES.get(exc.status, "INTERNAL" if exc.status >= 500 else "INVALID_ARGUMENT")
    message = exc.reason or code
    if exc.status == 413:
        message = "request body too large"
    headers = {k: v for k, v in exc.headers.items() if k in ("Allow", "Retry-After")}
    return error_response(exc.status, code, message, headers=headers)
