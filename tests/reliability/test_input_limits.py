"""Input limits (README "Input limits"): each exceeded limit is INVALID_ARGUMENT naming its field.

Every case sends an event just over one documented limit through ``Deliver`` and through
``DeliverStream`` (where the error belongs to that event alone) and expects the field's
path in the BadRequest detail (``Deliver``) or the ErrorInfo ``fields`` metadata (stream).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import pytest

from amperity_signal.service.validation import MAX_DEPTH, MAX_KEYS, MAX_NODES, MAX_STRING
from datafly.amperity.v1 import amperity_service_pb2 as pb
from tests.reliability.inprocess import InProcess, bad_request_fields, inprocess_service

MAX_MESSAGE_BYTES = 1_048_576  # [server] max_message_bytes, the default


@pytest.fixture
async def service() -> AsyncIterator[InProcess]:
    """The service in-process with the default limits."""
    async with inprocess_service() as running:
        yield running


def base() -> pb.Event:
    """A valid track event."""
    return pb.Event(message_id="m-limit", type="track", event="Product Viewed", anonymous_id="a")


def nested(depth: int) -> dict[str, Any]:
    """``{"a": {"a": ... {"leaf": 1}}}`` with ``depth`` objects in all."""
    value: dict[str, Any] = {"leaf": 1}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


def too_long_string(event: pb.Event) -> str:
    event.properties.update({"note": "x" * (MAX_STRING + 1)})
    return "event.properties.note"


def too_long_name(event: pb.Event) -> str:
    event.event = "x" * (MAX_STRING + 1)
    return "event.event"


def too_long_page_url(event: pb.Event) -> str:
    event.context.page.url = "https://shop.example/" + "x" * MAX_STRING
    return "event.context.page.url"


def too_deep(event: pb.Event) -> str:
    # properties itself is the outermost of the MAX_DEPTH + 1 objects.
    event.properties.update(nested(MAX_DEPTH + 1))
    return "event.properties" + ".a" * MAX_DEPTH


def too_many_properties(event: pb.Event) -> str:
    event.properties.update({f"k{n}": n for n in range(MAX_KEYS + 1)})
    return "event.properties"


def too_many_values(event: pb.Event) -> str:
    event.properties.update({"items": list(range(MAX_NODES + 1))})
    return "event.properties"


def not_finite(event: pb.Event) -> str:
    event.traits.update({"score": float("nan")})
    return "event.traits.score"


def out_of_range_timestamp(event: pb.Event) -> str:
    event.timestamp.seconds = 4_200_000_000  # year 2103
    return "event.timestamp"


LIMITS: dict[str, Callable[[pb.Event], str]] = {
    "string length (property)": too_long_string,
    "string length (event name)": too_long_name,
    "string length (context)": too_long_page_url,
    "struct depth": too_deep,
    "properties count": too_many_properties,
    "value count": too_many_values,
    "finite numbers": not_finite,
    "timestamp range": out_of_range_timestamp,
}


@pytest.mark.parametrize("limit", list(LIMITS))
async def test_each_exceeded_limit_is_invalid_argument_naming_the_field(
    service: InProcess, limit: str
) -> None:
    """Deliver with one limit exceeded: INVALID_ARGUMENT, BadRequest names exactly the field."""
    event = base()
    field = LIMITS[limit](event)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await service.stub.Deliver(pb.DeliverRequest(integration_id="web", event=event), timeout=10)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in bad_request_fields(caught.value)


async def test_each_exceeded_limit_fails_only_its_own_stream_response(service: InProcess) -> None:
    """In DeliverStream each over-limit event gets INVALID_ARGUMENT naming its field, alone."""
    sent: dict[str, str] = {}
    requests = []
    for index, make in enumerate(LIMITS.values()):
        event = base()
        event.message_id = f"m-limit-{index}"
        sent[event.message_id] = make(event)
        requests.append(pb.DeliverStreamRequest(integration_id="web", event=event))
    good = base()
    good.message_id = "m-good"
    requests.append(pb.DeliverStreamRequest(integration_id="web", event=good))

    async def feed() -> AsyncIterator[pb.DeliverStreamRequest]:
        for request in requests:
            yield request

    answers = {a.message_id: a async for a in service.stub.DeliverStream(feed(), timeout=20)}
    assert answers["m-good"].result.vendor_request.status_code == 202
    for message_id, field in sent.items():
        error = answers[message_id].error
        assert error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
        assert field in error.metadata["fields"].split(","), (field, error.metadata)


async def test_a_message_over_max_message_bytes_is_invalid_argument_naming_the_event(
    service: InProcess,
) -> None:
    """A Deliver request over 1 MiB is INVALID_ARGUMENT (not retryable) naming the event."""
    event = base()
    # 140 strings just under the string limit: every other limit holds, only the size not.
    event.properties.update({f"k{n}": "x" * (MAX_STRING - 100) for n in range(140)})
    assert event.ByteSize() > MAX_MESSAGE_BYTES
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await service.stub.Deliver(pb.DeliverRequest(integration_id="web", event=event), timeout=10)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert any(f.startswith("event") for f in bad_request_fields(caught.value))
