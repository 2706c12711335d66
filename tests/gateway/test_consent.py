"""POST /v1/consent: a consent withdrawn in the page stops /v1/enrich at once, no event needed."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import grpc.aio
import httpx
import pytest

from amperity_signal.logs import JsonFormatter
from amperity_signal.sandbox import SandboxApp
from datafly.amperity.v1 import amperity_service_pb2 as pb
from datafly.amperity.v1 import amperity_service_pb2_grpc as pb_grpc
from tests.contract.harness import SANDBOX_URL
from tests.contract.test_contract import details
from tests.support import ALICE_EMAIL, OutageStore
from tests.unit.enrich.enrich_fakes import FakeClock

from .fakes import KNOWN_KEY, RunningService
from .realservice import Stack, real_stack

VISITOR = "anon-withdraws"


@pytest.fixture
def store() -> OutageStore:
    """The service's cache store, which a test can take down."""
    return OutageStore()


@pytest.fixture
def clock() -> FakeClock:
    """The cache backend's clock: moved past the outage retry interval by hand."""
    return FakeClock()


@pytest.fixture
async def stack(store: OutageStore, clock: FakeClock) -> AsyncIterator[Stack]:
    """The real service (browser_consent=functional) behind the gateway."""
    async with real_stack(store, clock) as running:
        yield running


async def _enrich(client: httpx.AsyncClient) -> dict[str, Any]:
    response = await client.get(
        "/v1/enrich",
        params={"provider": "amperity", "anonymous_id": VISITOR},
        headers={"X-Pipeline-Key": "pk_web"},
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def _consent(
    client: httpx.AsyncClient, consent: dict[str, Any], **extra: Any
) -> httpx.Response:
    return await client.post(
        "/v1/consent",
        json={"anonymousId": VISITOR, "consent": consent, **extra},
        headers={"X-Pipeline-Key": "pk_web"},
    )


def _timestamp(moment: datetime) -> Any:
    stamp = pb.RecordConsentRequest().consented_at
    stamp.FromDatetime(moment)
    return stamp


async def _ingested(sandbox: SandboxApp) -> int:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=sandbox), base_url=SANDBOX_URL
    ) as inspector:
        response = await inspector.get("/_sandbox/events")
    response.raise_for_status()
    return len(response.json()["events"])


async def test_a_withdrawal_stops_enrich_at_once_and_a_grant_restores_it(
    stack: Stack,
) -> None:
    """Withdrawn via /v1/consent (no event): /v1/enrich answers {} as for denied consent."""
    client, sandbox = stack.client, stack.sandbox
    identify = {
        "type": "identify",
        "anonymousId": VISITOR,
        "traits": {"email": ALICE_EMAIL},
        "context": {"consent": {"functional": True, "marketing": True}},
    }
    delivered = await client.post("/v1/i", json=identify, headers={"X-Pipeline-Key": "pk_web"})
    assert delivered.status_code == 200, delivered.text
    granted = await _enrich(client)
    assert granted["attributes"]["Persona"]
    events_before = await _ingested(sandbox)
    assert events_before >= 1

    withdrawn = await _consent(client, {"functional": False, "marketing": True})
    assert withdrawn.status_code == 200, withdrawn.text
    assert withdrawn.json() == {"success": True, "profileAllowed": False}
    assert await _enrich(client) == {"provider": "amperity", "attributes": {}}
    assert await _ingested(sandbox) == events_before  # recorded without an event

    regranted = await _consent(client, {"functional": True, "marketing": True})
    assert regranted.json() == {"success": True, "profileAllowed": True}
    assert await _enrich(client) == granted


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (pb.RecordConsentRequest(pipeline_key="pk_web"), "anonymous_id"),
        (
            pb.RecordConsentRequest(
                pipeline_key="pk_web",
                anonymous_id=VISITOR,
                consent=pb.Consent(google=pb.GoogleConsent(ad_storage="maybe")),
            ),
            "consent.google.ad_storage",
        ),
        (
            pb.RecordConsentRequest(
                pipeline_key="pk_web",
                anonymous_id=VISITOR,
                consented_at=_timestamp(datetime.now(UTC) + timedelta(hours=1)),
            ),
            "consented_at",
        ),
        (
            pb.RecordConsentRequest(
                pipeline_key="pk_web",
                anonymous_id=VISITOR,
                consented_at=_timestamp(datetime(1999, 12, 31, tzinfo=UTC)),
            ),
            "consented_at",
        ),
    ],
)
async def test_record_consent_refuses_bad_fields_as_invalid_consent_naming_the_field(
    stack: Stack, request_: pb.RecordConsentRequest, field: str
) -> None:
    """The RPC itself (for callers besides the gateway) names the field; reason INVALID_CONSENT."""
    channel = stack.service.in_process_channel()
    try:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await pb_grpc.AmperityServiceStub(channel).RecordConsent(request_)
    finally:
        await channel.close()
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in (caught.value.details() or "")
    found = details(caught.value)
    assert found["ErrorInfo"].reason == "INVALID_CONSENT"
    assert [v.field for v in found["BadRequest"].field_violations] == [field]


