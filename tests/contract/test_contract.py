"""Every RPC through the generated stubs over a real channel, against the sandbox app."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import re
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pb2, json_format
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_status import rpc_status

from amperity_signal.redaction import REDACTED
from amperity_signal.service.convert import struct_to_dict
from datafly.amperity.v1 import amperity_service_pb2 as pb
from tests.contract.harness import SANDBOX_URL, Harness
from tests.support import (
    ALICE_EMAIL,
    ALICE_PROFILE,
    Keys,
    delivery_record,
    integration_dict,
    message_id,
    reveals_encoded,
)

V1_REFLECTION = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"


def v1_reflection(channel: grpc.aio.Channel) -> Any:
    """A ``grpc.reflection.v1`` client: v1's messages are v1alpha's, byte for byte."""
    return channel.stream_stream(
        V1_REFLECTION,
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )


def event(**fields: Any) -> pb.Event:
    properties = fields.pop("properties", None)
    traits = fields.pop("traits", None)
    fields.setdefault("anonymous_id", "anon_contract")
    message = pb.Event(message_id=message_id(), **fields)
    if properties:
        message.properties.update(properties)
    if traits:
        message.traits.update(traits)
    return message


REASON = re.compile(r"[A-Z][A-Z0-9_]*[A-Z0-9]")
DOMAIN = "amperity-signal.datafly.com"


def details(error: grpc.aio.AioRpcError) -> dict[str, Any]:
    """The status's details by kind, each checked against AIP-193's shape.

    Exactly one ErrorInfo (an UPPER_SNAKE reason, the fixed domain), and at most one
    detail of each other kind: a second would be hidden behind the first here.
    """
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None
    found: dict[str, Any] = {}
    for detail in status.details:
        for kind in (
            error_details_pb2.ErrorInfo,
            error_details_pb2.BadRequest,
            error_details_pb2.RetryInfo,
        ):
            if detail.Is(kind.DESCRIPTOR):
                message = kind()
                detail.Unpack(message)
                assert kind.DESCRIPTOR.name not in found, f"two {kind.DESCRIPTOR.name} details"
                found[kind.DESCRIPTOR.name] = message
    info = found["ErrorInfo"]
    assert REASON.fullmatch(info.reason), info.reason
    assert info.domain == DOMAIN
    return found


async def test_deliver_posts_the_mapped_event_and_answers_after_amperity_accepted(
    harness: Harness,
) -> None:
    """Deliver maps through the retail blueprint, posts it, and returns payload + 202."""
    sent = event(
        type="track",
        event="Product Viewed",
        properties={"product_id": "sku-1", "name": "Boot", "price": 99.5},
    )
    response = await harness.stub.Deliver(pb.DeliverRequest(integration_id="web", event=sent))
    assert response.message_id == sent.message_id
    assert response.amperity_type == "view_item"
    assert response.vendor_request.status_code == 202
    assert response.vendor_request.url.endswith("/prof/events/esm-2VP6va3Zn")
    assert "[REDACTED]" in response.vendor_request.headers["Authorization"]
    assert response.payload["source"] == "DATAFLY"
    assert response.payload["cookieid"] == "anon_contract"
    received = (await harness.inspector.get("/_sandbox/events")).json()
    bodies = [e["body"] for e in received["events"]]
    assert any(b.get("message_id") == sent.message_id for b in bodies)


async def test_each_delivery_is_counted_under_its_integration_type_and_outcome(
    harness: Harness,
) -> None:
    """amperity_signal_deliveries_total grows by one per delivered event, per series."""
    labels = {
        "integration": "web",
        "amperity_type": "view_item",
        "outcome": "delivered",
        "reason": "",
    }

    def delivered() -> float:
        registry = harness.service.metrics.registry
        return registry.get_sample_value("amperity_signal_deliveries_total", labels) or 0.0

    before = delivered()
    for _ in range(2):
        sent = event(type="track", event="Product Viewed", properties={"product_id": "sku-1"})
        await harness.stub.Deliver(pb.DeliverRequest(integration_id="web", event=sent))

    assert delivered() == before + 2


async def test_half_configured_enrichment_says_partner_resolve_failed_on_each_delivery(
    make_harness: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    """Profile key and collection but no linking keys: each delivery says what is missing.

    The spec's troubleshooting row sends the user to Live Events for "partner resolve
    failed"; the Deliver response and the Live Events record both carry it.
    """
    harness = await make_harness(linking_keys=[])
    assert "integration web: linking_keys is not set" in caplog.text  # logged at start
    sent = event(type="page")
    response = await harness.stub.Deliver(pb.DeliverRequest(integration_id="web", event=sent))
    advice = (
        "partner resolve failed: partner_attrs.amperity not attached: linking_keys is not "
        "configured"
    )
    assert any(w.startswith(advice) for w in response.warnings)
    call = harness.stub.WatchDeliveries(pb.WatchDeliveriesRequest(replay=10))
    record = await asyncio.wait_for(call.read(), 5)
    call.cancel()
    assert isinstance(record, pb.WatchDeliveriesResponse)
    assert any(w.startswith(advice) for w in record.warnings)


async def test_a_negative_replay_is_invalid_argument_naming_the_field(harness: Harness) -> None:
    """WatchDeliveries(replay=-1) is refused with a BadRequest on replay, not read as 0."""
    call = harness.stub.WatchDeliveries(pb.WatchDeliveriesRequest(replay=-1))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await asyncio.wait_for(call.read(), 5)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    found = details(caught.value)
    assert [v.field for v in found["BadRequest"].field_violations] == ["replay"]
    assert found["ErrorInfo"].metadata["replay"] == "-1"


async def test_enrichment_left_out_altogether_is_no_warning(
    make_harness: Callable[..., Any],
) -> None:
    """An ingest-only integration (no profile field at all) is a choice, not a mistake."""
    harness = await make_harness(
        profile_api_key=None,
        profile_collection_id=None,
        linking_keys=[],
        browser_attribute_allowlist="",
    )
    response = await harness.stub.Deliver(
        pb.DeliverRequest(integration_id="web", event=event(type="page"))
    )
    assert response.vendor_request.status_code == 202
    assert list(response.warnings) == []


async def test_an_event_without_anonymous_id_is_invalid_argument_naming_the_field(
    harness: Harness,
) -> None:
    """A missing anonymous_id is INVALID_ARGUMENT with a BadRequest naming the field."""
    bad = pb.Event(message_id=message_id(), type="track", event="x")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await harness.stub.Deliver(pb.DeliverRequest(integration_id="web", event=bad))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    found = details(caught.value)
    assert found["ErrorInfo"].reason == "INVALID_EVENT"
    fields = [v.field for v in found["BadRequest"].field_violations]
    assert "event.anonymous_id" in fields


async def test_a_key_of_another_tenant_points_at_tenant_id(
    make_harness: Callable[..., Any],
) -> None:
    """The acme keys with tenant_id "globex": the 403 names tenant_id and what Amperity said."""
    harness = await make_harness(tenant_id="globex")
    request = pb.DeliverRequest(integration_id="web", event=event(type="page"))
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await harness.stub.Deliver(request)
    assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED
    details = raised.value.details() or ""
    assert "Streaming Ingest Write Access" in details  # the spec's fix comes first
    assert "check tenant_id 'globex'" in details
    assert "Amperity said: the API key is for tenant 'acme'" in details


async def _watch(stub: Any, request: Any) -> None:
    async for _ in stub.WatchDeliveries(request):
        pass


UNKNOWN_INTEGRATION_CALLS: dict[str, Callable[[Any], Any]] = {
    "Deliver": lambda stub: stub.Deliver(
        pb.DeliverRequest(integration_id="nope", event=event(type="page"))
    ),
    "Enrich": lambda stub: stub.Enrich(
        pb.EnrichRequest(integration_id="nope", event=event(type="page"))
    ),
    "BrowserProfile": lambda stub: stub.BrowserProfile(
        pb.BrowserProfileRequest(integration_id="nope", anonymous_id="anon_contract")
    ),
    "RecordConsent": lambda stub: stub.RecordConsent(
        pb.RecordConsentRequest(integration_id="nope", anonymous_id="anon_contract")
    ),
    "WatchDeliveries": lambda stub: _watch(stub, pb.WatchDeliveriesRequest(integration_id="nope")),
}


@pytest.mark.parametrize("method", sorted(UNKNOWN_INTEGRATION_CALLS))
async def test_an_unknown_integration_is_not_found(harness: Harness, method: str) -> None:
    """An unknown integration id is NOT_FOUND with ErrorInfo UNKNOWN_INTEGRATION, on every RPC."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await UNKNOWN_INTEGRATION_CALLS[method](harness.stub)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    info = details(caught.value)["ErrorInfo"]
    assert info.reason == "UNKNOWN_INTEGRATION"
    # Every variable of the message (the id asked for, the ids configured) is metadata.
    assert "(configured: web)" in (caught.value.details() or "")
    assert dict(info.metadata) == {"integration_id": "nope", "configured": "web"}


