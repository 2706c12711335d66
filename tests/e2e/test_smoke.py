"""The whole chain as real processes: sandbox, service, gateway."""

from __future__ import annotations

import pytest

from datafly.amperity.v1 import amperity_service_pb2 as pb
from tests.e2e.stack import Stack
from tests.support import message_id

pytestmark = pytest.mark.e2e


async def test_an_event_delivered_through_the_service_reaches_the_sandbox(stack: Stack) -> None:
    """Deliver through the service process lands in the sandbox process's inspector."""
    sandbox = await stack.sandbox()
    service = await stack.service(sandbox)
    sent = pb.Event(
        message_id=message_id(), type="track", event="Product Added", anonymous_id="anon_smoke"
    )
    response = await service.stub.Deliver(pb.DeliverRequest(integration_id="web", event=sent))
    assert response.amperity_type == "add_to_cart"
    events = await sandbox.events()
    assert [e["body"]["message_id"] for e in events] == [sent.message_id]
    assert events[0]["routed_to"] != "_unknown"