async def test_record_consent_with_another_integrations_key_is_an_invalid_request(
    stack: Stack,
) -> None:
    """An id and a key of different integrations: INVALID_REQUEST on pipeline_key, no event."""
    channel = stack.service.in_process_channel()
    request = pb.RecordConsentRequest(
        integration_id="web",
        pipeline_key="pk_other",
        anonymous_id="anon_mismatch",
        consent=pb.Consent(categories={"C0003": True}),
    )
    try:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await pb_grpc.AmperityServiceStub(channel).RecordConsent(request)
    finally:
        await channel.close()
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (caught.value.details() or "").startswith("invalid request: pipeline_key")
    found = details(caught.value)
    assert found["ErrorInfo"].reason == "INVALID_REQUEST"
    assert [v.field for v in found["BadRequest"].field_violations] == ["pipeline_key"]


async def test_a_consent_older_than_the_one_kept_is_answered_with_the_kept_one(
    stack: Stack,
) -> None:
    """A consentedAt before a kept withdrawal changes nothing: profileAllowed stays false."""
    withdrawn = await _consent(stack.client, {"functional": False})
    assert withdrawn.json() == {"success": True, "profileAllowed": False}
    earlier = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    late = await _consent(stack.client, {"functional": True}, consentedAt=earlier)
    assert late.status_code == 200, late.text
    assert late.json() == {"success": True, "profileAllowed": False}


async def test_a_consented_at_far_ahead_of_the_service_is_a_400_naming_it(stack: Stack) -> None:
    """An instant an hour ahead would pin the state for an hour: refused, nothing kept."""
    ahead = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    response = await _consent(stack.client, {"functional": True}, consented_at=ahead)
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["code"], error["field"]) == ("INVALID_CONSENT", "consented_at")
    assert "5 minutes past the service's clock" in error["message"]
    # Had the grant been kept, this older withdrawal would be answered with it.
    earlier = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    withdrawn = await _consent(stack.client, {"functional": False}, consentedAt=earlier)
    assert withdrawn.json() == {"success": True, "profileAllowed": False}


async def test_consent_takes_the_visitor_from_the_dfid_cookie(
    gateway: httpx.AsyncClient, service: RunningService
) -> None:
    """Without anonymousId in the body the _dfid cookie names the visitor."""
    response = await gateway.post(
        "/v1/consent",
        json={"consent": {"functional": True, "google": {"ad_storage": "denied"}}},
        headers={"X-Pipeline-Key": KNOWN_KEY, "Cookie": "_dfid=visitor-cookie"},
    )
    assert response.json() == {"success": True, "profileAllowed": True}
    (request,) = service.fake.consent_requests
    assert request.anonymous_id == "visitor-cookie"
    assert request.consent.functional is True
    assert request.consent.google.ad_storage == "denied"
    assert not request.HasField("consented_at")  # unset: the service's receive time


