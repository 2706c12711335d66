"""Cross-cutting work for every RPC: a request id, a log line and latency metrics."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from amperity_signal.logs import request_id_var
from amperity_signal.metrics import Metrics

log = logging.getLogger("amperity_signal.rpc")

REQUEST_ID_METADATA = "x-request-id"


class ObservabilityInterceptor(grpc.aio.ServerInterceptor):
    """Sets a request id, times the RPC, and logs one line per call."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        """Wrap the unary and streaming behaviours of the handler."""
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method = handler_call_details.method
        request_id = ""
        for key, value in handler_call_details.invocation_metadata or ():
            if key == REQUEST_ID_METADATA and isinstance(value, str):
                request_id = value[:64]
        metrics = self._metrics

        def begin(context: grpc.aio.ServicerContext[Any, Any]) -> tuple[str, float]:
            rid = request_id or uuid.uuid4().hex
            request_id_var.set(rid)
            context.set_trailing_metadata(((REQUEST_ID_METADATA, rid),))
            return rid, time.perf_counter()

        def end(context: grpc.aio.ServicerContext[Any, Any], started: float) -> None:
            code = context.code()
            name = "OK" if code is None else getattr(code, "name", str(code))
            elapsed = time.perf_counter() - started
            metrics.rpc_latency.labels(method, name).observe(elapsed)
            if name != "OK" or log.isEnabledFor(logging.DEBUG):
                log.info("rpc", extra={"method": method, "code": name, "seconds": elapsed})

        if handler.unary_unary:
            inner_uu: Any = handler.unary_unary

            async def unary_unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
                _, started = begin(context)
                try:
                    return await inner_uu(request, context)
                finally:
                    end(context, started)

            return grpc.unary_unary_rpc_method_handler(
                unary_unary,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream:
            inner_us: Any = handler.unary_stream

            async def unary_stream(
                request: Any, context: grpc.aio.ServicerContext[Any, Any]
            ) -> Any:
                _, started = begin(context)
                try:
                    async for response in inner_us(request, context):
                        yield response
                finally:
                    end(context, started)

            return grpc.unary_stream_rpc_method_handler(
                unary_stream,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.stream_stream:
            inner_ss: Any = handler.stream_stream

            async def stream_stream(
                requests: Any, context: grpc.aio.ServicerContext[Any, Any]
            ) -> Any:
                _, started = begin(context)
                try:
                    async for response in inner_ss(requests, context):
                        yield response
                finally:
                    end(context, started)

            return grpc.stream_stream_rpc_method_handler(
                stream_stream,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler
