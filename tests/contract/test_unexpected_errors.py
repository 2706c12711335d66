"""A failure no handler expected: INTERNAL with the request id, never the exception's text."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import grpc
import httpx
import pytest

from amperity_signal.service.app import Deps, Service, build_server
from datafly.amperity.v1 import amperity_service_pb2 as pb
from datafly.amperity.v1 import amperity_service_pb2_grpc as pb_grpc
from tests.contract.test_contract import details, event
from tests.support import Keys, integration_dict, settings_for

EXPLODE = "explode"


def amperity(request: httpx.Request) -> httpx.Response:
    """Accepts every event but one, whose sending fails with the Authorization in the text.

    An httpx transport raising what nobody expects (a bug in a transport or a library
    under it) stands for any failure the service did not plan for.
    """
    if request.url.path.startswith("/prof/events/"):
        if EXPLODE in request.content.decode():
            raise RuntimeError(f"transport bug: {request.headers.get('authorization')}")
        return httpx.Response(202)
    return httpx.Response(404, json={"message": "not found"})


@pytest.fixture
async def service(keys: Keys) -> AsyncIterator[Service]:
    """A service whose Amperity fails unexpectedly on the event named ``explode``."""
    settings = settings_for(integration_dict("http://amperity.test", keys))
    built = build_server(settings, Deps(transport=httpx.MockTransport(amperity)))
    await built.start()
    yield built
    await built.stop(0)


async def test_an_unexpected_failure_is_internal_with_the_request_id_and_no_exception_text(
    service: Service, keys: Keys
) -> None:
    """Deliver answers INTERNAL with one ErrorInfo naming the request id; no secret."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{service.port}") as channel:
        stub = pb_grpc.AmperityServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.Deliver(
                pb.DeliverRequest(integration_id="web", event=event(type="track", event=EXPLODE))
            )
    error = raised.value
    assert error.code() == grpc.StatusCode.INTERNAL
    message = error.details() or ""
    assert keys.ingest not in message
    assert "RuntimeError" not in message
    info = details(error)["ErrorInfo"]
    assert info.reason == "INTERNAL"
    assert info.domain == "amperity-signal.datafly.com"
    request_id = dict(error.trailing_metadata() or ())["x-request-id"]
    assert info.metadata["request_id"] == request_id
    assert request_id in message


async def test_an_unexpected_failure_of_one_streamed_event_is_that_events_answer_alone(
    service: Service, keys: Keys
) -> None:
    """The failing event is answered INTERNAL; the events around it are delivered."""
    events = [
        event(type="track", event="add_to_cart"),
        event(type="track", event=EXPLODE),
        event(type="track", event="add_to_cart"),
    ]

    async def requests() -> AsyncIterator[pb.DeliverStreamRequest]:
        for item in events:
            yield pb.DeliverStreamRequest(integration_id="web", event=item)

    async with grpc.aio.insecure_channel(f"127.0.0.1:{service.port}") as channel:
        stub = pb_grpc.AmperityServiceStub(channel)
        answers = {r.message_id: r async for r in stub.DeliverStream(requests())}
    assert set(answers) == {e.message_id for e in events}
    failed = answers[events[1].message_id].error
    assert failed.code == grpc.StatusCode.INTERNAL.value[0]
    assert failed.reason == "INTERNAL"
    assert failed.metadata["request_id"] in failed.message
    assert keys.ingest not in json.dumps(failed.message)
    for delivered in (events[0], events[2]):
        assert answers[delivered.message_id].result.vendor_request.status_code == 202
