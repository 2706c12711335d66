"""The Deliver use case: enrich, map through the blueprint, post to Amperity, record.

Plain Python in and out (event dicts, dataclasses); the servicer does the proto work.
Enrichment never blocks delivery: when it fails the event goes without ``amperity_id`` and
the outcome carries a warning. OK is only returned after Amperity answered 202 or 204.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from amperity_signal.amperity import CallProgress, Stage, VendorCall, vendor_call
from amperity_signal.blueprint import MappedEvent, map_event
from amperity_signal.browser import ConsentLedger
from amperity_signal.enrich import Enricher, EnrichResult
from amperity_signal.errors import AmperityError, AmperityRejected, AmperitySignalError
from amperity_signal.metrics import NO_REASON, Increments, Metrics, reason_label
from amperity_signal.service.live import DeliveryRecord, LiveEvents
from amperity_signal.service.registry import Integration

log = logging.getLogger("amperity_signal.delivery")

DROPPING_WARNING = (
    "stream is dropping events: Amperity answered 204, the stream's mode is Drop; set it to "
    "active in Amperity if these events should update profiles."
)
UNEXPECTED_STATUS_WARNING = (
    "Amperity answered {status} to the event POST, a success status it does not document "
    "for realtime ingest (Amperity documents only 202, published, and 204, accepted while "
    "the stream drops events): the event counts as delivered and was not sent again, as "
    "resending a success would duplicate it. Check that api_base_url reaches Amperity's "
    "Real-time API directly; a proxy or gateway in between may rewrite its answers."
)
UNEXPECTED_STATUS = "delivered_unexpected_status"
"""The deliveries metric's outcome for an event accepted with an undocumented 2xx."""
BODY_CUT_WARNING = (
    "Amperity answered {status}, then its response body was cut off ({failure}): the status "
    "line is Amperity's acceptance, so the event counts as delivered and was not sent again."
)
# Enrichment gets at most this share of the caller's remaining time, so a slow Profile API
# still leaves the delivery itself time to happen.
ENRICH_SHARE = 0.5
ENRICH_MAX_SECONDS = 2.0
# The deliveries metric's amperity_type for an event no handler maps: its pass-through type
# is the caller's event name, and one series per name a site invents has no bound.
UNMAPPED_TYPE_LABEL = "unmapped"
# The deliveries metric's amperity_type for an event cancelled before it was mapped.
UNKNOWN_TYPE_LABEL = "unknown"
CANCELLED = "cancelled"
"""The outcome of a delivery whose caller hung up, or whose deadline passed, mid-way."""
REFUSED = "refused"
"""The outcome of an event refused before delivery: invalid, or for no known integration."""
CANCELLED_BEFORE_POST = (
    "cancelled before the event was posted to Amperity ({why}): it was not sent; the "
    "caller decides whether to send it again."
)
CANCELLED_NOT_SENT = (
    "cancelled before {which} was posted to Amperity ({why}), while {waiting}: it was not sent"
)
CANCELLED_WHILE_POSTING = (
    "cancelled while the event was being posted to Amperity ({why}): attempt {attempt}'s "
    "POST may have been sent and the event may well have reached Amperity; look for it "
    "there by message_id before sending it again."
)
CANCELLED_AFTER_ANSWER = "cancelled after Amperity answered {status} to attempt {attempt} ({why})"
_WAITING = {
    Stage.POOL: "waiting for a connection",
    Stage.RATE_LIMIT: "waiting for a rate-limit slot",
    Stage.CONNECTING: "opening a connection to Amperity",
    Stage.BACKOFF: "waiting to retry",
}
_ACCEPTED = ", so the event reached Amperity; do not send it again."
_MAYBE_ARRIVED = (
    "; attempt {attempt} got no answer and may have reached Amperity: look for it there by "
    "message_id before sending it again."
)
_CALLER_DECIDES = "; the caller decides whether to send it again."
MESSAGE_ID_METADATA = "message_id"
"""The ErrorInfo metadata key of a failed delivery's message_id (made up when none was sent)."""
UNANSWERED_METADATA = "unanswered_attempt"
"""The ErrorInfo metadata key of the attempt whose POST was sent and never answered."""
_UNANSWERED = (
    " Attempt {attempt}'s POST was sent and got no answer, so the event may have reached Amperity: "
)
_SAME_ID = (
    "under the same message_id ({message_id}), never a new one, so that the copies are known "
    "as one event."
)
MAYBE_DELIVERED = _UNANSWERED + "send it again " + _SAME_ID
"""What an AmperityUnavailable adds when an attempt went unanswered: the retry is the fix."""
MAYBE_DELIVERED_REJECTED = (
    _UNANSWERED + "once what Amperity refused is fixed, resend it " + _SAME_ID
)
"""What a permanent refusal adds instead: sending it again as it is would be refused again."""


