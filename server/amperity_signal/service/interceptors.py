"""Cross-cutting work for every RPC: a request id, a log line, latency metrics, a count.

The work is wrapped around each method handler when it is registered
(``ObservedRegistration``), not run by a ``grpc.aio.ServerInterceptor``.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import random
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from amperity_signal.errors import MalformedRequest
from amperity_signal.logs import request_id_var
from amperity_signal.metrics import Metrics
from amperity_signal.service.inflight import CallsInFlight
from amperity_signal.service.status import (
    ANSWERED_WITH,
    PIPELINE_KEY_METADATA,
    REQUEST_ID_METADATA,
    to_grpc_status,
    unexpected_failure,
)

log = logging.getLogger("amperity_signal.rpc")

CALLER_CAUSED = frozenset({"INVALID_ARGUMENT", "NOT_FOUND", "CANCELLED"})
"""Codes the caller brings about (a bad request, an unknown key, hanging up): logged at debug.

Any visitor can cause them through the gateway's public routes, each page that closes
its Live Events does, and the caller already holds the status with its fix.
"""

Context = grpc.aio.ServicerContext[Any, Any]

_NOT_READ: tuple[Any, str] = (None, "")
_begun: tuple[Any, str] = _NOT_READ
"""The context of the call whose observation began last, and its ``x-pipeline-key``."""


def pipeline_key_of(context: Context) -> str:
    """The call's ``x-pipeline-key`` metadata, empty when it has none.

    grpc.aio builds a new tuple of the call's metadata at each ``invocation_metadata()``
    (~16k instructions for three entries). The observation reads it once as the call
    begins (``_Observed._begin``) and keeps the key beside that call's context: a servicer
    method that asks before its first ``await``, as each method does, finds it there. Any
    other context (another call began since, or a servicer called directly) has its
    metadata read here, so the answer is always this context's own.
    """
    begun = _begun
    if begun[0] is context:
        return begun[1]
    pipeline_key = ""
    for key, value in context.invocation_metadata() or ():
        if key == PIPELINE_KEY_METADATA and isinstance(value, str):
            pipeline_key = value
    return pipeline_key


class ObservedRegistration:
    """Registers method handlers on the server (and its in-process registry), each observed.

    It stands where the generated ``add_*_to_server`` functions expect a server: they only
    call the two registration methods, which it forwards to every target with each method
    handler wrapped to set a request id, time the RPC and log failed calls.

    Wrapping when methods are registered replaces a ``grpc.aio.ServerInterceptor``, whose
    pipeline (a lookup coroutine, a continuation and a ``functools.partial`` per call) cost
    ~10-20 us of server CPU per RPC under load: up to ~8 % more throughput for a handler that
    costs nothing, lost in the noise for a full Enrich hit (docs/benchmarks.md, session 5).
    The wrapped handler of each method is built once.

    Args:
        metrics: ``rpc_latency`` is observed per method and status code.
        targets: Where the wrapped handlers go (the ``grpc.aio.Server``, a ``HandlerRegistry``).
        calls: Counts the calls in a handler (a stop waits on it); a fresh one when None.
    """

    def __init__(self, metrics: Metrics, *targets: Any, calls: CallsInFlight | None = None) -> None:
        self._metrics = metrics
        self._targets = targets
        self._calls = calls or CallsInFlight()
        self._wrapped: dict[str, tuple[Any, grpc.RpcMethodHandler[Any, Any]]] = {}

    def add_generic_rpc_handlers(self, generic_rpc_handlers: Sequence[Any]) -> None:
        """Register generic handlers whose answers are wrapped (once per method)."""
        observed = tuple(
            _ObservedGeneric(handler, self.observed) for handler in generic_rpc_handlers
        )
        for target in self._targets:
            target.add_generic_rpc_handlers(observed)

    def add_registered_method_handlers(
        self, service_name: str, method_handlers: dict[str, grpc.RpcMethodHandler[Any, Any]]
    ) -> None:
        """Register one service's method handlers, each wrapped."""
        observed = {
            name: self.observed(f"/{service_name}/{name}", handler)
            for name, handler in method_handlers.items()
        }
        for target in self._targets:
            target.add_registered_method_handlers(service_name, observed)

    def observed(
        self, method: str, handler: grpc.RpcMethodHandler[Any, Any]
    ) -> grpc.RpcMethodHandler[Any, Any]:
        """``handler`` wrapped to observe ``method``; the same wrapper for the same handler."""
        cached = self._wrapped.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        observed = _Observed(self._metrics, method, self._calls, streams=handler.response_streaming)
        wrapped = _wrap(handler, observed)
        self._wrapped[method] = (handler, wrapped)
        return wrapped