async def test_of_two_dfid_cookies_consent_takes_the_first(
    gateway: httpx.AsyncClient, service: RunningService
) -> None:
    """The first _dfid, the most specific (RFC 6265 5.4), as datafly.js reads it, not the last."""
    response = await gateway.post(
        "/v1/consent",
        json={"consent": {"functional": True}},
        headers={"X-Pipeline-Key": KNOWN_KEY, "Cookie": "_dfid=for-this-path; _dfid=for-the-host"},
    )
    assert response.json() == {"success": True, "profileAllowed": True}
    assert service.fake.consent_requests[-1].anonymous_id == "for-this-path"


async def test_consent_forwards_when_the_visitor_chose(
    gateway: httpx.AsyncClient, service: RunningService
) -> None:
    """The body's consentedAt (RFC 3339, any offset) reaches RecordConsent as consented_at."""
    response = await gateway.post(
        "/v1/consent",
        json={
            "anonymousId": "v",
            "consent": {"functional": True},
            "consentedAt": "2025-01-31T13:00:00.250+01:00",
        },
        headers={"X-Pipeline-Key": KNOWN_KEY},
    )
    assert response.status_code == 200, response.text
    (request,) = service.fake.consent_requests
    assert request.consented_at.ToDatetime(tzinfo=UTC) == datetime(
        2025, 1, 31, 12, 0, 0, 250_000, tzinfo=UTC
    )


async def test_consented_at_keeps_nanoseconds(
    gateway: httpx.AsyncClient, service: RunningService
) -> None:
    """The fraction reaches consented_at whole; it was cut to microseconds."""
    response = await gateway.post(
        "/v1/consent",
        json={"anonymousId": "v", "consent": {}, "consentedAt": "2025-01-31t12:00:00.123456789z"},
        headers={"X-Pipeline-Key": KNOWN_KEY},
    )
    assert response.status_code == 200, response.text
    (request,) = service.fake.consent_requests
    assert (request.consented_at.seconds, request.consented_at.nanos) == (
        1_738_324_800,
        123_456_789,
    )


@pytest.mark.parametrize("consented_at", ["2025-01-31T12:00", "2025-01-31", "2025-W05-5"])
async def test_a_consented_at_that_is_not_rfc_3339_is_a_400_naming_it(
    gateway: httpx.AsyncClient, service: RunningService, consented_at: str
) -> None:
    """Read as an event's timestamp is; fromisoformat took these, and the state was kept."""
    body = {"anonymousId": "v", "consent": {}, "consented_at": consented_at}
    response = await gateway.post("/v1/consent", json=body, headers={"X-Pipeline-Key": KNOWN_KEY})
    assert response.status_code == 400
    assert response.json()["error"] == {
        "code": "INVALID_CONSENT",
        "message": "consented_at: is not an RFC 3339 date-time such as 2025-01-31T12:00:00.000Z.",
        "field": "consented_at",
    }
    assert service.fake.consent_requests == []


@pytest.mark.parametrize(
    ("body", "code", "field"),
    [
        ({"consent": {"functional": True}}, "MISSING_ANONYMOUS_ID", "anonymousId"),
        ({"anonymousId": 7, "consent": {}}, "INVALID_CONSENT", "anonymousId"),
        ({"anonymousId": "a" * 201, "consent": {}}, "INVALID_ANONYMOUS_ID", "anonymousId"),
        ({"anonymousId": "v"}, "INVALID_CONSENT", "consent"),
        (
            {"anonymousId": "v", "consent": {"functional": "no"}},
            "INVALID_CONSENT",
            "consent.functional",
        ),
        (
            {"anonymousId": "v", "consent": {"google": {"ad_storage": "maybe"}}},
            "INVALID_CONSENT",
            "consent.google.ad_storage",
        ),
        (
            {"anonymousId": "v", "consent": {"google": {"adUserData": "maybe"}}},
            "INVALID_CONSENT",
            "consent.google.adUserData",
        ),
        ([], "INVALID_CONSENT", "body"),
        (
            {"anonymousId": "v", "consent": {}, "consentedAt": "yesterday"},
            "INVALID_CONSENT",
            "consentedAt",
        ),
        (
            {"anonymousId": "v", "consent": {}, "consented_at": 1738324800},
            "INVALID_CONSENT",
            "consented_at",
        ),
    ],
)
async def test_a_bad_consent_body_is_a_400_naming_the_field(
    gateway: httpx.AsyncClient,
    service: RunningService,
    body: Any,
    code: str,
    field: str,
) -> None:
    """Each malformed body is refused with a code and the field to fix; nothing is kept."""
    response = await gateway.post("/v1/consent", json=body, headers={"X-Pipeline-Key": KNOWN_KEY})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == code
    assert error["field"] == field
    assert service.fake.consent_requests == []