async def test_a_huge_unknown_integration_id_is_not_found_and_echoed_cut(
    harness: Harness,
) -> None:
    """A 100 KB id is NOT_FOUND like any other: echoed cut to 200 characters, not whole.

    Whole, it made the status's trailers larger than gRPC's metadata limit.
    """
    huge = "x" * 100_000
    request = pb.DeliverRequest(integration_id=huge, event=event(type="page"))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await harness.stub.Deliver(request)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    info = details(caught.value)["ErrorInfo"]
    assert info.reason == "UNKNOWN_INTEGRATION"
    assert info.metadata["integration_id"] == huge[:200]
    assert len(caught.value.details() or "") < 1_000


@pytest.mark.parametrize("sent", ["ingest key", "profile key", "pipeline key"])
async def test_a_key_sent_as_the_integration_id_is_described_never_echoed(
    harness: Harness, sent: str
) -> None:
    """A key in integration_id (a variable mixed up) is NOT_FOUND, and not repeated back.

    The id was echoed cut to 200 characters: an API key's header and most of its payload,
    or the whole pipeline key, in the message and the ErrorInfo.
    """
    secret = {
        "ingest key": harness.keys.ingest,
        "profile key": harness.keys.profile,
        "pipeline key": "pk_web",
    }[sent]
    request = pb.DeliverRequest(integration_id=secret, event=event(type="page"))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await harness.stub.Deliver(request)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    shown = f"{caught.value.details()} {caught.value.trailing_metadata()}"
    for part in [secret, *secret.split(".")[1:]]:
        assert part not in shown
    assert "the integration's id" in (caught.value.details() or "")


