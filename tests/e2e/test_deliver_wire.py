"""The realtime ingest request on the wire, as the sandbox process received it.

Headers, URL, ``source``, the timestamp format and the nested consent field exactly as the
spec's "Event ingest" and consent sections and the API notes show them.
"""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from google.protobuf import timestamp_pb2

from amperity_signal import __version__
from datafly.amperity.v1 import amperity_service_pb2 as pb
from tests.e2e.stack import Sandbox, Service, Stack
from tests.support import STREAM, integration_dict, message_id, mint_keys

# The tests of the default integration share one sandbox and service (``plain_service``):
# the service keeps nothing between deliveries, and the sandbox is reset before each test.
pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

ISO_MS_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")


async def start(stack: Stack, **overrides: Any) -> tuple[Sandbox, Service]:
    """A sandbox and a retail service without enrichment (only event POSTs reach Amperity).

    For an integration other than ``plain_service``'s, in a test's own event loop.
    """
    sandbox = await stack.sandbox()
    keys = mint_keys()
    table = integration_dict(sandbox.url, keys, enrichment=False, **overrides)
    return sandbox, await stack.service(sandbox, table, keys=keys)


def event(consent: pb.Consent | None = None, **fields: Any) -> pb.Event:
    """A Product Added event, with ``consent`` when given."""
    context = pb.Context(ip="203.0.113.7")
    if consent is not None:
        context.consent.CopyFrom(consent)
    return pb.Event(
        message_id=message_id(),
        type="track",
        event="Product Added",
        anonymous_id="anon_abc123",
        context=context,
        **fields,
    )


async def deliver(service: Service, sent: pb.Event) -> pb.DeliverResponse:
    """Deliver one event through the ``web`` integration."""
    response: pb.DeliverResponse = await service.stub.Deliver(
        pb.DeliverRequest(integration_id="web", event=sent)
    )
    return response


async def test_the_event_post_carries_the_documented_url_and_headers(
    plain_service: tuple[Sandbox, Service],
) -> None:
    """POST /prof/events/{esm-id}: tenant, bearer key, JSON type, a true length, our User-Agent."""
    sandbox, service = plain_service
    sent = event()
    response = await deliver(service, sent)
    (request,) = await sandbox.requests()
    (received,) = await sandbox.events()
    headers = request["headers"]
    fingerprint = hashlib.sha256(service.keys.ingest.encode()).hexdigest()[:12]
    assert request["method"] == "POST"
    assert request["path"] == f"/prof/events/{STREAM}"
    assert request["status"] == 202
    assert headers["amperity-tenant"] == "acme"
    assert headers["authorization"] == f"Bearer <fp:{fingerprint}>"
    assert headers["content-type"] == "application/json"
    assert int(headers["content-length"]) == len(orjson.dumps(received["body"]))
    assert "api-version" not in headers
    # aiohttp's own User-Agent is switched off: the tenant's logs name the connector.
    assert headers["user-agent"] == f"amperity-signal/{__version__}"
    assert response.vendor_request.url == f"{sandbox.url}/prof/events/{STREAM}"
    assert response.vendor_request.status_code == 202
    assert response.vendor_request.headers["Authorization"] == "Bearer [REDACTED]"
    assert service.keys.ingest not in str(response)


async def test_the_body_is_the_flat_payload_the_response_reports(
    plain_service: tuple[Sandbox, Service],
) -> None:
    """The sandbox receives exactly DeliverResponse.payload: source and type first, flat."""
    sandbox, service = plain_service
    sent = event()
    response = await deliver(service, sent)
    (received,) = await sandbox.events()
    body = received["body"]
    assert list(body)[:2] == ["source", "type"]
    assert body["source"] == "DATAFLY"
    assert body["type"] == "add_to_cart"
    assert body["cookieid"] == "anon_abc123"
    assert body["ip_address"] == "203.0.113.7"
    assert received["routed_to"] == "DataflyEvent"
    payload = orjson.loads(orjson.dumps(dict(response.payload)))
    assert payload == body
    nested = {k for k, v in body.items() if isinstance(v, dict)}
    assert nested <= {"consent"}


@pytest.mark.asyncio(loop_scope="function")  # its own service, in the ``stack``'s loop
async def test_source_is_sent_verbatim_and_a_wrong_one_is_routed_to_unknown(
    stack: Stack,
) -> None:
    """source_value is sent case-sensitively: "datafly" is accepted (202) but lands in _unknown."""
    sandbox, service = await start(stack, source_value="datafly")
    response = await deliver(service, event())
    (received,) = await sandbox.events()
    assert response.vendor_request.status_code == 202
    assert received["body"]["source"] == "datafly"
    assert received["routed_to"] == "_unknown"


async def test_timestamps_are_iso8601_utc_with_milliseconds_and_z(
    plain_service: tuple[Sandbox, Service],
) -> None:
    """A given timestamp keeps its instant; a missing one is stamped; both end in .mmmZ."""
    sandbox, service = plain_service
    at = timestamp_pb2.Timestamp()
    at.FromDatetime(datetime(2026, 4, 17, 15, 37, 10, 484_999, tzinfo=UTC))
    with_time = event(timestamp=at)
    without_time = event()
    await deliver(service, with_time)
    await deliver(service, without_time)
    bodies = {e["body"]["message_id"]: e["body"] for e in await sandbox.events()}
    assert bodies[with_time.message_id]["timestamp"] == "2026-04-17T15:37:10.484Z"
    stamped = bodies[without_time.message_id].get("timestamp")
    assert isinstance(stamped, str)
    assert ISO_MS_UTC.match(stamped)
    assert abs(datetime.fromisoformat(stamped).timestamp() - datetime.now(UTC).timestamp()) < 60


FULL_CONSENT = pb.Consent(
    analytics=True,
    marketing=False,
    functional=True,
    categories={"C0001": True, "C0002": False, "ad_personalization": False},
    google=pb.GoogleConsent(
        ad_storage="denied",
        ad_user_data="denied",
        ad_personalization="denied",
        analytics_storage="granted",
    ),
)


@pytest.mark.parametrize(
    ("consent", "expected"),
    [
        pytest.param(
            FULL_CONSENT,
            {
                "analytics": True,
                "marketing": False,
                "functional": True,
                "categories": {"C0001": True, "C0002": False, "ad_personalization": False},
                "google": {
                    "ad_storage": "denied",
                    "ad_user_data": "denied",
                    "ad_personalization": "denied",
                    "analytics_storage": "granted",
                },
            },
            id="full",
        ),
        pytest.param(
            pb.Consent(marketing=False, google=pb.GoogleConsent(analytics_storage="granted")),
            {"marketing": False, "google": {"analytics_storage": "granted"}},
            id="partial",
        ),
        pytest.param(None, None, id="absent"),
    ],
)
async def test_consent_is_nested_as_the_spec_shows_with_absent_parts_absent(
    plain_service: tuple[Sandbox, Service],
    consent: pb.Consent | None,
    expected: dict[str, Any] | None,
) -> None:
    """Consent reaches Amperity nested, verbatim; what the visitor never set is absent."""
    sandbox, service = plain_service
    await deliver(service, event(consent))
    (received,) = await sandbox.events()
    assert received["body"].get("consent") == expected
    if expected is None:
        assert "consent" not in received["body"]
