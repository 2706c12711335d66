"""The collector routes: /v1/t, /v1/p, /v1/i and /v1/batch, through Deliver."""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from amperity_signal.dry_run_events import deliverable_event, single_route_only
from amperity_signal.errors import InvalidEvent
from amperity_signal.gateway.openapi import openapi_document
from amperity_signal.limits import (
    ANONYMOUS_ID_REQUIRED,
    ANONYMOUS_ID_TOO_LONG,
    CANONICAL_ID_TOO_LONG,
    MAX_ANONYMOUS_ID,
    MAX_CANONICAL_ID,
)

from .conftest import CLIENT_IP, SHOP_ORIGIN, GatewayFactory
from .datafly_source import retryable_codes
from .fakes import KNOWN_KEY, RunningService

KEY = {"X-Pipeline-Key": KNOWN_KEY}
EVENT: dict[str, Any] = {
    "event": "Product Viewed",
    "anonymousId": "anon-1",
    "messageId": "m-1",
    "timestamp": "2025-01-30T10:00:00.000Z",
    "properties": {"product_id": "SKU-1", "price": 89.5},
}


async def test_track_is_delivered_with_the_key_in_metadata(
    gateway: httpx.AsyncClient, service: RunningService
) -> None:
    """POST /v1/t delivers a track with integration_id "" and x-pipeline-key metadata."""
    response = await gateway.post("/v1/t", json=EVENT, headers=KEY)
    assert response.status_code == 200
    assert response.json() == {"success": True, "messageId": "m-1"}
    (delivered,) = service.fake.delivered
    assert delivered.request.integration_id == ""
    assert delivered.metadata["x-pipeline-key"] == KNOWN_KEY
    event = delivered.request.event
    assert (event.type, event.event, event.anonymous_id) == ("track", "Product Viewed", "anon-1")
    assert event.timestamp.ToJsonString() == "2025-01-30T10:00:00Z"
    assert dict(event.properties) == {"product_id": "SKU-1", "price": 89.5}


@pytest.mark.parametrize(("route", "expected"), [("/v1/p", "page"), ("/v1/i", "identify")])
async def test_route_sets_the_default_type(
    gateway: httpx.AsyncClient, service: RunningService, route: str, expected: str
) -> None:
    """/v1/p defaults to page and /v1/i to identify."""
    response = await gateway.post(route, json={"anonymousId": "a", "userId": "u"}, headers=KEY)
    assert response.status_code == 200
    assert service.fake.delivered[-1].request.event.type == expected


async def test_server_fills_ip_user_agent_cookie_id_message_id_and_time(
    gateway: httpx.AsyncClient, service: RunningService
) -> None:
    """IP, User-Agent, _dfid fallback, a uuid messageId and receive time come from the server."""
    headers = {**KEY, "User-Agent": "Mozilla/5.0 test", "Cookie": "_dfid=cookie-anon"}
    body = {"context": {"ip": "10.9.9.9", "userAgent": "spoofed"}}
    response = await gateway.post("/v1/t", json=body, headers=headers)
    assert response.status_code == 200
    event = service.fake.delivered[-1].request.event
    assert event.context.ip == CLIENT_IP
    assert event.context.user_agent == "Mozilla/5.0 test"
    assert event.anonymous_id == "cookie-anon"
    assert len(event.message_id) == 36
    assert response.json()["messageId"] == event.message_id
    assert event.timestamp.ToJsonString() == "2025-01-31T12:00:00Z"


TWO_DFID_COOKIES = {**KEY, "Cookie": "_dfid=for-this-path; theme=dark; _dfid=for-the-domain"}


async def test_of_two_dfid_cookies_an_event_takes_the_first(
    gateway: httpx.AsyncClient, service: RunningService
) -> None:
    """The first _dfid, the most specific (RFC 6265 5.4), as datafly.js reads it, not the last."""
    response = await gateway.post("/v1/t", json={"event": "Viewed"}, headers=TWO_DFID_COOKIES)
    assert response.status_code == 200
    assert service.fake.delivered[-1].request.event.anonymous_id == "for-this-path"
    batch = {"batch": [{"event": "A"}, {"event": "B", "anonymousId": "given"}]}
    response = await gateway.post("/v1/batch", json=batch, headers=TWO_DFID_COOKIES)
    assert response.json()["success"] is True
    ids = sorted(d.request.event.anonymous_id for d in service.fake.delivered[-2:])
    assert ids == ["for-this-path", "given"]


ID_TOO_LONG = "a" * (MAX_ANONYMOUS_ID + 1)


@pytest.mark.parametrize(
    ("body", "cookie", "field"),
    [
        ({"anonymousId": ID_TOO_LONG}, "", "anonymousId"),
        ({"anonymous_id": ID_TOO_LONG}, "", "anonymous_id"),
        ({}, ID_TOO_LONG, "_dfid"),
    ],
)
async def test_an_event_whose_anonymous_id_is_over_the_limit_is_refused_undelivered(
    gateway: httpx.AsyncClient,
    service: RunningService,
    body: dict[str, Any],
    cookie: str,
    field: str,
) -> None:
    """The limit /v1/enrich and /v1/consent hold the visitor to, and the service's.

    Until session 20 /v1/t delivered it: a visitor whose profile the page could then never
    ask for. Named as the body spelled it, or as the cookie it came from.
    """
    headers = {**KEY, "Cookie": f"_dfid={cookie}"} if cookie else KEY
    response = await gateway.post("/v1/t", json={"event": "Viewed", **body}, headers=headers)
    assert response.status_code == 400
    assert response.json()["error"] == {
        "code": "INVALID_EVENT",
        "message": f"{field}: {ANONYMOUS_ID_TOO_LONG}",
        "field": field,
    }
    assert service.fake.delivered == []
    at_the_limit = {key: value[:MAX_ANONYMOUS_ID] for key, value in body.items()}
    cookie_header = {"Cookie": f"_dfid={cookie[:MAX_ANONYMOUS_ID]}"} if cookie else {}
    response = await gateway.post(
        "/v1/t", json={"event": "Viewed", **at_the_limit}, headers={**KEY, **cookie_header}
    )
    assert response.status_code == 200
    assert service.fake.delivered[-1].request.event.anonymous_id == "a" * MAX_ANONYMOUS_ID