ADMIN_TOKEN = "Adm1n+Tok/en=Q&z-contract"


@pytest.mark.parametrize("sent", [ADMIN_TOKEN, f"web {ADMIN_TOKEN}"])
async def test_the_admin_token_sent_in_the_integration_id_is_described_never_echoed(
    make_harness: Callable[..., Any], sent: str
) -> None:
    """Any configured secret in integration_id is described, as a pipeline key is.

    Only keys shaped like an API key and pipeline keys were: the admin token (or a Redis
    password) came back in the details and in ErrorInfo's ``integration_id``.
    """
    harness: Harness = await make_harness(server={"admin_token": ADMIN_TOKEN})
    request = pb.DeliverRequest(integration_id=sent, event=event(type="page"))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await harness.stub.Deliver(request)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    shown = f"{caught.value.details()} {caught.value.trailing_metadata()}"
    assert ADMIN_TOKEN not in shown
    assert details(caught.value)["ErrorInfo"].metadata["integration_id"] == (
        "<a configured secret (a key, token or password): send the integration's id>"
    )


async def test_a_streamed_event_of_an_unknown_integration_fails_alone_as_not_found(
    harness: Harness,
) -> None:
    """On DeliverStream the same error is the event's own answer, its metadata the same."""
    call = harness.stub.DeliverStream()
    await call.write(pb.DeliverStreamRequest(integration_id="nope", event=event(type="page")))
    await call.done_writing()
    (answer,) = [response async for response in call]
    assert (answer.error.code, answer.error.reason) == (5, "UNKNOWN_INTEGRATION")
    assert dict(answer.error.metadata) == {"integration_id": "nope", "configured": "web"}


async def test_deliver_stream_answers_each_request_and_fails_bad_events_alone(
    harness: Harness,
) -> None:
    """DeliverStream answers every request by message_id; a bad event fails only itself."""
    good = [event(type="track", event="add_to_cart") for _ in range(20)]
    bad = pb.Event(message_id="bad-1", type="track", event="x")

    async def requests() -> AsyncIterator[pb.DeliverStreamRequest]:
        for item in [*good[:10], bad, *good[10:]]:
            yield pb.DeliverStreamRequest(integration_id="web", event=item)

    answers = {r.message_id: r async for r in harness.stub.DeliverStream(requests())}
    assert set(answers) == {e.message_id for e in good} | {"bad-1"}
    assert answers["bad-1"].error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert all(answers[e.message_id].result.vendor_request.status_code == 202 for e in good)


