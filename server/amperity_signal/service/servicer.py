"""The AmperityService servicer: protos in, use cases called, protos out. No business logic."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
from google.protobuf import timestamp_pb2

from amperity_signal.amperity.models import VendorCall
from amperity_signal.browser import BrowserProfiles
from amperity_signal.delivery import Delivered, Delivery
from amperity_signal.enrich import Enricher
from amperity_signal.enrich.result import EnrichResult
from amperity_signal.errors import (
    AmperitySignalError,
    FieldViolation,
    InvalidConsent,
    InvalidEvent,
    InvalidFields,
    MalformedRequest,
    ServiceStopping,
    UnknownIntegration,
)
from amperity_signal.logs import integration_id_var, message_id_var, scrub_forms
from amperity_signal.service import convert
from amperity_signal.service.interceptors import pipeline_key_of
from amperity_signal.service.live import REPLAYED_METADATA, DeliveryRecord, LiveEvents
from amperity_signal.service.registry import Integration, Registry
from amperity_signal.service.status import (
    to_delivery_error,
    to_grpc_status,
    unexpected_failure,
)
from amperity_signal.service.validation import (
    DEFAULT_MAX_BYTES,
    anonymous_id_violations,
    checked_event_dict,
    consent_violations,
    nanos_violation,
)
from datafly.amperity.v1 import amperity_service_pb2 as pb
from datafly.amperity.v1 import amperity_service_pb2_grpc as pb_grpc

log = logging.getLogger("amperity_signal.service")

DEFAULT_DEADLINE = 30.0
STREAM_CONCURRENCY = 64
_UINT32_MAX = 2**32 - 1
_CACHE_STATUS = {
    "hit": pb.CACHE_STATUS_HIT,
    "miss": pb.CACHE_STATUS_MISS,
    "stale": pb.CACHE_STATUS_STALE,
    "dampened": pb.CACHE_STATUS_DAMPENED,
    "disabled": pb.CACHE_STATUS_DISABLED,
}


MESSAGE_ID_REQUIRED_ON_STREAMS = FieldViolation(
    "event.message_id",
    "is required on DeliverStream: answers arrive in completion order and carry it, so it "
    "is how each answer finds its event; set a unique id per event (Deliver makes one up).",
)

_ANONYMOUS_ID_REQUIRED = FieldViolation(
    "anonymous_id",
    "is required: consent is kept per visitor; send the _dfid value datafly.js sets.",
)


CONSENTED_AT_MAX_AHEAD = timedelta(minutes=5)
"""How far past the service's clock RecordConsent's consented_at may lie (clocks drift);
further is a mistake, which would otherwise outrank every real change until then."""
_CONSENTED_AT_MIN = datetime(2000, 1, 1, tzinfo=UTC).timestamp()


def _consented_at(
    request: pb.RecordConsentRequest, now: datetime
) -> tuple[datetime | None, list[FieldViolation]]:
    """RecordConsent's ``consented_at`` (None when unset), or why it cannot be used."""
    if not request.HasField("consented_at"):
        return None, []
    timestamp = request.consented_at
    if not 0 <= timestamp.nanos < 1_000_000_000:
        return None, [nanos_violation("consented_at", timestamp.nanos)]
    seconds = timestamp.seconds + timestamp.nanos / 1e9
    latest = (now + CONSENTED_AT_MAX_AHEAD).timestamp()
    if _CONSENTED_AT_MIN <= seconds <= latest:
        return timestamp.ToDatetime(tzinfo=UTC), []
    return None, [
        FieldViolation(
            "consented_at",
            "must lie between 2000-01-01 and 5 minutes past the service's clock (now "
            f"{now.isoformat(timespec='seconds')}): send when the visitor made the choice, "
            "from a clock that is right, or leave it unset to mean now.",
        )
    ]


