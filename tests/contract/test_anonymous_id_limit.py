"""One limit on the anonymous id, on every RPC that takes one, refused in the same words.

Until session 20 Deliver, DeliverStream and Enrich took an event's anonymous_id of up to
8192 characters, as BrowserProfile and RecordConsent took a visitor's; the gateway's
``/v1/enrich`` and ``/v1/consent`` refused more than 200, so a visitor delivered with a
longer id could never have its profile or consent asked for from the page.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest

from amperity_signal.limits import ANONYMOUS_ID_TOO_LONG, MAX_ANONYMOUS_ID
from datafly.amperity.v1 import amperity_service_pb2 as pb
from tests.contract.harness import Harness
from tests.contract.test_contract import details, event

AT_THE_LIMIT = "a" * MAX_ANONYMOUS_ID
OVER_THE_LIMIT = "a" * (MAX_ANONYMOUS_ID + 1)


def _violations(error: grpc.aio.AioRpcError) -> list[tuple[str, str]]:
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    found = details(error)["BadRequest"].field_violations
    return [(v.field, v.description) for v in found]


@pytest.mark.parametrize("method", ["Deliver", "Enrich"])
async def test_deliver_and_enrich_refuse_an_event_whose_anonymous_id_is_over_the_limit(
    harness: Harness, method: str
) -> None:
    """INVALID_ARGUMENT naming event.anonymous_id and the limit; the limit itself is taken."""

    async def call(anonymous_id: str) -> object:
        sent = event(type="page", anonymous_id=anonymous_id)
        if method == "Deliver":
            return await harness.stub.Deliver(pb.DeliverRequest(integration_id="web", event=sent))
        return await harness.stub.Enrich(pb.EnrichRequest(integration_id="web", event=sent))

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call(OVER_THE_LIMIT)
    assert _violations(caught.value) == [("event.anonymous_id", ANONYMOUS_ID_TOO_LONG)]
    assert OVER_THE_LIMIT not in (caught.value.details() or "")
    await call(AT_THE_LIMIT)


async def test_deliver_stream_refuses_only_the_event_over_the_limit(harness: Harness) -> None:
    """Reported in that event's own answer, as Deliver refuses it; the others are delivered."""
    sent = [
        event(type="page", anonymous_id=AT_THE_LIMIT),
        event(type="page", anonymous_id=OVER_THE_LIMIT),
        event(type="page"),
    ]

    async def requests() -> AsyncIterator[pb.DeliverStreamRequest]:
        for item in sent:
            yield pb.DeliverStreamRequest(integration_id="web", event=item)

    answers = {r.message_id: r async for r in harness.stub.DeliverStream(requests())}
    assert set(answers) == {e.message_id for e in sent}
    refused = answers[sent[1].message_id]
    assert refused.error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert [(v.field, v.description) for v in refused.error.field_violations] == [
        ("event.anonymous_id", ANONYMOUS_ID_TOO_LONG)
    ]
    assert answers[sent[0].message_id].HasField("result")
    assert answers[sent[2].message_id].HasField("result")


async def test_browser_profile_and_record_consent_hold_a_visitor_to_the_same_limit(
    harness: Harness,
) -> None:
    """The visitor's id is refused past the events' limit, in the same words, and not before."""
    profile = harness.stub.BrowserProfile
    consent = harness.stub.RecordConsent
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await profile(pb.BrowserProfileRequest(pipeline_key="pk_web", anonymous_id=OVER_THE_LIMIT))
    assert _violations(caught.value) == [("anonymous_id", ANONYMOUS_ID_TOO_LONG)]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await consent(pb.RecordConsentRequest(pipeline_key="pk_web", anonymous_id=OVER_THE_LIMIT))
    assert _violations(caught.value) == [("anonymous_id", ANONYMOUS_ID_TOO_LONG)]
    await profile(pb.BrowserProfileRequest(pipeline_key="pk_web", anonymous_id=AT_THE_LIMIT))
    await consent(pb.RecordConsentRequest(pipeline_key="pk_web", anonymous_id=AT_THE_LIMIT))