async def test_a_streamed_invalid_event_lists_the_field_violations_deliver_would(
    harness: Harness,
) -> None:
    """The per-event error carries BadRequest's field violations, as unary Deliver's does."""
    bad = pb.Event(message_id="bad-1", type="track")

    async def requests() -> AsyncIterator[pb.DeliverStreamRequest]:
        yield pb.DeliverStreamRequest(integration_id="web", event=bad)

    (answer,) = [r async for r in harness.stub.DeliverStream(requests())]
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await harness.stub.Deliver(pb.DeliverRequest(integration_id="web", event=bad))
    unary = details(raised.value)["BadRequest"].field_violations
    streamed = answer.error.field_violations
    assert [(v.field, v.description) for v in streamed] == [(v.field, v.description) for v in unary]
    assert {v.field for v in streamed} == {"event.anonymous_id", "event.event"}


async def test_a_trait_timestamp_beyond_year_9999_is_delivered_without_it(
    harness: Harness,
) -> None:
    """An out-of-range created_at costs only that field; the stream goes on."""
    odd = event(type="identify", traits={"created_at": 1e30, "email": "a@b.test"})
    good = event(type="track", event="add_to_cart")

    async def requests() -> AsyncIterator[pb.DeliverStreamRequest]:
        for item in (odd, good):
            yield pb.DeliverStreamRequest(integration_id="web", event=item)

    answers = {r.message_id: r async for r in harness.stub.DeliverStream(requests())}
    assert set(answers) == {odd.message_id, good.message_id}
    sent = struct_to_dict(answers[odd.message_id].result.payload)
    assert sent["type"] == "identify"
    assert "user_created_at" not in sent
    assert answers[good.message_id].result.vendor_request.status_code == 202


async def test_a_streamed_event_without_message_id_fails_as_such(harness: Harness) -> None:
    """Answers come in completion order: without an id an answer could not find its event."""
    unnamed = event(type="page")
    unnamed.ClearField("message_id")

    async def requests() -> AsyncIterator[pb.DeliverStreamRequest]:
        yield pb.DeliverStreamRequest(integration_id="web", event=unnamed)

    (answer,) = [r async for r in harness.stub.DeliverStream(requests())]
    assert answer.error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert "event.message_id" in answer.error.message
    assert "is required on DeliverStream" in answer.error.message
    sent = (await harness.inspector.get("/_sandbox/events")).json()["events"]
    assert sent == []  # refused before anything went to Amperity


async def test_enrich_resolves_through_email_and_attaches_partner_attrs(
    harness: Harness,
) -> None:
    """Enrich resolves a visitor by email_sha256 and attaches partner_attrs.amperity."""
    sent = event(type="identify", traits={"email": f"  {ALICE_EMAIL.upper()} "})
    response = await harness.stub.Enrich(pb.EnrichRequest(integration_id="web", event=sent))
    assert response.resolved
    assert response.amperity_id == ALICE_PROFILE
    assert response.matched_key == "email_sha256"
    assert response.attributes["Persona"] == "Value Hunter"
    assert response.cache_status == pb.CACHE_STATUS_MISS
    partner_attrs = struct_to_dict(response.event.partner_attrs)
    assert partner_attrs["amperity"]["Persona"] == "Value Hunter"
    again = await harness.stub.Enrich(pb.EnrichRequest(integration_id="web", event=sent))
    assert again.cache_status == pb.CACHE_STATUS_HIT


async def test_a_burst_beyond_grpcs_pending_call_limit_is_queued_not_cancelled(
    harness: Harness,
) -> None:
    """4,000 calls at once on one channel all get answers.

    gRPC core sheds calls the application has not picked up yet past 1,000 pending (at
    random) and 3,000 (all): the caller got a bare CANCELLED, which no client retries, so
    a pipeline flushing a backlog lost events. The service raises the limit; deadlines
    bound the wait instead.
    """
    sent = event(type="identify", traits={"email": ALICE_EMAIL})
    request = pb.EnrichRequest(integration_id="web", event=sent)
    await harness.stub.Enrich(request)  # the profile is cached: the burst is all hits

    async def code() -> grpc.StatusCode:
        try:
            await harness.stub.Enrich(request, timeout=120)
        except grpc.aio.AioRpcError as error:
            return error.code()
        return grpc.StatusCode.OK

    codes = await asyncio.gather(*(code() for _ in range(4_000)))
    assert {c: codes.count(c) for c in set(codes)} == {grpc.StatusCode.OK: 4_000}