@pytest.mark.parametrize("field", ["canonicalId", "canonical_id"])
async def test_an_event_whose_canonical_id_is_over_the_limit_is_refused_undelivered(
    gateway: httpx.AsyncClient, service: RunningService, field: str
) -> None:
    """The service's limit for a canonical id, refused before the RPC and named as sent.

    Until session 22 the gateway passed on canonical ids of any length, and the service
    held them to the 8192 characters of any string.
    """
    body = {"event": "Viewed", "anonymousId": "anon-1", field: "c" * (MAX_CANONICAL_ID + 1)}
    response = await gateway.post("/v1/t", json=body, headers=KEY)
    assert response.status_code == 400
    assert response.json()["error"] == {
        "code": "INVALID_EVENT",
        "message": f"{field}: {CANONICAL_ID_TOO_LONG}",
        "field": field,
    }
    assert service.fake.delivered == []
    body[field] = "c" * MAX_CANONICAL_ID
    assert (await gateway.post("/v1/t", json=body, headers=KEY)).status_code == 200
    assert service.fake.delivered[-1].request.event.canonical_id == "c" * MAX_CANONICAL_ID


async def test_a_batch_reports_an_anonymous_id_over_the_limit_on_its_own_event(
    gateway: httpx.AsyncClient, service: RunningService
) -> None:
    """Refused per event, naming batch[i] and the limit; the others are delivered."""
    batch = [
        {"event": "A", "messageId": "m-0", "anonymousId": "anon-1"},
        {"event": "B", "messageId": "m-1", "anonymousId": ID_TOO_LONG},
        {"event": "C", "messageId": "m-2"},  # the cookie's id, within the limit
    ]
    headers = {**KEY, "Cookie": "_dfid=anon-2"}
    response = await gateway.post("/v1/batch", json={"batch": batch}, headers=headers)
    assert response.status_code == 200
    results = response.json()["results"]
    assert response.json()["success"] is False
    assert results[1] == {
        "messageId": "m-1",
        "ok": False,
        "error": f"batch[1].anonymousId: {ANONYMOUS_ID_TOO_LONG}",
        "code": "INVALID_EVENT",
        "field": "batch[1].anonymousId",
    }
    assert [r["ok"] for r in results] == [True, False, True]
    delivered = sorted(d.request.event.anonymous_id for d in service.fake.delivered)
    assert delivered == ["anon-1", "anon-2"]


async def test_full_context_and_partial_consent_convert(
    gateway: httpx.AsyncClient, service: RunningService
) -> None:
    """A camelCase context converts field by field; absent consent fields stay absent."""
    context = {
        "page": {
            "url": "https://shop/p?x=1",
            "path": "/p",
            "referrer": "r",
            "title": "T",
            "search": "?x=1",
        },
        "campaign": {"source": "news", "medium": "email", "name": "spring"},
        "locale": "en-GB",
        "timezone": "Europe/London",
        "session": {"id": "s-1", "number": 3},
        "device": {"type": "mobile", "os": "iOS", "browser": "Safari"},
        "geo": {"country": "GB", "postalCode": "SW1A"},
        "vendorIds": {"fbp": "fb.1.2", "gclid": "g-1", "gaClientId": "GA1.2"},
        "consent": {
            "analytics": True,
            "categories": {"C0002": False},
            "google": {"ad_storage": "denied"},
        },
        "library": {"name": "datafly.js"},
    }
    await gateway.post("/v1/t", json={**EVENT, "context": context}, headers=KEY)
    ctx = service.fake.delivered[-1].request.event.context
    assert (ctx.page.url, ctx.page.search, ctx.page.title) == ("https://shop/p?x=1", "?x=1", "T")
    assert (ctx.campaign.source, ctx.campaign.name) == ("news", "spring")
    assert (ctx.locale, ctx.timezone) == ("en-GB", "Europe/London")
    assert (ctx.session.id, ctx.session.number) == ("s-1", 3)
    assert (ctx.device.type, ctx.geo.postal_code) == ("mobile", "SW1A")
    # camelCase vendor keys land under the proto's (and the global mappings') snake_case
    assert dict(ctx.vendor_ids) == {"fbp": "fb.1.2", "gclid": "g-1", "ga_client_id": "GA1.2"}
    consent = ctx.consent
    assert consent.HasField("analytics")
    assert consent.analytics is True
    assert not consent.HasField("marketing")
    assert not consent.HasField("functional")
    assert dict(consent.categories) == {"C0002": False}
    assert consent.google.HasField("ad_storage")
    assert consent.google.ad_storage == "denied"
    assert not consent.google.HasField("analytics_storage")