class _ObservedGeneric(grpc.GenericRpcHandler):
    """A generic handler answering its inner handler's method handlers, observed."""

    def __init__(
        self,
        inner: Any,
        observed: Callable[[str, grpc.RpcMethodHandler[Any, Any]], grpc.RpcMethodHandler[Any, Any]],
    ) -> None:
        self._inner = inner
        self._observed = observed

    def service(
        self, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        """The inner handler's method handler for the call, wrapped; None when it has none."""
        handler = self._inner.service(handler_call_details)
        if handler is None:
            return None
        return self._observed(handler_call_details.method, handler)


class Malformed:
    """What a request's bytes became when they are not the method's message.

    grpc.aio answers a deserializer's exception with UNKNOWN and the exception's class in
    the details; the observed handler answers this with INVALID_ARGUMENT instead.
    """

    __slots__ = ("decode_error",)

    def __init__(self, decode_error: str) -> None:
        self.decode_error = decode_error


def malformed_request(method: str, decode_error: str) -> MalformedRequest:
    """The error of a request (or a streamed one) whose bytes did not parse."""
    return MalformedRequest(
        f"the request is not a valid protobuf message for {method} ({decode_error}); "
        "send the message the generated stubs build",
        metadata={"method": method, "decode_error": decode_error},
    )


def _tolerant(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    """``deserializer``, answering corrupt bytes with a ``Malformed`` instead of raising."""
    if deserializer is None:
        return None
    parse = deserializer

    def deserialize(data: bytes) -> Any:
        try:
            return parse(data)
        except DecodeError as error:
            return Malformed(str(error))

    return deserialize


async def _checked(requests: AsyncIterator[Any], method: str) -> AsyncIterator[Any]:
    """A request stream that raises ``MalformedRequest`` at the first corrupt message."""
    async for request in requests:
        if type(request) is Malformed:
            raise malformed_request(method, request.decode_error)
        yield request


def _wrap(
    handler: grpc.RpcMethodHandler[Any, Any], observed: _Observed
) -> grpc.RpcMethodHandler[Any, Any]:
    """A method handler of the same shape (unary, generator or writer) that observes calls."""
    codec = {
        "request_deserializer": _tolerant(handler.request_deserializer),
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(observed.wrap(handler.unary_unary), **codec)
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(observed.wrap(handler.unary_stream), **codec)
    if handler.stream_unary:
        behaviour = observed.wrap(handler.stream_unary, streamed=True)
        return grpc.stream_unary_rpc_method_handler(behaviour, **codec)
    if handler.stream_stream:
        behaviour = observed.wrap(handler.stream_stream, streamed=True)
        return grpc.stream_stream_rpc_method_handler(behaviour, **codec)
    return handler


async def _write_all(responses: AsyncGenerator[Any, None], context: Context) -> bool:
    """Write each answer of a streaming handler; False when gRPC refused one (the call is over).

    The answers are written here, with grpc.aio's writer API, rather than by grpc.aio
    iterating the generator: a call cancelled while an answer waits on flow control (its
    caller stopped reading, and a stop cut the call) then stops here and the generator is
    closed at once, so its ``finally`` runs now rather than whenever the collector
    finalizes it.
    """
    try:
        async for response in responses:
            try:
                await context.write(response)
            except grpc.aio.InternalError:
                # The call's caller left, or a stop cancelled it: no one is left to answer.
                return False
        return True
    finally:
        await responses.aclose()


def _new_request_id() -> str:
    """32 random hex digits, the shape of ``uuid4().hex`` without its syscall per call."""
    # The module's generator reseeds itself in forked workers; this is an id, not a secret.
    return f"{random.getrandbits(128):032x}"


class _Observed:
    """One method's observation: request id in, latency and outcome out.

    ``streams``: the method answers with a stream (a watch, DeliverStream), which its
    caller's deadline ends as a matter of course.
    """

    def __init__(
        self, metrics: Metrics, method: str, calls: CallsInFlight, *, streams: bool = False
    ) -> None:
        self._metrics = metrics
        self._method = method
        self._calls = calls
        self._streams = streams
        self._latency: dict[str, Any] = {}

    def wrap(self, inner: Any, *, streamed: bool = False) -> Any:
        """A behaviour of the same shape as ``inner`` that observes it.

        A corrupt request (``Malformed``, or ``MalformedRequest`` out of a request stream)
        ends the call with INVALID_ARGUMENT.
        """
        if inspect.isasyncgenfunction(inner):

            async def writer(request: Any, context: Context) -> None:
                started, cancelled = self._begin(context), False
                try:
                    if type(request) is Malformed:
                        await context.abort_with_status(
                            to_grpc_status(malformed_request(self._method, request.decode_error))
                        )
                    try:
                        responses = inner(
                            _checked(request, self._method) if streamed else request, context
                        )
                        cancelled = not await _write_all(responses, context)
                    except MalformedRequest as error:
                        await context.abort_with_status(to_grpc_status(error))
                except Exception as error:
                    await self._unexpected(context, error)
                except asyncio.CancelledError:
                    cancelled = True
                    raise
                finally:
                    self._end(context, started, cancelled=cancelled)

            return writer

        # Unary handlers return their response; streaming ones such as grpc_health's
        # Watch write with context.write() and return None. Either way: await it.
        async def awaited(request: Any, context: Context) -> Any:
            started, cancelled = self._begin(context), False
            try:
                if type(request) is Malformed:
                    await context.abort_with_status(
                        to_grpc_status(malformed_request(self._method, request.decode_error))
                    )
                if not streamed:
                    return await inner(request, context)
                try:
                    return await inner(_checked(request, self._method), context)
                except MalformedRequest as error:
                    await context.abort_with_status(to_grpc_status(error))
            except Exception as error:
                await self._unexpected(context, error)
            except asyncio.CancelledError:
                cancelled = True
                raise
            finally:
                self._end(context, started, cancelled=cancelled)

        return awaited

    async def _unexpected(self, context: Context, error: Exception) -> None:
        """End the call with INTERNAL and a request id, logging the error; an abort passes.

        A call already over has no one to answer: what failed is noted, not logged as a bug.

        grpc.aio would answer UNKNOWN with ``str(error)`` in the details: internals, and
        whatever the error holds (a header value with a key in it), for any caller to read.
        """
        if isinstance(error, grpc.aio.AbortError):
            raise error
        if context.done():
            # The call is over (its caller left just as the handler ended it, e.g. a watch
            # closed by a stop): answering fails, and a second abort would raise again.
            # The traceback still reaches a debug log: a real bug may end a call that late.
            log.info(
                "rpc ended after its call was over",
                exc_info=error if log.isEnabledFor(logging.DEBUG) else None,
                extra={"method": self._method, "error_type": type(error).__name__},
            )
            return
        log.error(
            "rpc failed unexpectedly",
            exc_info=error,
            extra={"method": self._method, "code": "INTERNAL"},
        )
        await context.abort_with_status(to_grpc_status(unexpected_failure(), logged=True))

    def _begin(self, context: Context) -> float:
        # The call's metadata, read once: its request id, and its pipeline key for
        # ``pipeline_key_of``. The last value of each key counts.
        rid = pipeline_key = ""
        for key, value in context.invocation_metadata() or ():
            if key == REQUEST_ID_METADATA and isinstance(value, str):
                rid = value[:64]
            elif key == PIPELINE_KEY_METADATA and isinstance(value, str):
                pipeline_key = value
        global _begun  # noqa: PLW0603 - one slot, see pipeline_key_of
        _begun = (context, pipeline_key)
        rid = rid or _new_request_id()
        request_id_var.set(rid)
        # The call starts with nothing answered, whatever the task's parent context held.
        ANSWERED_WITH.set(None)
        context.set_trailing_metadata(((REQUEST_ID_METADATA, rid),))
        self._calls.begin(self._method)
        return time.perf_counter()

    def _end(self, context: Context, started: float, *, cancelled: bool = False) -> None:
        global _begun  # noqa: PLW0603
        if _begun[0] is context:
            _begun = _NOT_READ  # the call is over: its context is not kept alive
        self._calls.end(self._method)
        code = context.code()
        if code is None and cancelled:
            # grpc.aio cancels the handler when the caller hangs up or its deadline passes,
            # and leaves the code unset: such a call did not succeed.
            remaining = context.time_remaining()
            expired = remaining is not None and remaining <= 0
            code = grpc.StatusCode.DEADLINE_EXCEEDED if expired else grpc.StatusCode.CANCELLED
        name = "OK" if code is None else getattr(code, "name", str(code))
        elapsed = time.perf_counter() - started
        child = self._latency.get(name)
        if child is None:
            child = self._latency[name] = self._metrics.rpc_latency.tally(self._method, name)
        child.observe(elapsed)
        if name != "OK":
            self._failed(name)

    def _failed(self, code: str) -> None:
        """Log the ``rpc failed`` line with the reason code: one line per failure.

        None for a failure logged already where it was met (``to_grpc_status``'s
        ``logged``); what the caller caused (``CALLER_CAUSED``, or the deadline of a call
        answering with a stream) at debug; the rest at info.
        """
        reason, logged = ANSWERED_WITH.get() or ("", False)
        if logged:
            return
        caused = code in CALLER_CAUSED or (self._streams and code == "DEADLINE_EXCEEDED")
        level = logging.DEBUG if caused else logging.INFO
        if log.isEnabledFor(level):
            extra = {"method": self._method, "code": code}
            if reason:
                extra["reason"] = reason
            log.log(level, "rpc failed", extra=extra)