SERVICE = "/datafly.amperity.v1.AmperityService"
CORRUPT = (
    b"\xff\xff\xff\xff\x0f\x12",  # a varint longer than ten bytes
    b"\x0a\x02\xff\xfe",  # integration_id that is not UTF-8
    b"\x12\x80\x01" + b"\x1a" * 64,  # an event 128 bytes long cut at 64
)


@pytest.mark.parametrize("method", ["Deliver", "Enrich", "BrowserProfile"])
async def test_corrupt_request_bytes_are_invalid_argument_not_unknown(
    harness: Harness, method: str
) -> None:
    """Bytes that are not the method's message: INVALID_ARGUMENT, no Python class named."""
    call: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = harness.channel.unary_unary(
        f"{SERVICE}/{method}"
    )
    for wire in CORRUPT:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await call(wire)
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT, wire
        details = raised.value.details() or ""
        assert "not a valid protobuf message" in details
        assert "<class" not in details


@pytest.mark.parametrize("method", ["Deliver", "Enrich", "BrowserProfile"])
async def test_corrupt_request_bytes_carry_one_error_info_naming_the_method(
    harness: Harness, method: str
) -> None:
    """The INVALID_ARGUMENT of bytes that do not parse has its ErrorInfo (AIP-193)."""
    call: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = harness.channel.unary_unary(
        f"{SERVICE}/{method}"
    )
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call(CORRUPT[0])
    info = details(raised.value)["ErrorInfo"]
    assert info.reason == "MALFORMED_REQUEST"
    assert info.domain == "amperity-signal.datafly.com"
    assert info.metadata["method"] == f"{SERVICE}/{method}"
    assert info.metadata["decode_error"] in (raised.value.details() or "")


async def test_a_corrupt_frame_ends_a_stream_after_answering_the_events_before_it(
    harness: Harness,
) -> None:
    """The events read before the corrupt frame are answered; then INVALID_ARGUMENT."""
    good = pb.DeliverStreamRequest(integration_id="web", event=event(type="page"))

    async def frames() -> AsyncIterator[bytes]:
        yield good.SerializeToString()
        yield CORRUPT[0]

    stream: grpc.aio.StreamStreamMultiCallable[bytes, pb.DeliverStreamResponse] = (
        harness.channel.stream_stream(
            f"{SERVICE}/DeliverStream",
            response_deserializer=pb.DeliverStreamResponse.FromString,
        )
    )
    call = stream(frames())
    answers: list[pb.DeliverStreamResponse] = []

    async def read_all() -> None:
        async for answer in call:
            answers.append(answer)

    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await read_all()
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert details(raised.value)["ErrorInfo"].reason == "MALFORMED_REQUEST"
    assert [a.message_id for a in answers] == [good.event.message_id]
    assert answers[0].result.vendor_request.status_code == 202


async def test_browser_profile_returns_only_allowlisted_attributes(harness: Harness) -> None:
    """BrowserProfile by pipeline key returns the allowlist's attributes and nothing else."""
    identify = event(type="identify", anonymous_id="anon_browser", traits={"email": ALICE_EMAIL})
    await harness.stub.Deliver(pb.DeliverRequest(integration_id="web", event=identify))
    response = await harness.stub.BrowserProfile(
        pb.BrowserProfileRequest(pipeline_key="pk_web", anonymous_id="anon_browser")
    )
    assert response.provider == "amperity"
    assert dict(response.attributes) == {"Persona": "Value Hunter", "LifetimeTier": "Gold"}


