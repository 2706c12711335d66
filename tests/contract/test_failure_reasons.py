"""What an operator sees of a failed or refused event: its reason in the metrics.

``amperity_signal_deliveries_total`` counts a failed delivery under the reason code its
caller got, and an event refused before delivery under ``refused``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import pytest

from datafly.amperity.v1 import amperity_service_pb2 as pb
from tests.contract.harness import SANDBOX_URL, Harness
from tests.contract.test_contract import details, event
from tests.support import REJECT_STREAM, Keys, integration_dict

MISSING_STREAM = "esm-0NoSuchStrm"


def deliveries(harness: Harness, **labels: str) -> float:
    """The sum of the ``amperity_signal_deliveries_total`` series that carry ``labels``."""
    return sum(
        sample.value
        for family in harness.service.metrics.registry.collect()
        for sample in family.samples
        if sample.name == "amperity_signal_deliveries_total"
        and labels.items() <= sample.labels.items()
    )


async def deliver_failing(harness: Harness, integration_id: str, kind: str = "page") -> str:
    """Deliver one event of type ``kind`` that must fail; the reason code the caller got."""
    request = pb.DeliverRequest(integration_id=integration_id, event=event(type=kind))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await harness.stub.Deliver(request)
    return str(details(caught.value)["ErrorInfo"].reason)


@pytest.fixture
async def two_streams(make_harness: Callable[..., Any], keys: Keys) -> Harness:
    """``rejecting`` posts to a stream in Reject mode, ``missing`` to one that does not exist."""
    made: Harness = await make_harness(
        integration_dict(
            SANDBOX_URL, keys, integration_id="rejecting", event_stream_id=REJECT_STREAM
        ),
        integration_dict(
            SANDBOX_URL, keys, integration_id="missing", event_stream_id=MISSING_STREAM
        ),
    )
    return made


async def test_failed_deliveries_are_counted_by_the_reason_their_caller_got(
    two_streams: Harness,
) -> None:
    """STREAM_REJECTING and STREAM_NOT_FOUND, both FAILED_PRECONDITION, are two series."""
    assert await deliver_failing(two_streams, "rejecting") == "STREAM_REJECTING"
    assert await deliver_failing(two_streams, "missing") == "STREAM_NOT_FOUND"
    assert await deliver_failing(two_streams, "missing") == "STREAM_NOT_FOUND"

    assert deliveries(two_streams, integration="rejecting", reason="STREAM_REJECTING") == 1
    assert deliveries(two_streams, integration="missing", reason="STREAM_NOT_FOUND") == 2
    assert deliveries(two_streams, outcome="failed") == 3


async def test_refused_events_are_counted_under_refused_by_reason(harness: Harness) -> None:
    """An invalid event and an unknown integration are counted, neither under a made-up name."""
    assert await deliver_failing(harness, "web", "nonsense") == "INVALID_EVENT"
    assert await deliver_failing(harness, "no-such-integration") == "UNKNOWN_INTEGRATION"

    unnamed = event(type="page")
    unnamed.ClearField("message_id")

    async def requests() -> AsyncIterator[pb.DeliverStreamRequest]:
        yield pb.DeliverStreamRequest(integration_id="web", event=unnamed)

    (answer,) = [r async for r in harness.stub.DeliverStream(requests())]
    assert answer.error.reason == "INVALID_EVENT"

    refused = {"outcome": "refused", "amperity_type": "unknown"}
    assert deliveries(harness, **refused, integration="web", reason="INVALID_EVENT") == 2
    assert deliveries(harness, **refused, integration="", reason="UNKNOWN_INTEGRATION") == 1
    assert deliveries(harness, integration="no-such-integration") == 0
    assert deliveries(harness, outcome="delivered") == 0
