"""``AmperityClient``: the blocking client, the same methods as the asyncio one."""

from __future__ import annotations

import queue
import random
import time
from collections.abc import Callable, Generator, Iterable, Iterator
from contextlib import closing
from datetime import datetime
from types import TracebackType
from typing import Self, TypeVar

import grpc
from google.protobuf.message import Message

from amperity_signal_client.client import (
    DEFAULT_CHANNEL_OPTIONS,
    DEFAULT_RETRY,
    DEFAULT_STREAM_IDLE_TIMEOUT,
    DEFAULT_TIMEOUT,
    ChannelOptions,
    ClientCore,
    attempt_deadline,
    browser_profile_request,
    check_identity,
    check_replay,
    check_string,
    client_options,
    consent_request,
)
from amperity_signal_client.errors import AmperitySignalError, from_rpc_error
from amperity_signal_client.events import ConsentLike
from amperity_signal_client.ledger import Ledger, ensure_message_id
from amperity_signal_client.retry import DEFAULT_STREAM_RETRY, RetryPolicy
from amperity_signal_client.stream import DEFAULT_CONCURRENCY, EventLike, to_event
from amperity_signal_client.sync_stream import SyncStreamRun
from amperity_signal_client.watch import DeliveryWatch, watch_ended
from datafly.amperity.v1 import amperity_service_pb2 as pb
from datafly.amperity.v1 import amperity_service_pb2_grpc as pb_grpc

_FAILED = grpc.ChannelConnectivity.TRANSIENT_FAILURE
_Request = TypeVar("_Request", bound=Message)
_Response = TypeVar("_Response", bound=Message)