class AmperityServicer(pb_grpc.AmperityServiceServicer):
    """Translates the gRPC surface to the Deliver, Enrich and BrowserProfile use cases.

    Args:
        redact: The configured secrets (``Settings.secret_values``), replaced in every
            record ``WatchDeliveries`` sends, as written or base64-encoded.
    """

    def __init__(
        self,
        *,
        registry: Registry,
        delivery: Delivery,
        enricher: Enricher,
        browser: BrowserProfiles,
        live: LiveEvents,
        clock: Callable[[], float] = time.monotonic,
        max_message_bytes: int = DEFAULT_MAX_BYTES,
        redact: Iterable[str] = (),
    ) -> None:
        self._registry = registry
        self._secrets = tuple(scrub_forms(redact))
        self._delivery = delivery
        self._enricher = enricher
        self._browser = browser
        self._live = live
        self._clock = clock
        self._max_bytes = max_message_bytes
        self._stopping = False
        self._stream_readers: set[asyncio.Task[None]] = set()

    def stop_streams(self) -> None:
        """Shutdown begins: streams stop taking events and end once those taken are answered.

        A DeliverStream or a watch never finishes by itself, so without this every one
        open would hold the shutdown for its whole grace period and then be cancelled,
        events in the middle of their POST to Amperity included (the client then sends
        them again: a duplicate at Amperity). Each ends instead with UNAVAILABLE
        (``SERVICE_STOPPING``), which the clients answer by reopening elsewhere.

        A DeliverStream whose caller has stopped reading its answers cannot end so: it
        holds the stop for the grace period, as any call doing work does (its events are
        still delivered), and what it could not tell its caller is logged then.
        """
        self._stopping = True
        for reader in list(self._stream_readers):
            reader.cancel(_STOPPING)
        self._live.close()

    async def Deliver(  # noqa: N802 - the RPC name is fixed by the contract
        self, request: pb.DeliverRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.DeliverResponse:
        """Deliver one event; OK only after Amperity accepted it."""
        try:
            return await self._deliver(
                request.integration_id,
                pipeline_key_of(context),
                request.event,
                self._deadline(context),
            )
        except AmperitySignalError as error:
            await context.abort_with_status(to_grpc_status(error))
            raise  # unreachable: abort raises

    async def DeliverStream(  # noqa: N802
        self,
        request_iterator: AsyncIterator[pb.DeliverStreamRequest],
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> AsyncIterator[pb.DeliverStreamResponse]:
        """Deliver many events, one response per request, each failing on its own.

        At most ``STREAM_CONCURRENCY`` events are taken from the stream and not yet
        answered: being delivered, or answered but not yet sent to the caller.
        """
        # Read as the call begins, once for all its events.
        pipeline_key = pipeline_key_of(context)
        if self._stopping:
            await context.abort_with_status(to_grpc_status(_stopping_error()))
        responses: asyncio.Queue[pb.DeliverStreamResponse | None] = asyncio.Queue()
        slots = asyncio.Semaphore(STREAM_CONCURRENCY)
        # Each event being delivered, by its message_id (logged if a stop cuts it short).
        tasks: dict[asyncio.Task[None], str] = {}

        async def handle(request: pb.DeliverStreamRequest) -> None:
            responses.put_nowait(await self._deliver_streamed(request, context, pipeline_key))

        malformed: list[MalformedRequest] = []
        stopped: list[bool] = []

        async def read() -> None:
            try:
                try:
                    async for request in request_iterator:
                        await slots.acquire()
                        task = asyncio.create_task(handle(request))
                        tasks[task] = request.event.message_id
                        task.add_done_callback(tasks.pop)
                except MalformedRequest as error:
                    # Corrupt bytes end the reading; the events already taken are still
                    # answered before the stream ends with INVALID_ARGUMENT.
                    malformed.append(error)
                except asyncio.CancelledError as cancelled:
                    # The service is stopping: no more events are read (one read and
                    # waiting for a slot was never started); those taken are answered.
                    if not _stopped_reading(cancelled):
                        raise
                    stopped.append(True)
                # Done reading: a stop from now on must not cancel the events in flight.
                self._stream_readers.discard(reader)
                while tasks:
                    await asyncio.gather(*list(tasks))
            finally:
                responses.put_nowait(None)

        reader = self._reading(read())
        sending: pb.DeliverStreamResponse | None = None
        try:
            while (response := await responses.get()) is not None:
                sending = response
                yield response
                sending = None
                # The slot is free once the answer is sent, not when it is ready: a caller
                # that stops reading answers stops the reading of its events (gRPC flow
                # control holds the rest in its own windows), instead of the answers
                # piling up in this queue without bound.
                slots.release()
            await reader
            if malformed:
                raise malformed[0]
            if stopped:
                await context.abort_with_status(to_grpc_status(_stopping_error()))
        finally:
            reader.cancel()
            if self._stopping:
                _log_given_up(sending, responses, tasks)
            for task in list(tasks):
                task.cancel()

    def _reading(self, read: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Run a stream's reader as a task that ``stop_streams`` can stop while it reads."""
        reader = asyncio.create_task(read)
        self._stream_readers.add(reader)
        reader.add_done_callback(self._stream_readers.discard)
        return reader

    async def _deliver_streamed(
        self,
        request: pb.DeliverStreamRequest,
        context: grpc.aio.ServicerContext[Any, Any],
        pipeline_key: str,
    ) -> pb.DeliverStreamResponse:
        """One DeliverStream event's answer: its result, or its error (a bug's included)."""
        try:
            return await self._answer_streamed(request, context, pipeline_key)
        except Exception:
            # A bug met by one event fails that event's answer, not the stream and the
            # events in flight beside it; its text stays in the log (it may hold anything).
            log.exception("delivery failed unexpectedly")
            failure = to_delivery_error(unexpected_failure())
            return pb.DeliverStreamResponse(message_id=request.event.message_id, error=failure)

    async def _answer_streamed(
        self,
        request: pb.DeliverStreamRequest,
        context: grpc.aio.ServicerContext[Any, Any],
        pipeline_key: str,
    ) -> pb.DeliverStreamResponse:
        try:
            result = await self._deliver(
                request.integration_id,
                pipeline_key,
                request.event,
                self._deadline(context),
                streamed=True,
            )
        except AmperitySignalError as error:
            return pb.DeliverStreamResponse(
                message_id=request.event.message_id, error=to_delivery_error(error)
            )
        return pb.DeliverStreamResponse(message_id=result.message_id, result=result)

    async def Enrich(  # noqa: N802
        self, request: pb.EnrichRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.EnrichResponse:
        """Resolve the visitor and return the event with partner_attrs.amperity attached."""
        try:
            integration = self._integration(request.integration_id, pipeline_key_of(context))
            message_id_var.set(request.event.message_id)
            event = checked_event_dict(
                request.event,
                max_bytes=self._max_bytes,
                # The response is built from the request's event, not this dict, which
                # enrichment reads for identifiers and context mappings only.
                context=integration.enrichment_reads_context,
            )
            result = await self._enricher.enrich(
                integration.settings, event, deadline=self._deadline(context)
            )
        except AmperitySignalError as error:
            await context.abort_with_status(to_grpc_status(error))
            raise
        return enrich_response(request.event, result)

    async def BrowserProfile(  # noqa: N802
        self, request: pb.BrowserProfileRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.BrowserProfileResponse:
        """The allowlisted attributes a page may see for one visitor."""
        try:
            integration = self._page_integration(request, context)
            # A BrowserProfile request carries no event to blame: InvalidFields.
            if refused := anonymous_id_violations(request.anonymous_id):
                raise InvalidFields(refused)
            attributes = await self._browser.attributes(
                integration.settings, request.anonymous_id, deadline=self._deadline(context)
            )
        except AmperitySignalError as error:
            await context.abort_with_status(to_grpc_status(error))
            raise
        response = pb.BrowserProfileResponse(provider="amperity")
        if attributes:
            convert.fill_struct(response.attributes, attributes)
        else:  # present even when empty (a filled Struct is present; marking it costs ~3k)
            response.attributes.SetInParent()
        return response

    async def RecordConsent(  # noqa: N802
        self, request: pb.RecordConsentRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.RecordConsentResponse:
        """Keep a visitor's consent state without an event (a withdrawal applies at once)."""
        try:
            integration = self._page_integration(request, context)
            violations = consent_violations(request.consent)
            if not request.anonymous_id:
                violations.insert(0, _ANONYMOUS_ID_REQUIRED)
            else:
                violations[:0] = anonymous_id_violations(request.anonymous_id)
            consented_at, wrong_time = _consented_at(request, convert.now_utc())
            violations.extend(wrong_time)
            if violations:
                raise InvalidConsent(violations)
            allowed = await self._browser.record_consent(
                integration.settings,
                request.anonymous_id,
                convert.consent_to_dict(request.consent),
                consented_at,
            )
        except AmperitySignalError as error:
            await context.abort_with_status(to_grpc_status(error))
            raise
        return pb.RecordConsentResponse(profile_allowed=allowed)

    async def WatchDeliveries(  # noqa: N802
        self, request: pb.WatchDeliveriesRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[pb.WatchDeliveriesResponse]:
        """Stream live delivery records, secrets redacted."""
        if self._stopping:
            await context.abort_with_status(to_grpc_status(_stopping_error()))
        # A caller's pipeline key scopes the watch to its integration, as it scopes every
        # other call: a client built with only a key sends no integration_id, and must not
        # watch every integration (nor with a key that is nobody's).
        scope = request.integration_id
        pipeline_key = pipeline_key_of(context)
        if scope or pipeline_key:
            try:
                scope = self._integration(scope, pipeline_key).id
            except AmperitySignalError as error:
                await context.abort_with_status(to_grpc_status(error))
        if request.replay < 0:
            violation = FieldViolation(
                "replay",
                f"is {request.replay}; it counts recent records to replay: use 0 for none, "
                "or a positive number (at most the buffer size).",
            )
            refusal = InvalidFields([violation], metadata={"replay": str(request.replay)})
            await context.abort_with_status(to_grpc_status(refusal))
        # Subscribed before the headers go: a caller that waits for them, then makes a
        # delivery, must see its record, so none may be published in between unseen.
        watch = self._live.watch(scope, request.replay)
        async with contextlib.aclosing(watch) as records:
            # Headers at once, not with the first record: a reconnecting client can tell a
            # watch the service took from one still connecting, before anything is delivered.
            # They say how many records are replayed, for a gateway merging several watches.
            await context.send_initial_metadata(((REPLAYED_METADATA, str(watch.replaying)),))
            async for watched in records:
                # Redacted here, per record watched: a Deliver pays nothing for it.
                response = record_to_proto(watched.record.redacted(self._secrets))
                response.missed_before = min(watched.missed_before, _UINT32_MAX)
                yield response
        # The watch ends only when the service stops (LiveEvents.close).
        await context.abort_with_status(to_grpc_status(_stopping_error()))

    def _page_integration(
        self,
        request: pb.BrowserProfileRequest | pb.RecordConsentRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> Integration:
        """The integration of a page's call: by id, or by the key in the request or metadata."""
        return self._integration(
            request.integration_id, request.pipeline_key or pipeline_key_of(context)
        )

    def _integration(self, integration_id: str, pipeline_key: str) -> Integration:
        # The key (the call's x-pipeline-key) is checked against the id when both are
        # sent, as BrowserProfile's are: a client configured with one integration's id and
        # another's key is refused rather than routed by whichever the service happens to
        # read.
        integration = self._registry.get(integration_id, pipeline_key)
        integration_id_var.set(integration.id)  # every log line of this RPC names it
        return integration

    def _deadline(self, context: grpc.aio.ServicerContext[Any, Any]) -> float:
        remaining = context.time_remaining()
        budget = DEFAULT_DEADLINE if remaining is None else min(remaining, DEFAULT_DEADLINE)
        return self._clock() + max(budget - 0.05, 0.0)

    async def _deliver(
        self,
        integration_id: str,
        pipeline_key: str,
        event_pb: pb.Event,
        deadline: float,
        *,
        streamed: bool = False,
    ) -> pb.DeliverResponse:
        """Deliver one event of a Deliver (or, ``streamed``, a DeliverStream) call.

        An event refused before delivery (no such integration, an invalid event) is counted
        as refused: its integration's id, or none when the call named no configured one.
        """
        integration: Integration | None = None
        try:
            integration = self._integration(integration_id, pipeline_key)
            if streamed and not event_pb.message_id:
                raise InvalidEvent([MESSAGE_ID_REQUIRED_ON_STREAMS])
            message_id = event_pb.message_id or str(uuid.uuid4())
            message_id_var.set(message_id)
            # The spec's payload always carries both; the HTTP gateway fills them the same way.
            event = checked_event_dict(
                event_pb,
                max_bytes=self._max_bytes,
                message_id=message_id,
                received_at=None if event_pb.HasField("timestamp") else convert.now_utc(),
            )
        except (InvalidFields, UnknownIntegration) as error:
            self._delivery.refused("" if integration is None else integration.id, error)
            raise
        delivered = await self._delivery.deliver(integration, event, deadline=deadline)
        return delivered_to_proto(delivered)


_STOPPING = "the service is stopping"


def _stopped_reading(cancelled: asyncio.CancelledError) -> bool:
    """Whether a stream's reader was cancelled by ``stop_streams``; if so it carries on."""
    if cancelled.args != (_STOPPING,):
        return False
    current = asyncio.current_task()
    if current is not None:
        current.uncancel()
    return True


def _log_given_up(
    sending: pb.DeliverStreamResponse | None,
    answers: asyncio.Queue[pb.DeliverStreamResponse | None],
    delivering: dict[asyncio.Task[None], str],
) -> None:
    """Log what a DeliverStream cut short by a stop never told its caller (if anything).

    Its caller stopped reading answers (or left): the events answered but not told were
    delivered or refused; or the grace ended while events were still being delivered,
    which are cancelled. The client sends them all again. Worded by which of the two
    happened; only counts and message_ids: no event content, no header, no key. The
    message_ids are the answers' alone: each cut event's delivery logs its own line with
    its message_id (a warning when it may have reached Amperity), one line per failure.
    """
    unsent = [] if sending is None else [sending]
    while not answers.empty():
        answer = answers.get_nowait()
        if answer is not None:
            unsent.append(answer)
    if not unsent and not delivering:
        return
    fields: dict[str, object] = {
        "answers_not_sent": len(unsent),
        "events_cancelled": len(delivering),
    }
    if unsent:
        fields["message_ids"] = [a.message_id for a in unsent]
    log.warning(_GIVEN_UP[bool(unsent), bool(delivering)], extra=fields)


_GIVEN_UP = {
    (True, False): "the stop gave up answers its DeliverStream caller did not take: that "
    "client sends those events again (the delivered ones reach Amperity twice, under one "
    "message_id)",
    (False, True): "the stop cut a DeliverStream's events while they were being delivered "
    "(each logged on its own): that client sends them again (any that had reached Amperity "
    "arrives twice, under one message_id)",
    (True, True): "the stop gave up answers its DeliverStream caller did not take, and cut "
    "its events still being delivered: that client sends them all again (the delivered "
    "ones, and any cut one that had reached Amperity, arrive twice, under one message_id)",
}
"""The stop's warning about a DeliverStream, by (answers not sent, events cut)."""


def _stopping_error() -> ServiceStopping:
    return ServiceStopping(
        "the service is shutting down; events on this stream without an answer were not "
        "taken: open a new stream and send them again (the amperity-signal clients "
        "reconnect on their own)."
    )


def enrich_response(event: pb.Event, result: EnrichResult) -> pb.EnrichResponse:
    """The EnrichResponse: the request's event with the enriched ``partner_attrs``."""
    # Field by field: upb's keyword constructor costs three times as much.
    response = pb.EnrichResponse()
    _fill_resolution(response, result)
    if result.warnings:
        response.warnings.extend(result.warnings)
    response.attributes.SetInParent()  # present even when empty
    response.personalized_attributes.SetInParent()
    convert.fill_struct(response.attributes, result.attributes)
    convert.fill_struct(response.personalized_attributes, result.personalized_attributes)
    # The event as sent, plus what ``attach`` added: each Struct is built once and copied.
    response.event.CopyFrom(event)
    partner_attrs = result.event.get("partner_attrs")
    if isinstance(partner_attrs, dict):
        target = response.event.partner_attrs
        target.SetInParent()
        if "amperity" in partner_attrs:
            target.fields["amperity"].struct_value.CopyFrom(response.attributes)
        if "amperity_personalized" in partner_attrs:
            target.fields["amperity_personalized"].struct_value.CopyFrom(
                response.personalized_attributes
            )
    return response


def delivered_to_proto(delivered: Delivered) -> pb.DeliverResponse:
    """The DeliverResponse for a successful delivery, built in place (no message copies)."""
    response = pb.DeliverResponse()
    response.message_id = delivered.message_id
    response.amperity_type = delivered.amperity_type
    response.payload.SetInParent()  # present even when empty
    convert.fill_struct(response.payload, delivered.payload)
    _fill_vendor_request(response.vendor_request, delivered.call)
    if delivered.enrichment is not None:
        _fill_resolution(response.enrichment, delivered.enrichment)
    if delivered.warnings:
        response.warnings.extend(delivered.warnings)
    return response


def _fill_resolution(target: pb.EnrichResponse | pb.Enrichment, result: EnrichResult) -> None:
    """The four resolution fields EnrichResponse and Enrichment share."""
    target.resolved = result.resolved
    if result.amperity_id:
        target.amperity_id = result.amperity_id
    if result.matched_key:
        target.matched_key = result.matched_key
    target.cache_status = _CACHE_STATUS.get(result.cache_status, pb.CACHE_STATUS_UNSPECIFIED)


def _fill_vendor_request(target: pb.VendorRequest, record: VendorCall) -> None:
    target.method = record.method
    target.url = record.url
    target.status_code = record.status_code
    target.attempts = record.attempts
    target.duration.FromNanoseconds(int(record.duration * 1e9))
    target.headers.update(record.headers)


def record_to_proto(record: DeliveryRecord) -> pb.WatchDeliveriesResponse:
    """A live delivery record as its proto."""
    delivered_at = timestamp_pb2.Timestamp()
    delivered_at.FromDatetime(record.delivered_at)
    response = pb.WatchDeliveriesResponse(
        integration_id=record.integration_id,
        message_id=record.message_id,
        delivered_at=delivered_at,
        event=convert.dict_to_event(record.event),
        amperity_type=record.amperity_type,
        payload=convert.dict_to_struct(record.payload),
        outcome=record.outcome,
        error=record.error,
        warnings=list(record.warnings),
    )
    if record.vendor_request is not None:
        _fill_vendor_request(response.vendor_request, record.vendor_request)
    return response
