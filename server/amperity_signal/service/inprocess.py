"""An in-process gRPC channel: the generated stub calling the servicer without a socket.

``amperity-signal serve`` runs the HTTP gateway in the service's own event loop. The
gateway reaches the service only through the generated stub (it can run as its own
process), but when both share a process a loopback TCP hop costs the gateway most of its
time: HTTP/2 framing on both sides, two trips through the C core, a poller thread. This
channel keeps the stub and gives it a shorter wire, as grpc-java's in-process transport
and grpc-go's ``bufconn`` do:

- each unary call serialises the request with the stub's serializer and parses it with
  the method's deserializer (and the response back), so caller and servicer never share a
  message, exactly as over a socket;
- the handlers are the server's own, observed ones (``ObservedRegistration``), so request
  ids, RPC latency and failure logs are the same;
- the handler runs in the caller's task under the call's deadline (cancelled when it
  passes, answering ``DEADLINE_EXCEEDED``); a task per call cost a third of the channel's
  overhead (~50 us of ~150 us, measured), so instead the context variables a handler sets
  per RPC (``context_vars``: the log fields) are put back afterwards, and the caller's log
  lines keep their own;
- the deadline's timer is armed only when the handler first waits (``_within``): one that
  answers without waiting, as a cache hit does, could not be cancelled by it anyway (a
  timer fires only while the loop runs), and arming and cancelling ``asyncio.timeout``
  per call cost ~4-5 us; a call that ran past its deadline still fails with
  ``DEADLINE_EXCEEDED``;
- ``abort``/``abort_with_status`` and ``set_code`` reach the caller as the same
  ``grpc.aio.AioRpcError`` (status details in the trailing metadata) a socket would carry;
- streaming methods, which the gateway uses only for the operator's live page, go over a
  real channel to ``fallback_target``, opened on first use (with ``fallback_credentials``
  when the service listens with TLS: a private Unix socket, see ``runner``).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
import types
from collections.abc import Callable, Coroutine, Generator, Sequence
from typing import Any, TypeAlias

import grpc

log = logging.getLogger("amperity_signal.rpc")
DEADLINE_DETAILS = "Deadline Exceeded"

Handlers: TypeAlias = "dict[str, grpc.RpcMethodHandler[Any, Any]]"
Metadata: TypeAlias = Sequence[tuple[str, str | bytes]]


class HandlerRegistry:
    """Collects method handlers as a ``grpc.aio.Server`` would (``add_*_to_server``)."""

    def __init__(self) -> None:
        self.handlers: Handlers = {}

    def add_generic_rpc_handlers(self, generic_rpc_handlers: Sequence[Any]) -> None:
        """Generated code registers generically too; the registered handlers suffice."""

    def add_registered_method_handlers(
        self, service_name: str, method_handlers: dict[str, grpc.RpcMethodHandler[Any, Any]]
    ) -> None:
        """Keep each method's handler under its full path, ``/package.Service/Method``."""
        for name, handler in method_handlers.items():
            self.handlers[f"/{service_name}/{name}"] = handler


_UNSET: Any = object()


def _default_of(var: contextvars.ContextVar[Any]) -> Any:
    """A context variable's default (what ``get()`` answers where it was never set)."""
    try:
        return contextvars.Context().run(var.get)
    except LookupError:
        return _UNSET


class _Aborted(grpc.aio.AbortError):
    """Raised by ``abort``: the handler ends with a status (as grpc.aio's own abort)."""


class _Context:
    """The part of ``grpc.aio.ServicerContext`` the servicers and their observation use."""

    def __init__(self, metadata: Metadata, deadline: float | None) -> None:
        self._metadata = tuple(metadata)
        self._deadline = deadline
        self._code: grpc.StatusCode | None = None
        self._details = ""
        self._trailing: tuple[tuple[str, str | bytes], ...] = ()

    def invocation_metadata(self) -> Metadata:
        return self._metadata

    def time_remaining(self) -> float | None:
        return None if self._deadline is None else max(self._deadline - time.monotonic(), 0.0)

    def _expired(self) -> bool:
        return self._deadline is not None and time.monotonic() >= self._deadline

    def set_trailing_metadata(self, trailing_metadata: Metadata) -> None:
        self._trailing = tuple(trailing_metadata)

    def trailing_metadata(self) -> Metadata:
        return self._trailing

    def set_code(self, code: grpc.StatusCode) -> None:
        self._code = code

    def code(self) -> grpc.StatusCode | None:
        # A call still running at its deadline has failed, as a socket server reports it
        # (the observation reads this while the deadline's cancellation unwinds the handler).
        if self._code is None and self._expired():
            return grpc.StatusCode.DEADLINE_EXCEEDED
        return self._code

    def set_details(self, details: str) -> None:
        self._details = details

    def details(self) -> str:
        return self._details

    def peer(self) -> str:
        return "inprocess"

    def done(self) -> bool:
        """Whether the call is over: never while its handler runs, in the caller's own task.

        The observation asks it of an unexpected error (``interceptors._Observed``); without
        it that error became an ``AttributeError``, answered UNKNOWN and never logged as the
        failure it was.
        """
        return False

    async def abort(
        self, code: grpc.StatusCode, details: str = "", trailing_metadata: Metadata = ()
    ) -> None:
        self._code = code
        self._details = details
        if trailing_metadata:
            self._trailing = (*self._trailing, *trailing_metadata)
        raise _Aborted

    async def abort_with_status(self, status: grpc.Status) -> None:
        await self.abort(status.code, status.details, status.trailing_metadata)

    def error(self) -> grpc.aio.AioRpcError:
        code = self.code() or grpc.StatusCode.UNKNOWN
        details = self._details
        if not details and code == grpc.StatusCode.DEADLINE_EXCEEDED:
            details = DEADLINE_DETAILS
        return rpc_error(code, details, self._trailing)