@pytest.mark.parametrize(
    ("session", "delivered"),
    [
        ({"id": 2**53 - 1, "number": 3.0}, ("9007199254740991", 3)),
        ({"id": -(2**53 - 1), "number": 0.0}, ("-9007199254740991", 0)),
        # 1.0 is 1, as the Node client (which cannot tell them apart) sends it; until
        # session 25 the gateway refused it ("must be a string.").
        ({"id": 1.0, "number": 2**53 - 1}, ("1", 2**53 - 1)),
    ],
)
async def test_a_session_is_read_as_the_clients_read_it(
    gateway: httpx.AsyncClient,
    service: RunningService,
    session: dict[str, Any],
    delivered: tuple[str, int],
) -> None:
    """An id up to 2**53 - 1 is its digits; a number sent as 3.0 is 3 (JSON has one kind).

    Until session 23 the gateway refused a session number of 3.0, which both clients take,
    and sent an id of 2**53, which both clients refuse as not exact in JavaScript.
    """
    body = {**EVENT, "context": {"session": session}}
    response = await gateway.post("/v1/t", json=body, headers=KEY)
    assert response.status_code == 200, response.text
    got = service.fake.delivered[-1].request.event.context.session
    assert (got.id, got.number) == delivered


async def test_absent_consent_stays_absent(
    gateway: httpx.AsyncClient, service: RunningService
) -> None:
    """An event without consent delivers a context without a consent message."""
    await gateway.post("/v1/t", json=EVENT, headers=KEY)
    assert not service.fake.delivered[-1].request.event.context.HasField("consent")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({**EVENT, "userId": 42}, "userId"),
        ({**EVENT, "type": "purchase"}, "type"),
        ({**EVENT, "timestamp": "yesterday"}, "timestamp"),
        ({**EVENT, "properties": [1, 2]}, "properties"),
        ({**EVENT, "context": {"consent": {"marketing": "yes"}}}, "context.consent.marketing"),
        (
            {**EVENT, "context": {"consent": {"google": {"ad_storage": "ok"}}}},
            "context.consent.google.ad_storage",
        ),
        # Named as the body spelled it, as the service's refusals are (fieldnames.py).
        (
            {**EVENT, "context": {"consent": {"google": {"adStorage": "ok"}}}},
            "context.consent.google.adStorage",
        ),
        ({**EVENT, "context": {"session": {"number": 1.5}}}, "context.session.number"),
        # Past 2**53 - 1 a JavaScript number is not exact, as both clients refuse it.
        ({**EVENT, "context": {"session": {"id": 2**53}}}, "context.session.id"),
        ({**EVENT, "context": {"session": {"id": -(2**53)}}}, "context.session.id"),
        # As both clients refuse it; until session 25 the gateway took a float or 2**53.
        ({**EVENT, "context": {"session": {"number": 2**53}}}, "context.session.number"),
        ({**EVENT, "context": {"session": {"number": 1e16}}}, "context.session.number"),
        ({**EVENT, "context": {"vendorIds": {"fbp": 1}}}, "context.vendorIds.fbp"),
        # An alias is named as sent too, by every check of the converter.
        ({**EVENT, "partner_attrs": {"amperity": {}}}, "partner_attrs"),
        ({**EVENT, "user_id": 5}, "user_id"),
        ({**EVENT, "anonymousId": None, "anonymous_id": 5}, "anonymous_id"),
        ({**EVENT, "context": {"user_agent": ["x"]}}, "context.user_agent"),
        ({**EVENT, "context": {"geo": {"postal_code": 1}}}, "context.geo.postal_code"),
        ({**EVENT, "context": {"vendor_ids": [1]}}, "context.vendor_ids"),
        ({**EVENT, "context": {"vendor_ids": {"gaClientId": 1}}}, "context.vendor_ids.gaClientId"),
        ({"event": "no visitor"}, "anonymousId"),
        ({**EVENT, "properties": {"big": 2**60}}, "properties.big"),
        ([EVENT], "body"),
    ],
)
async def test_bad_event_fields_are_named_in_a_400(
    gateway: httpx.AsyncClient, service: RunningService, body: Any, field: str
) -> None:
    """A known field with the wrong type answers 400 naming it; nothing is delivered."""
    response = await gateway.post("/v1/t", json=body, headers=KEY)
    assert response.status_code == 400
    assert response.json()["error"]["field"] == field
    assert service.fake.delivered == []


async def test_a_session_id_of_another_type_is_refused_saying_what_it_takes(
    gateway: httpx.AsyncClient, service: RunningService
) -> None:
    """It takes a whole number too; the 400 said "must be a string." until session 25."""
    body = {**EVENT, "context": {"session": {"id": 1.5}}}
    response = await gateway.post("/v1/t", json=body, headers=KEY)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["field"] == "context.session.id"
    assert error["message"] == "context.session.id: must be a string or a whole number."
    assert service.fake.delivered == []


@pytest.mark.parametrize("route", ["/v1/t", "/v1/i"])
async def test_a_user_id_does_not_stand_in_for_the_anonymous_id_deliver_requires(
    gateway: httpx.AsyncClient, service: RunningService, route: str
) -> None:
    """No anonymousId nor cookie: 400 naming anonymousId, and no advice Deliver contradicts."""
    body = {"event": "Signed In", "userId": "cust-1001"}
    response = await gateway.post(route, json=body, headers=KEY)
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["code"], error["field"]) == ("INVALID_EVENT", "anonymousId")
    assert error["message"] == f"anonymousId: {ANONYMOUS_ID_REQUIRED}"
    assert "with a userId or without" in ANONYMOUS_ID_REQUIRED
    assert service.fake.delivered == []
    described = openapi_document()["components"]["schemas"]["Event"]["description"]
    assert "or a userId" not in described


