"""Events that cannot be delivered are refused naming the field; Amperity only gets strict JSON.

``anonymous_id`` becomes the spec's always-present ``cookieid`` and ``type`` picks the
handler, so an event without either is INVALID_ARGUMENT. JSON has no NaN or Infinity: such
numbers are refused before anything is sent, and every body the sandbox received parses
with a strict parser.
"""

from __future__ import annotations

import json
import math
from typing import Any

import grpc
import pytest
from google.protobuf import struct_pb2
from google.rpc import error_details_pb2, status_pb2

from datafly.amperity.v1 import amperity_service_pb2 as pb
from tests.e2e.stack import Sandbox, Service
from tests.support import message_id

# One sandbox and one service serve the module (``plain_service``): the service keeps
# nothing between deliveries, and the sandbox is reset before each test.
pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]


def struct(values: dict[str, Any]) -> struct_pb2.Struct:
    """A Struct holding ``values``."""
    out = struct_pb2.Struct()
    out.update(values)
    return out


async def violations(service: Service, sent: pb.Event) -> tuple[grpc.StatusCode, list[str], str]:
    """Deliver an event that must be refused: its code, violated fields and message."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await service.stub.Deliver(pb.DeliverRequest(integration_id="web", event=sent))
    status = status_pb2.Status()
    for key, value in caught.value.trailing_metadata() or ():
        if key == "grpc-status-details-bin" and isinstance(value, bytes):
            status.ParseFromString(value)
    fields: list[str] = []
    for packed in status.details:
        if packed.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad_request = error_details_pb2.BadRequest()
            packed.Unpack(bad_request)
            fields += [v.field for v in bad_request.field_violations]
    return caught.value.code(), fields, caught.value.details() or ""


@pytest.mark.parametrize(
    ("sent", "field"),
    [
        pytest.param(
            pb.Event(message_id=message_id(), type="track", event="Product Added"),
            "event.anonymous_id",
            id="no-anonymous-id",
        ),
        pytest.param(
            pb.Event(message_id=message_id(), event="Product Added", anonymous_id="anon_v"),
            "event.type",
            id="no-type",
        ),
    ],
)
async def test_an_event_without_a_required_field_is_invalid_argument_naming_it(
    plain_service: tuple[Sandbox, Service], sent: pb.Event, field: str
) -> None:
    """No anonymous_id (the cookieid) or no type: INVALID_ARGUMENT naming it, nothing sent."""
    sandbox, service = plain_service
    code, fields, message = await violations(service, sent)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert fields == [field]
    assert field in message
    assert await sandbox.requests() == []


def reject_constant(name: str) -> Any:
    """A strict parser's answer to NaN, Infinity and -Infinity."""
    raise ValueError(f"{name} is not JSON")


async def test_nan_and_infinity_are_refused_and_amperity_only_receives_strict_json(
    plain_service: tuple[Sandbox, Service],
) -> None:
    """Non-finite numbers are refused naming the field; every received body is strict JSON."""
    sandbox, service = plain_service
    non_finite = {
        "properties.value": pb.Event(properties=struct({"value": math.nan})),
        "properties.items[0].price": pb.Event(
            properties=struct({"items": [{"item_id": "SKU-1", "price": math.inf}]})
        ),
        "properties.ratio.low": pb.Event(properties=struct({"ratio": {"low": -math.inf}})),
        "traits.score": pb.Event(traits=struct({"score": math.nan})),
    }
    for field, sent in non_finite.items():
        sent.MergeFrom(
            pb.Event(message_id=message_id(), type="track", event="Product Added", anonymous_id="a")
        )
        code, fields, _ = await violations(service, sent)
        assert code == grpc.StatusCode.INVALID_ARGUMENT
        assert fields == [f"event.{field}"]
    finite = pb.Event(
        message_id=message_id(),
        type="track",
        event="Gauge Read",
        anonymous_id="anon_v",
        properties=struct({"tiny": 5e-324, "huge": 1.7e308, "negative_zero": -0.0, "n": 2**52}),
    )
    await service.stub.Deliver(pb.DeliverRequest(integration_id="web", event=finite))
    raw = (await sandbox.inspector.get("/_sandbox/events")).text
    bodies = [e["body"] for e in json.loads(raw, parse_constant=reject_constant)["events"]]
    assert [b["message_id"] for b in bodies] == [finite.message_id]
    assert bodies[0]["huge"] == 1.7e308
    assert bodies[0]["n"] == 2**52
    assert len(await sandbox.requests()) == 1