def rpc_error(code: grpc.StatusCode, details: str, trailing: Metadata = ()) -> grpc.aio.AioRpcError:
    """The exception a socket channel raises for a call that ended with ``code``."""
    return grpc.aio.AioRpcError(
        code, grpc.aio.Metadata(), grpc.aio.Metadata(*trailing), details=details
    )


class _UnaryUnary(grpc.aio.UnaryUnaryMultiCallable[Any, Any]):
    """One method of the stub, dispatched to its handler in this process."""

    def __init__(
        self,
        channel: InProcessChannel,
        method: str,
        serializer: Callable[[Any], bytes] | None,
        deserializer: Callable[[bytes], Any] | None,
    ) -> None:
        self._channel = channel
        self._method = method
        self._serializer = serializer
        self._deserializer = deserializer

    def __call__(  # type: ignore[override]
        self,
        request: Any,
        *,
        timeout: float | None = None,
        metadata: Metadata | None = None,
        **_: Any,
    ) -> Any:
        return self._channel.invoke(
            self._method, request, timeout, metadata or (), self._serializer, self._deserializer
        )


class InProcessChannel(grpc.aio.Channel):
    """A ``grpc.aio.Channel`` whose unary calls run the registered handlers directly.

    Args:
        handlers: Method path to handler (``HandlerRegistry.handlers``).
        fallback_target: Where streaming calls go (the service's own gRPC address).
        fallback_options: Options of that channel.
        fallback_credentials: Its credentials; None for a plaintext channel.
        context_vars: Context variables handlers set per RPC, restored after each call.
    """

    def __init__(
        self,
        handlers: Handlers,
        *,
        fallback_target: str,
        fallback_options: Sequence[tuple[str, Any]] = (),
        fallback_credentials: grpc.ChannelCredentials | None = None,
        context_vars: Sequence[contextvars.ContextVar[Any]] = (),
    ) -> None:
        self._handlers = handlers
        self._fallback_target = fallback_target
        self._fallback_options = list(fallback_options)
        self._fallback_credentials = fallback_credentials
        self._fallback: grpc.aio.Channel | None = None
        # Each variable with its default, found once: finding it makes a Context per call.
        self._context_vars = tuple((var, _default_of(var)) for var in context_vars)

    async def invoke(  # noqa: PLR0917 - one call's parts, positional by design
        self,
        method: str,
        request: Any,
        seconds: float | None,
        metadata: Metadata,
        serializer: Callable[[Any], bytes] | None,
        deserializer: Callable[[bytes], Any] | None,
    ) -> Any:
        """Run one unary call (``seconds``: its timeout); its response, or the AioRpcError."""
        handler = self._handlers.get(method)
        if handler is None or handler.unary_unary is None:
            raise rpc_error(grpc.StatusCode.UNIMPLEMENTED, "Method not found!")
        wire = serializer(request) if serializer else request
        try:
            parsed = handler.request_deserializer(wire) if handler.request_deserializer else wire
        except Exception as exc:  # grpc.aio's server answers bytes that do not parse so
            raise _unexpected(exc) from None
        deadline = None if seconds is None else time.monotonic() + seconds
        context = _Context(metadata, deadline)
        saved = [(var, default, var.get(_UNSET)) for var, default in self._context_vars]
        try:
            response = await _within(_run(handler.unary_unary, parsed, context), deadline)
        finally:
            for var, default, value in saved:
                if value is not _UNSET:
                    var.set(value)
                elif default is not _UNSET and var.get(_UNSET) is not _UNSET:
                    var.set(default)  # never set before this call: back to its default
        if context.code() not in (None, grpc.StatusCode.OK):
            raise context.error()
        try:
            wire = (
                handler.response_serializer(response) if handler.response_serializer else response
            )
        except Exception as exc:
            raise _unexpected(exc) from None
        return deserializer(wire) if deserializer else wire

    def _fallback_channel(self) -> grpc.aio.Channel:
        if self._fallback is None and self._fallback_credentials is not None:
            self._fallback = grpc.aio.secure_channel(
                self._fallback_target, self._fallback_credentials, options=self._fallback_options
            )
        elif self._fallback is None:
            self._fallback = grpc.aio.insecure_channel(
                self._fallback_target, options=self._fallback_options
            )
        return self._fallback

    def unary_unary(
        self,
        method: str,
        request_serializer: Callable[[Any], bytes] | None = None,
        response_deserializer: Callable[[bytes], Any] | None = None,
        _registered_method: bool | None = False,
    ) -> grpc.aio.UnaryUnaryMultiCallable[Any, Any]:
        """A callable running ``method``'s handler in process."""
        return _UnaryUnary(self, method, request_serializer, response_deserializer)

    def unary_stream(self, *args: Any, **kwargs: Any) -> Any:
        """Streaming calls go over the fallback channel."""
        return self._fallback_channel().unary_stream(*args, **kwargs)

    def stream_unary(self, *args: Any, **kwargs: Any) -> Any:
        """Streaming calls go over the fallback channel."""
        return self._fallback_channel().stream_unary(*args, **kwargs)

    def stream_stream(self, *args: Any, **kwargs: Any) -> Any:
        """Streaming calls go over the fallback channel."""
        return self._fallback_channel().stream_stream(*args, **kwargs)

    async def close(self, grace: float | None = None) -> None:
        """Close the fallback channel (unary calls end with their callers)."""
        if self._fallback is not None:
            await self._fallback.close(grace)
            self._fallback = None

    async def __aenter__(self) -> InProcessChannel:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def get_state(self, try_to_connect: bool = False) -> grpc.ChannelConnectivity:
        """Always ready: there is nothing to connect."""
        return grpc.ChannelConnectivity.READY

    async def wait_for_state_change(self, last_observed_state: grpc.ChannelConnectivity) -> None:
        """The state never changes."""
        await asyncio.Event().wait()

    async def channel_ready(self) -> None:
        """Ready at once."""