async def test_segment_style_context_traits_are_delivered_as_traits(
    gateway: httpx.AsyncClient, service: RunningService
) -> None:
    """Identity in context.traits reaches Deliver in traits, where the blueprint reads it."""
    body = {
        **EVENT,
        "traits": {"plan": "gold"},
        "context": {"traits": {"email": "carol@example.com", "plan": "silver"}},
    }
    response = await gateway.post("/v1/t", json=body, headers=KEY)
    assert response.status_code == 200
    (delivered,) = service.fake.delivered
    traits = delivered.request.event.traits
    assert dict(traits) == {"plan": "gold", "email": "carol@example.com"}


@pytest.mark.parametrize("timestamp", ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"])
async def test_timestamp_beyond_the_calendar_in_utc_is_a_400_naming_it(
    gateway: httpx.AsyncClient, service: RunningService, timestamp: str
) -> None:
    """A timestamp whose offset moves it past year 1 or 9999 answers 400, not 500."""
    response = await gateway.post("/v1/t", json={**EVENT, "timestamp": timestamp}, headers=KEY)
    assert response.status_code == 400
    assert response.json()["error"]["field"] == "timestamp"
    assert service.fake.delivered == []


# What fromisoformat took and RFC 3339 (and so the clients) does not; each was delivered.
NOT_RFC_3339 = [
    "2025-01-31x12:00:00Z",
    "2025-01-31T12:00:00-05:60",
    "2025-W05-5T12:00:00Z",
    "20250131T120000Z",
    "2025-01-31",
    "2025-01-31T12:00",
    "2025-01-31T12:00:00,250Z",
    "2025-01-31T12:00:00.Z",
    "2025-01-31T13:00:00+0100",
    "2025-01-31T13:00:00+01",
]


@pytest.mark.parametrize("timestamp", NOT_RFC_3339)
async def test_a_timestamp_that_is_not_rfc_3339_is_a_400_naming_it_with_an_example(
    gateway: httpx.AsyncClient, service: RunningService, timestamp: str
) -> None:
    """Read as the clients read it: week dates, `+0100`, a date alone… are refused, not sent."""
    response = await gateway.post("/v1/t", json={**EVENT, "timestamp": timestamp}, headers=KEY)
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["code"], error["field"]) == ("INVALID_EVENT", "timestamp")
    assert error["message"].startswith("timestamp: ")
    assert "RFC 3339" in error["message"] or "offset out of range" in error["message"]
    assert "such as 2025-01-31T12:00:00.000Z" in error["message"]
    assert service.fake.delivered == []


async def test_a_week_date_is_refused_in_the_clients_words(gateway: httpx.AsyncClient) -> None:
    """The whole message, as a client would word it for its own field."""
    response = await gateway.post("/v1/t", json={**EVENT, "timestamp": "2025-W05-5"}, headers=KEY)
    assert response.json()["error"]["message"] == (
        "timestamp: is not an RFC 3339 date-time such as 2025-01-31T12:00:00.000Z."
    )


@pytest.mark.parametrize(
    ("timestamp", "seconds", "nanos"),
    [
        ("2025-01-31t12:00:00z", 1_738_324_800, 0),  # RFC 3339 allows lowercase t and z
        ("2025-01-31 12:00:00Z", 1_738_324_800, 0),  # and a space (the note in 5.6)
        ("2025-01-31T12:00:00", 1_738_324_800, 0),  # no offset is UTC
        ("2025-01-31T13:00:00.123456789+01:00", 1_738_324_800, 123_456_789),
    ],
)
async def test_an_rfc_3339_timestamp_is_delivered_to_the_nanosecond(
    gateway: httpx.AsyncClient,
    service: RunningService,
    timestamp: str,
    seconds: int,
    nanos: int,
) -> None:
    """Lowercase t/z were refused, and a fraction was cut to microseconds."""
    response = await gateway.post("/v1/t", json={**EVENT, "timestamp": timestamp}, headers=KEY)
    assert response.status_code == 200, response.text
    stamp = service.fake.delivered[-1].request.event.timestamp
    assert (stamp.seconds, stamp.nanos) == (seconds, nanos)


async def test_batch_refuses_only_the_event_whose_timestamp_is_not_rfc_3339(
    gateway: httpx.AsyncClient, service: RunningService
) -> None:
    """In a batch the error names batch[i].timestamp; the other events are delivered."""
    batch = [
        {**EVENT, "messageId": "b-1", "timestamp": "2025-01-31T13:00:00+0100"},
        {**EVENT, "messageId": "b-2", "timestamp": "2025-01-31t12:00:00z"},
    ]
    response = await gateway.post("/v1/batch", json={"batch": batch}, headers=KEY)
    assert response.status_code == 200
    results = response.json()["results"]
    assert [(r["messageId"], r["ok"]) for r in results] == [("b-1", False), ("b-2", True)]
    assert results[0]["error"].startswith("batch[0].timestamp: is not an RFC 3339 date-time")
    assert [d.request.event.message_id for d in service.fake.delivered] == ["b-2"]


async def test_batch_reports_an_out_of_range_timestamp_on_its_event(
    gateway: httpx.AsyncClient, service: RunningService
) -> None:
    """One out-of-range timestamp fails only its own event; the batch answers 200."""
    batch = [
        {**EVENT, "messageId": "b-1"},
        {**EVENT, "messageId": "b-2", "timestamp": "0001-01-01T00:00:00+14:00"},
    ]
    response = await gateway.post("/v1/batch", json={"batch": batch}, headers=KEY)
    assert response.status_code == 200
    results = response.json()["results"]
    assert [(r["messageId"], r["ok"]) for r in results] == [("b-1", True), ("b-2", False)]
    assert "batch[1].timestamp" in results[1]["error"]
    assert [d.request.event.message_id for d in service.fake.delivered] == ["b-1"]


