"""The wrapper every RPC goes through: authenticate, call the domain, map errors."""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from ..errors import DomainError
from ..logcontext import begin_request
from .errors import to_status

log = logging.getLogger(__name__)


async def _fail(context: grpc.aio.ServicerContext, exc: BaseException) -> None:
    if isinstance(exc, DomainError):
        status = to_status(exc)
        await context.abort(status.code, status.details, status.trailing_metadata)
    log.exception("unexpected error in %s", type(exc).__name__, exc_info=exc)
    await context.abort(grpc.StatusCode.INTERNAL, "internal error")


def _name_the_call(request: Any) -> None:
    # A unary request may carry the caller's request_id; streams and the rest get a fresh one.
    rid = getattr(request, "request_id", "")
    begin_request(rid if isinstance(rid, str) else "")


def app_rpc(method: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    """An RPC for app callers: the method gets the authenticated App as third argument."""

    @functools.wraps(method)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
        _name_the_call(request)
        try:
            app = await self.auth.app(context)
            return await method(self, request, app, context)
        except Exception as exc:  # grpc's own AbortError passes through _fail's re-raise
            if isinstance(exc, grpc.aio.AbortError):
                raise
            await _fail(context, exc)

    return wrapper


def admin_rpc(method: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    """An RPC for operators holding the admin token."""

    @functools.wraps(method)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
        _name_the_call(request)
        try:
            await self.auth.admin(context)
            return await method(self, request, context)
        except Exception as exc:
            if isinstance(exc, grpc.aio.AbortError):
                raise
            await _fail(context, exc)

    return wrapper
