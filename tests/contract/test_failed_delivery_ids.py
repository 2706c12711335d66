"""A failed Deliver names its event's message_id, and says when the event may be at Amperity.

A unary Deliver without a message_id gets one made up by the service. Until session 27
its failure did not say which, so a caller retrying UNAVAILABLE (as README advises) sent
the event again under a new id, and a POST that timed out after it was written, which
may well have reached Amperity, read as a plain "temporarily unavailable": a duplicate
nobody could deduplicate.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import grpc
import httpx
import pytest
from google.rpc import error_details_pb2

from amperity_signal.service.app import Deps, build_server
from datafly.amperity.v1 import amperity_service_pb2 as pb
from datafly.amperity.v1 import amperity_service_pb2_grpc as pb_grpc
from tests.contract.test_contract import details, event
from tests.support import Keys, integration_dict, settings_for

# Each way an event POST can fail, and whether its request had left (Amperity may have it).
SENT_UNANSWERED = [("timeout",), ("reset",)]
NOT_TAKEN = [("connect_refused",), ("503",)]


class FailingAmperity(httpx.AsyncBaseTransport):
    """Amperity failing each event POST as ``failures`` says, in turn (the last repeats).

    ``message_ids`` are the message_ids of the events it was sent, one per attempt.
    """

    def __init__(self, *failures: str) -> None:
        self.message_ids: list[str] = []
        self._failures: Iterator[str] = iter(failures)
        self._last = failures[-1]

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        failure = next(self._failures, self._last)
        if failure == "connect_refused":  # nothing of the request left
            raise httpx.ConnectError("Connect call failed", request=request)
        self.message_ids.append(json.loads(await request.aread())["message_id"])
        if failure == "timeout":
            await asyncio.Event().wait()  # until request_timeout cuts the attempt
        if failure == "reset":
            raise httpx.ReadError("Connection reset by peer", request=request)
        return httpx.Response(int(failure))


@dataclass
class Running:
    """A started service failing every delivery, and a stub to it."""

    amperity: FailingAmperity
    stub: pb_grpc.AmperityServiceAsyncStub


@pytest.fixture
async def running(request: pytest.FixtureRequest, keys: Keys) -> AsyncIterator[Running]:
    """The service, ingest only; each attempt's failure is the test's parameter (in turn)."""
    failures: tuple[str, ...] = request.param
    amperity = FailingAmperity(*failures)
    table = integration_dict(
        "http://amperity.test",
        keys,
        enrichment=False,
        request_timeout=0.2,
        max_retries=len(failures) - 1,
    )
    service = build_server(settings_for(table), Deps(transport=amperity))
    await service.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{service.port}") as channel:
        yield Running(amperity, pb_grpc.AmperityServiceStub(channel))
    await service.stop(0)


def unnamed_event() -> pb.Event:
    """An event without a message_id: Deliver makes one up."""
    sent = event(type="track", event="add_to_cart")
    sent.ClearField("message_id")
    return sent


@dataclass
class Failure:
    """A failed Deliver: its status code, ErrorInfo and message."""

    code: grpc.StatusCode
    info: error_details_pb2.ErrorInfo
    message: str


async def deliver_failing(running: Running, sent: pb.Event) -> Failure:
    """Deliver ``sent``, which must fail; how."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await running.stub.Deliver(pb.DeliverRequest(integration_id="web", event=sent))
    error = caught.value
    return Failure(error.code(), details(error)["ErrorInfo"], error.details() or "")


@pytest.mark.parametrize("running", SENT_UNANSWERED, indirect=True, ids="-".join)
async def test_an_unanswered_post_names_the_made_up_message_id_to_retry_with(
    running: Running,
) -> None:
    """Timed out or reset once written: may be at Amperity; retry under the id it was sent."""
    failure = await deliver_failing(running, unnamed_event())

    [sent_as] = running.amperity.message_ids
    assert failure.code == grpc.StatusCode.UNAVAILABLE
    assert failure.info.metadata["message_id"] == sent_as
    assert failure.info.metadata["unanswered_attempt"] == "1"
    assert "Attempt 1's POST was sent and got no answer" in failure.message
    assert "may have reached Amperity" in failure.message
    assert f"under the same message_id ({sent_as}), never a new one" in failure.message


@pytest.mark.parametrize("running", NOT_TAKEN, indirect=True, ids="-".join)
async def test_a_failure_amperity_never_took_names_the_message_id_alone(
    running: Running,
) -> None:
    """Not sent, or answered 503: the id is named, no "may have reached Amperity"."""
    sent = event(type="track", event="add_to_cart")

    failure = await deliver_failing(running, sent)

    assert failure.code == grpc.StatusCode.UNAVAILABLE
    assert failure.info.metadata["message_id"] == sent.message_id
    assert "unanswered_attempt" not in failure.info.metadata
    assert "may have reached Amperity" not in failure.message


@pytest.mark.parametrize("running", [("reset", "503")], indirect=True)
async def test_an_earlier_unanswered_attempt_still_counts_after_a_later_503(
    running: Running,
) -> None:
    """Attempt 1 reset once sent, attempt 2 answered 503: attempt 1 may be at Amperity."""
    failure = await deliver_failing(running, unnamed_event())

    metadata = failure.info.metadata
    assert running.amperity.message_ids == [metadata["message_id"]] * 2
    assert (metadata["unanswered_attempt"], metadata["status_code"]) == ("1", "503")
    assert "Attempt 1's POST was sent and got no answer" in failure.message


@pytest.mark.parametrize("running", [("reset", "400"), ("reset", "409")], indirect=True)
async def test_after_an_unanswered_attempt_a_refusal_says_resend_once_fixed_not_again(
    running: Running,
) -> None:
    """Attempt 1 unanswered, attempt 2 refused for good: may be at Amperity; fix, then resend.

    Until session 27 it said "send it again under the same message_id", which a
    permanent refusal would only answer the same way.
    """
    failure = await deliver_failing(running, unnamed_event())

    message_id = failure.info.metadata["message_id"]
    assert failure.code != grpc.StatusCode.UNAVAILABLE  # a refusal, not worth a retry
    assert failure.info.metadata["unanswered_attempt"] == "1"
    assert "Attempt 1's POST was sent and got no answer" in failure.message
    assert "may have reached Amperity" in failure.message
    assert "once what Amperity refused is fixed, resend it" in failure.message
    assert f"under the same message_id ({message_id}), never a new one" in failure.message
    assert "send it again" not in failure.message


@pytest.mark.parametrize("running", [("timeout",)], indirect=True)
async def test_a_streamed_event_s_unanswered_failure_says_so_in_its_answer(
    running: Running,
) -> None:
    """DeliverStream's per-event error carries the same metadata and text."""
    sent = event(type="track", event="add_to_cart")

    async def requests() -> AsyncIterator[pb.DeliverStreamRequest]:
        yield pb.DeliverStreamRequest(integration_id="web", event=sent)

    [answer] = [a async for a in running.stub.DeliverStream(requests())]

    assert answer.error.reason == "AMPERITY_UNAVAILABLE"
    assert answer.error.metadata["message_id"] == sent.message_id
    assert answer.error.metadata["unanswered_attempt"] == "1"
    assert f"under the same message_id ({sent.message_id})" in answer.error.message