@pytest.mark.parametrize(
    "raw",
    [
        b"{not json",
        b'{"properties": {"x": NaN}}',
        b'{"x": Infinity}',
        b"\xff\xfe",
        b'{"x": 1e999}',
        b'{"x": "\\ud800"}',
        b"[" * 5000 + b"]" * 5000,
    ],
)
async def test_bad_json_is_a_400(gateway: httpx.AsyncClient, raw: bytes) -> None:
    """Malformed JSON, non-finite numbers, lone surrogates and deep nesting answer 400."""
    response = await gateway.post(
        "/v1/t", content=raw, headers={**KEY, "Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "INVALID_JSON"


@pytest.mark.parametrize(
    "raw",
    [b"[" * 5000 + b"]" * 5000, b'{"a": ' * 2000 + b"1" + b"}" * 2000],
    ids=["arrays", "objects"],
)
async def test_json_nested_past_python_s_limit_gets_the_nesting_message(
    gateway: httpx.AsyncClient, raw: bytes
) -> None:
    """Thousands of levels get the message 33 levels get, not Python's recursion error.

    json.loads itself gives up past ~1,000 levels: the 400 said "maximum recursion depth
    exceeded while decoding a JSON array from a unicode string".
    """
    response = await gateway.post(
        "/v1/t", content=raw, headers={**KEY, "Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json()["error"] == {
        "code": "INVALID_JSON",
        "message": "The JSON is nested deeper than 32 levels.",
    }


@pytest.mark.parametrize(
    ("route", "raw", "field"),
    [
        ("/v1/t", b'{"event": "x", "properties": {"\\udc00": "v"}}', "properties.\\udc00"),
        ("/v1/batch", b'{"batch": [], "\\ud800": 1}', "\\ud800"),
        (
            "/v1/consent",
            b'{"anonymousId": "a", "consent": {"categories": {"caf\xc3\xa9\\ud800": true}}}',
            "consent.categories.caf\u00e9\\ud800",
        ),
    ],
)
async def test_a_lone_surrogate_in_a_key_is_a_400_naming_the_key_escaped(
    gateway: httpx.AsyncClient, route: str, raw: bytes, field: str
) -> None:
    """A key holding a lone surrogate is refused as such a value is, the key shown escaped.

    The message named the raw key, which no UTF-8 body can hold: writing the 400 failed, a
    500 with an error-level traceback.
    """
    response = await gateway.post(
        route, content=raw, headers={**KEY, "Content-Type": "application/json"}
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "INVALID_JSON"
    assert error["field"] == field
    assert error["message"] == f"{field}: the key holds a lone surrogate; send valid Unicode."


@pytest.mark.parametrize("digits", [17, 4_301, 30_000])
async def test_an_integer_of_any_length_past_2_53_is_named_not_sent_to_python_advice(
    gateway: httpx.AsyncClient, digits: int
) -> None:
    """A 5,000-digit integer gets the usual 400 naming its field.

    Past Python's 4,300-digit conversion limit json.loads raised its own ValueError: the
    400 named no field and told the client to call sys.set_int_max_str_digits().
    """
    raw = b'{"event": "x", "anonymousId": "a", "properties": {"v": [1, -%s]}}' % (b"9" * digits)
    response = await gateway.post(
        "/v1/t", content=raw, headers={**KEY, "Content-Type": "application/json"}
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error == {
        "code": "INVALID_JSON",
        "message": "properties.v[1]: integers beyond ±2^53 lose precision; send it as a string.",
        "field": "properties.v[1]",
    }


async def test_oversized_body_is_413(gateway: httpx.AsyncClient) -> None:
    """A single event over 32 KB answers 413 JSON."""
    body = {**EVENT, "properties": {"blob": "x" * 40_000}}
    response = await gateway.post("/v1/t", json=body, headers=KEY)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "BODY_TOO_LARGE"


async def test_wrong_content_type_is_415(gateway: httpx.AsyncClient) -> None:
    """A form post answers 415; text/plain (sendBeacon) is read as JSON."""
    form = await gateway.post("/v1/t", data={"event": "x"}, headers=KEY)
    assert form.status_code == 415
    assert form.json()["error"]["code"] == "UNSUPPORTED_MEDIA_TYPE"
    beacon = await gateway.post(
        f"/v1/t?pipeline_key={KNOWN_KEY}",
        content=json.dumps(EVENT),
        headers={"Content-Type": "text/plain;charset=UTF-8"},
    )
    assert beacon.status_code == 200


@pytest.mark.parametrize("route", ["/v1/t", "/v1/batch", "/v1/consent"])
async def test_a_compressed_body_is_415_and_not_delivered(
    gateway: httpx.AsyncClient, service: RunningService, route: str
) -> None:
    """A Content-Encoding body is refused as such (RFC 9110: 415, Accept-Encoding: identity).

    It was read as sent: a gzip body was a 400 "not UTF-8", and a plain body labelled gzip
    was delivered.
    """
    bodies = {
        "/v1/t": EVENT,
        "/v1/batch": {"batch": [EVENT]},
        "/v1/consent": {"anonymousId": "anon-1", "consent": {"functional": True}},
    }
    body = bodies[route]
    plain = json.dumps(body).encode()
    json_type = {**KEY, "Content-Type": "application/json"}
    for content in (gzip.compress(plain), plain):
        response = await gateway.post(
            route, content=content, headers={**json_type, "Content-Encoding": "gzip"}
        )
        assert response.status_code == 415, response.text
        assert response.json()["error"]["code"] == "UNSUPPORTED_CONTENT_ENCODING"
        assert "Content-Encoding" in response.json()["error"]["message"]
        assert response.headers["accept-encoding"] == "identity"
    assert service.fake.delivered == []
    identity = await gateway.post(
        route, content=plain, headers={**json_type, "Content-Encoding": "identity"}
    )
    assert identity.status_code == 200


async def test_wrong_method_is_405(gateway: httpx.AsyncClient) -> None:
    """GET on a collector route answers 405 JSON with Allow."""
    response = await gateway.get("/v1/t", headers=KEY)
    assert response.status_code == 405
    assert response.json()["error"]["code"] == "METHOD_NOT_ALLOWED"
    assert "POST" in response.headers["allow"]


async def test_unknown_key_on_collector_is_404(gateway: httpx.AsyncClient) -> None:
    """Deliver's NOT_FOUND for an unknown key answers 404."""
    response = await gateway.post("/v1/t", json=EVENT, headers={"X-Pipeline-Key": "pk_nope"})
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "UNKNOWN_PIPELINE_KEY"


async def test_a_call_the_service_dropped_unstarted_is_sent_again(
    gateway: httpx.AsyncClient, service: RunningService
) -> None:
    """CANCELLED with nothing answered (a stopping service's unstarted call): resent, 200.

    A handoff's old process answers so the calls it held but had not started; the gateway's
    channel lets gRPC resend them, as the shipped clients do, under the same messageId.
    """
    body = {**EVENT, "messageId": "m-dropped", "event": "cancelled-once"}

    response = await gateway.post("/v1/t", json=body, headers=KEY)

    assert response.status_code == 200, response.text
    assert service.fake.deliver_calls == ["m-dropped", "m-dropped"]
    assert [d.request.event.message_id for d in service.fake.delivered] == ["m-dropped"]


@pytest.mark.parametrize(
    ("status", "http", "code", "retry_after"),
    [
        ("INVALID_ARGUMENT", 400, "FAKE_INVALID_ARGUMENT", None),
        ("UNAVAILABLE", 503, "SERVICE_UNAVAILABLE", "7"),
        ("RESOURCE_EXHAUSTED", 429, "RATE_LIMITED", "7"),
        ("DEADLINE_EXCEEDED", 504, "DEADLINE_EXCEEDED", None),
        ("PERMISSION_DENIED", 502, "UPSTREAM_REFUSED", None),
        ("UNAUTHENTICATED", 502, "UPSTREAM_REFUSED", None),
        ("FAILED_PRECONDITION", 502, "UPSTREAM_REFUSED", None),
        ("INTERNAL", 502, "UPSTREAM_ERROR", None),
    ],
)
async def test_grpc_errors_map_to_http(
    gateway: httpx.AsyncClient, status: str, http: int, code: str, retry_after: str | None
) -> None:
    """Each gRPC status maps to its HTTP status; RetryInfo becomes Retry-After."""
    response = await gateway.post("/v1/t", json={**EVENT, "event": f"fail:{status}"}, headers=KEY)
    assert response.status_code == http
    error = response.json()["error"]
    assert error["code"] == code
    assert response.headers.get("retry-after") == retry_after
    if http == 502:
        assert "fake failure" not in error["message"]
    if status == "INVALID_ARGUMENT":
        assert error["field"] == "properties.price"


async def test_a_batch_event_amperity_refuses_for_the_integration_is_not_retryable(
    gateway: httpx.AsyncClient,
) -> None:
    """A refusal of the integration (401, 403, 404 stream, 409 rejecting) is UPSTREAM_REFUSED.

    It was UPSTREAM_ERROR, which datafly.js sends again: three attempts of each event that
    could only fail the same way until an operator fixes the integration.
    """
    statuses = ("FAILED_PRECONDITION", "UNAUTHENTICATED", "PERMISSION_DENIED", "INTERNAL")
    batch = [
        {**EVENT, "messageId": f"r-{i}", "event": f"refused:{status}"}
        for i, status in enumerate(statuses)
    ]
    response = await gateway.post("/v1/batch", json={"batch": batch}, headers=KEY)
    assert response.status_code == 200
    codes = [result["code"] for result in response.json()["results"]]
    assert codes == ["UPSTREAM_REFUSED"] * 3 + ["UPSTREAM_ERROR"]
    assert not set(codes[:3]) & retryable_codes()


async def test_a_repeat_of_a_batch_event_s_message_id_gets_the_first_s_answer(
    gateway: httpx.AsyncClient, service: RunningService
) -> None:
    """A repeat is not delivered: it is answered as its first was, failed or delivered."""
    batch = [
        {**EVENT, "messageId": "u-1", "event": "fail:UNAVAILABLE"},
        {**EVENT, "messageId": "d-2"},
        {**EVENT, "messageId": "u-1"},
        {**EVENT, "messageId": "d-2", "event": "fail:UNAVAILABLE"},
    ]
    response = await gateway.post("/v1/batch", json={"batch": batch}, headers=KEY)
    results = response.json()["results"]
    assert results[2] == results[0]
    assert results[0]["code"] == "SERVICE_UNAVAILABLE"
    assert results[3] == results[1] == {"messageId": "d-2", "ok": True}
    assert sorted(service.fake.deliver_calls) == ["d-2", "u-1"]


async def test_batch_answers_each_event(
    gateway: httpx.AsyncClient, service: RunningService
) -> None:
    """A batch delivers good events and reports bad ones by messageId, in order."""
    batch = [
        {**EVENT, "messageId": "b-1"},
        {**EVENT, "messageId": "b-2", "userId": 7},
        {**EVENT, "messageId": "b-3", "event": "fail:UNAVAILABLE"},
        {
            "type": "identify",
            "anonymousId": "anon-1",
            "userId": "user-1",
            "messageId": "b-4",
            "traits": {"email": "a@b"},
        },
    ]
    response = await gateway.post("/v1/batch", json={"batch": batch}, headers=KEY)
    assert response.status_code == 200
    body = response.json()
    assert body["success"] is False
    assert [(r["messageId"], r["ok"]) for r in body["results"]] == [
        ("b-1", True),
        ("b-2", False),
        ("b-3", False),
        ("b-4", True),
    ]
    assert "userId" in body["results"][1]["error"]
    assert body["results"][2]["code"] == "SERVICE_UNAVAILABLE"
    assert sorted(d.request.event.message_id for d in service.fake.delivered) == ["b-1", "b-4"]


async def test_a_failed_batch_result_names_the_field_a_single_events_answer_names(
    gateway: httpx.AsyncClient,
) -> None:
    """``field`` is there exactly when ``/v1/t``'s answer has one, as ``batch[i].`` of it.

    The gateway's own check (``anonymous_id``, named as sent) and the service's refusal
    (renamed from Deliver's ``event.properties.price``) carry it; a delivered event and a
    failed delivery, which no field of the event caused, do not.
    """
    batch = [
        {**EVENT, "messageId": "b-0"},
        {**EVENT, "messageId": "b-1", "anonymousId": None, "anonymous_id": 7},
        {**EVENT, "messageId": "b-2", "event": "fail:INVALID_ARGUMENT"},
        {**EVENT, "messageId": "b-3", "event": "fail:UNAVAILABLE"},
    ]
    response = await gateway.post("/v1/batch", json={"batch": batch}, headers=KEY)
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r.get("field") for r in results] == [
        None,
        "batch[1].anonymous_id",
        "batch[2].properties.price",
        None,
    ]
    assert [r.get("code") for r in results] == [
        None,
        "INVALID_EVENT",
        "FAKE_INVALID_ARGUMENT",
        "SERVICE_UNAVAILABLE",
    ]
    for index, event in enumerate(batch):
        single = (await gateway.post("/v1/t", json=event, headers=KEY)).json()
        field = single.get("error", {}).get("field")
        assert results[index].get("field") == (field and f"batch[{index}].{field}")
    # The OpenAPI document describes every key a result carries.
    item = openapi_document()["components"]["schemas"]["BatchResult"]["properties"]["results"]
    for result in results:
        assert set(item["items"]["required"]) <= result.keys() <= item["items"]["properties"].keys()


async def test_batch_of_good_events_succeeds(gateway: httpx.AsyncClient) -> None:
    """All events delivered answers success true."""
    response = await gateway.post("/v1/batch", json={"batch": [EVENT, EVENT]}, headers=KEY)
    assert response.json()["success"] is True


async def test_batch_limits(gateway: httpx.AsyncClient) -> None:
    """More than 100 events, a non-list batch and a body over 256 KB are refused."""
    too_many = await gateway.post("/v1/batch", json={"batch": [EVENT] * 101}, headers=KEY)
    assert too_many.json()["error"]["code"] == "BATCH_TOO_LARGE"
    not_list = await gateway.post("/v1/batch", json={"batch": EVENT}, headers=KEY)
    assert not_list.json()["error"]["code"] == "INVALID_BATCH"
    huge = {"batch": [{**EVENT, "properties": {"b": "x" * 3000}}] * 90}
    too_big = await gateway.post("/v1/batch", json=huge, headers=KEY)
    assert too_big.status_code == 413


@pytest.mark.parametrize("accepts", ["NOT_SENT", ["NOT_SENT", 1], {"NOT_SENT": True}])
async def test_a_batch_whose_accepts_is_not_a_list_of_codes_is_refused_naming_it(
    gateway: httpx.AsyncClient, accepts: Any
) -> None:
    """``accepts`` (the result codes a sender takes) is an array of strings: else one 400."""
    body = {"batch": [EVENT], "accepts": accepts}
    response = await gateway.post("/v1/batch", json=body, headers=KEY)
    assert response.status_code == 400
    assert response.json()["error"] == {
        "code": "INVALID_BATCH",
        "message": 'accepts must be an array of result codes, like ["NOT_SENT"], or left out.',
        "field": "accepts",
    }


async def test_a_batch_may_list_codes_the_gateway_does_not_know_in_accepts(
    gateway: httpx.AsyncClient,
) -> None:
    """A code of a later gateway in ``accepts`` is no error: the batch is delivered."""
    body = {"batch": [EVENT], "accepts": ["NOT_SENT", "SOME_LATER_CODE"]}
    response = await gateway.post("/v1/batch", json=body, headers=KEY)
    assert response.json()["success"] is True


def _batch_body(event: dict[str, Any]) -> bytes:
    """``{"batch":[event]}`` as the browser client sends it (``JSON.stringify``)."""
    return json.dumps({"batch": [event]}, ensure_ascii=False, separators=(",", ":")).encode()


def _event_in_a_batch_body_of(size: int) -> dict[str, Any]:
    """EVENT padded so that its own ``/v1/batch`` body is ``size`` bytes.

    The padding is mostly "é", two bytes of UTF-8: a size counted in characters is off.
    """
    missing = size - len(_batch_body({**EVENT, "properties": {"pad": ""}}))
    return {**EVENT, "properties": {"pad": "é" * (missing // 2) + "x" * (missing % 2)}}


@pytest.mark.parametrize(("size", "status"), [(2048, 200), (2049, 413)])
async def test_a_dry_run_refuses_the_batch_bodies_the_gateway_refuses_in_its_words(
    make_gateway: GatewayFactory, size: int, status: int
) -> None:
    """``blueprint test`` measures an event as its own ``/v1/batch`` body, as the gateway does.

    At ``max_batch_body_bytes`` both take it; a byte over, the gateway answers 413 and the
    dry run refuses the event (``events[i]``) with that answer's message.
    """
    gateway = make_gateway(max_batch_body_bytes=2048)
    event = _event_in_a_batch_body_of(size)
    assert len(_batch_body(event)) == size
    response = await gateway.post(
        "/v1/batch",
        content=_batch_body(event),
        headers={**KEY, "Content-Type": "application/json"},
    )
    assert response.status_code == status
    try:
        deliverable_event(event, 3, datetime.now(UTC), max_body_bytes=2048)
        refused = []
    except InvalidEvent as error:
        refused = [(v.field, v.description) for v in error.violations]
    expected = [] if status == 200 else [("events[3]", response.json()["error"]["message"])]
    assert refused == expected


@pytest.mark.parametrize(
    ("size", "batch_status", "single_status"),
    [(2048, 200, 200), (2049, 413, 200), (4108, 413, 200), (4109, 413, 413)],
)
async def test_a_dry_run_answers_as_each_route_does_when_the_body_limits_differ(
    make_gateway: GatewayFactory, size: int, batch_status: int, single_status: int
) -> None:
    """``/v1/t`` taking more than ``/v1/batch``: the dry run maps what either route takes.

    ``size`` is the event's own ``/v1/batch`` body; its ``/v1/t`` body is 12 bytes less.
    Only ``/v1/t`` taking it: mapped, with ``single_route_only``'s note; neither: refused
    with the batch's 413 message, as before.
    """
    gateway = make_gateway(max_batch_body_bytes=2048, max_body_bytes=4096)
    event = _event_in_a_batch_body_of(size)
    body = _batch_body(event)
    headers = {**KEY, "Content-Type": "application/json"}
    batch = await gateway.post("/v1/batch", content=body, headers=headers)
    single = await gateway.post("/v1/t", content=body[len(b'{"batch":[') : -2], headers=headers)
    assert (batch.status_code, single.status_code) == (batch_status, single_status)
    limits = {"max_body_bytes": 2048, "max_single_body_bytes": 4096}
    try:
        deliverable_event(event, 3, datetime.now(UTC), **limits)
        refused = []
    except InvalidEvent as error:
        refused = [(v.field, v.description) for v in error.violations]
    note = single_route_only(event, 3, **limits)
    if single_status == 413:
        assert (refused, note) == ([("events[3]", batch.json()["error"]["message"])], None)
    else:
        assert refused == []
        assert (note is None) == (batch_status == 200)


async def test_collector_cors_for_allowed_origin(gateway: httpx.AsyncClient) -> None:
    """A collector post from the allowed origin carries credentialed CORS headers."""
    response = await gateway.post(
        "/v1/batch", json={"batch": [EVENT]}, headers={**KEY, "Origin": SHOP_ORIGIN}
    )
    assert response.headers["access-control-allow-origin"] == SHOP_ORIGIN
    preflight = await gateway.options(
        f"/v1/batch?pipeline_key={KNOWN_KEY}",
        headers={"Origin": SHOP_ORIGIN, "Access-Control-Request-Method": "POST"},
    )
    assert preflight.status_code == 204
    assert "POST" in preflight.headers["access-control-allow-methods"]


@pytest.mark.parametrize(
    ("path", "wrong", "methods"),
    [
        ("/v1/enrich", "POST", {"GET", "HEAD", "OPTIONS"}),
        ("/v1/t", "GET", {"POST", "OPTIONS"}),
        ("/v1/batch", "HEAD", {"POST", "OPTIONS"}),
        ("/v1/consent", "PUT", {"POST", "OPTIONS"}),
    ],
)
async def test_allow_names_every_method_a_v1_route_answers(
    gateway: httpx.AsyncClient, path: str, wrong: str, methods: set[str]
) -> None:
    """A 405 and a preflight list the same methods, each one the route answers (RFC 9110).

    The 405 (Starlette's) left out OPTIONS, which answers every /v1 route's preflight, and
    the preflight left out HEAD, which /v1/enrich answers.
    """
    refused = await gateway.request(wrong, path, headers=KEY)
    preflight = await gateway.options(
        path, headers={"Origin": SHOP_ORIGIN, "Access-Control-Request-Method": "POST"}
    )
    assert refused.status_code == 405
    assert (preflight.status_code, preflight.headers["allow"]) == (204, refused.headers["allow"])
    assert set(refused.headers["allow"].split(", ")) == methods
    if wrong != "HEAD":
        assert refused.headers["allow"] in refused.json()["error"]["message"]
    for method in methods - {"OPTIONS", "POST"}:
        answered = await gateway.request(method, path, params={"provider": "amperity"}, headers=KEY)
        assert answered.status_code == 200


async def test_rate_limit_covers_collector(make_gateway: GatewayFactory) -> None:
    """The per-client limit applies to collector posts too."""
    gateway = make_gateway(rate_limit_per_second=1.0, rate_limit_burst=1)
    assert (await gateway.post("/v1/t", json=EVENT, headers=KEY)).status_code == 200
    assert (await gateway.post("/v1/t", json=EVENT, headers=KEY)).status_code == 429
