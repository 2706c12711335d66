"""A Timestamp whose nanos are out of range is refused naming its nanos, not its date."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import timestamp_pb2

from datafly.amperity.v1 import amperity_service_pb2 as pb
from tests.contract.harness import Harness
from tests.contract.test_contract import details, event

A_FINE_SECOND = 1_700_000_000  # 2023-11-14, well inside every date range


def _violations(error: grpc.aio.AioRpcError) -> list[tuple[str, str]]:
    bad_request = details(error)["BadRequest"]
    return [(v.field, v.description) for v in bad_request.field_violations]


@pytest.mark.parametrize("nanos", [-5, 1_000_000_000])
async def test_record_consent_names_consented_at_nanos_out_of_range(
    harness: Harness, nanos: int
) -> None:
    """``consented_at.nanos = -5`` on a fine second: INVALID_ARGUMENT naming the nanos.

    It was refused with "must lie between 2000-01-01 and 5 minutes past the service's
    clock", though the date was fine: the caller was sent to fix the wrong thing.
    """
    request = pb.RecordConsentRequest(
        pipeline_key="pk_web",
        anonymous_id="anon_nanos",
        consented_at=timestamp_pb2.Timestamp(seconds=A_FINE_SECOND, nanos=nanos),
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await harness.stub.RecordConsent(request)

    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    ((field, description),) = _violations(caught.value)
    assert field == "consented_at.nanos"
    assert description.startswith("must be 0..999999999 (the fraction of a second after ")
    assert f"not {nanos}:" in description
    assert "2000-01-01" not in description


async def test_deliver_names_the_event_timestamps_nanos_out_of_range(harness: Harness) -> None:
    """An event timestamp with 2e9 nanos: INVALID_ARGUMENT naming ``event.timestamp.nanos``."""
    sent = event(type="page")
    sent.timestamp.CopyFrom(timestamp_pb2.Timestamp(seconds=A_FINE_SECOND, nanos=2_000_000_000))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await harness.stub.Deliver(pb.DeliverRequest(integration_id="web", event=sent))

    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    ((field, description),) = _violations(caught.value)
    assert field == "event.timestamp.nanos"
    assert "not 2000000000:" in description