@dataclass(frozen=True)
class Delivered:
    """The outcome of one successful delivery."""

    message_id: str
    amperity_type: str
    payload: dict[str, Any]
    call: VendorCall
    enrichment: EnrichResult | None
    warnings: tuple[str, ...] = field(default=())


class Delivery:
    """Delivers events for the configured integrations."""

    def __init__(
        self,
        *,
        enricher: Enricher,
        consent: ConsentLedger,
        live: LiveEvents,
        metrics: Metrics,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._enricher = enricher
        self._consent = consent
        self._live = live
        self._metrics = metrics
        self._clock = clock
        # Tallies by (integration, type, outcome, reason): labels() took ~3 us per event.
        self._counters: dict[tuple[str, str, str, str], Increments] = {}

    async def deliver(
        self, integration: Integration, event: dict[str, Any], *, deadline: float
    ) -> Delivered:
        """Enrich, map and post one event; raise an AmperityError when Amperity refused it.

        A cancelled call (its caller hung up, or its deadline passed) is counted, logged and
        recorded as ``cancelled`` on its way out, saying how far its POST got: not sent
        (and where it waited), possibly sent, or answered (``cancelled_while_posting``).
        """
        settings = integration.settings
        warnings: list[str] = []
        enrichment: EnrichResult | None = None
        # Set just before the POST, with no await between: whether it had begun, and how far.
        mapped: MappedEvent | None = None
        progress = CallProgress()
        try:
            if settings.browser_consent:
                held = await self._consent.remember(settings.id, event, settings.browser_consent)
                warnings.extend(held)  # the consent state is pending: the cache did not take it
            if settings.profile_enabled:
                budget = min((deadline - self._clock()) * ENRICH_SHARE, ENRICH_MAX_SECONDS)
                # The event's POST goes to the same host next: its "delivery failed" line
                # carries a host's advice, so the lookup's is not logged too.
                enrichment = await self._enricher.enrich(
                    settings, event, deadline=self._clock() + max(budget, 0.0), posting=True
                )
                warnings.extend(enrichment.warnings)
                event = enrichment.event
            elif integration.enrichment_gap:
                warnings.append(integration.enrichment_gap)
            mapped = map_event(integration.blueprint, event, source_value=settings.source_value)
            warnings.extend(mapped.warnings)
            try:
                result = await integration.client.post_event(
                    mapped.payload, deadline=deadline, progress=progress
                )
            except AmperityError as error:
                _name_the_event(error, str(event.get("message_id", "")), progress)
                self._count(settings.id, _type_label(mapped), "failed", error.reason)
                log.warning(
                    "delivery failed: %s",
                    error.message,
                    extra={"reason": error.reason, "attempts": error.attempts},
                )
                self._record(
                    integration,
                    event,
                    mapped.amperity_type,
                    mapped.payload,
                    call=vendor_call(error),
                    outcome="failed",
                    error=error.message,
                    warnings=warnings,
                )
                raise
        except asyncio.CancelledError:
            # Recorded without awaiting anything, so the cancellation is not held up; the
            # operator still sees an event that may have reached Amperity.
            self._cancelled(
                integration, event, mapped, progress, deadline=deadline, warnings=warnings
            )
            raise
        message_id = str(event.get("message_id", ""))
        if result.dropping:
            warnings.append(DROPPING_WARNING)
        if result.body_cut:
            warnings.append(
                BODY_CUT_WARNING.format(status=result.status_code, failure=result.body_cut)
            )
        outcome = "dropped" if result.dropping else "delivered"
        counted = outcome
        if result.unexpected_status:
            warning = UNEXPECTED_STATUS_WARNING.format(status=result.status_code)
            warnings.append(warning)
            counted = UNEXPECTED_STATUS
            log.warning(
                "delivered with an undocumented status: %s",
                warning,
                extra={"status_code": result.status_code},
            )
        self._count(settings.id, _type_label(mapped), counted)
        self._record(
            integration,
            event,
            mapped.amperity_type,
            mapped.payload,
            call=result.call,
            outcome=outcome,
            error="",
            warnings=warnings,
        )
        return Delivered(
            message_id=message_id,
            amperity_type=mapped.amperity_type,
            payload=mapped.payload,
            call=result.call,
            enrichment=enrichment,
            warnings=tuple(warnings),
        )

    def _cancelled(
        self,
        integration: Integration,
        event: dict[str, Any],
        mapped: MappedEvent | None,
        progress: CallProgress,
        *,
        deadline: float,
        warnings: list[str],
    ) -> None:
        """Count, record and log a delivery cancelled before (``mapped`` None) or while posting.

        Logged as a warning when the event may have reached Amperity, else at debug.
        """
        why = (
            "the caller's deadline passed"
            if self._clock() >= deadline
            else "the caller hung up, or the service stopped past its grace period"
        )
        if mapped is None:
            label, error = UNKNOWN_TYPE_LABEL, CANCELLED_BEFORE_POST.format(why=why)
            amperity_type, payload = "", {}
        else:
            label, error = _type_label(mapped), cancelled_while_posting(progress, why)
            amperity_type, payload = mapped.amperity_type, mapped.payload
        self._count(integration.id, label, CANCELLED)
        # The caller got no answer (a unary Deliver has none to give): an event that may be
        # at Amperity is worth a warning, as it may well be sent again under a new id.
        sent = mapped is not None and may_have_arrived(progress)
        log.log(
            logging.WARNING if sent else logging.DEBUG,
            "delivery %s",
            error,
            extra={"message_id": str(event.get("message_id", "")), "outcome": CANCELLED},
        )
        self._record(
            integration,
            event,
            amperity_type,
            payload,
            call=None,
            outcome=CANCELLED,
            error=error,
            warnings=warnings,
        )

    def refused(self, integration_id: str, error: AmperitySignalError) -> None:
        """Count an event refused before delivery (``refused``, by its error's reason).

        ``integration_id`` is "" when the call named no configured integration: the id or
        key a caller made up is no label.
        """
        self._count(integration_id, UNKNOWN_TYPE_LABEL, REFUSED, error.reason)

    def _count(
        self, integration_id: str, amperity_type: str, outcome: str, reason: str = NO_REASON
    ) -> None:
        """Count one delivery outcome (the same series ``deliveries.labels`` names)."""
        key = (integration_id, amperity_type, outcome, reason)
        counter = self._counters.get(key)
        if counter is None:
            labels = (integration_id, amperity_type, outcome, reason_label(reason))
            counter = self._counters[key] = self._metrics.deliveries.tally(*labels)
        counter.inc()

    def _record(
        self,
        integration: Integration,
        event: dict[str, Any],
        amperity_type: str,
        payload: dict[str, Any],
        *,
        call: VendorCall | None,
        outcome: str,
        error: str,
        warnings: list[str],
    ) -> None:
        self._live.publish(
            DeliveryRecord(
                integration_id=integration.id,
                message_id=str(event.get("message_id", "")),
                delivered_at=datetime.now(UTC),
                event=event,
                amperity_type=amperity_type,
                payload=payload,
                vendor_request=call,
                outcome=outcome,
                error=error,
                warnings=tuple(warnings),
            )
        )


def cancelled_while_posting(progress: CallProgress, why: str) -> str:
    """What a delivery cancelled once its POST had begun left behind, from its progress.

    Not sent (waiting for a connection or a rate-limit slot, opening a connection, waiting
    to retry: each names the attempt), maybe sent (written, no answer yet) or answered;
    an earlier attempt that got no answer may have reached Amperity all the same.
    """
    attempt, stage, status = progress.attempt, progress.stage, progress.status
    if stage is Stage.SENDING:
        return CANCELLED_WHILE_POSTING.format(why=why, attempt=attempt)
    if stage is Stage.ANSWERED:
        text = CANCELLED_AFTER_ANSWER.format(status=status, attempt=attempt, why=why)
        if 200 <= status < 300:
            return text + _ACCEPTED
        text += ", which does not accept the event"
    else:
        which = "the event" if attempt == 1 else f"attempt {attempt}"
        text = CANCELLED_NOT_SENT.format(which=which, why=why, waiting=_WAITING[stage])
        if status:  # the previous attempt's answer (never a 2xx: that is not retried)
            text += f"; attempt {attempt - 1} was answered {status}"
    if progress.unanswered:
        return text + _MAYBE_ARRIVED.format(attempt=progress.unanswered)
    return text + _CALLER_DECIDES


def may_have_arrived(progress: CallProgress) -> bool:
    """Whether a call cut short may have brought its event to Amperity (or did: a 2xx)."""
    answered_2xx = progress.stage is Stage.ANSWERED and 200 <= progress.status < 300
    return answered_2xx or progress.stage is Stage.SENDING or bool(progress.unanswered)


def _name_the_event(error: AmperityError, message_id: str, progress: CallProgress) -> None:
    """Put the event's message_id in a failed delivery's error, and what may have arrived.

    A caller that retries must resend the event under the same message_id (the service
    made one up for an event without): only then can a copy that did reach Amperity be
    told from a second event. An attempt sent and never answered (a timeout, a reset
    connection) is said in the message too, as "temporarily unavailable" alone reads as
    "nothing arrived"; after a permanent refusal (``AmperityRejected``) it says to resend
    once what was refused is fixed, not to send it again as it is.
    """
    error.metadata[MESSAGE_ID_METADATA] = message_id
    if progress.unanswered:
        error.metadata[UNANSWERED_METADATA] = str(progress.unanswered)
        said = MAYBE_DELIVERED_REJECTED if isinstance(error, AmperityRejected) else MAYBE_DELIVERED
        error.message += said.format(attempt=progress.unanswered, message_id=message_id)
        error.args = (error.message,)


def _type_label(mapped: MappedEvent) -> str:
    """The ``amperity_type`` label: the handler's type, or one label for every unmapped event."""
    return UNMAPPED_TYPE_LABEL if mapped.passed_through else mapped.amperity_type
