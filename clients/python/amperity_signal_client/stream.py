"""At-least-once delivery over ``DeliverStream`` for the asyncio client.

One run owns a ``Ledger`` and a succession of stream calls. A *feeder* task takes events
from the caller's iterable while fewer than ``concurrency`` are unanswered; a *writer*
task per call sends them; the run itself reads the answers. Retryable per-event errors
are sent again after their delay; when the stream breaks (UNAVAILABLE, a killed service,
a stalled connection) a new one is opened after a backoff and everything unanswered is
sent again. Every event gets exactly one final answer, yielded to the caller.

Each call is opened only once the channel is connected, and that wait is bounded by the
connect timeout (the client's ``default_timeout``) instead of being left to the idle
timeout. Until the run has reached the service once, a failed connection attempt fails
the attempt at once and attempts follow the unary ``retry`` policy counted from the run's
start, so a service that is down fails ``deliver_many`` as ``deliver`` fails; after that,
``stream_retry`` reopens the stream, each reopen waiting for a restarting service.
"""

from __future__ import annotations

import asyncio
import random
import sys
from collections.abc import AsyncGenerator, AsyncIterable, Awaitable, Callable, Iterable, Mapping
from contextlib import aclosing
from typing import Any, Protocol, TypeVar

import grpc

from amperity_signal_client.errors import (
    AmperitySignalError,
    error_for,
    from_rpc_error,
    service_unreachable,
)
from amperity_signal_client.events import event_from_json
from amperity_signal_client.fields import check_whole_number
from amperity_signal_client.ledger import Answer, Ledger
from amperity_signal_client.retry import RetryPolicy
from datafly.amperity.v1 import amperity_service_pb2 as pb

EventLike = pb.Event | Mapping[str, Any]
StreamCall = grpc.aio.StreamStreamCall[pb.DeliverStreamRequest, pb.DeliverStreamResponse]
_CORE_WRITE_FAILURE = "Internal error from Core"
_FAILED = grpc.ChannelConnectivity.TRANSIENT_FAILURE
_DONE = None  # the outbox sentinel: every event is answered, half-close the stream
_T = TypeVar("_T")


def to_event(event: EventLike) -> pb.Event:
    """A proto Event as is; a Datafly JSON event (camelCase dict) converted."""
    if isinstance(event, pb.Event):
        return event
    return event_from_json(event)


def _raise_source_failure(feeder: asyncio.Task[None]) -> None:
    """Raise what the caller's events raised (a malformed event, a failing source), if so."""
    if feeder.done() and not feeder.cancelled() and (failure := feeder.exception()) is not None:
        raise failure


async def _unless_source_fails(feeder: asyncio.Task[None], waited: Awaitable[_T]) -> _T:
    """``waited``'s result, unless the feeder fails first: then its exception, at once.

    A malformed event or a source that raises is the caller's error, raised as soon as it
    happens: not after a wait for the channel to connect or a reopen's backoff (the run
    used to hang when it came before the first stream was open).
    """
    task = asyncio.ensure_future(waited)
    try:
        if not feeder.done():
            await asyncio.wait((task, feeder), return_when=asyncio.FIRST_COMPLETED)
        _raise_source_failure(feeder)
        return await task
    finally:
        if not task.done():
            task.cancel()
        elif not task.cancelled():
            task.exception()  # retrieved: the feeder's failure is what is raised


class StreamBroken(Exception):
    """The stream ended before every event was answered; it is worth reopening.

    ``failure``, when given, is the error to raise if it is not reopened.
    """

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        retry_after: float | None,
        failure: AmperitySignalError | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retry_after = retry_after
        self.failure = failure

    def error(self) -> AmperitySignalError:
        """The exception to raise when the stream is not reopened."""
        if self.failure is not None:
            return self.failure
        return error_for(self.code, self.message, retry_after=self.retry_after)


class Connect(Protocol):
    """Waits for the channel to be connected; see ``AsyncAmperityClient._connect``."""

    def __call__(self, wait: float, *, fail_fast: bool) -> Awaitable[grpc.ChannelConnectivity]:
        """The channel's state when the wait for it to connect ended."""
        ...


DEFAULT_CONCURRENCY = 64


def check_concurrency(concurrency: object) -> int:
    """``concurrency`` when it is a whole number of events, 1 or more; None: the default.

    Refused naming it, as the Node client refuses it: a float was taken as it came (1.5
    kept two events unanswered) and a string failed with ``'<' not supported``.

    Raises:
        TypeError: When ``concurrency`` is not an ``int`` (``bool`` included).
        ValueError: When it is below 1.
    """
    if concurrency is None:
        return DEFAULT_CONCURRENCY
    wanted = "a whole number, 1 or more, e.g. 64"
    return check_whole_number("deliver_many concurrency", concurrency, wanted, 1, sys.maxsize)


