"""Server interceptors: every RPC counted and timed by method and status code."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

Observe = Callable[[str, str, float], None]  # (method, code, seconds)


def _code_name(context: grpc.aio.ServicerContext, default: grpc.StatusCode) -> str:
    code = context.code()
    if code is None:
        return default.name
    if isinstance(code, grpc.StatusCode):
        return code.name
    for c in grpc.StatusCode:  # the aio context may hand back the raw integer
        if c.value[0] == code:
            return c.name
    return default.name


class WrappingInterceptor(grpc.aio.ServerInterceptor):
    """An interceptor that wraps a method's handler, built once per method and reused.

    The handler a method resolves to is the same object on every call, so its wrapper is
    cached against it: building handler objects per call cost 15-40 us of every RPC.
    """

    def __init__(self) -> None:
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or not self._applies(method, handler):
            return handler
        cached = self._wrapped.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = self._wrap(method, handler)
        self._wrapped[method] = (handler, wrapped)
        return wrapped

    def _applies(self, method: str, handler: grpc.RpcMethodHandler) -> bool:
        return True

    def _wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        raise NotImplementedError


# (handler attribute, factory, whether the method streams its responses)
_HANDLER_KINDS = (
    ("unary_unary", grpc.unary_unary_rpc_method_handler, False),
    ("stream_unary", grpc.stream_unary_rpc_method_handler, False),
    ("unary_stream", grpc.unary_stream_rpc_method_handler, True),
    ("stream_stream", grpc.stream_stream_rpc_method_handler, True),
)


class MetricsInterceptor(WrappingInterceptor):
    """Wraps each handler so that its end (return, abort, error, cancel) is observed once.

    `method` is the full gRPC method name, e.g. `/pushreach.v1.PushService/Push`.
    Unknown methods (no handler) are not observed: gRPC answers UNIMPLEMENTED itself.
    """

    def __init__(self, observe: Observe, timer: Callable[[], float] = time.perf_counter) -> None:
        super().__init__()
        self._observe = observe
        self._timer = timer

    def _wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        for kind, make, streams_responses in _HANDLER_KINDS:
            behavior = getattr(handler, kind)
            if behavior:
                observed = (self._streaming if streams_responses else self._unary)(method, behavior)
                return make(
                    observed,
                    request_deserializer=handler.request_deserializer,
                    response_serializer=handler.response_serializer,
                )
        return handler

    def _unary(self, method: str, behavior: Callable[..., Any]) -> Callable[..., Awaitable[Any]]:
        async def wrapper(request: Any, context: grpc.aio.ServicerContext) -> Any:
            started = self._timer()
            code = "UNKNOWN"
            try:
                response = await behavior(request, context)
                code = _code_name(context, grpc.StatusCode.OK)
                return response
            except grpc.aio.AbortError:
                code = _code_name(context, grpc.StatusCode.UNKNOWN)
                raise
            except BaseException as exc:
                code = _exception_code(context, exc)
                raise
            finally:
                self._observe(method, code, self._timer() - started)

        return wrapper

    def _streaming(self, method: str, behavior: Callable[..., Any]) -> Callable[..., Any]:
        if inspect.iscoroutinefunction(behavior):  # writes with context.write (e.g. Health.Watch)
            return self._unary(method, behavior)

        async def wrapper(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            started = self._timer()
            code = "UNKNOWN"
            try:
                async for response in behavior(request, context):
                    yield response
                code = _code_name(context, grpc.StatusCode.OK)
            except grpc.aio.AbortError:
                code = _code_name(context, grpc.StatusCode.UNKNOWN)
                raise
            except BaseException as exc:
                code = _exception_code(context, exc)
                raise
            finally:
                self._observe(method, code, self._timer() - started)

        return wrapper


def _exception_code(context: grpc.aio.ServicerContext, exc: BaseException) -> str:
    """The code gRPC answers when a handler raises: one the handler set, else UNKNOWN."""
    if isinstance(exc, asyncio.CancelledError):
        return grpc.StatusCode.CANCELLED.name
    return _code_name(context, grpc.StatusCode.UNKNOWN)