@types.coroutine
def _within(call: Coroutine[Any, Any, Any], deadline: float | None) -> Generator[Any, None, Any]:
    """``await call`` in the caller's task, cancelled at ``deadline`` (``time.monotonic``).

    The first step runs here without a timer; only a call that then waits gets one, for
    what is left of its deadline.

    Raises:
        grpc.aio.AioRpcError: DEADLINE_EXCEEDED when the deadline passed while it waited.
    """
    try:
        waiting = call.send(None)
    except StopIteration as answered:
        return answered.value
    if deadline is None:
        return (yield from _resumed(call, waiting))
    return (yield from _timed(call, waiting, deadline))


async def _timed(call: Coroutine[Any, Any, Any], waiting: Any, deadline: float) -> Any:
    try:
        async with asyncio.timeout(deadline - time.monotonic()):
            return await _resumed(call, waiting)
    except TimeoutError:
        raise rpc_error(grpc.StatusCode.DEADLINE_EXCEEDED, DEADLINE_DETAILS) from None


@types.coroutine
def _resumed(call: Coroutine[Any, Any, Any], waiting: Any) -> Generator[Any, None, Any]:
    """The rest of ``call``, whose first step (taken by hand) yielded ``waiting``.

    What ``yield from call`` does, from the point where it handed ``waiting`` to the task:
    what the task throws in (a cancellation) reaches the handler where it waits.
    """
    while True:
        try:
            yield waiting
        except GeneratorExit:
            call.close()
            raise
        except BaseException as thrown:  # a cancellation, passed on to the handler
            try:
                waiting = call.throw(thrown)
            except StopIteration as answered:
                return answered.value
            continue
        return (yield from call)


def _unexpected(exc: Exception) -> grpc.aio.AioRpcError:
    """What grpc.aio's server answers when (de)serialising a message fails."""
    return rpc_error(grpc.StatusCode.UNKNOWN, f"Unexpected {type(exc)}: {exc}")


async def _run(behaviour: Any, request: Any, context: _Context) -> Any:
    """The handler's answer; an abort or an unexpected error becomes the context's status."""
    try:
        return await behaviour(request, context)
    except _Aborted:
        return None
    except Exception:
        # A socket server logs the same and answers UNKNOWN without the error's text.
        log.exception("Exception calling application")
        context.set_code(grpc.StatusCode.UNKNOWN)
        context.set_details("Exception calling application")
        return None