class AmperityClient(ClientCore):
    """A blocking client of the AmperityService over a sync gRPC channel.

    Takes the same arguments as ``AsyncAmperityClient`` (``sleep`` is a plain callable)
    and offers the same methods, returning values instead of awaitables.
    """

    def __init__(
        self,
        target: str,
        *,
        integration_id: str | None = None,
        pipeline_key: str | None = None,
        channel_options: ChannelOptions | None = DEFAULT_CHANNEL_OPTIONS,
        credentials: grpc.ChannelCredentials | None = None,
        default_timeout: float | None = DEFAULT_TIMEOUT,
        retry: RetryPolicy | None = DEFAULT_RETRY,
        stream_retry: RetryPolicy | None = DEFAULT_STREAM_RETRY,
        stream_idle_timeout: float | None = DEFAULT_STREAM_IDLE_TIMEOUT,
        sleep: Callable[[float], None] | None = time.sleep,
        clock: Callable[[], float] | None = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        check_identity(target, integration_id, pipeline_key)
        options = client_options(
            channel_options, default_timeout, retry, stream_retry, stream_idle_timeout
        )
        super().__init__(
            target, integration_id, pipeline_key, options=options, clock=clock, rng=rng
        )
        channel = options.channel_options
        if credentials is None:
            self._channel = grpc.insecure_channel(target, options=channel)
        else:
            self._channel = grpc.secure_channel(target, credentials, options=channel)
        self._stub = pb_grpc.AmperityServiceStub(self._channel)
        self._sleep = time.sleep if sleep is None else sleep

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the channel."""
        self._channel.close()

    def deliver(
        self, event: EventLike, *, attempt_timeout: float | None = None
    ) -> pb.DeliverResponse:
        """Deliver one event; see ``AsyncAmperityClient.deliver``."""
        request = pb.DeliverRequest(
            integration_id=self._integration_id, event=ensure_message_id(to_event(event))
        )
        return self._unary(self._stub.Deliver, request, attempt_timeout)

    def enrich(
        self, event: EventLike, *, attempt_timeout: float | None = None
    ) -> pb.EnrichResponse:
        """Resolve the event's visitor; see ``AsyncAmperityClient.enrich``."""
        request = pb.EnrichRequest(integration_id=self._integration_id, event=to_event(event))
        return self._unary(self._stub.Enrich, request, attempt_timeout)

    def browser_profile(
        self, anonymous_id: str, *, attempt_timeout: float | None = None
    ) -> pb.BrowserProfileResponse:
        """The allowlisted attributes for a visitor; see ``AsyncAmperityClient``."""
        request = browser_profile_request(self._integration_id, self._pipeline_key, anonymous_id)
        return self._unary(self._stub.BrowserProfile, request, attempt_timeout)

    def record_consent(
        self,
        anonymous_id: str,
        consent: ConsentLike,
        *,
        consented_at: datetime | None = None,
        attempt_timeout: float | None = None,
    ) -> bool:
        """Keep a visitor's consent state; see ``AsyncAmperityClient.record_consent``."""
        request = consent_request(
            self._integration_id, self._pipeline_key, anonymous_id, consent, consented_at
        )
        response = self._unary(self._stub.RecordConsent, request, attempt_timeout)
        return response.profile_allowed

    def deliver_many(
        self, events: Iterable[EventLike], *, concurrency: int | None = DEFAULT_CONCURRENCY
    ) -> Iterator[pb.DeliverStreamResponse]:
        """Deliver many events at least once; see ``AsyncAmperityClient.deliver_many``."""
        run = SyncStreamRun(
            open_call=self._open_stream,
            connect=self._connect,
            target=self._target,
            connect_timeout=self._default_timeout,
            retry=self._retry,
            request_for=self._stream_request,
            concurrency=concurrency,
            ledger=Ledger(self._retry, self._rng),
            stream_retry=self._stream_retry,
            idle_timeout=self._stream_idle_timeout,
            sleep=self._sleep,
            clock=self._clock,
        )
        return run.run(events)

    def watch_deliveries(
        self,
        replay: int | None = 0,
        *,
        integration_id: str | None = None,
        reconnect: bool | None = True,
    ) -> Generator[pb.WatchDeliveriesResponse, None, None]:
        """Live delivery records, reconnecting; see ``AsyncAmperityClient.watch_deliveries``."""
        integration_id = self._integration_id if integration_id is None else integration_id
        check_string("integration_id", integration_id)
        replay = check_replay(replay)
        if reconnect is not None and not reconnect:
            request = pb.WatchDeliveriesRequest(integration_id=integration_id, replay=replay)
            yield from self._watch_call(request, None)
            return
        watch = DeliveryWatch(integration_id, replay, self._stream_retry, self._clock, self._rng)
        while True:
            try:
                with closing(self._watch_call(watch.request(), watch)) as records:
                    for record in records:
                        if watch.admit(record):
                            yield record
            except AmperitySignalError as failure:
                self._sleep(watch.delay_after(failure))

    def _watch_call(
        self, request: pb.WatchDeliveriesRequest, watch: DeliveryWatch | None
    ) -> Generator[pb.WatchDeliveriesResponse, None, None]:
        """One WatchDeliveries call.

        For a reconnecting ``watch`` the call waits for the service, the watch hears
        when the service answers, and the end of the stream is an ``Unavailable``.
        """
        call = self._stub.WatchDeliveries(
            request, metadata=self._metadata, wait_for_ready=True if watch is not None else None
        )
        try:
            if watch is not None:
                call.initial_metadata()
                if call.is_active():
                    watch.answered()
            yield from call
        except grpc.RpcError as error:
            raise from_rpc_error(error) from error
        finally:
            call.cancel()
        if watch is not None:
            raise watch_ended()

    def _connect(self, wait: float, *, fail_fast: bool) -> grpc.ChannelConnectivity:
        """Wait for the channel to connect; returns its state when the wait ended.

        The wait ends when the channel is READY, after ``wait`` seconds or, with
        ``fail_fast``, when a connection attempt failed (TRANSIENT_FAILURE).
        """
        states: queue.SimpleQueue[grpc.ChannelConnectivity] = queue.SimpleQueue()
        heard = states.put
        state = grpc.ChannelConnectivity.IDLE
        # Real time, not the injectable clock: the wait is grpc's.
        deadline = time.monotonic() + wait
        # grpc calls ``heard`` with the current state at once, then with every change. The
        # stream call just opened makes the channel connect: try_to_connect here would be
        # left set in grpc's poller and make it touch the channel after close() (an
        # exception in its thread).
        self._channel.subscribe(heard, try_to_connect=False)
        try:
            while state is not grpc.ChannelConnectivity.READY:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (fail_fast and state is _FAILED):
                    return state
                try:
                    state = states.get(timeout=remaining)
                except queue.Empty:
                    return state
            return state
        finally:
            self._channel.unsubscribe(heard)

    def _open_stream(
        self, requests: Iterator[pb.DeliverStreamRequest]
    ) -> grpc._CallIterator[pb.DeliverStreamResponse]:
        return self._stub.DeliverStream(requests, metadata=self._metadata, wait_for_ready=True)

    def _unary(
        self,
        method: grpc.UnaryUnaryMultiCallable[_Request, _Response],
        request: _Request,
        attempt_timeout: float | None,
    ) -> _Response:
        per_attempt = attempt_deadline(attempt_timeout, self._default_timeout)
        started = self._clock()
        timeout = min(per_attempt, self._retry.total_timeout)
        attempt = 0
        while True:
            attempt += 1
            try:
                return method(request, timeout=timeout, metadata=self._metadata)
            except grpc.RpcError as error:
                failure = from_rpc_error(error)
                delay = self._retry.delay_after(
                    failure, attempt=attempt, elapsed=self._clock() - started, rng=self._rng
                )
                if delay is None:
                    raise failure from error
                self._sleep(delay)
                # A wait that overran total_timeout (a busy loop) ends the retries too.
                remaining = self._retry.attempt_timeout(per_attempt, self._clock() - started)
                if remaining is None:
                    raise failure from error
                timeout = remaining
