"""event_from_json: Datafly's camelCase JSON events to the proto Event."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from amperity_signal_client import dict_to_struct, event_from_json, struct_to_dict
from amperity_signal_client.events import EventFieldError, consent_from_json

FULL_EVENT: dict[str, Any] = {
    "type": "track",
    "event": "Product Viewed",
    "messageId": "m-1",
    "anonymousId": "a-1",
    "canonicalId": "c-1",
    "userId": "u-1",
    "timestamp": "2025-01-31T12:00:00.250Z",
    "properties": {"sku": "SKU-1", "price": 19.99, "tags": ["a", None], "qty": 2},
    "traits": {"email": "alice@example.com"},
    "partnerAttrs": {"amperity": {"Persona": "Value Hunter"}},
    "context": {
        "ip": "203.0.113.7",
        "userAgent": "Mozilla/5.0",
        "locale": "en-GB",
        "timezone": "Europe/London",
        "page": {"url": "https://shop.example.com/p/1?x=1", "path": "/p/1", "search": "?x=1"},
        "campaign": {"source": "google", "medium": "cpc", "name": "spring"},
        "session": {"id": "s-1", "number": 3},
        "geo": {"country": "GB", "postalCode": "SW1A 1AA"},
        "device": {"type": "mobile", "os": "iOS", "browser": "Safari"},
        "vendorIds": {"gaClientId": "GA1.1.1", "fbp": "fb.1.2"},
        "library": {"name": "datafly.js"},
    },
}


def test_a_full_event_converts_every_field() -> None:
    """Every camelCase field lands in its proto field."""
    event = event_from_json(FULL_EVENT)

    assert (event.type, event.event, event.message_id) == ("track", "Product Viewed", "m-1")
    assert (event.anonymous_id, event.canonical_id, event.user_id) == ("a-1", "c-1", "u-1")
    assert struct_to_dict(event.properties) == FULL_EVENT["properties"]
    assert struct_to_dict(event.traits) == {"email": "alice@example.com"}
    assert struct_to_dict(event.partner_attrs) == {"amperity": {"Persona": "Value Hunter"}}
    context = event.context
    assert (context.ip, context.user_agent, context.locale) == (
        "203.0.113.7",
        "Mozilla/5.0",
        "en-GB",
    )
    assert context.page.search == "?x=1"
    assert context.campaign.name == "spring"
    assert (context.session.id, context.session.number) == ("s-1", 3)
    assert context.geo.postal_code == "SW1A 1AA"
    assert context.device.browser == "Safari"
    assert dict(context.vendor_ids) == {"ga_client_id": "GA1.1.1", "fbp": "fb.1.2"}
    assert not context.HasField("consent")


def test_timestamps_are_read_as_rfc_3339_with_no_offset_meaning_utc() -> None:
    """Z, offsets and offset-less strings become the right instant (more in the shared cases)."""
    zulu = event_from_json({"timestamp": "2025-01-31T12:00:00.250Z"}).timestamp
    offset = event_from_json({"timestamp": "2025-01-31T13:00:00+01:00"}).timestamp
    naive = event_from_json({"timestamp": "2025-01-31T12:00:00"}).timestamp

    assert zulu.ToDatetime(tzinfo=UTC) == datetime(2025, 1, 31, 12, 0, 0, 250000, tzinfo=UTC)
    assert offset.ToDatetime(tzinfo=UTC) == datetime(2025, 1, 31, 12, 0, tzinfo=UTC)
    assert naive.ToDatetime(tzinfo=UTC) == datetime(2025, 1, 31, 12, 0, tzinfo=UTC)


def test_an_absent_timestamp_stays_absent() -> None:
    """No timestamp in the JSON, no timestamp in the proto."""
    assert not event_from_json({"type": "page"}).HasField("timestamp")


def test_partial_consent_keeps_absent_fields_absent() -> None:
    """Only the consent fields given are set; the rest stay unset, not false."""
    event = event_from_json(
        {
            "context": {
                "consent": {
                    "analytics": True,
                    "categories": {"C0001": True, "C0004": False},
                    "google": {"adStorage": "denied", "analytics_storage": "granted"},
                }
            }
        }
    )

    consent = event.context.consent
    assert consent.HasField("analytics")
    assert consent.analytics is True
    assert not consent.HasField("marketing")
    assert not consent.HasField("functional")
    assert dict(consent.categories) == {"C0001": True, "C0004": False}
    assert consent.google.ad_storage == "denied"
    assert consent.google.analytics_storage == "granted"
    assert not consent.google.HasField("ad_user_data")
    assert not consent.google.HasField("ad_personalization")


def test_a_google_signal_sent_in_both_spellings_is_read_by_consent_modes() -> None:
    """``ad_storage`` (Consent Mode's, the spec's spelling) first, as the gateway reads it.

    Until session 23 the client read ``adStorage`` first, so the same event gave the
    opposite signal through the gateway (tests/unit/test_event_conversion_parity.py).
    """
    google = {"ad_storage": "granted", "adStorage": "denied", "adUserData": "denied"}
    consent = event_from_json({"context": {"consent": {"google": google}}}).context.consent
    assert (consent.google.ad_storage, consent.google.ad_user_data) == ("granted", "denied")
    # The alias is not read at all then: a wrong one beside a right one is no refusal.
    wrong_alias = {"ad_storage": "denied", "adStorage": 5}
    assert consent_from_json({"google": wrong_alias}).google.ad_storage == "denied"


def test_false_consent_is_kept_as_false() -> None:
    """An explicit false is set (present), unlike an absent field."""
    consent = event_from_json({"context": {"consent": {"marketing": False}}}).context.consent

    assert consent.HasField("marketing")
    assert consent.marketing is False


def test_absent_or_null_consent_stays_absent() -> None:
    """No consent object (or null) leaves context.consent unset."""
    assert not event_from_json({"context": {"ip": "1.2.3.4"}}).context.HasField("consent")
    assert not event_from_json({"context": {"consent": None}}).context.HasField("consent")


def test_snake_case_aliases_are_accepted() -> None:
    """anonymous_id, postal_code and vendor_ids work like their camelCase names."""
    event = event_from_json(
        {"anonymous_id": "a-2", "context": {"geo": {"postal_code": "1000"}, "vendor_ids": {}}}
    )

    assert event.anonymous_id == "a-2"
    assert event.context.geo.postal_code == "1000"


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ([], "event"),
        ({"type": "click"}, "type"),
        ({"anonymousId": 42}, "anonymousId"),
        ({"timestamp": 1738324800}, "timestamp"),
        ({"timestamp": "yesterday"}, "timestamp"),
        ({"properties": ["a"]}, "properties"),
        ({"properties": {"price": float("nan")}}, "properties.price"),
        ({"properties": {"when": {1, 2}}}, "properties.when"),
        ({"context": "web"}, "context"),
        ({"context": {"page": {"url": 1}}}, "context.page.url"),
        ({"context": {"session": {"number": "3"}}}, "context.session.number"),
        ({"context": {"vendorIds": {"fbp": 1}}}, "context.vendorIds.fbp"),
        ({"context": {"consent": {"analytics": "yes"}}}, "context.consent.analytics"),
        ({"context": {"consent": {"categories": {"C1": 1}}}}, "context.consent.categories.C1"),
        (
            {"context": {"consent": {"google": {"adStorage": "maybe"}}}},
            "context.consent.google.ad_storage",
        ),
        # What json.loads makes of a 400-digit number and of a "\ud83d" escape.
        ({"properties": {"id": 10**400}}, "properties.id"),
        ({"anonymousId": "anon-\ud83d"}, "anonymousId"),
        ({"properties": {"name": ["ok", "bad\udc00"]}}, "properties.name[1]"),
        ({"traits": {"bad\ud800": 1}}, "traits.bad\ud800"),
        ({"context": {"vendorIds": {"fbp": "fb.\ud800"}}}, "context.vendorIds.fbp"),
        ({"context": {"page": {"title": "\udfff"}}}, "context.page.title"),
        ({"userId": "u\ud800"}, "userId"),
        ({"context": {"userAgent": "UA\udc00"}}, "context.userAgent"),
        ({"context": {"geo": {"postalCode": "SW1\ud800"}}}, "context.geo.postalCode"),
        ({"context": {"session": {"id": "s\ud800"}}}, "context.session.id"),
        ({"context": {"vendorIds": {"f\ud800": "fb.1"}}}, "context.vendorIds.f\ud800"),
        (
            {"context": {"consent": {"categories": {"C\ud800": True}}}},
            "context.consent.categories.C\ud800",
        ),
    ],
)
def test_bad_input_raises_value_error_naming_the_field(data: Any, field: str) -> None:
    """A wrong type or value is a ValueError whose message starts with the field's path."""
    with pytest.raises(ValueError, match=r"^\S+ ") as raised:
        event_from_json(data)

    assert isinstance(raised.value, EventFieldError)
    assert raised.value.field == field
    assert str(raised.value).startswith(f"{field} ")


def test_struct_round_trip_keeps_whole_numbers_whole() -> None:
    """Plain dicts survive Struct conversion; 2 comes back as int, 2.5 as float."""
    data = {"n": 2, "x": 2.5, "ok": True, "none": None, "list": [1, "a"], "nested": {"k": "v"}}

    assert struct_to_dict(dict_to_struct(data)) == data