async def test_browser_profile_with_an_id_and_another_integrations_key_is_invalid(
    harness: Harness,
) -> None:
    """integration_id and pipeline_key that disagree are refused, not routed by the id alone."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await harness.stub.BrowserProfile(
            pb.BrowserProfileRequest(
                integration_id="web", pipeline_key="pk_other", anonymous_id="anon_browser"
            )
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert details(caught.value)["ErrorInfo"].reason == "INVALID_REQUEST"  # no event here
    message = caught.value.details() or ""
    assert message.startswith("invalid request: pipeline_key")
    assert "'web'" in message
    assert "pk_other" not in message
    agreeing = await harness.stub.BrowserProfile(
        pb.BrowserProfileRequest(
            integration_id="web", pipeline_key="pk_web", anonymous_id="anon_never_seen"
        )
    )
    assert agreeing.provider == "amperity"


async def test_deliver_with_an_id_and_another_integrations_key_metadata_is_invalid(
    harness: Harness,
) -> None:
    """Deliver checks the x-pipeline-key against integration_id, as BrowserProfile does."""
    request = pb.DeliverRequest(integration_id="web", event=event(type="page"))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await harness.stub.Deliver(request, metadata=(("x-pipeline-key", "pk_other"),))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    found = details(caught.value)
    assert found["ErrorInfo"].reason == "INVALID_REQUEST"  # the event is not at fault
    assert found["BadRequest"].field_violations[0].field == "pipeline_key"
    # The message names the integration the id chose; the key itself is kept out.
    assert "integration 'web'" in (caught.value.details() or "")
    assert dict(found["ErrorInfo"].metadata) == {"fields": "pipeline_key", "integration_id": "web"}
    sent = (await harness.inspector.get("/_sandbox/events")).json()["events"]
    assert sent == []  # not delivered through "web" on the strength of the id alone
    agreeing = await harness.stub.Deliver(request, metadata=(("x-pipeline-key", "pk_web"),))
    assert agreeing.vendor_request.status_code == 202


async def test_browser_profile_takes_the_pipeline_key_from_metadata_too(harness: Harness) -> None:
    """x-pipeline-key names the integration of a BrowserProfile as it does of a Deliver."""
    answer = await harness.stub.BrowserProfile(
        pb.BrowserProfileRequest(anonymous_id="anon_never_seen"),
        metadata=(("x-pipeline-key", "pk_web"),),
    )
    assert answer.provider == "amperity"


async def test_a_call_naming_no_integration_says_how_to_send_the_pipeline_key(
    harness: Harness,
) -> None:
    """The violation names the x-pipeline-key metadata, the way to send the key."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await harness.stub.Deliver(pb.DeliverRequest(event=event(type="page")))
    (violation,) = details(caught.value)["BadRequest"].field_violations
    assert violation.field == "integration_id"
    assert "x-pipeline-key" in violation.description


async def test_browser_profile_for_a_first_touch_visitor_is_empty(harness: Harness) -> None:
    """A visitor nobody has seen gets provider amperity and no attributes."""
    response = await harness.stub.BrowserProfile(
        pb.BrowserProfileRequest(pipeline_key="pk_web", anonymous_id="anon_never_seen")
    )
    assert response.provider == "amperity"
    assert dict(response.attributes) == {}


async def test_watch_deliveries_streams_the_delivery_with_secrets_redacted(
    harness: Harness,
) -> None:
    """WatchDeliveries shows input, payload and vendor request; no token anywhere.

    The record's Authorization reads as the Deliver response's for the same delivery
    (``Bearer [REDACTED]``): until session 26 it was ``[redacted]``, a second form.
    """
    sent = event(type="page")
    response = await harness.stub.Deliver(pb.DeliverRequest(integration_id="web", event=sent))
    call = harness.stub.WatchDeliveries(pb.WatchDeliveriesRequest(replay=10))
    record = await asyncio.wait_for(call.read(), 5)
    call.cancel()
    assert isinstance(record, pb.WatchDeliveriesResponse)
    assert record.message_id == sent.message_id
    assert record.amperity_type == "pageview"
    assert record.vendor_request.status_code == 202
    shown = (
        response.vendor_request.headers["Authorization"],
        record.vendor_request.headers["Authorization"],
    )
    assert shown == ("Bearer [REDACTED]", "Bearer [REDACTED]")
    text = str(record)
    assert harness.keys.ingest not in text and harness.keys.profile not in text


