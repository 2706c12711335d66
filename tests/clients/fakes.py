"""A scriptable AmperityService on a real grpc.aio server, and a sleep that does not wait."""

from __future__ import annotations

import asyncio
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf import any_pb2, duration_pb2, struct_pb2, timestamp_pb2
from google.rpc import error_details_pb2, status_pb2

from datafly.amperity.v1 import amperity_service_pb2 as pb
from datafly.amperity.v1 import amperity_service_pb2_grpc as pb_grpc

DOMAIN = "amperity-signal.datafly.com"
STATUS_DETAILS_KEY = "grpc-status-details-bin"


@dataclass(frozen=True)
class Failure:
    """A status the fake answers with, carrying google.rpc details like the real service."""

    code: grpc.StatusCode
    message: str
    reason: str
    metadata: dict[str, str] = field(default_factory=dict)
    violations: tuple[tuple[str, str], ...] = ()
    retry_delay: float | None = None

    def trailers(self) -> tuple[tuple[str, bytes], ...]:
        """The ``grpc-status-details-bin`` trailer holding the packed google.rpc.Status."""
        details: list[Any] = [
            error_details_pb2.ErrorInfo(reason=self.reason, domain=DOMAIN, metadata=self.metadata)
        ]
        if self.violations:
            details.append(
                error_details_pb2.BadRequest(
                    field_violations=[
                        error_details_pb2.BadRequest.FieldViolation(field=f, description=d)
                        for f, d in self.violations
                    ]
                )
            )
        if self.retry_delay is not None:
            delay = duration_pb2.Duration()
            delay.FromNanoseconds(int(self.retry_delay * 1e9))
            details.append(error_details_pb2.RetryInfo(retry_delay=delay))
        packed = []
        for detail in details:
            wrapper = any_pb2.Any()
            wrapper.Pack(detail)
            packed.append(wrapper)
        status = status_pb2.Status(code=self.code.value[0], message=self.message, details=packed)
        return ((STATUS_DETAILS_KEY, status.SerializeToString()),)

    async def abort(self, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        """Fail the RPC with this status."""
        await context.abort(self.code, self.message, trailing_metadata=self.trailers())


def unavailable(retry_delay: float | None = 1.5) -> Failure:
    """The status the service answers when Amperity stayed unavailable."""
    return Failure(
        grpc.StatusCode.UNAVAILABLE,
        "Amperity did not answer in time; retry after the delay.",
        "AMPERITY_UNAVAILABLE",
        {"tenant": "acme"},
        retry_delay=retry_delay,
    )


def delivery_error(code: int, reason: str, retry_after: float = 0.0) -> pb.DeliveryError:
    """A per-event error of a DeliverStream response."""
    return pb.DeliveryError(
        code=code, message=f"{reason} happened.", reason=reason, retry_after_seconds=retry_after
    )


def delivered(message_id: str) -> pb.DeliverResponse:
    """What the fake answers for a delivered event."""
    return pb.DeliverResponse(
        message_id=message_id,
        amperity_type="view_item",
        vendor_request=pb.VendorRequest(method="POST", status_code=202, attempts=1),
    )


def live_record(message_id: str, delivered_second: int) -> pb.WatchDeliveriesResponse:
    """A record of integration "shop", delivered ``delivered_second`` s after a fixed start."""
    return pb.WatchDeliveriesResponse(
        integration_id="shop",
        message_id=message_id,
        delivered_at=timestamp_pb2.Timestamp(seconds=1_700_000_000 + delivered_second),
        outcome="delivered",
    )


class LiveRecords:
    """The service's Live Events in small: a bounded buffer of records plus live fan-out.

    Attributes:
        buffer: The kept records, oldest first; a watch replays at most all of them.
    """

    def __init__(self, buffer_size: int = 200) -> None:
        self.buffer: deque[pb.WatchDeliveriesResponse] = deque(maxlen=buffer_size)
        self._watchers: set[asyncio.Queue[pb.WatchDeliveriesResponse | None]] = set()

    def publish(self, record: pb.WatchDeliveriesResponse) -> None:
        """Keep a record and hand it to every open watch."""
        self.buffer.append(record)
        for watcher in self._watchers:
            watcher.put_nowait(record)

    def end_watches(self) -> None:
        """End every open watch as if the stream was closed cleanly."""
        for watcher in self._watchers:
            watcher.put_nowait(None)

    async def watch(
        self, integration_id: str, replay: int
    ) -> AsyncIterator[pb.WatchDeliveriesResponse]:
        """Up to ``replay`` kept records, then live ones until ``end_watches``."""
        watcher: asyncio.Queue[pb.WatchDeliveriesResponse | None] = asyncio.Queue()
        self._watchers.add(watcher)
        kept = [record for record in self.buffer if integration_id in ("", record.integration_id)]
        try:
            for record in kept[max(len(kept) - replay, 0) :]:
                yield record
            while (record_or_end := await watcher.get()) is not None:
                if integration_id in ("", record_or_end.integration_id):
                    yield record_or_end
        finally:
            self._watchers.discard(watcher)


class ScriptedService(pb_grpc.AmperityServiceServicer):
    """An AmperityService that answers as the test scripts it and records what it saw.

    Attributes:
        unary_failures: Statuses the next unary calls fail with, in order; then success.
        event_errors: Per message_id, the errors its next DeliverStream answers carry.
        stream_aborts: Per DeliverStream opened, after how many answers it is aborted
            with UNAVAILABLE (None: never); streams beyond the list are never aborted.
        stream_stalls: How many of the next DeliverStreams read requests but never answer.
        watch_failures: Statuses the next WatchDeliveries calls fail with, in order.
        live: The delivery records WatchDeliveries replays and streams.
        clock: The clock ``arrivals`` are read from (a test's ``FakeClock``).
        arrivals: The ``clock`` reading when each unary call arrived.
        calls: The unary method names called, in order.
        deadlines: The time remaining of each unary call when it arrived.
        metadata: The invocation metadata of each call, as dicts.
        requests: The unary requests received.
        received: How often each message_id arrived on a DeliverStream.
        answered_ok: How often each message_id was answered with a result.
        streams_opened: How many DeliverStreams were opened.
    """

    def __init__(self) -> None:
        self.unary_failures: list[Failure] = []
        self.event_errors: dict[str, list[pb.DeliveryError]] = {}
        self.stream_aborts: list[int | None] = []
        self.stream_failure: Failure | None = None
        self.stream_stalls = 0
        self.watch_failures: list[Failure] = []
        self.live = LiveRecords()
        self.clock: Callable[[], float] | None = None
        self.arrivals: list[float] = []
        self.calls: list[str] = []
        self.deadlines: list[float | None] = []
        self.metadata: list[dict[str, str | bytes]] = []
        self.requests: list[Any] = []
        self.received: Counter[str] = Counter()
        self.answered_ok: Counter[str] = Counter()
        self.streams_opened = 0

    async def _unary(self, name: str, request: Any, context: Any) -> None:
        self.calls.append(name)
        if self.clock is not None:
            self.arrivals.append(self.clock())
        self.requests.append(request)
        self.deadlines.append(context.time_remaining())
        self.metadata.append(dict(context.invocation_metadata() or ()))
        if self.unary_failures:
            await self.unary_failures.pop(0).abort(context)

    async def Deliver(  # noqa: N802 - the RPC name is fixed by the contract
        self, request: pb.DeliverRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.DeliverResponse:
        """Answer delivered, unless a failure is scripted."""
        await self._unary("Deliver", request, context)
        return delivered(request.event.message_id)

    async def Enrich(  # noqa: N802
        self, request: pb.EnrichRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.EnrichResponse:
        """Answer resolved with one attribute, unless a failure is scripted."""
        await self._unary("Enrich", request, context)
        attributes = struct_pb2.Struct()
        attributes.update({"Persona": "Value Hunter"})
        event = pb.Event()
        event.CopyFrom(request.event)
        event.partner_attrs.update({"amperity": {"Persona": "Value Hunter"}})
        return pb.EnrichResponse(
            resolved=True, amperity_id="amp-1", attributes=attributes, event=event
        )

    async def BrowserProfile(  # noqa: N802
        self, request: pb.BrowserProfileRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.BrowserProfileResponse:
        """Answer the provider and one attribute, unless a failure is scripted."""
        await self._unary("BrowserProfile", request, context)
        attributes = struct_pb2.Struct()
        attributes.update({"Persona": "Value Hunter"})
        return pb.BrowserProfileResponse(provider="amperity", attributes=attributes)

    async def RecordConsent(  # noqa: N802
        self, request: pb.RecordConsentRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.RecordConsentResponse:
        """Allow the profile, unless a failure is scripted."""
        await self._unary("RecordConsent", request, context)
        return pb.RecordConsentResponse(profile_allowed=True)

    async def WatchDeliveries(  # noqa: N802
        self, request: pb.WatchDeliveriesRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[pb.WatchDeliveriesResponse]:
        """Fail as scripted, or send headers, replay kept records, then live ones."""
        self.calls.append("WatchDeliveries")
        self.requests.append(request)
        if self.watch_failures:
            await self.watch_failures.pop(0).abort(context)
        await context.send_initial_metadata(())
        async for record in self.live.watch(request.integration_id, request.replay):
            yield record

    async def DeliverStream(  # noqa: N802
        self,
        request_iterator: AsyncIterator[pb.DeliverStreamRequest],
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> AsyncIterator[pb.DeliverStreamResponse]:
        """Answer each request in turn, failing events and the stream as scripted."""
        self.streams_opened += 1
        self.metadata.append(dict(context.invocation_metadata() or ()))
        if self.stream_failure is not None:
            await self.stream_failure.abort(context)
        abort_after = self.stream_aborts.pop(0) if self.stream_aborts else None
        if self.stream_stalls:
            self.stream_stalls -= 1
            async for request in request_iterator:
                self.received[request.event.message_id] += 1
            await asyncio.Event().wait()  # never answers: a hung service
        answered = 0
        async for request in request_iterator:
            if abort_after is not None and answered >= abort_after:
                await context.abort(grpc.StatusCode.UNAVAILABLE, "The service is restarting.")
            message_id = request.event.message_id
            self.received[message_id] += 1
            errors = self.event_errors.get(message_id)
            if errors:
                yield pb.DeliverStreamResponse(message_id=message_id, error=errors.pop(0))
            else:
                self.answered_ok[message_id] += 1
                yield pb.DeliverStreamResponse(message_id=message_id, result=delivered(message_id))
            answered += 1


@dataclass
class RunningService:
    """The fake, serving on 127.0.0.1 at ``target``."""

    service: ScriptedService
    server: grpc.aio.Server
    target: str


async def start_service(port: int = 0, service: ScriptedService | None = None) -> RunningService:
    """Start a ScriptedService on a real grpc.aio server bound to 127.0.0.1 (0: any port)."""
    service = service or ScriptedService()
    server = grpc.aio.server()
    pb_grpc.add_AmperityServiceServicer_to_server(service, server)
    port = server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    return RunningService(service, server, f"127.0.0.1:{port}")


class FakeSleep:
    """An async sleep that records the wait and returns at once."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        await asyncio.sleep(0)


class FakeSyncSleep:
    """A blocking sleep that records the wait and returns at once."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


class FakeClock:
    """Monotonic seconds that move only when a wait is "slept" through ``sleep``.

    Attributes:
        now: The current reading.
        overrun: Seconds every wait lasts beyond what was asked (a busy event loop).
        waits: The waits asked for, in order.
    """

    def __init__(self, overrun: float = 0.0) -> None:
        self.now = 0.0
        self.overrun = overrun
        self.waits: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        """Record the wait and move the clock past it (by ``overrun`` more)."""
        self.waits.append(seconds)
        self.now += seconds + self.overrun
        await asyncio.sleep(0)

    def sync_sleep(self, seconds: float) -> None:
        """The blocking twin of ``sleep``."""
        self.waits.append(seconds)
        self.now += seconds + self.overrun
