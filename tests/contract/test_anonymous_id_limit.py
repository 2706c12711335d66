"""One limit on the anonymous id, on every RPC that takes one, refused in the same words.

And one rule on every id: no control character (NUL, CR, LF, ...).

Until session 20 Deliver, DeliverStream and Enrich took an event's anonymous_id of up to
8192 characters, as BrowserProfile and RecordConsent took a visitor's; the gateway's
``/v1/enrich`` and ``/v1/consent`` refused more than 200, so a visitor delivered with a
longer id could never have its profile or consent asked for from the page.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest

from amperity_signal.limits import (
    ANONYMOUS_ID_TOO_LONG,
    MAX_ANONYMOUS_ID,
    control_character_problem,
)
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


NEWLINE_ID = "anon\nX-Injected: 1"
NEWLINE_PROBLEM = control_character_problem(NEWLINE_ID)


@pytest.mark.parametrize(
    ("field", "value"),
    [("anonymous_id", NEWLINE_ID), ("canonical_id", "canon\r1"), ("message_id", "m\x00-1")],
)
async def test_an_event_id_holding_a_control_character_is_refused_naming_it(
    harness: Harness, field: str, value: str
) -> None:
    """NUL, CR or LF in an event's id: INVALID_ARGUMENT naming it; other Unicode is taken.

    Ids are opaque, but no visitor's cookie or event's id holds a line break: Deliver
    delivered ``anon``, a line feed, ``X-Injected: 1`` as the visitor's cookieid.
    """
    sent = event(type="page")
    setattr(sent, field, value)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await harness.stub.Deliver(pb.DeliverRequest(integration_id="web", event=sent))
    assert _violations(caught.value) == [(f"event.{field}", control_character_problem(value))]
    printable = event(type="page", anonymous_id="caf\u00e9 \u00fc-1", canonical_id="c\u00e9")
    await harness.stub.Deliver(pb.DeliverRequest(integration_id="web", event=printable))


async def test_browser_profile_and_record_consent_refuse_a_control_character_too(
    harness: Harness,
) -> None:
    """A visitor's id is held to the events' rule: the same violation on both RPCs."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await harness.stub.BrowserProfile(
            pb.BrowserProfileRequest(pipeline_key="pk_web", anonymous_id=NEWLINE_ID)
        )
    assert _violations(caught.value) == [("anonymous_id", NEWLINE_PROBLEM)]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await harness.stub.RecordConsent(
            pb.RecordConsentRequest(pipeline_key="pk_web", anonymous_id=NEWLINE_ID)
        )
    assert _violations(caught.value) == [("anonymous_id", NEWLINE_PROBLEM)]