class AsyncStreamRun:
    """One ``deliver_many``: feeds, sends, re-sends and yields until all is answered."""

    def __init__(
        self,
        *,
        open_call: Callable[[], StreamCall],
        connect: Connect,
        target: str,
        connect_timeout: float,
        request_for: Callable[[pb.Event], pb.DeliverStreamRequest],
        concurrency: int | None,
        retry: RetryPolicy,
        stream_retry: RetryPolicy,
        idle_timeout: float,
        sleep: Callable[[float], Awaitable[None]],
        clock: Callable[[], float],
        rng: random.Random | None,
    ) -> None:
        concurrency = check_concurrency(concurrency)
        self._open_call = open_call
        self._connect = connect
        self._target = target
        self._connect_timeout = connect_timeout
        self._reached = False
        self._request_for = request_for
        self._retry = retry
        self._stream_retry = stream_retry
        self._idle_timeout = idle_timeout
        self._sleep = sleep
        self._clock = clock
        self._rng = rng
        self._ledger = Ledger(retry, rng)
        self._slots = asyncio.Semaphore(concurrency)
        self._outbox: asyncio.Queue[pb.Event | None] = asyncio.Queue()
        self._epoch = 0
        self._source_done = False
        self._on_wire = 0
        self._write_failed = False
        self._last_progress = clock()
        self._timers: set[asyncio.Task[None]] = set()

    async def run(
        self, events: Iterable[EventLike] | AsyncIterable[EventLike]
    ) -> AsyncGenerator[pb.DeliverStreamResponse, None]:
        """Yield one final DeliverStreamResponse per event, in the order they finish.

        Raises:
            AmperitySignalError: When the stream failed with a non-retryable status or
                could not be reopened within the stream retry policy; every response
                yielded before is final, events without one were not confirmed.
        """
        feeder = asyncio.create_task(self._feed(events))
        started = self._clock()
        failures = 0
        failing_since: float | None = None
        try:
            while True:
                try:
                    call = await _unless_source_fails(feeder, self._open_connected(started))
                    try:
                        async with aclosing(self._answers(call, feeder)) as answers:
                            async for response in answers:
                                failures, failing_since = 0, None
                                yield response
                    finally:
                        call.cancel()
                except StreamBroken as broken:
                    failures += 1
                    failing_since = self._clock() if failing_since is None else failing_since
                    # Never reached: the run is one call to a service that may be down,
                    # bounded like a unary call from its start.
                    policy, since = (
                        (self._stream_retry, failing_since)
                        if self._reached
                        else (self._retry, started)
                    )
                    delay = policy.next_delay(
                        code=broken.code,
                        attempt=failures,
                        elapsed=self._clock() - since,
                        retry_after=broken.retry_after,
                        rng=self._rng,
                    )
                    if delay is None:
                        raise broken.error() from None
                    await _unless_source_fails(feeder, self._sleep(delay))
                else:
                    return
        finally:
            feeder.cancel()
            for timer in list(self._timers):
                timer.cancel()

    async def _open_connected(self, started: float) -> StreamCall:
        """A new call, once the channel is connected within the connect timeout.

        Raises:
            StreamBroken: The service was not reached (UNAVAILABLE naming the
                target); before it was ever reached, the wait is cut to what remains
                of the retry policy's total_timeout and ends at a failed connection.
        """
        wait = self._connect_timeout
        if not self._reached:
            wait = min(wait, self._retry.total_timeout - (self._clock() - started))
        # Until the service was reached, a failed connection attempt fails the attempt at
        # once, as it fails a unary call; a reopen waits through them for a restart.
        state = await self._connect(max(wait, 0.0), fail_fast=not self._reached)
        if state is not grpc.ChannelConnectivity.READY:
            failure = service_unreachable(
                self._target, None if state is _FAILED and not self._reached else wait
            )
            raise StreamBroken(failure.code, failure.message, None, failure)
        self._reached = True
        return self._open()

    def _open(self) -> StreamCall:
        """A new call whose outbox starts with every unanswered event."""
        self._epoch += 1
        self._on_wire = 0
        self._write_failed = False
        self._outbox = asyncio.Queue()
        for event in self._ledger.unacknowledged():
            self._outbox.put_nowait(event)
        if self._source_done and not self._ledger:
            self._outbox.put_nowait(_DONE)
        return self._open_call()

    async def _answers(
        self, call: StreamCall, feeder: asyncio.Task[None]
    ) -> AsyncGenerator[pb.DeliverStreamResponse, None]:
        writer = asyncio.create_task(self._write(call, self._outbox))
        # The answers as the call's iterator gives them, not ``call.read()``: once the status
        # has come, read() raises it at once, and answers the service sent before its
        # status and not yet read were lost (a service stopping: its last answers, so those
        # events were sent again after the restart). The iterator gives every answer first.
        answers = aiter(call)
        reading: asyncio.Task[object] | None = None
        try:
            while True:
                if reading is None:
                    reading = asyncio.create_task(anext(answers, grpc.aio.EOF))
                # The feeder may have failed before this call was opened (while the
                # channel connected): it is no longer waited for, so look at it here.
                _raise_source_failure(feeder)
                waiting: set[asyncio.Future[Any]] = {reading}
                if not feeder.done():
                    waiting.add(feeder)
                done, _ = await asyncio.wait(
                    waiting,
                    timeout=self._idle_timeout / 4,
                    return_when=asyncio.FIRST_COMPLETED,
                )
                _raise_source_failure(feeder)
                if reading not in done:
                    self._check_stalled()
                    continue
                result = self._result(reading)
                reading = None
                if result is grpc.aio.EOF:
                    if self._source_done and not self._ledger:
                        return
                    raise StreamBroken(
                        grpc.StatusCode.UNAVAILABLE,
                        "The service ended the stream before answering every event.",
                        None,
                    )
                if isinstance(result, pb.DeliverStreamResponse):
                    final = self._handle(result)
                    if final is not None:
                        yield final
        finally:
            writer.cancel()
            if reading is not None:
                reading.cancel()

    def _result(self, reading: asyncio.Task[object]) -> object:
        try:
            return reading.result()
        except grpc.aio.AioRpcError as error:
            failure = from_rpc_error(error)
            if error.code() == grpc.StatusCode.INTERNAL and (
                self._write_failed or error.details() == _CORE_WRITE_FAILURE
            ):
                # grpc.aio replaces the status with this INTERNAL when a write races the end
                # of the call (a service going away); the stream broke, reopening helps.
                raise StreamBroken(
                    grpc.StatusCode.UNAVAILABLE,
                    "The stream broke while events were being sent.",
                    None,
                ) from error
            if failure.permanent or not self._stream_retry.is_retryable(failure.code):
                raise failure from error
            raise StreamBroken(failure.code, failure.message, failure.retry_after) from error

    def _check_stalled(self) -> None:
        if self._on_wire and self._clock() - self._last_progress >= self._idle_timeout:
            raise StreamBroken(
                grpc.StatusCode.UNAVAILABLE,
                f"No answer from the service for {self._idle_timeout:g} s.",
                None,
            )

    def _handle(self, response: pb.DeliverStreamResponse) -> pb.DeliverStreamResponse | None:
        self._last_progress = self._clock()
        self._on_wire = max(self._on_wire - 1, 0)
        answer: Answer = self._ledger.answer(response)
        if answer.retry is not None:
            self._resend_later(answer.retry, answer.retry_delay)
        if answer.release is not None:
            self._outbox.put_nowait(answer.release)
        if answer.final is not None:
            self._slots.release()
            if self._source_done and not self._ledger:
                self._outbox.put_nowait(_DONE)
        return answer.final

    def _resend_later(self, event: pb.Event, delay: float) -> None:
        epoch = self._epoch

        async def resend() -> None:
            await self._sleep(delay)
            # A reopened stream has re-sent it already.
            if epoch == self._epoch and self._ledger.is_pending(event.message_id):
                self._outbox.put_nowait(event)

        timer = asyncio.create_task(resend())
        self._timers.add(timer)
        timer.add_done_callback(self._timers.discard)

    async def _feed(self, events: Iterable[EventLike] | AsyncIterable[EventLike]) -> None:
        if isinstance(events, AsyncIterable):
            async for item in events:
                await self._admit(item)
        else:
            for item in events:
                await self._admit(item)
        self._source_done = True
        if not self._ledger:
            self._outbox.put_nowait(_DONE)

    async def _admit(self, item: EventLike) -> None:
        event = to_event(item)
        await self._slots.acquire()
        admitted = self._ledger.admit(event)
        if admitted is not None:
            self._outbox.put_nowait(admitted)

    async def _write(self, call: StreamCall, outbox: asyncio.Queue[pb.Event | None]) -> None:
        try:
            while (event := await outbox.get()) is not None:
                if not self._ledger.is_pending(event.message_id):
                    continue
                if not self._on_wire:
                    self._last_progress = self._clock()
                self._on_wire += 1
                await call.write(self._request_for(event))
            await call.done_writing()
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
            # The call failed or finished; the reading side reports why.
            self._write_failed = True
