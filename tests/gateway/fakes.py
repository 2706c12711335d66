"""A fake AmperityService on a real grpc.aio server: canned profiles, recorded deliveries."""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import grpc.aio
from google.protobuf import any_pb2, struct_pb2

from datafly.amperity.v1 import amperity_service_pb2 as pb
from datafly.amperity.v1 import amperity_service_pb2_grpc as pb_grpc

KNOWN_KEY = "pk_test"
KNOWN_VISITOR = "visitor-known"
CANNED_ATTRIBUTES: dict[str, Any] = {"Persona": "Value Hunter", "LifetimeTier": "Gold", "Orders": 7}
# A secret the fake "leaks" into a live record, for the gateway's second redaction pass.
LEAKED_SECRET = "eyJleaked.secret.token"
REFUSED_REQUEST_ID = "req-refused-0001"
"""The request id the fake answers a ``refused:`` event with, as the service answers one."""


def live_record(message_id: str = "msg-live-1") -> pb.WatchDeliveriesResponse:
    """A delivered record whose headers and payload carry secrets the gateway must scrub."""
    record = pb.WatchDeliveriesResponse(
        integration_id="web",
        message_id=message_id,
        event=pb.Event(message_id=message_id, type="track", event="Product Added"),
        amperity_type="add_to_cart",
        outcome="delivered",
    )
    record.payload.update({"type": "add_to_cart", "note": f"token {LEAKED_SECRET} here"})
    vendor = record.vendor_request
    vendor.method = "POST"
    vendor.url = "https://acme.amperity.com/prof/events/esm-2VP6va3Zn"
    vendor.status_code = 202
    vendor.attempts = 1
    vendor.headers["Authorization"] = f"Bearer {LEAKED_SECRET}"
    vendor.headers["Amperity-Tenant"] = "acme"
    return record


SERVICE_NAME = pb.DESCRIPTOR.services_by_name["AmperityService"].full_name

# google.rpc and grpc_health ship without type information; load them dynamically.
_status_pb2: Any = importlib.import_module("google.rpc.status_pb2")
_details_pb2: Any = importlib.import_module("google.rpc.error_details_pb2")
_health_pb2: Any = importlib.import_module("grpc_health.v1.health_pb2")
_health_grpc: Any = importlib.import_module("grpc_health.v1.health_pb2_grpc")
_health_async: Any = importlib.import_module("grpc_health.v1._async")


def rich_trailer(code: grpc.StatusCode, message: str, *details: Any) -> tuple[tuple[str, bytes]]:
    """The ``grpc-status-details-bin`` trailer for a status with packed details."""
    packed = []
    for detail in details:
        wrapper = any_pb2.Any()
        wrapper.Pack(detail)
        packed.append(wrapper)
    status = _status_pb2.Status(code=code.value[0], message=message, details=packed)
    return (("grpc-status-details-bin", status.SerializeToString()),)


@dataclass
class Delivered:
    """One Deliver call as the fake received it."""

    request: pb.DeliverRequest
    metadata: dict[str, str]