async def test_watch_deliveries_redacts_every_configured_secret_a_record_carries(
    make_harness: Callable[..., Any], keys: Keys
) -> None:
    """An event carrying each kind of secret arrives over WatchDeliveries with none of them.

    The event is the caller's and may hold anything: an Amperity key (whole, or its JWT
    payload alone), the admin token, a pipeline key, one base64-encoded, a credential under
    a sensitive key, in its properties or its partner_attrs. The stream's records went out
    as delivered, although the contract says "secrets redacted" (only /live redacted them).
    """
    admin_token = f"admin-{uuid.uuid4().hex}"
    pipeline_key = f"pk_live_{uuid.uuid4().hex[:12]}"
    table = integration_dict(SANDBOX_URL, keys, pipeline_key=pipeline_key)
    harness = await make_harness(table, server={"admin_token": admin_token})
    payload_segment = keys.ingest.split(".")[1]
    basic = base64.b64encode(f"ops:{admin_token}".encode()).decode()
    sent = event(
        type="track",
        event="Note Added",
        properties={
            "note": f"key={keys.ingest}",
            "profile": keys.profile,
            "payload_only": payload_segment,
            "admin": f"t {admin_token} t",
            "page": f"https://shop.example/?pipeline_key={pipeline_key}",
            "basic": f"Basic {basic}",
            "x-api-key": "not-configured-anywhere",
        },
    )
    sent.partner_attrs.update({"other": {"token": keys.profile, "Cookie": "session=abc"}})
    await harness.stub.Deliver(pb.DeliverRequest(integration_id="web", event=sent))
    call = harness.stub.WatchDeliveries(pb.WatchDeliveriesRequest(replay=10))
    record = await _read_record(call)
    call.cancel()
    assert record.message_id == sent.message_id
    text = json_format.MessageToJson(record)
    for secret in (keys.ingest, keys.profile, payload_segment, admin_token, pipeline_key):
        assert secret not in text
        assert not reveals_encoded(text, secret)
    properties = struct_to_dict(record.event.properties)
    assert properties["note"] == f"key={REDACTED}"
    assert properties["admin"] == f"t {REDACTED} t"
    assert properties["page"] == f"https://shop.example/?pipeline_key={REDACTED}"
    assert properties["x-api-key"] == REDACTED
    partner = struct_to_dict(record.event.partner_attrs)["other"]
    assert partner == {"token": REDACTED, "Cookie": REDACTED}
    assert record.vendor_request.headers["Authorization"] == f"Bearer {REDACTED}"


