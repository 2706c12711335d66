"""Service logs: JSON lines naming the request, the integration and the message."""

from __future__ import annotations

import json

import grpc
import pytest

from datafly.amperity.v1 import amperity_service_pb2 as pb
from tests.e2e.stack import Stack
from tests.support import REJECT_STREAM, message_id

pytestmark = pytest.mark.e2e


async def test_a_failed_delivery_logs_one_json_line_with_its_ids(stack: Stack) -> None:
    """A rejected delivery logs one JSON line with its ids and reason, no key, no rpc line."""
    sandbox = await stack.sandbox()
    service = await stack.service(sandbox, event_stream_id=REJECT_STREAM)
    sent = pb.Event(message_id=message_id(), type="page", anonymous_id="anon_logs")
    with pytest.raises(grpc.aio.AioRpcError):
        await service.stub.Deliver(pb.DeliverRequest(integration_id="web", event=sent))
    await service.process.stop()
    lines = [json.loads(line) for line in service.process.log.read_text().splitlines() if line]
    [failure] = [line for line in lines if line["msg"].startswith("delivery failed")]
    assert failure["integration_id"] == "web"
    assert failure["message_id"] == sent.message_id
    assert failure["reason"] == "STREAM_REJECTING"
    assert len(failure["request_id"]) == 32
    same_call = [line for line in lines if line.get("request_id") == failure["request_id"]]
    assert same_call == [failure]
    text = service.process.log.read_text()
    assert service.keys.ingest not in text and service.keys.profile not in text
