"""``AsyncAmperityClient``: the asyncio client of the amperity-signal service.

Every unary call has a deadline (``default_timeout`` per attempt) and is retried on
UNAVAILABLE / RESOURCE_EXHAUSTED under the ``RetryPolicy``; a call a stopping service
dropped unstarted (CANCELLED) gRPC itself sends again (``RETRY_DROPPED_CALLS``); failures
surface as the readable exceptions of ``amperity_signal_client.errors``.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Sequence,
)
from contextlib import aclosing
from datetime import datetime
from types import TracebackType
from typing import Any, NamedTuple, Self, TypeVar

import grpc
from google.protobuf.message import Message

from amperity_signal_client.errors import AmperitySignalError, from_rpc_error
from amperity_signal_client.events import ConsentLike, consent_from_json, not_text
from amperity_signal_client.fields import check_whole_number, type_name
from amperity_signal_client.ledger import ensure_message_id
from amperity_signal_client.pipeline_key import pipeline_key_problem
from amperity_signal_client.retry import DEFAULT_STREAM_RETRY, RetryPolicy, check_timeout
from amperity_signal_client.stream import DEFAULT_CONCURRENCY, AsyncStreamRun, EventLike, to_event
from amperity_signal_client.watch import DeliveryWatch, watch_ended
from datafly.amperity.v1 import amperity_service_pb2 as pb
from datafly.amperity.v1 import amperity_service_pb2_grpc as pb_grpc

__all__ = [
    "DEFAULT_CHANNEL_OPTIONS",
    "DEFAULT_RETRY",
    "DEFAULT_STREAM_IDLE_TIMEOUT",
    "DEFAULT_TIMEOUT",
    "PIPELINE_KEY_METADATA",
    "RETRY_DROPPED_CALLS",
    "AsyncAmperityClient",
]

DEFAULT_TIMEOUT = 10.0
DEFAULT_STREAM_IDLE_TIMEOUT = 30.0
DEFAULT_RETRY = RetryPolicy()
PIPELINE_KEY_METADATA = "x-pipeline-key"
ChannelOptions = Sequence[tuple[str, Any]]
RETRY_DROPPED_CALLS = json.dumps(
    {
        "methodConfig": [
            {
                "name": [{"service": "datafly.amperity.v1.AmperityService"}],
                "retryPolicy": {
                    "maxAttempts": 3,
                    "initialBackoff": "0.05s",
                    "maxBackoff": "0.5s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["CANCELLED"],
                },
            }
        ]
    }
)
"""gRPC's own retry of a call the service dropped before handling it.

