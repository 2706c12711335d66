"""At-least-once delivery over ``DeliverStream`` for the sync client.

The same contract as ``stream.AsyncStreamRun`` with threads instead of tasks: grpc pulls
requests from a generator on its own thread, and that generator is also the scheduler of
delayed re-sends (an outbox of ``(due, event)`` pairs); the caller's thread reads the
answers, tops the window up from the caller's iterable and reopens broken streams. A
watchdog thread cancels a call that stays silent for ``idle_timeout`` while events are
unanswered. Connecting follows the asyncio run: each call is opened once the channel is
connected within the connect timeout, and until the service was reached a failed
connection fails the attempt at once, under the unary ``retry`` policy.
"""

from __future__ import annotations

import enum
import heapq
import itertools
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Protocol

import grpc

from amperity_signal_client.errors import (
    from_rpc_error,
    service_unreachable,
)
from amperity_signal_client.ledger import Ledger
from amperity_signal_client.retry import RetryPolicy
from amperity_signal_client.stream import EventLike, StreamBroken, check_concurrency, to_event
from datafly.amperity.v1 import amperity_service_pb2 as pb

if TYPE_CHECKING:
    # grpc's response iterator type exists only in the type stubs.
    OpenCall = Callable[
        [Iterator[pb.DeliverStreamRequest]], grpc._CallIterator[pb.DeliverStreamResponse]
    ]
_Item = tuple[float, pb.Event] | None  # None: every event is answered, half-close
_FAILED = grpc.ChannelConnectivity.TRANSIENT_FAILURE


class _End(enum.Enum):
    """The source is exhausted: None is an item, refused as the asyncio run refuses it."""

    END = enum.auto()


class SyncConnect(Protocol):
    """Waits for the channel to be connected; see ``AmperityClient._connect``."""

    def __call__(self, wait: float, *, fail_fast: bool) -> grpc.ChannelConnectivity:
        """The channel's state when the wait for it to connect ended."""
        ...


