"""Cross-cutting work for every RPC: a request id, a log line and latency metrics."""

from __future__ import annotations

import inspect
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from amperity_signal.logs import request_id_var
from amperity_signal.metrics import Metrics

log = logging.getLogger("amperity_signal.rpc")

REQUEST_ID_METADATA = "x-request-id"
Context = grpc.aio.ServicerContext[Any, Any]


class ObservabilityInterceptor(grpc.aio.ServerInterceptor):
    """Sets a request id, times the RPC, and logs failed calls.

    The wrapped handler of each method is built once and reused: the request id is read
    from the call's own metadata when the call starts, so nothing per call is captured here.
    """

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics
        self._wrapped: dict[str, tuple[Any, grpc.RpcMethodHandler[Any, Any]]] = {}

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        """Wrap the handler's behaviour, keeping its shape (unary, generator or writer)."""
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        cached = self._wrapped.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = self._wrap(handler, _Observed(self._metrics, method))
        self._wrapped[method] = (handler, wrapped)
        return wrapped

    @staticmethod
    def _wrap(
        handler: grpc.RpcMethodHandler[Any, Any], observed: _Observed
    ) -> grpc.RpcMethodHandler[Any, Any]:
        codec = {
            "request_deserializer": handler.request_deserializer,
            "response_serializer": handler.response_serializer,
        }
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(observed.wrap(handler.unary_unary), **codec)
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                observed.wrap(handler.unary_stream), **codec
            )
        if handler.stream_stream:
            return grpc.stream_stream_rpc_method_handler(
                observed.wrap(handler.stream_stream), **codec
            )
        return handler


def _new_request_id() -> str:
    """32 random hex digits, the shape of ``uuid4().hex`` without its syscall per call."""
    # The module's generator reseeds itself in forked workers; this is an id, not a secret.
    return f"{random.getrandbits(128):032x}"


class _Observed:
    """One method's observation: request id in, latency and outcome out."""

    def __init__(self, metrics: Metrics, method: str) -> None:
        self._metrics = metrics
        self._method = method
        self._latency: dict[str, Any] = {}

    def wrap(self, inner: Any) -> Any:
        """A behaviour of the same shape as ``inner`` that observes it."""
        if inspect.isasyncgenfunction(inner):

            async def generator(request: Any, context: Context) -> AsyncIterator[Any]:
                started = self._begin(context)
                try:
                    async for response in inner(request, context):
                        yield response
                finally:
                    self._end(context, started)

            return generator

        # Unary handlers return their response; streaming ones such as grpc_health's
        # Watch write with context.write() and return None. Either way: await it.
        async def awaited(request: Any, context: Context) -> Any:
            started = self._begin(context)
            try:
                return await inner(request, context)
            finally:
                self._end(context, started)

        return awaited

    def _begin(self, context: Context) -> float:
        rid = ""
        for key, value in context.invocation_metadata() or ():
            if key == REQUEST_ID_METADATA and isinstance(value, str):
                rid = value[:64]
        rid = rid or _new_request_id()
        request_id_var.set(rid)
        context.set_trailing_metadata(((REQUEST_ID_METADATA, rid),))
        return time.perf_counter()

    def _end(self, context: Context, started: float) -> None:
        code = context.code()
        name = "OK" if code is None else getattr(code, "name", str(code))
        elapsed = time.perf_counter() - started
        child = self._latency.get(name)
        if child is None:
            child = self._latency[name] = self._metrics.rpc_latency.labels(self._method, name)
        child.observe(elapsed)
        if name != "OK":
            log.info("rpc failed", extra={"method": self._method, "code": name})
