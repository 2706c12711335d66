"""event_from_datafly_json: Datafly's camelCase JSON to the engine's event dict."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from amperity_signal.blueprint import event_from_datafly_json
from amperity_signal.errors import InvalidEvent

CAMEL: dict[str, Any] = {
    "type": "track",
    "event": "Product Viewed",
    "messageId": "m-1",
    "anonymousId": "anon_1",
    "userId": "user-1",
    "timestamp": "2026-04-17T16:37:10.484+01:00",
    "properties": {"productId": "P1", "nested": {"camelKey": 1}},
    "traits": {"firstName": "Jane"},
    "partnerAttrs": {"amperity": {"LifetimeTier": "Gold"}},
    "context": {
        "ip": "203.0.113.7",
        "userAgent": "UA",
        "locale": "en-GB",
        "timezone": "Europe/London",
        "page": {
            "url": "https://x.test/",
            "path": "/",
            "referrer": "",
            "title": "Home",
            "search": "",
        },
        "campaign": {"source": "s", "medium": "m", "name": "n", "term": "t", "content": "c"},
        "session": {"id": "sess", "number": 2},
        "geo": {"country": "GB", "region": "ENG", "city": "London", "postalCode": "EC1A"},
        "device": {"type": "mobile", "os": "iOS", "browser": "Safari"},
        "vendorIds": {"gaClientId": "GA1", "fbp": "FBP", "gclid": "G"},
        "consent": {
            "analytics": True,
            "marketing": False,
            "categories": {"C0001": True, "adPersonalization": False},
            "google": {"adStorage": "denied", "analyticsStorage": "granted"},
        },
    },
}


def test_camel_case_event_converts_to_the_event_dict() -> None:
    """Top-level and context keys become snake_case; user data keeps its keys."""
    event = event_from_datafly_json(CAMEL)
    assert event["message_id"] == "m-1"
    assert event["anonymous_id"] == "anon_1"
    assert event["canonical_id"] == "anon_1"
    assert event["user_id"] == "user-1"
    assert event["timestamp"] == datetime(2026, 4, 17, 15, 37, 10, 484000, tzinfo=UTC)
    assert event["properties"] == {"productId": "P1", "nested": {"camelKey": 1}}
    assert event["traits"] == {"firstName": "Jane"}
    assert event["partner_attrs"] == {"amperity": {"LifetimeTier": "Gold"}}
    context = event["context"]
    assert context["user_agent"] == "UA"
    assert context["geo"]["postal_code"] == "EC1A"
    assert context["vendor_ids"] == {"ga_client_id": "GA1", "fbp": "FBP", "gclid": "G"}
    assert context["consent"] == {
        "analytics": True,
        "marketing": False,
        "categories": {"C0001": True, "adPersonalization": False},
        "google": {"ad_storage": "denied", "analytics_storage": "granted"},
    }


def test_conversion_is_idempotent() -> None:
    """Converting an already converted event changes nothing."""
    once = event_from_datafly_json(CAMEL)
    assert event_from_datafly_json(once) == once


def test_explicit_canonical_id_is_kept() -> None:
    """An explicit canonicalId wins over the anonymousId default."""
    event = event_from_datafly_json({"type": "track", "anonymousId": "a", "canonicalId": "c"})
    assert event["canonical_id"] == "c"


def test_missing_timestamp_is_none() -> None:
    """No timestamp in, None out (the servicer decides what to do)."""
    assert event_from_datafly_json({"type": "page"})["timestamp"] is None


@pytest.mark.parametrize(
    "timestamp", ["yesterday", 1713368230, "0001-01-01T00:00:00+01:00", "9999-12-31T23:00:00-05:00"]
)
def test_bad_timestamp_is_an_invalid_event_naming_the_field(timestamp: Any) -> None:
    """A timestamp that is not ISO 8601 raises InvalidEvent on the timestamp field."""
    with pytest.raises(InvalidEvent) as caught:
        event_from_datafly_json({"type": "track", "timestamp": timestamp})
    assert [v.field for v in caught.value.violations] == ["timestamp"]


def test_context_traits_are_folded_into_traits_as_the_gateway_folds_them() -> None:
    """Segment-style identity in context.traits fills the traits; the event's own win."""
    event = event_from_datafly_json(
        {
            "type": "track",
            "traits": {"email": "own@example.com", "phone": None},
            "context": {
                "locale": "en-GB",
                "traits": {"email": "c@x.test", "phone": "+447700900123"},
            },
        }
    )
    assert event["traits"] == {"email": "own@example.com", "phone": "+447700900123"}
    assert event["context"] == {"locale": "en-GB"}
    assert event_from_datafly_json(event) == event
    alone = event_from_datafly_json({"type": "track", "context": {"traits": {"first_name": "C"}}})
    assert alone["traits"] == {"first_name": "C"}


def test_context_traits_that_cannot_be_folded_are_kept_where_they_were() -> None:
    """This converter refuses nothing: what the gateway would refuse is left as it was sent."""
    event = event_from_datafly_json(
        {"type": "track", "traits": "x", "context": {"traits": {"a": 1}}}
    )
    assert (event["traits"], event["context"]) == ("x", {"traits": {"a": 1}})