class SyncStreamRun:
    """One sync ``deliver_many``: feeds, sends, re-sends and yields until all is answered."""

    def __init__(
        self,
        *,
        open_call: OpenCall,
        connect: SyncConnect,
        target: str,
        connect_timeout: float,
        retry: RetryPolicy,
        request_for: Callable[[pb.Event], pb.DeliverStreamRequest],
        concurrency: int | None,
        ledger: Ledger,
        stream_retry: RetryPolicy,
        idle_timeout: float,
        sleep: Callable[[float], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        concurrency = check_concurrency(concurrency)
        self._open_call = open_call
        self._connect = connect
        self._target = target
        self._connect_timeout = connect_timeout
        self._retry = retry
        self._reached = False
        self._request_for = request_for
        self._concurrency = concurrency
        self._ledger = ledger
        self._stream_retry = stream_retry
        self._idle_timeout = idle_timeout
        self._sleep = sleep
        self._clock = clock
        self._outbox: queue.Queue[_Item] = queue.Queue()
        self._source: Iterator[EventLike] = iter(())
        self._source_done = False
        self._lock = threading.Lock()
        self._on_wire = 0
        self._last_progress = clock()

    def run(self, events: Iterable[EventLike]) -> Iterator[pb.DeliverStreamResponse]:
        """Yield one final DeliverStreamResponse per event, in the order they finish.

        Raises:
            AmperitySignalError: When the stream failed with a non-retryable status or
                could not be reopened within the stream retry policy.
        """
        self._source = iter(events)
        started = self._clock()
        failures = 0
        failing_since: float | None = None
        while True:
            try:
                self._open_outbox()
                self._top_up()
                for response in self._answers(started):
                    failures, failing_since = 0, None
                    yield response
            except StreamBroken as broken:
                failures += 1
                failing_since = self._clock() if failing_since is None else failing_since
                # Never reached: bounded like a unary call from the run's start.
                policy, since = (
                    (self._stream_retry, failing_since) if self._reached else (self._retry, started)
                )
                delay = policy.next_delay(
                    code=broken.code,
                    attempt=failures,
                    elapsed=self._clock() - since,
                    retry_after=broken.retry_after,
                )
                if delay is None:
                    raise broken.error() from None
                self._sleep(delay)
            else:
                return

    def _await_connection(self, started: float) -> None:
        """Return once the channel is connected; raise ``StreamBroken`` when it was not.

        The call just opened (``wait_for_ready``) is what makes the channel connect.
        """
        wait = self._connect_timeout
        if not self._reached:
            wait = min(wait, self._retry.total_timeout - (self._clock() - started))
        state = self._connect(max(wait, 0.0), fail_fast=not self._reached)
        if state is not grpc.ChannelConnectivity.READY:
            failure = service_unreachable(
                self._target, None if state is _FAILED and not self._reached else wait
            )
            raise StreamBroken(failure.code, failure.message, None, failure)
        self._reached = True

    def _open_outbox(self) -> None:
        self._outbox = queue.Queue()
        with self._lock:
            self._on_wire = 0
        for event in self._ledger.unacknowledged():
            self._outbox.put((0.0, event))

    def _top_up(self) -> None:
        """Take events from the caller while the window has room; half-close when done."""
        while not self._source_done and len(self._ledger) < self._concurrency:
            item = next(self._source, _End.END)
            if item is _End.END:
                self._source_done = True
                break
            admitted = self._ledger.admit(to_event(item))
            if admitted is not None:
                self._outbox.put((0.0, admitted))
        if self._source_done and not self._ledger:
            self._outbox.put(None)

    def _answers(self, started: float) -> Iterator[pb.DeliverStreamResponse]:
        call = self._open_call(self._requests(self._outbox))
        try:
            self._await_connection(started)
        except StreamBroken:
            call.cancel()
            self._outbox.put(None)
            raise
        stop = threading.Event()
        stalled = threading.Event()
        watchdog = threading.Thread(
            target=self._watch, args=(call, stop, stalled), name="deliver-many-watchdog"
        )
        watchdog.daemon = True
        watchdog.start()
        try:
            for response in call:
                with self._lock:
                    self._on_wire = max(self._on_wire - 1, 0)
                    self._last_progress = self._clock()
                answer = self._ledger.answer(response)
                if answer.retry is not None:
                    self._outbox.put((self._clock() + answer.retry_delay, answer.retry))
                if answer.release is not None:
                    self._outbox.put((0.0, answer.release))
                if answer.final is not None:
                    self._top_up()
                    yield answer.final
        except grpc.RpcError as error:
            if stalled.is_set():
                raise StreamBroken(
                    grpc.StatusCode.UNAVAILABLE,
                    f"No answer from the service for {self._idle_timeout:g} s.",
                    None,
                ) from error
            failure = from_rpc_error(error)
            if failure.permanent or not self._stream_retry.is_retryable(failure.code):
                raise failure from error
            raise StreamBroken(failure.code, failure.message, failure.retry_after) from error
        finally:
            stop.set()
            call.cancel()
            self._outbox.put(None)
        if self._source_done and not self._ledger:
            return
        raise StreamBroken(
            grpc.StatusCode.UNAVAILABLE,
            "The service ended the stream before answering every event.",
            None,
        )

    def _requests(self, outbox: queue.Queue[_Item]) -> Iterator[pb.DeliverStreamRequest]:
        """The request stream: due events in order, delayed ones when their time comes."""
        delayed: list[tuple[float, int, pb.Event]] = []
        order = itertools.count()
        while True:
            now = self._clock()
            if delayed and delayed[0][0] <= now:
                event = heapq.heappop(delayed)[2]
            else:
                wait = max(delayed[0][0] - now, 0.0) if delayed else None
                try:
                    item = outbox.get(timeout=wait)
                except queue.Empty:
                    continue
                if item is None:
                    return
                due, event = item
                if due > now:
                    heapq.heappush(delayed, (due, next(order), event))
                    continue
            with self._lock:
                if not self._on_wire:
                    self._last_progress = self._clock()
                self._on_wire += 1
            yield self._request_for(event)

    def _watch(
        self,
        call: grpc._CallIterator[pb.DeliverStreamResponse],
        stop: threading.Event,
        stalled: threading.Event,
    ) -> None:
        while not stop.wait(self._idle_timeout / 4):
            with self._lock:
                silent_for = self._clock() - self._last_progress if self._on_wire else 0.0
            if silent_for >= self._idle_timeout:
                stalled.set()
                call.cancel()
                return