async def test_a_consent_the_service_cannot_keep_is_a_503_and_unavailable_not_a_success(
    stack: Stack, store: OutageStore, clock: FakeClock
) -> None:
    """Cache down: /v1/consent is 503 with Retry-After, the RPC UNAVAILABLE; nothing kept.

    Before, both answered success and profileAllowed true for a grant that was dropped,
    while /v1/enrich (failing closed) answered {} and kept doing so after the outage.
    """
    client = stack.client
    two_minutes_ago = (datetime.now(UTC) - timedelta(minutes=2)).isoformat()
    withdrawn = await _consent(client, {"functional": False}, consentedAt=two_minutes_ago)
    assert withdrawn.json() == {"success": True, "profileAllowed": False}
    store.down = True

    refused = await _consent(client, {"functional": True})
    assert refused.status_code == 503, refused.text
    assert refused.headers["Retry-After"] == "1"
    assert refused.json() == {
        "error": {
            "code": "SERVICE_UNAVAILABLE",
            "message": "The consent state was not recorded; send it again after the "
            "Retry-After delay.",
        }
    }
    assert await _enrich(client) == {"provider": "amperity", "attributes": {}}
    channel = stack.service.in_process_channel()
    request = pb.RecordConsentRequest(
        pipeline_key="pk_web", anonymous_id=VISITOR, consent=pb.Consent(functional=True)
    )
    try:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await pb_grpc.AmperityServiceStub(channel).RecordConsent(request)
    finally:
        await channel.close()
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert (caught.value.details() or "").startswith("consent not recorded: ")
    found = details(caught.value)
    assert found["ErrorInfo"].reason == "CACHE_UNAVAILABLE"
    assert dict(found["ErrorInfo"].metadata) == {"retry_after_seconds": "1"}
    assert found["RetryInfo"].retry_delay.ToNanoseconds() == 1_000_000_000

    store.down = False
    clock.advance(1)
    # Had the grant (made "now") been kept, this older withdrawal would be answered with it.
    a_minute_ago = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    again = await _consent(client, {"functional": False}, consentedAt=a_minute_ago)
    assert again.json() == {"success": True, "profileAllowed": False}
    granted = await _consent(client, {"functional": True})
    assert granted.json() == {"success": True, "profileAllowed": True}


async def test_a_5xx_the_service_answered_is_logged_with_its_request_id(
    stack: Stack, store: OutageStore
) -> None:
    """The gateway's warning carries the request id the service's own lines for it carry.

    The service answers every call with its request id (``x-request-id`` trailing
    metadata) and logs it with the failure; the gateway's "RPC failed" warning had none,
    so an operator could not tell which service line it was about.
    """
    lines: list[dict[str, Any]] = []

    class Lines(logging.Handler):
        """Each record as its JSON line, formatted where it is logged (ids in context)."""

        def emit(self, record: logging.LogRecord) -> None:
            lines.append(json.loads(JsonFormatter().format(record)))

    root = logging.getLogger()
    handler, level = Lines(), root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    store.down = True
    try:
        refused = await _consent(stack.client, {"functional": True})
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
    assert refused.status_code == 503, refused.text
    [failed] = [line for line in lines if line["msg"] == "rpc failed"]
    [warning] = [line for line in lines if line["logger"] == "amperity_signal.gateway.app"]
    assert warning["msg"] == "RPC failed on POST /v1/consent: StatusCode.UNAVAILABLE"
    assert warning.get("request_id") == failed["request_id"], lines
