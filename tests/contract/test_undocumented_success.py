"""An event answered with a 2xx Amperity does not document (not 202 or 204).

Amperity's realtime ingest answers 202 (published) or 204 (accepted, the stream drops
events). Another success (200, 201, 206...) is still a success, so the event is not sent
again, but it is flagged: in the Deliver response, the Live Events record, the log and the
deliveries metric. The sandbox's ``accept_status`` fault answers an accepted event so.
"""

from __future__ import annotations

import asyncio
import logging

import pytest

from datafly.amperity.v1 import amperity_service_pb2 as pb
from tests.contract.harness import Harness
from tests.contract.test_contract import event


def _deliveries(harness: Harness, outcome: str) -> float:
    """The deliveries counter of integration web's add_to_cart events with ``outcome``."""
    labels = {
        "integration": "web",
        "amperity_type": "add_to_cart",
        "outcome": outcome,
        "reason": "",
    }
    registry = harness.service.metrics.registry
    return registry.get_sample_value("amperity_signal_deliveries_total", labels) or 0.0


@pytest.mark.parametrize("status", [200, 201, 206])
async def test_an_undocumented_2xx_is_delivered_once_and_flagged_everywhere(
    harness: Harness, status: int, caplog: pytest.LogCaptureFixture
) -> None:
    """A 200/201/206: Deliver OK with a warning naming it, in Live Events, log and metric."""
    caplog.set_level(logging.WARNING, logger="amperity_signal")
    await harness.inspector.post("/_sandbox/faults", json={"accept_status": status})
    watch = harness.stub.WatchDeliveries(pb.WatchDeliveriesRequest(integration_id="web"))
    await watch.initial_metadata()
    sent = event(type="track", event="add_to_cart", user_id="u-undocumented")

    response = await harness.stub.Deliver(
        pb.DeliverRequest(integration_id="web", event=sent), timeout=30
    )

    assert (response.vendor_request.status_code, response.vendor_request.attempts) == (status, 1)
    flagged = [w for w in response.warnings if f"Amperity answered {status}" in w]
    assert len(flagged) == 1, response.warnings
    assert "documents only 202" in flagged[0] and "204" in flagged[0]
    assert "was not sent again" in flagged[0]
    record = await asyncio.wait_for(watch.read(), 10)
    watch.cancel()
    assert isinstance(record, pb.WatchDeliveriesResponse)
    assert (record.message_id, record.outcome) == (sent.message_id, "delivered")
    assert flagged[0] in record.warnings
    logged = [r.getMessage() for r in caplog.records if "documents only 202" in r.getMessage()]
    assert len(logged) == 1 and f"Amperity answered {status}" in logged[0]
    assert _deliveries(harness, "delivered_unexpected_status") == 1
    assert _deliveries(harness, "delivered") == 0
    posts = (await harness.inspector.get("/_sandbox/requests")).json()["requests"]
    assert [r["status"] for r in posts if r["kind"] == "events"] == [status]
    for secret in (harness.keys.ingest, harness.keys.profile):
        assert secret not in caplog.text


async def test_a_202_carries_no_undocumented_status_warning(harness: Harness) -> None:
    """The documented 202 is counted as delivered, with no warning about its status."""
    sent = event(type="track", event="add_to_cart", user_id="u-documented")

    response = await harness.stub.Deliver(
        pb.DeliverRequest(integration_id="web", event=sent), timeout=30
    )

    assert response.vendor_request.status_code == 202
    assert not [w for w in response.warnings if "documents only 202" in w]
    assert _deliveries(harness, "delivered") == 1
    assert _deliveries(harness, "delivered_unexpected_status") == 0