A stopping service (SIGTERM; the old process of a handoff, README "Rotating keys and
certificates") answers CANCELLED to the calls it had received but not yet started: gRPC
core drops them at the stop. gRPC retries such a call only while nothing of its answer has
arrived, and never one the caller cancelled: the retry reaches the process that took
over. A call the stop's grace period cut off mid-handling also ends CANCELLED with nothing
answered, and is sent again too: an event then carries the same message_id (every event
gets one here), which Amperity deduplicates. Measured: 6 to 14 such calls per handoff
with 16 calls in flight on one channel, none with this. The Node client and the gateway
hold the same config (tests/unit/test_retry_dropped_calls_parity.py keeps them equal).
"""
DEFAULT_CHANNEL_OPTIONS: ChannelOptions = (
    ("grpc.primary_user_agent", "amperity-signal-client-python/0.1.0"),
    # Reconnect within seconds of a restarted service rather than grpc's 120 s cap.
    ("grpc.max_reconnect_backoff_ms", 5_000),
    ("grpc.service_config", RETRY_DROPPED_CALLS),
)

_FAILED = grpc.ChannelConnectivity.TRANSIENT_FAILURE
_Request = TypeVar("_Request", bound=Message)
_Response = TypeVar("_Response", bound=Message)


def call_metadata(pipeline_key: str | None) -> tuple[tuple[str, str], ...]:
    """The metadata every call carries: the pipeline key, when the client has one."""
    return ((PIPELINE_KEY_METADATA, pipeline_key),) if pipeline_key else ()


def check_identity(target: object, integration_id: object, pipeline_key: object) -> None:
    """Refuse a client that names no integration, or names it in what cannot be sent.

    Raises:
        TypeError: Naming ``target``, ``integration_id`` or ``pipeline_key`` when it is not
            a string (None means "not given" for the last two).
        ValueError: When neither is given, one holds what cannot be sent, or the
            pipeline key is not one the service takes (``PIPELINE_KEY_RULE``).
    """
    check_string("target", target)
    if integration_id is not None:
        check_string("integration_id", integration_id)
    if pipeline_key is not None:
        # Its type only: check_text would quote the character, and the key is secret.
        require_string("pipeline_key", pipeline_key)
    if not integration_id and not pipeline_key:
        raise ValueError(
            "Pass integration_id (the [[integrations]] id in the service's config) or "
            "pipeline_key (the Datafly pipeline key) so the service knows which "
            "integration to use."
        )
    # A key the service's rule refuses would fail every call NotFound (and one with a
    # non-ASCII character, grpc with an unreadable ExecuteBatchError).
    problem = pipeline_key_problem(pipeline_key) if isinstance(pipeline_key, str) else None
    if problem is not None:
        raise ValueError(f"pipeline_key {problem}")


# What each string argument holds and an example, for the error refusing another type.
_ARGUMENTS = {
    "target": ("the service's address", '"localhost:50051"'),
    "integration_id": ("an [[integrations]] id of the service's config", '"acme-web"'),
    "pipeline_key": ("the Datafly pipeline key", '"pk_live_..."'),
    "anonymous_id": ("the visitor's anonymous id (the _dfid cookie)", '"anon-1"'),
}


def check_string(name: str, value: object) -> str:
    """``value`` when it is a string a proto string field can hold, else an error naming it.

    Another type is refused rather than left to protobuf, whose ``TypeError`` names no
    field, and never converted: ``str(1.0)`` is ``"1.0"`` here but ``"1"`` in the Node
    client, so a converted id would name another visitor. The message says what to pass,
    in the Node client's words (its camelCase names and JavaScript's type names).

    Raises:
        TypeError: When ``value`` is not a ``str`` (``bytes`` included).
        ValueError: When it holds a lone UTF-16 surrogate.
    """
    text = require_string(name, value)
    check_text(name, text)
    return text


_MAX_REPLAY = 2**31 - 1  # WatchDeliveriesRequest.replay is an int32


def check_replay(replay: object) -> int:
    """``replay`` when it is a whole number of records a WatchDeliveriesRequest holds.

    Refused naming ``replay`` rather than left to protobuf, whose errors name no field,
    and never converted: the Node client used to send ``"2"`` as 2, ``1.5`` as 1 and
    ``2**33`` as 0.

    Raises:
        TypeError: When ``replay`` is not an ``int`` (``bool`` included) or None (0).
        ValueError: When it is below 0 or above 2**31 - 1.
    """
    if replay is None:
        return 0  # what protobuf made of it before
    wanted = f"a whole number of records, 0 to {_MAX_REPLAY}, e.g. 10"
    return check_whole_number("replay", replay, wanted, 0, _MAX_REPLAY)


def require_string(name: str, value: object) -> str:
    """``value`` when it is a ``str``, else the ``TypeError`` of ``check_string``."""
    if not isinstance(value, str):
        what, example = _ARGUMENTS[name]
        raise TypeError(
            f"{name} must be a string, {what}, not {type_name(value)}: pass it as text, "
            f"e.g. {example}."
        )
    return value


def check_text(name: str, value: object) -> None:
    """Refuse a string argument a proto string field cannot hold, naming ``name``.

    For the arguments of a call, one string each (a value of another type is left to
    protobuf); the strings of an event are checked by protobuf as they are set.
    """
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError(f"{name} {not_text(value)}") from None


def browser_profile_request(
    integration_id: str, pipeline_key: str, anonymous_id: str
) -> pb.BrowserProfileRequest:
    """The BrowserProfileRequest of ``browser_profile``, in both clients.

    Raises:
        TypeError: Naming ``anonymous_id`` when it is not a string.
        ValueError: Naming ``anonymous_id`` when it holds a lone UTF-16 surrogate.
    """
    check_string("anonymous_id", anonymous_id)
    return pb.BrowserProfileRequest(
        integration_id=integration_id, pipeline_key=pipeline_key, anonymous_id=anonymous_id
    )


class ClientOptions(NamedTuple):
    """The options both clients are built with, each None replaced by its default."""

    channel_options: ChannelOptions
    default_timeout: float
    retry: RetryPolicy
    stream_retry: RetryPolicy
    stream_idle_timeout: float


def client_options(
    channel_options: ChannelOptions | None,
    default_timeout: float | None,
    retry: RetryPolicy | None,
    stream_retry: RetryPolicy | None,
    stream_idle_timeout: float | None,
) -> ClientOptions:
    """The client's options: None means the default, as for every option of every method.

    A client whose deadlines could never let a call finish is refused. Until session 20 a
    None timeout was refused and a None ``retry`` failed at the first retry, while None
    ``channel_options`` quietly dropped ``DEFAULT_CHANNEL_OPTIONS`` for grpc's own.
    """
    options = ClientOptions(
        DEFAULT_CHANNEL_OPTIONS if channel_options is None else channel_options,
        DEFAULT_TIMEOUT if default_timeout is None else default_timeout,
        DEFAULT_RETRY if retry is None else retry,
        DEFAULT_STREAM_RETRY if stream_retry is None else stream_retry,
        DEFAULT_STREAM_IDLE_TIMEOUT if stream_idle_timeout is None else stream_idle_timeout,
    )
    check_timeout("default_timeout", options.default_timeout, example=DEFAULT_TIMEOUT)
    check_timeout(
        "stream_idle_timeout", options.stream_idle_timeout, example=DEFAULT_STREAM_IDLE_TIMEOUT
    )
    return options


def attempt_deadline(attempt_timeout: float | None, default_timeout: float) -> float:
    """The deadline of each attempt of one call: ``attempt_timeout``, else the default."""
    if attempt_timeout is None:
        return default_timeout
    return check_timeout(
        "attempt_timeout",
        attempt_timeout,
        example=2.5,
        otherwise=", or None for the client's default_timeout",
    )


def consent_request(
    integration_id: str,
    pipeline_key: str,
    anonymous_id: str,
    consent: ConsentLike,
    consented_at: datetime | None = None,
) -> pb.RecordConsentRequest:
    """The RecordConsentRequest of ``record_consent``, checked as far as the client can.

    Both clients build it here, so a new field of the request is one more line below.

    Raises:
        ValueError: Naming ``anonymous_id`` (empty, or holding a lone UTF-16 surrogate),
            the bad ``consent`` field, or a naive ``consented_at``.
        TypeError: When ``anonymous_id`` is not a string or ``consented_at`` not a datetime.
    """
    check_string("anonymous_id", anonymous_id)
    if not anonymous_id:
        raise ValueError(
            "anonymous_id is required: consent is kept per visitor; pass the visitor's "
            "anonymous id (the _dfid cookie datafly.js sets, or their events' anonymousId)."
        )
    request = pb.RecordConsentRequest(
        integration_id=integration_id,
        pipeline_key=pipeline_key,
        anonymous_id=anonymous_id,
        consent=consent if isinstance(consent, pb.Consent) else consent_from_json(consent),
    )
    if consented_at is not None:
        request.consented_at.FromDatetime(_aware("consented_at", consented_at))
    return request


def _aware(name: str, moment: object) -> datetime:
    """``moment`` when it is a datetime with a time zone, else an error naming ``name``.

    A naive datetime is refused rather than read as UTC (as an event's ``timestamp`` is):
    ``datetime.now()`` is naive local time, and read as UTC it would move a consent
    hours into the past, where a newer state kept would silently outrank it.
    """
    if not isinstance(moment, datetime):
        raise TypeError(
            f"{name} must be a datetime with a time zone, e.g. datetime.now(UTC), or None "
            f"for when the service receives it; not {type(moment).__name__}."
        )
    if moment.utcoffset() is None:
        raise ValueError(
            f"{name} is a naive datetime (no tzinfo), so the instant it means is unknown: "
            "pass an aware one, e.g. datetime.now(UTC), or .replace(tzinfo=UTC) when it "
            "already holds UTC."
        )
    return moment


class ClientCore:
    """What both clients keep of their checked arguments, and the requests made of them.

    Each client adds what differs: its channel (``grpc.aio`` or ``grpc``) and its
    ``sleep`` (awaited or not).
    """

    def __init__(
        self,
        target: str,
        integration_id: str | None,
        pipeline_key: str | None,
        *,
        options: ClientOptions,
        clock: Callable[[], float] | None,
        rng: random.Random | None,
    ) -> None:
        self._integration_id = integration_id or ""
        self._pipeline_key = pipeline_key or ""
        self._metadata = call_metadata(pipeline_key)
        self._target = target
        self._default_timeout = options.default_timeout
        self._retry = options.retry
        self._stream_retry = options.stream_retry
        self._stream_idle_timeout = options.stream_idle_timeout
        self._clock = time.monotonic if clock is None else clock
        self._rng = rng

    def _stream_request(self, event: pb.Event) -> pb.DeliverStreamRequest:
        return pb.DeliverStreamRequest(integration_id=self._integration_id, event=event)


class AsyncAmperityClient(ClientCore):
    """An asyncio client of the AmperityService.

    Args:
        target: The service's address, e.g. ``"localhost:50051"``.
        integration_id: The integration to use (an ``[[integrations]]`` id).
        pipeline_key: Or the Datafly pipeline key, sent as ``x-pipeline-key`` metadata:
            1-200 printable ASCII characters, no space, as the service takes it.
        channel_options: gRPC channel options, in place of ``DEFAULT_CHANNEL_OPTIONS``:
            keep its ``grpc.service_config`` (``RETRY_DROPPED_CALLS``) to ride out a
            service's stop or handoff.
        credentials: TLS credentials; the channel is plaintext when None.
        default_timeout: The deadline of each attempt of a unary call, and the longest
            wait for a connection before a DeliverStream is opened, in seconds.
        retry: Retries of unary calls and of retryable per-event stream errors; its
            ``total_timeout`` is the overall deadline of a unary call, all attempts and
            waits included, and bounds ``deliver_many`` until it first reaches the service.
        stream_retry: Reopening a broken DeliverStream, counted from the last answer,
            and a broken ``watch_deliveries``, counted from the last new record.
        stream_idle_timeout: Seconds without any answer, while events are unanswered,
            after which a DeliverStream is treated as broken and reopened.
        sleep: Waits between retries (a fake in tests).
        clock: Monotonic seconds, for the retry budgets.
        rng: The jitter's random source (a seeded one in tests).

    None, for any of these but ``target``, means its default, as it does for every option
    of every method.
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
        sleep: Callable[[float], Awaitable[None]] | None = asyncio.sleep,
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
            self._channel = grpc.aio.insecure_channel(target, options=channel)
        else:
            self._channel = grpc.aio.secure_channel(target, credentials, options=channel)
        self._stub = pb_grpc.AmperityServiceStub(self._channel)
        self._sleep = asyncio.sleep if sleep is None else sleep

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the channel; calls in progress are cancelled."""
        await self._channel.close()

    async def deliver(
        self, event: EventLike, *, attempt_timeout: float | None = None
    ) -> pb.DeliverResponse:
        """Deliver one event to Amperity; returns once Amperity accepted it.

        Args:
            event: A proto Event or a Datafly JSON event (camelCase dict). An event without
                a message_id gets a UUID, so retries are recognisable as one event.
            attempt_timeout: The deadline of each attempt, instead of ``default_timeout``.

        Raises:
            AmperitySignalError: The subclass for the status, e.g. ``InvalidArgument``.
            ValueError: When a JSON event is malformed (the message names the field).
        """
        request = pb.DeliverRequest(
            integration_id=self._integration_id, event=ensure_message_id(to_event(event))
        )
        return await self._unary(self._stub.Deliver, request, attempt_timeout)

    async def enrich(
        self, event: EventLike, *, attempt_timeout: float | None = None
    ) -> pb.EnrichResponse:
        """Resolve the event's visitor; returns the attributes and the enriched event.

        Raises:
            AmperitySignalError: The subclass for the status.
            ValueError: When a JSON event is malformed (the message names the field).
        """
        request = pb.EnrichRequest(integration_id=self._integration_id, event=to_event(event))
        return await self._unary(self._stub.Enrich, request, attempt_timeout)

    async def browser_profile(
        self, anonymous_id: str, *, attempt_timeout: float | None = None
    ) -> pb.BrowserProfileResponse:
        """The allowlisted attributes a page may see for one visitor.

        Raises:
            AmperitySignalError: The subclass for the status.
            ValueError: Without a call, naming ``anonymous_id`` when it holds a lone
                UTF-16 surrogate.
        """
        request = browser_profile_request(self._integration_id, self._pipeline_key, anonymous_id)
        return await self._unary(self._stub.BrowserProfile, request, attempt_timeout)

    async def record_consent(
        self,
        anonymous_id: str,
        consent: ConsentLike,
        *,
        consented_at: datetime | None = None,
        attempt_timeout: float | None = None,
    ) -> bool:
        """Keep a visitor's consent state; returns whether the page may see their profile.

        The service keeps the newest state by time (``consented_at``, an event's
        ``timestamp``), so a withdrawal stops ``browser_profile`` at once rather than
        with the visitor's next event, and a state older than the one kept is ignored.

        Args:
            anonymous_id: The visitor's anonymous id (the ``_dfid`` cookie).
            consent: Their whole consent state, in the nested shape events carry:
                ``{"analytics": True, "marketing": False, "functional": True,
                "categories": {"C0003": True}, "google": {"ad_storage": "denied"}}``
                (absent means "no consent given"), or a ``pb.Consent``.
            consented_at: When the visitor made this choice, an aware datetime; None (the
                default) means when the service receives it. Pass it when the call may
                be late (queued, retried from a backlog): an older state never replaces
                a newer one. More than 5 minutes ahead of the service's clock, or before
                2000, is refused (``InvalidArgument``, reason ``INVALID_CONSENT``).
            attempt_timeout: The deadline of each attempt, instead of ``default_timeout``.

        Returns:
            Whether ``browser_profile`` answers attributes for the visitor under the state
            the service keeps: False when that state does not meet the integration's
            ``browser_consent`` condition. When ``consented_at`` is older than the state
            kept, the answer is for the kept one.

        Raises:
            AmperitySignalError: The subclass for the status, e.g. ``NotFound``; or
                ``Unavailable`` with reason ``CACHE_UNAVAILABLE`` when the service could not
                keep the state (its consent store unreachable) and the retries ran out:
                nothing was kept, send it again later.
            ValueError: Without a call, for an empty ``anonymous_id``, a consent field
                of the wrong type (the message names it, e.g. ``consent.analytics``) or
                a naive ``consented_at``; ``TypeError`` when ``anonymous_id`` is not a
                string or ``consented_at`` not a datetime.
        """
        request = consent_request(
            self._integration_id, self._pipeline_key, anonymous_id, consent, consented_at
        )
        response = await self._unary(self._stub.RecordConsent, request, attempt_timeout)
        return response.profile_allowed

    async def deliver_many(
        self,
        events: Iterable[EventLike] | AsyncIterable[EventLike],
        *,
        concurrency: int | None = DEFAULT_CONCURRENCY,
    ) -> AsyncIterator[pb.DeliverStreamResponse]:
        """Deliver many events over DeliverStream, at least once each.

        Yields one final response per event, in the order they finish: ``result`` when
        delivered, ``error`` when the error was not retryable or its retries ran out
        (``errors.from_delivery_error`` makes it an exception). Retryable per-event
        errors are sent again after their ``retry_after_seconds``; a broken stream is
        reopened and every unanswered event sent again, so an event may reach the
        service twice, under the same message_id.

        Args:
            events: Proto Events or Datafly JSON events, sync or async iterable.
            concurrency: How many events may be unanswered at once (None: 64).

        Raises:
            AmperitySignalError: When the stream could not be kept open (see
                ``stream_retry``) or failed with a non-retryable status.
            ValueError: When a JSON event is malformed.
        """
        run = AsyncStreamRun(
            open_call=self._open_stream,
            connect=self._connect,
            target=self._target,
            connect_timeout=self._default_timeout,
            request_for=self._stream_request,
            concurrency=concurrency,
            retry=self._retry,
            stream_retry=self._stream_retry,
            idle_timeout=self._stream_idle_timeout,
            sleep=self._sleep,
            clock=self._clock,
            rng=self._rng,
        )
        async with aclosing(run.run(events)) as responses:
            async for response in responses:
                yield response

    async def watch_deliveries(
        self,
        replay: int | None = 0,
        *,
        integration_id: str | None = None,
        reconnect: bool | None = True,
    ) -> AsyncGenerator[pb.WatchDeliveriesResponse, None]:
        """Live delivery records, after replaying up to ``replay`` recent ones.

        With ``reconnect`` the watch outlives a restarting service or a dropped
        connection. Every call waits for an unreachable service (``wait_for_ready``); a
        call that fails with a retryable status, or that the service ends, is reopened
        after a backoff under ``stream_retry`` (attempts counted from the last new
        record) and asks the service to replay its whole buffer.

        What a reconnect recovers is bounded by that buffer: records delivered while the
        watch was disconnected arrive after it, oldest first, only while the service
        still holds them. It keeps the last 200 records per integration by default and
        starts empty when the service restarts, so records delivered before a restart
        and not yet received are lost. Until the watch has yielded a record, a reopened
        call asks for ``replay`` as given and recovers no more than that. A record
        already yielded (by integration, message_id and delivered_at, the last 4096
        remembered) is not yielded again, nor is a replayed record older than the first
        one this watch yielded.

        Args:
            replay: How many recent records to replay first.
            integration_id: Whose records; the client's integration by default, ``""``
                for all (a client with a pipeline key sees only its key's integration:
                the service scopes the watch by the key).
            reconnect: Reopen the watch when it breaks (True or None); False raises on the
                first break and ends when the service ends the stream.

        Raises:
            AmperitySignalError: At once for a non-retryable status (e.g. ``NotFound``
                for an unknown integration); the last error when ``stream_retry`` is
                exhausted; ``Unavailable`` when the watch breaks and ``reconnect`` is
                False.
        """
        integration_id = self._integration_id if integration_id is None else integration_id
        check_string("integration_id", integration_id)
        replay = check_replay(replay)
        if reconnect is not None and not reconnect:
            request = pb.WatchDeliveriesRequest(integration_id=integration_id, replay=replay)
            async with aclosing(self._watch_call(request, None)) as records:
                async for record in records:
                    yield record
            return
        watch = DeliveryWatch(integration_id, replay, self._stream_retry, self._clock, self._rng)
        while True:
            try:
                async with aclosing(self._watch_call(watch.request(), watch)) as records:
                    async for record in records:
                        if watch.admit(record):
                            yield record
            except AmperitySignalError as failure:
                await self._sleep(watch.delay_after(failure))

    async def _watch_call(
        self, request: pb.WatchDeliveriesRequest, watch: DeliveryWatch | None
    ) -> AsyncGenerator[pb.WatchDeliveriesResponse, None]:
        """One WatchDeliveries call.

        For a reconnecting ``watch`` the call waits for the service, the watch hears
        when the service answers, and the end of the stream is an ``Unavailable``.
        """
        call = self._stub.WatchDeliveries(
            request, metadata=self._metadata, wait_for_ready=True if watch is not None else None
        )
        try:
            if watch is not None:
                await call.initial_metadata()
                if not call.done():
                    watch.answered()
            async for record in call:
                yield record
        except grpc.aio.AioRpcError as error:
            raise from_rpc_error(error) from error
        finally:
            call.cancel()
        if watch is not None:
            raise watch_ended()

    async def _connect(self, wait: float, *, fail_fast: bool) -> grpc.ChannelConnectivity:
        """Wait for the channel to connect; returns its state when the wait ended.

        The wait ends when the channel is READY, after ``wait`` seconds or, with
        ``fail_fast``, when a connection attempt failed (TRANSIENT_FAILURE).
        """
        state = self._channel.get_state(try_to_connect=True)
        # Real time, not the injectable clock: the wait is grpc's, on the event loop.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while state is not grpc.ChannelConnectivity.READY:
            remaining = deadline - loop.time()
            if remaining <= 0 or (fail_fast and state is _FAILED):
                return state
            try:
                await asyncio.wait_for(self._channel.wait_for_state_change(state), remaining)
            except TimeoutError:
                return state
            state = self._channel.get_state(try_to_connect=True)
        return state

    def _open_stream(
        self,
    ) -> grpc.aio.StreamStreamCall[pb.DeliverStreamRequest, pb.DeliverStreamResponse]:
        # Opened once the channel is connected (``_connect``, bounded by default_timeout);
        # wait_for_ready keeps a connection lost in between from failing the call at once.
        return self._stub.DeliverStream(metadata=self._metadata, wait_for_ready=True)

    async def _unary(
        self,
        method: grpc.aio.UnaryUnaryMultiCallable[_Request, _Response],
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
                return await method(request, timeout=timeout, metadata=self._metadata)
            except grpc.aio.AioRpcError as error:
                failure = from_rpc_error(error)
                delay = self._retry.delay_after(
                    failure, attempt=attempt, elapsed=self._clock() - started, rng=self._rng
                )
                if delay is None:
                    raise failure from error
                await self._sleep(delay)
                # A wait that overran total_timeout (a busy loop) ends the retries too.
                remaining = self._retry.attempt_timeout(per_attempt, self._clock() - started)
                if remaining is None:
                    raise failure from error
                timeout = remaining
