"""What goes on the wire: URLs, headers, bodies, and the answers that end a call."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from amperity_signal import __version__
from amperity_signal.amperity import AmperityClient, Profile, endpoints
from amperity_signal.amperity.client import vendor_call
from amperity_signal.config import IntegrationSettings
from amperity_signal.errors import AmperityRejected, InvalidEvent, ProfileUnavailable

ClientFactory = Callable[..., AmperityClient]
PROFILE_JSON = {
    "collection_id": "apc-vPsQheAm",
    "profile_id": "p-123",
    "attributes": {"Persona": "Value Hunter", "LifetimeTier": "Gold"},
    "created_at": "2026-04-17T15:37:10Z",
    "updated_at": "2026-04-18T09:00:00Z",
    "links": {"email_sha256": ["9f86d0"], "device_cookie": ["anon_abc123"]},
}


class Recorder:
    """A MockTransport handler that answers with one response and records every request."""

    def __init__(self, status: int = 202, body: Any = None) -> None:
        self.status = status
        self.body = body
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.body is None:
            return httpx.Response(self.status)
        return httpx.Response(self.status, json=self.body)


def _strict_json(content: bytes) -> Any:
    def refuse(name: str) -> Any:
        raise AssertionError(f"non-standard JSON constant {name}")

    return json.loads(content, parse_constant=refuse)


async def test_event_post_sends_the_notes_url_and_headers(make_client: ClientFactory) -> None:
    """An event is POSTed to /prof/events/{stream} with tenant, bearer and JSON headers only."""
    recorder = Recorder(202)
    client = make_client(recorder)
    result = await client.post_event({"source": "datafly", "event": "purchase"}, deadline=None)

    (request,) = recorder.requests
    assert request.method == "POST"
    assert str(request.url) == "https://acme.amperity.com/prof/events/esm-abc123"
    assert request.headers["Amperity-Tenant"] == "acme-tenant"
    assert request.headers["Authorization"].startswith("Bearer eyJ")
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["Content-Length"] == str(len(request.content))
    assert "api-version" not in request.headers
    assert result.status_code == 202
    assert not result.dropping and not result.unexpected_status
    assert result.call.url == "https://acme.amperity.com/prof/events/esm-abc123"
    assert result.call.headers["Authorization"] == "Bearer [REDACTED]"
    assert result.call.attempts == 1
    assert result.call.status_code == 202


Call = Callable[[AmperityClient], Awaitable[object]]
CALLS: list[tuple[str, Call, bool]] = [
    ("event", lambda client: client.post_event({"source": "datafly"}, deadline=None), True),
    ("lookup", lambda client: client.lookup("email_sha256", "9f86d0", deadline=None), True),
    ("profile", lambda client: client.get_profile("p-123", deadline=None), False),
]


@pytest.mark.parametrize(("name", "call", "json_body"), CALLS, ids=[case[0] for case in CALLS])
async def test_every_call_carries_the_notes_headers_and_names_the_connector(
    make_client: ClientFactory,
    canaries: tuple[str, str],
    name: str,
    call: Call,
    json_body: bool,
) -> None:
    """Each /prof call carries the tenant, its own bearer key and our User-Agent.

    A JSON Content-Type and a true Content-Length go only with a body; no api-version
    (that header is for /api/... only).
    """
    recorder = Recorder(202) if name == "event" else Recorder(200, PROFILE_JSON)
    await call(make_client(recorder))

    (request,) = recorder.requests
    headers = request.headers
    ingest_key, profile_key = canaries
    assert headers["Amperity-Tenant"] == "acme-tenant"
    assert headers["Authorization"] == f"Bearer {ingest_key if name == 'event' else profile_key}"
    assert headers["User-Agent"] == f"amperity-signal/{__version__}"
    assert "api-version" not in headers
    if json_body:
        assert headers["Content-Type"] == "application/json"
        assert headers["Content-Length"] == str(len(request.content))
    else:
        assert "Content-Type" not in headers
        assert request.content == b""


async def test_event_body_is_one_strict_json_object(make_client: ClientFactory) -> None:
    """The body decodes as exactly the payload object, with no NaN-style constants."""
    recorder = Recorder(202)
    payload = {"source": "datafly", "properties": {"value": 12.5, "items": [{"sku": "A"}]}}
    await make_client(recorder).post_event(payload, deadline=None)

    assert _strict_json(recorder.requests[0].content) == payload


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"properties": {"price": float("nan")}}, "properties.price"),
        ({"items": [{"v": 1.0}, {"v": float("inf")}]}, "items[1].v"),
        ({"x": {"y": float("-inf")}}, "x.y"),
    ],
)
async def test_non_finite_number_is_refused_naming_its_field(
    make_client: ClientFactory, payload: dict[str, Any], field: str
) -> None:
    """NaN and Infinity raise InvalidEvent with the field path, and nothing is sent."""
    recorder = Recorder(202)
    with pytest.raises(InvalidEvent) as caught:
        await make_client(recorder).post_event(payload, deadline=None)

    assert [v.field for v in caught.value.violations] == [field]
    assert recorder.requests == []


async def test_oversize_event_names_its_largest_field_and_sends_nothing(
    make_client: ClientFactory,
) -> None:
    """A body over 65,536 bytes raises InvalidEvent naming the biggest field and its size.

    It names that field alone: dropping it brings the body under the limit, so the 3,000-byte
    ``context.page`` (named until session 17) and ``source`` do not matter.
    """
    recorder = Recorder(202)
    payload = {
        "source": "datafly",
        "properties": {"title": "shoes", "description": "x" * 70_000},
        "context": {"page": "p" * 3_000},
    }
    with pytest.raises(InvalidEvent) as caught:
        await make_client(recorder).post_event(payload, deadline=None)

    (only,) = caught.value.violations
    assert only.field == "properties.description"
    assert only.description == (
        "70,002 bytes of a 73,090-byte body, 7,554 bytes over: Amperity accepts at most "
        "65,536 bytes per event; shorten or drop this field in the blueprint mapping."
    )
    assert recorder.requests == []


async def test_oversize_event_names_the_fields_that_bring_it_under_not_a_small_one(
    make_client: ClientFactory,
) -> None:
    """Twenty 3,500-byte fields, 4,697 bytes over: two are named, never the message_id."""
    recorder = Recorder(202)
    payload = {"message_id": "msg-" + "0" * 32, **{f"f{i:02}": "x" * 3_500 for i in range(20)}}
    with pytest.raises(InvalidEvent) as caught:
        await make_client(recorder).post_event(payload, deadline=None)

    assert [v.field for v in caught.value.violations] == ["f00", "f01"]
    assert "4,697 bytes over" in caught.value.violations[0].description
    assert recorder.requests == []


async def test_oversize_event_of_many_small_fields_says_dropping_one_is_not_enough(
    make_client: ClientFactory,
) -> None:
    """100 fields of 800 bytes: the largest is named, and the payload, to map fewer fields."""
    recorder = Recorder(202)
    payload = {f"f{i:03}": "x" * 800 for i in range(100)}
    with pytest.raises(InvalidEvent) as caught:
        await make_client(recorder).post_event(payload, deadline=None)

    assert [v.field for v in caught.value.violations] == ["f000", "payload"]
    assert caught.value.violations[1].description == (
        "the body is 81,001 bytes, 15,465 over the 65,536 Amperity accepts per event, and "
        "dropping the fields named is not enough: map fewer fields in the blueprint mapping."
    )


async def test_body_of_exactly_64_kb_is_sent(make_client: ClientFactory) -> None:
    """The limit is inclusive: a 65,536-byte body goes out."""
    recorder = Recorder(202)
    payload = {"d": "x" * (65_536 - len('{"d":""}'))}
    await make_client(recorder).post_event(payload, deadline=None)

    assert len(recorder.requests[0].content) == 65_536


async def test_204_is_success_flagged_as_dropping(make_client: ClientFactory) -> None:
    """204 means accepted while the stream drops events: success with dropping=True."""
    result = await make_client(Recorder(204)).post_event({"a": 1}, deadline=None)

    assert (result.status_code, result.dropping) == (204, True)
    assert not result.unexpected_status


@pytest.mark.parametrize("status", [200, 201, 206, 299])
async def test_an_undocumented_2xx_is_accepted_once_and_flagged(
    make_client: ClientFactory, status: int
) -> None:
    """A 2xx other than 202/204 is a success (not resent) flagged unexpected_status."""
    recorder = Recorder(status)
    result = await make_client(recorder).post_event({"a": 1}, deadline=None)

    assert len(recorder.requests) == 1
    assert (result.status_code, result.dropping, result.unexpected_status) == (
        status,
        False,
        True,
    )


async def test_lookup_posts_the_identifier_in_the_body_never_the_url(
    make_client: ClientFactory,
) -> None:
    """A keychain lookup is a POST with the keys in the body and the Profile API key."""
    recorder = Recorder(200, PROFILE_JSON)
    profile = await make_client(recorder).lookup("email_sha256", "9f86d0", deadline=None)

    (request,) = recorder.requests
    assert request.method == "POST"
    assert str(request.url) == "https://acme.amperity.com/prof/lookup/apc-vPsQheAm/keychain"
    assert "9f86d0" not in str(request.url)
    assert _strict_json(request.content) == {"keys": {"email_sha256": "9f86d0"}, "enrich": True}
    assert request.headers["Authorization"].endswith("CANARY-PROFILE-51be02")
    assert profile == Profile(
        collection_id="apc-vPsQheAm",
        profile_id="p-123",
        attributes={"Persona": "Value Hunter", "LifetimeTier": "Gold"},
        links={"email_sha256": ["9f86d0"], "device_cookie": ["anon_abc123"]},
        updated_at="2026-04-18T09:00:00Z",
    )


async def test_lookup_without_a_match_returns_none(make_client: ClientFactory) -> None:
    """404 on a lookup is "no such visitor", not an error."""
    assert await make_client(Recorder(404)).lookup("customer_id", "c-1", deadline=None) is None


async def test_get_profile_asks_enrich_plus_one_parameter_per_context_target(
    make_client: ClientFactory,
) -> None:
    """The personalisation request is GET with enrich=true and each context target."""
    recorder = Recorder(200, PROFILE_JSON)
    profile = await make_client(recorder).get_profile(
        "p-123", context={"pageCategory": "shoes", "cartValue": "120"}, deadline=None
    )

    (request,) = recorder.requests
    assert request.method == "GET"
    assert str(request.url) == (
        "https://acme.amperity.com/prof/profiles/apc-vPsQheAm/p-123"
        "?enrich=true&pageCategory=shoes&cartValue=120"
    )
    assert "Content-Type" not in request.headers
    assert profile is not None
    assert profile.attributes["LifetimeTier"] == "Gold"


async def test_get_profile_not_in_the_collection_returns_none(make_client: ClientFactory) -> None:
    """404 on a profile GET means the profile is not in the collection: None."""
    assert await make_client(Recorder(404)).get_profile("p-9", deadline=None) is None


async def test_context_target_named_enrich_is_refused_and_nothing_is_sent(
    make_client: ClientFactory,
) -> None:
    """A context target may not override enrich (config refuses it at load): nothing goes."""
    recorder = Recorder(200, PROFILE_JSON)
    with pytest.raises(ValueError, match="enrich"):
        await make_client(recorder).get_profile("p-1", context={"enrich": "no"}, deadline=None)

    assert recorder.requests == []


async def test_profile_calls_without_profile_key_send_nothing(
    make_client: ClientFactory, integration: IntegrationSettings
) -> None:
    """Without profile_api_key the client raises ProfileUnavailable before any request."""
    recorder = Recorder(200, PROFILE_JSON)
    bare = integration.model_copy(update={"profile_api_key": None})
    with pytest.raises(ProfileUnavailable, match="profile_api_key"):
        await make_client(recorder, integration=bare).lookup("k", "v", deadline=None)
    assert recorder.requests == []


async def test_client_speaks_to_a_starlette_fake_over_asgi(
    make_client: ClientFactory, integration: IntegrationSettings
) -> None:
    """Against a small ASGI Amperity, ingest then lookup then profile all succeed."""
    seen: list[str] = []

    async def events(request: Request) -> JSONResponse:
        assert request.headers["amperity-tenant"] == "acme-tenant"
        seen.append(f"event {(await request.json())['event']}")
        return JSONResponse(None, status_code=202)

    async def keychain(request: Request) -> JSONResponse:
        keys = (await request.json())["keys"]
        seen.append(f"lookup {sorted(keys)}")
        return JSONResponse(PROFILE_JSON)

    async def profile(request: Request) -> JSONResponse:
        seen.append(f"profile {request.path_params['pid']} {dict(request.query_params)}")
        return JSONResponse(PROFILE_JSON)

    app = Starlette(
        routes=[
            Route("/prof/events/{stream}", events, methods=["POST"]),
            Route("/prof/lookup/{collection}/keychain", keychain, methods=["POST"]),
            Route("/prof/profiles/{collection}/{pid}", profile, methods=["GET"]),
        ]
    )
    local = integration.model_copy(update={"api_base_url": "http://sandbox.test"})
    client = make_client(integration=local, transport=httpx.ASGITransport(app=app))

    assert (await client.post_event({"event": "purchase"}, deadline=None)).status_code == 202
    found = await client.lookup("email_sha256", "9f86d0", deadline=None)
    assert found is not None
    await client.get_profile(found.profile_id, context={"pageCategory": "shoes"}, deadline=None)

    assert seen == [
        "event purchase",
        "lookup ['email_sha256']",
        "profile p-123 {'enrich': 'true', 'pageCategory': 'shoes'}",
    ]


async def test_a_context_query_at_the_limit_is_sent_and_one_past_it_is_refused_unsent(
    make_client: ClientFactory,
) -> None:
    """A query over MAX_PROFILE_QUERY_LENGTH encoded: CONTEXT_TOO_LONG names its target."""
    recorder = Recorder(200, PROFILE_JSON)
    client = make_client(recorder)
    filler = endpoints.MAX_PROFILE_QUERY_LENGTH - len("enrich=true&pageCategory=")
    await client.get_profile("p-123", context={"pageCategory": "s" * filler}, deadline=None)
    assert len(recorder.requests[0].url.query) == endpoints.MAX_PROFILE_QUERY_LENGTH

    # One CJK character more is nine encoded ones (three UTF-8 bytes, each %XX).
    long_context = {"cartValue": "120", "pageCategory": "s" * (filler - 9) + "\u978b"}
    with pytest.raises(AmperityRejected) as raised:
        await client.get_profile("p-123", context=long_context, deadline=None)

    assert len(recorder.requests) == 1
    error = raised.value
    assert error.reason == "CONTEXT_TOO_LONG"
    assert "4,110 characters URL-encoded, over the 4,096 allowed" in error.message
    assert "pageCategory taking 4,084 of them" in error.message
    assert "personalisation_context_mappings" in error.message
    assert error.metadata["target"] == "pageCategory"
    call = vendor_call(error)
    assert call is not None
    assert (call.attempts, call.status_code) == (0, 0)
    assert call.url == "https://acme.amperity.com/prof/profiles/apc-vPsQheAm/p-123"


async def test_a_profile_id_too_long_for_a_url_is_refused_unsent_not_raised_raw(
    make_client: ClientFactory,
) -> None:
    """A path httpx refuses (a 70 KB profile id) is URL_TOO_LONG, not httpx.InvalidURL."""
    recorder = Recorder(200, PROFILE_JSON)
    with pytest.raises(AmperityRejected) as raised:
        await make_client(recorder).get_profile("p" * 70_000, deadline=None)

    assert recorder.requests == []
    assert raised.value.reason == "URL_TOO_LONG"
    assert "the profile request was not sent" in raised.value.message
    call = vendor_call(raised.value)
    assert call is not None
    assert call.attempts == 0
