"""A call's metadata is read once, by the observation, for its request id and pipeline key.

grpc.aio builds a new tuple of a call's metadata at each ``invocation_metadata()``; the
servicer finds the pipeline key the observation read (``interceptors.pipeline_key_of``),
and a DeliverStream reads it once for all its events. The observed handlers are called
here with a context that counts those reads.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, cast

import grpc
import httpx
import pytest

from amperity_signal.service import interceptors
from amperity_signal.service.app import Deps, Service, build_server
from amperity_signal.service.inprocess import Metadata, _Context
from amperity_signal.service.interceptors import pipeline_key_of
from datafly.amperity.v1 import amperity_service_pb2 as pb
from tests.contract.test_contract import event
from tests.support import Keys, integration_dict, settings_for

SERVICE = "/datafly.amperity.v1.AmperityService"


def amperity(request: httpx.Request) -> httpx.Response:
    """Accepts every event at once; knows no profile (enrichment finds nobody)."""
    if request.url.path.startswith("/prof/events/"):
        return httpx.Response(202)
    return httpx.Response(404, json={"message": "not found"})


class CountingContext(_Context):
    """The in-process channel's call context, counting the reads of its metadata."""

    def __init__(self, metadata: Metadata) -> None:
        super().__init__(metadata, None)
        self.reads = 0
        self.written: list[Any] = []

    def invocation_metadata(self) -> Metadata:
        self.reads += 1
        return super().invocation_metadata()

    async def write(self, message: Any) -> None:
        self.written.append(message)

    def done(self) -> bool:
        return False


@pytest.fixture
async def service(keys: Keys) -> AsyncIterator[Service]:
    """The service's handlers (not serving), Amperity answered in process."""
    settings = settings_for(integration_dict("http://amperity.test", keys))
    built = build_server(settings, Deps(transport=httpx.MockTransport(amperity)), bind=False)
    yield built
    await built.registry.aclose()


async def test_a_deliver_reads_its_metadata_once_and_keeps_both_values(service: Service) -> None:
    """The caller's request id comes back in the trailer; its pipeline key is checked."""
    deliver: Any = service.handlers[f"{SERVICE}/Deliver"].unary_unary
    request = pb.DeliverRequest(integration_id="web", event=event(type="page"))
    sent = (("x-request-id", "req-1"), ("x-pipeline-key", "pk_web"))
    context = CountingContext(sent)
    answer = await deliver(request, context)
    assert answer.vendor_request.status_code == 202
    assert context.reads == 1
    assert dict(context.trailing_metadata())["x-request-id"] == "req-1"
    assert interceptors._begun[0] is not context  # not kept alive once the call is over

    wrong = CountingContext((("x-pipeline-key", "pk_other"), ("x-request-id", "req-2")))
    with pytest.raises(grpc.aio.AbortError):
        await deliver(request, wrong)
    assert wrong.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "pipeline_key" in str(dict(wrong.trailing_metadata()))
    assert dict(wrong.trailing_metadata())["x-request-id"] == "req-2"
    assert wrong.reads == 1


async def test_a_deliver_stream_reads_its_metadata_once_for_all_its_events(
    service: Service,
) -> None:
    """Each event's integration check finds the key the stream's observation read."""
    stream: Any = service.handlers[f"{SERVICE}/DeliverStream"].stream_stream
    events = [event(type="page") for _ in range(5)]

    async def requests() -> AsyncIterator[pb.DeliverStreamRequest]:
        for sent in events:
            yield pb.DeliverStreamRequest(integration_id="web", event=sent)

    context = CountingContext((("x-pipeline-key", "pk_web"),))
    await asyncio.wait_for(stream(requests(), context), 10)
    answered = sorted(answer.message_id for answer in context.written)
    assert answered == sorted(sent.message_id for sent in events)
    assert all(answer.HasField("result") for answer in context.written)
    assert context.reads == 1


def test_a_context_the_observation_did_not_see_has_its_metadata_read() -> None:
    """A servicer called directly (no observation) still finds the key, the last one sent."""
    context = CountingContext((("x-pipeline-key", "pk_a"), ("x-pipeline-key", "pk_b")))
    assert pipeline_key_of(cast(Any, context)) == "pk_b"
    assert context.reads == 1
    binary = CountingContext((("x-pipeline-key", b"bytes"),))
    assert pipeline_key_of(cast(Any, binary)) == ""
