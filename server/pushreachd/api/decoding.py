"""Bytes that are not a valid request message answer INVALID_ARGUMENT.

Left to itself, grpcio answers a request it cannot deserialize with UNKNOWN (or INTERNAL),
which looks like a server bug to the caller and to alerting. This interceptor takes over the
deserialization of pushreach's own methods and answers a malformed message as what it is.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from .interceptors import WrappingInterceptor

PREFIX = "/pushreach.v1."


def _refuse(method: str) -> str:
    return f"the request is not a valid serialized {method.rsplit('/', 1)[-1]} request message"


class DecodeGuardInterceptor(WrappingInterceptor):
    def _applies(self, method: str, handler: grpc.RpcMethodHandler) -> bool:
        return handler.request_deserializer is not None and method.startswith(PREFIX)

    def _wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        decode = handler.request_deserializer

        async def parse(raw: bytes, context: grpc.aio.ServicerContext) -> Any:
            try:
                return decode(raw)
            except (DecodeError, ValueError, TypeError):
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, _refuse(method))

        if handler.unary_unary:
            unary = handler.unary_unary

            async def unary_unary(raw: bytes, context: grpc.aio.ServicerContext) -> Any:
                return await unary(await parse(raw, context), context)

            return grpc.unary_unary_rpc_method_handler(
                unary_unary, request_deserializer=None, response_serializer=handler.response_serializer
            )
        if handler.stream_unary:
            stream = handler.stream_unary

            async def stream_unary(raws: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> Any:
                async def requests() -> AsyncIterator[Any]:
                    async for raw in raws:
                        yield await parse(raw, context)

                return await stream(requests(), context)

            return grpc.stream_unary_rpc_method_handler(
                stream_unary, request_deserializer=None, response_serializer=handler.response_serializer
            )
        return handler  # pushreach has no server-streaming methods
