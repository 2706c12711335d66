"""Readable exceptions built from the service's google.rpc status details."""

from __future__ import annotations

import grpc
import pytest

from amperity_signal_client import (
    AmperitySignalError,
    AsyncAmperityClient,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    RetryPolicy,
    Unauthenticated,
    Unavailable,
    from_delivery_error,
)
from datafly.amperity.v1 import amperity_service_pb2 as pb

from .fakes import Failure, RunningService, delivery_error

EVENT = pb.Event(message_id="m-1", type="track", event="Product Viewed", anonymous_id="a-1")


@pytest.mark.parametrize(
    ("code", "reason", "expected"),
    [
        (grpc.StatusCode.NOT_FOUND, "UNKNOWN_INTEGRATION", NotFound),
        (grpc.StatusCode.PERMISSION_DENIED, "INGEST_KEY_REJECTED", PermissionDenied),
        (grpc.StatusCode.UNAUTHENTICATED, "INGEST_KEY_INVALID", Unauthenticated),
        (grpc.StatusCode.FAILED_PRECONDITION, "STREAM_NOT_FOUND", FailedPrecondition),
    ],
)
async def test_non_retryable_codes_raise_their_subclass_at_once(
    running: RunningService,
    client: AsyncAmperityClient,
    code: grpc.StatusCode,
    reason: str,
    expected: type[AmperitySignalError],
) -> None:
    """Each non-retryable status raises its own subclass after a single call."""
    running.service.unary_failures = [
        Failure(code, "Check the integration settings.", reason, {"integration_id": "shop"})
    ]

    with pytest.raises(expected) as raised:
        await client.deliver(EVENT)

    error = raised.value
    assert running.service.calls == ["Deliver"]
    assert error.code == code
    assert error.reason == reason
    assert error.metadata == {"integration_id": "shop"}
    assert error.domain == "amperity-signal.datafly.com"
    assert str(error) == f"{reason}: Check the integration settings."


async def test_invalid_argument_lists_the_field_violations(
    running: RunningService, client: AsyncAmperityClient
) -> None:
    """INVALID_ARGUMENT carries every BadRequest field violation."""
    running.service.unary_failures = [
        Failure(
            grpc.StatusCode.INVALID_ARGUMENT,
            "The event is invalid.",
            "INVALID_EVENT",
            violations=(
                ("event.anonymous_id", "is required."),
                ("event.type", "is required."),
            ),
        )
    ]

    with pytest.raises(InvalidArgument) as raised:
        await client.enrich(EVENT)

    assert raised.value.field_violations == (
        FieldViolation("event.anonymous_id", "is required."),
        FieldViolation("event.type", "is required."),
    )
    assert str(raised.value) == "INVALID_EVENT: The event is invalid."


async def test_an_unreachable_service_raises_a_readable_unavailable() -> None:
    """With nothing listening, the error is Unavailable named by its code."""
    client = AsyncAmperityClient(
        "127.0.0.1:9", integration_id="shop", retry=RetryPolicy(max_attempts=1), default_timeout=2.0
    )
    try:
        with pytest.raises(Unavailable) as raised:
            await client.deliver(EVENT)
    finally:
        await client.aclose()

    assert raised.value.reason == ""
    assert str(raised.value).startswith("UNAVAILABLE: ")


def test_delivery_errors_become_the_same_exceptions() -> None:
    """A DeliverStream per-event error maps to the subclass of its code."""
    error = from_delivery_error(delivery_error(8, "RATE_LIMITED", retry_after=2.0))

    assert isinstance(error, ResourceExhausted)
    assert error.retryable
    assert error.retry_after == 2.0
    assert str(error) == "RATE_LIMITED: RATE_LIMITED happened."


def test_a_streamed_invalid_event_lists_its_field_violations_as_deliver_does() -> None:
    """The DeliveryError's field violations become InvalidArgument.field_violations."""
    error = from_delivery_error(
        pb.DeliveryError(
            code=grpc.StatusCode.INVALID_ARGUMENT.value[0],
            message="invalid event: event.anonymous_id: is required.",
            reason="INVALID_EVENT",
            field_violations=[
                pb.FieldViolation(field="event.anonymous_id", description="is required.")
            ],
        )
    )

    assert isinstance(error, InvalidArgument)
    assert error.field_violations == (FieldViolation("event.anonymous_id", "is required."),)


def test_a_client_must_name_its_integration() -> None:
    """Neither integration_id nor pipeline_key is a ValueError saying what to pass."""
    with pytest.raises(ValueError, match="integration_id"):
        AsyncAmperityClient("127.0.0.1:1")