async def test_a_pipeline_key_scopes_watch_deliveries_to_its_integration(
    make_harness: Callable[..., Any], keys: Keys
) -> None:
    """A key-only watch sees its integration's records only; a key nobody has is NOT_FOUND."""
    harness = await make_harness(
        integration_dict(SANDBOX_URL, keys, integration_id="web"),
        integration_dict(SANDBOX_URL, keys, integration_id="shop"),
    )
    for integration_id in ("shop", "web"):
        request = pb.DeliverRequest(integration_id=integration_id, event=event(type="page"))
        await harness.stub.Deliver(request)
    call = harness.stub.WatchDeliveries(
        pb.WatchDeliveriesRequest(replay=10), metadata=(("x-pipeline-key", "pk_web"),)
    )
    record = await asyncio.wait_for(call.read(), 5)
    assert isinstance(record, pb.WatchDeliveriesResponse)
    assert record.integration_id == "web"
    # Neither the shop's replayed record nor a new one comes before the web's next record.
    sent = {}
    for integration_id in ("shop", "web"):
        request = pb.DeliverRequest(integration_id=integration_id, event=event(type="page"))
        await harness.stub.Deliver(request)
        sent[integration_id] = request.event.message_id
    following = await asyncio.wait_for(call.read(), 5)
    assert (following.integration_id, following.message_id) == ("web", sent["web"])
    call.cancel()
    nobody = harness.stub.WatchDeliveries(
        pb.WatchDeliveriesRequest(), metadata=(("x-pipeline-key", "pk_nobody"),)
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await asyncio.wait_for(nobody.read(), 5)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_watch_deliveries_answers_with_headers_before_any_delivery(
    harness: Harness,
) -> None:
    """An idle watch gets the service's headers at once, so a client knows it is connected."""
    call = harness.stub.WatchDeliveries(pb.WatchDeliveriesRequest(integration_id="web"))
    await asyncio.wait_for(call.initial_metadata(), 5)
    assert not call.done()
    call.cancel()


class _PublishingWhenHeadersGo:
    """A servicer context that publishes a record the moment the watch's headers are sent.

    That is what a caller can do at the earliest: wait for the headers, then deliver.
    """

    def __init__(self, harness: Harness) -> None:
        self._live = harness.service.live

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return ()

    async def send_initial_metadata(self, metadata: Any) -> None:
        self._live.publish(delivery_record(1))

    async def abort_with_status(self, status: Any) -> None:
        raise AssertionError(f"the watch was refused: {status}")


async def test_watch_deliveries_shows_a_record_published_as_soon_as_its_headers_went(
    harness: Harness,
) -> None:
    """A watch without replay is subscribed before its headers go, so it misses no record."""
    assert harness.service.servicer is not None
    context: Any = _PublishingWhenHeadersGo(harness)
    records = harness.service.servicer.WatchDeliveries(
        pb.WatchDeliveriesRequest(integration_id="web", replay=0), context
    )
    first = asyncio.ensure_future(anext(records))
    try:
        for _ in range(100):  # the watch is idle once its queue is waited on
            if first.done():
                break
            await asyncio.sleep(0)
        assert first.done(), "the record published after the headers never arrived"
        assert first.result().message_id == "msg-1"
    finally:
        first.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await first
        await records.aclose()  # type: ignore[attr-defined]
    assert harness.service.live.watchers == 0


async def test_watch_deliveries_tells_a_watcher_that_fell_behind_what_it_missed(
    harness: Harness,
) -> None:
    """Past the watch's 1,000-record queue records are missed; the next one says how many."""
    call = harness.stub.WatchDeliveries(pb.WatchDeliveriesRequest(integration_id="web"))
    await asyncio.wait_for(call.initial_metadata(), 5)
    live = harness.service.live
    for number in range(1_006):  # in one loop turn: the watch cannot drain its queue meanwhile
        live.publish(delivery_record(number))
    received = [await _read_record(call) for _ in range(1_000)]
    assert [r.message_id for r in received] == [f"msg-{n}" for n in range(1_000)]
    assert {r.missed_before for r in received} == {0}
    live.publish(delivery_record(1_006))
    caught_up = await _read_record(call)
    call.cancel()
    assert (caught_up.message_id, caught_up.missed_before) == ("msg-1006", 6)


async def _read_record(
    call: grpc.aio.UnaryStreamCall[pb.WatchDeliveriesRequest, pb.WatchDeliveriesResponse],
) -> pb.WatchDeliveriesResponse:
    record = await asyncio.wait_for(call.read(), 5)
    assert isinstance(record, pb.WatchDeliveriesResponse)
    return record


async def test_health_reports_serving_for_the_service(harness: Harness) -> None:
    """The health service answers SERVING for datafly.amperity.v1.AmperityService."""
    # The health and reflection stubs' type stubs know only sync channels.
    health: Any = health_pb2_grpc.HealthStub(harness.channel)
    answer = await health.Check(
        health_pb2.HealthCheckRequest(service="datafly.amperity.v1.AmperityService")
    )
    assert answer.status == health_pb2.HealthCheckResponse.SERVING


async def test_reflection_lists_the_service(harness: Harness) -> None:
    """Server reflection lists datafly.amperity.v1.AmperityService (so grpcurl works)."""
    stub: Any = reflection_pb2_grpc.ServerReflectionStub(harness.channel)  # type: ignore[arg-type]

    async def ask() -> AsyncIterator[reflection_pb2.ServerReflectionRequest]:
        yield reflection_pb2.ServerReflectionRequest(list_services="")

    async for answer in stub.ServerReflectionInfo(ask()):
        names = [s.name for s in answer.list_services_response.service]
        assert "datafly.amperity.v1.AmperityService" in names
        break
    else:  # pragma: no cover - the stream must answer
        pytest.fail("reflection answered nothing")


async def test_reflection_v1_lists_the_services_and_resolves_their_files(harness: Harness) -> None:
    """A client asking only grpc.reflection.v1 (no v1alpha fallback) lists and describes."""

    async def ask() -> AsyncIterator[reflection_pb2.ServerReflectionRequest]:
        yield reflection_pb2.ServerReflectionRequest(list_services="")
        for symbol in (
            "datafly.amperity.v1.AmperityService",
            "grpc.reflection.v1.ServerReflection",
        ):
            yield reflection_pb2.ServerReflectionRequest(file_containing_symbol=symbol)

    listed, amperity, reflection = [
        answer async for answer in v1_reflection(harness.channel)(ask())
    ]

    # As grpc-go's servers do, it lists both reflection services beside the service.
    assert {s.name for s in listed.list_services_response.service} >= {
        "datafly.amperity.v1.AmperityService",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    }
    files = {}
    for answer in (amperity, reflection):
        for serialized in answer.file_descriptor_response.file_descriptor_proto:
            file = descriptor_pb2.FileDescriptorProto.FromString(serialized)
            files[file.package] = file
    assert [s.name for s in files["datafly.amperity.v1"].service] == ["AmperityService"]
    served = files["grpc.reflection.v1"].service[0].method[0]
    assert (served.name, served.input_type) == (
        "ServerReflectionInfo",
        ".grpc.reflection.v1.ServerReflectionRequest",
    )