@dataclass
class FakeAmperityService(pb_grpc.AmperityServiceServicer):
    """Knows one pipeline key; visitors it has seen identified get the canned attributes.

    Events named ``fail:<STATUS>`` make Deliver fail with that status and rich details;
    ``refused:<STATUS>`` as the service fails an event Amperity refused (an ErrorInfo
    naming the integration, a request id), its message quoting ``LEAKED_SECRET``;
    one named ``cancelled-once`` is answered CANCELLED the first time its message_id comes,
    as a stopping service answers a call it had received but not started.
    Its browser consent condition is ``functional``: a visitor whose last RecordConsent did
    not grant it gets ``{}``, as the real service answers with ``browser_consent``.
    """

    delivered: list[Delivered] = field(default_factory=list)
    profile_requests: list[pb.BrowserProfileRequest] = field(default_factory=list)
    identified: set[str] = field(default_factory=lambda: {KNOWN_VISITOR})
    live_records: list[pb.WatchDeliveriesResponse] = field(default_factory=list)
    watch_requests: list[pb.WatchDeliveriesRequest] = field(default_factory=list)
    consent_requests: list[pb.RecordConsentRequest] = field(default_factory=list)
    withdrawn: set[str] = field(default_factory=set)
    watching: bool = False
    """Whether a watch stays open after ``live_records``, for records ``publish`` sends."""
    subscribe_delay: float = 0.0
    """Seconds a watch takes to subscribe, as a busy service might."""
    watches: list[asyncio.Queue[pb.WatchDeliveriesResponse | None]] = field(default_factory=list)
    watches_ended: bool = False
    watch_called: asyncio.Event = field(default_factory=asyncio.Event)
    """Set once a WatchDeliveries call has reached the fake."""
    deliver_calls: list[str] = field(default_factory=list)
    """The message_id of every Deliver call that reached the fake, answered or not."""

    def publish(self, record: pb.WatchDeliveriesResponse) -> None:
        """Send ``record`` to every watch subscribed so far, as a delivery would."""
        for queue in self.watches:
            queue.put_nowait(record)

    def end_watches(self) -> None:
        """End every watch, and any that subscribes later, as a stopping service does."""
        self.watches_ended = True
        for queue in self.watches:
            queue.put_nowait(None)

    async def BrowserProfile(  # noqa: N802 - the RPC name is fixed by the contract
        self, request: pb.BrowserProfileRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.BrowserProfileResponse:
        """Canned attributes for identified visitors of the known key, NOT_FOUND for others."""
        self.profile_requests.append(request)
        if request.pipeline_key != KNOWN_KEY:
            await context.abort(grpc.StatusCode.NOT_FOUND, "no integration uses that key")
        if request.anonymous_id == "visitor-slow":
            await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "too slow")
        if request.anonymous_id == "visitor-refused-bare":
            # A refusal without an ErrorInfo, as a service older than the reasons sends.
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "anonymous_id is refused")
        attributes = struct_pb2.Struct()
        if request.anonymous_id in self.identified and request.anonymous_id not in self.withdrawn:
            attributes.update(CANNED_ATTRIBUTES)
        return pb.BrowserProfileResponse(provider="amperity", attributes=attributes)

    async def RecordConsent(  # noqa: N802
        self, request: pb.RecordConsentRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.RecordConsentResponse:
        """Records the call; the profile is allowed while ``functional`` is granted."""
        self.consent_requests.append(request)
        if request.pipeline_key != KNOWN_KEY:
            await context.abort(grpc.StatusCode.NOT_FOUND, "no integration uses that key")
        allowed = request.consent.HasField("functional") and request.consent.functional
        if allowed:
            self.withdrawn.discard(request.anonymous_id)
        else:
            self.withdrawn.add(request.anonymous_id)
        return pb.RecordConsentResponse(profile_allowed=allowed)

    async def Deliver(  # noqa: N802
        self, request: pb.DeliverRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.DeliverResponse:
        """Records the call; fails as the event name asks; remembers identified visitors."""
        metadata = {k: v for k, v in (context.invocation_metadata() or ()) if isinstance(v, str)}
        if metadata.get("x-pipeline-key") != KNOWN_KEY:
            await context.abort(grpc.StatusCode.NOT_FOUND, "no integration uses that key")
        name = request.event.event
        self.deliver_calls.append(request.event.message_id)
        if name == "cancelled-once" and self.deliver_calls.count(request.event.message_id) == 1:
            await context.abort(grpc.StatusCode.CANCELLED, "the service is stopping")
        if name.startswith("fail:"):
            await self._fail(context, grpc.StatusCode[name.removeprefix("fail:")])
        if name.startswith("refused:"):
            await self._refuse(context, grpc.StatusCode[name.removeprefix("refused:")])
        self.delivered.append(Delivered(request, metadata))
        if request.event.type == "identify" and request.event.user_id:
            self.identified.add(request.event.anonymous_id)
        return pb.DeliverResponse(message_id=request.event.message_id, amperity_type="track")

    async def Enrich(  # noqa: N802
        self, request: pb.EnrichRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.EnrichResponse:
        """Not used by the gateway."""
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "the gateway never calls Enrich")

    async def DeliverStream(  # noqa: N802
        self,
        request_iterator: AsyncIterator[pb.DeliverStreamRequest],
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> AsyncIterator[pb.DeliverStreamResponse]:
        """Not used by the gateway."""
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "the gateway never streams")
        yield pb.DeliverStreamResponse()  # pragma: no cover - makes this a generator

    async def WatchDeliveries(  # noqa: N802
        self, request: pb.WatchDeliveriesRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[pb.WatchDeliveriesResponse]:
        """Streams ``live_records``, then published ones while ``watching``; unknown: NOT_FOUND.

        Like the service, it subscribes before it sends the call's headers.
        """
        self.watch_requests.append(request)
        self.watch_called.set()
        if request.integration_id not in ("", "web"):
            await context.abort(grpc.StatusCode.NOT_FOUND, "no such integration")
        if self.subscribe_delay:
            await asyncio.sleep(self.subscribe_delay)
        queue: asyncio.Queue[pb.WatchDeliveriesResponse | None] = asyncio.Queue()
        if self.watching and not self.watches_ended:
            self.watches.append(queue)
        await context.send_initial_metadata(())
        for record in self.live_records:
            yield record
        while queue in self.watches and (published := await queue.get()) is not None:
            yield published

    async def _fail(
        self, context: grpc.aio.ServicerContext[Any, Any], code: grpc.StatusCode
    ) -> None:
        details: list[Any] = [_details_pb2.ErrorInfo(reason=f"FAKE_{code.name}", domain="test")]
        if code == grpc.StatusCode.INVALID_ARGUMENT:
            # Named as Deliver names its fields, below the request's ``event``.
            violation = _details_pb2.BadRequest.FieldViolation(
                field="event.properties.price", description="must be a number"
            )
            details.append(_details_pb2.BadRequest(field_violations=[violation]))
        if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED):
            retry = _details_pb2.RetryInfo()
            retry.retry_delay.FromSeconds(7)
            details.append(retry)
        message = f"fake failure {code.name}"
        await context.abort(code, message, trailing_metadata=rich_trailer(code, message, *details))

    async def _refuse(
        self, context: grpc.aio.ServicerContext[Any, Any], code: grpc.StatusCode
    ) -> None:
        metadata = {"integration_id": "web", "endpoint": "events", "status_code": "401"}
        info = _details_pb2.ErrorInfo(
            reason="INGEST_KEY_REJECTED", domain="test", metadata=metadata
        )
        # A service of another version, quoting a secret the gateway is configured with.
        message = f"Amperity answered 401 on event POST (key {LEAKED_SECRET}): regenerate it."
        trailers = (*rich_trailer(code, message, info), ("x-request-id", REFUSED_REQUEST_ID))
        await context.abort(code, message, trailing_metadata=trailers)


@dataclass
class RunningService:
    """The fake service, its server and its address."""

    fake: FakeAmperityService
    server: grpc.aio.Server
    target: str
    health: Any

    async def set_serving(self, serving: bool) -> None:
        """Flip the health status of the AmperityService."""
        status = (
            _health_pb2.HealthCheckResponse.SERVING
            if serving
            else (_health_pb2.HealthCheckResponse.NOT_SERVING)
        )
        await self.health.set(SERVICE_NAME, status)


async def start_fake_service() -> RunningService:
    """Start the fake on 127.0.0.1:0 with a health service that says SERVING."""
    fake = FakeAmperityService()
    server = grpc.aio.server()
    pb_grpc.add_AmperityServiceServicer_to_server(fake, server)
    health = _health_async.HealthServicer()
    _health_grpc.add_HealthServicer_to_server(health, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    running = RunningService(fake, server, f"127.0.0.1:{port}", health)
    await running.set_serving(True)
    return running
