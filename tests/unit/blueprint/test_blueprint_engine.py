"""map_event: payload order, globals, empties, pass-through, flattening, strict JSON."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from amperity_signal.amperity.body import encode_event
from amperity_signal.blueprint import Blueprint, map_event
from tests.unit.blueprint.context import FULL_CONTEXT

EventFactory = Callable[..., dict[str, Any]]


def test_payload_starts_with_source_then_type(retail: Blueprint, make_event: EventFactory) -> None:
    """The first key is source (the integration's source_value), the second type."""
    mapped = map_event(retail, make_event("Anything"), source_value="DATAFLY")
    assert list(mapped.payload)[:2] == ["source", "type"]
    assert mapped.payload["source"] == "DATAFLY"


def test_global_mappings_fill_identity_network_page_session_campaign_geo_device(
    retail: Blueprint, make_event: EventFactory
) -> None:
    """Every global group lands in its flat target, normalised by its transform."""
    event = make_event(
        "Something",
        user_id="user-123",
        amperity_id="p-123",
        traits={"email": " Jane.Doe@Example.com ", "phone": "+44 7700 900123"},
        context=FULL_CONTEXT,
    )
    payload = map_event(retail, event, source_value="S").payload
    expected = {
        "event_name": "Something",
        "message_type": "track",
        "message_id": "msg-1",
        "event_id": "msg-1",
        "timestamp": "2026-04-17T15:37:10.484Z",
        "cookieid": "anon_abc123",
        "anonymous_id": "anon_abc123",
        "canonical_id": "anon_abc123",
        "user_id": "user-123",
        "email": "jane.doe@example.com",
        "phone": "+447700900123",
        "amperity_id": "p-123",
        "ip_address": "203.0.113.7",
        "user_agent": "UA/1.0",
        "locale": "en-GB",
        "timezone": "Europe/London",
        "page_url": "https://x.test/a?q=1",
        "page_path": "/a",
        "page_title": "A",
        "page_referrer": "https://r.test/",
        "page_search": "?q=1",
        "session_id": "1713368230",
        "session_number": 3,
        "utm_source": "news",
        "utm_medium": "email",
        "utm_campaign": "spring",
        "utm_term": "shoes",
        "utm_content": "hero",
        "gclid": "GCL",
        "fbclid": "FBCL",
        "ttclid": "TTCL",
        "msclkid": "MS",
        "ga_client_id": "GA1",
        "fbp": "FBP",
        "fbc": "FBC",
        "ttp": "TTP",
        "geo_country": "GB",
        "geo_region": "ENG",
        "geo_city": "London",
        "geo_postal_code": "EC1A",
        "device_type": "desktop",
        "os_name": "macOS",
        "browser_name": "Safari",
    }
    assert {k: payload[k] for k in expected} == expected


def test_cookieid_prefers_canonical_id_over_anonymous_id(
    retail: Blueprint, make_event: EventFactory
) -> None:
    """The cookieid is canonical_id, and anonymous_id when canonical_id is empty."""
    stitched = make_event("x", canonical_id="canon-1")
    assert map_event(retail, stitched, source_value="S").payload["cookieid"] == "canon-1"
    bare = make_event("x", canonical_id="")
    assert map_event(retail, bare, source_value="S").payload["cookieid"] == "anon_abc123"


def test_email_falls_back_to_properties(retail: Blueprint, make_event: EventFactory) -> None:
    """The email is traits.email, else properties.email (context.traits is folded earlier)."""
    from_props = make_event("x", properties={"email": "a@b.test"})
    assert map_event(retail, from_props, source_value="S").payload["email"] == "a@b.test"
    both = make_event("x", traits={"email": "t@b.test"}, properties={"email": "a@b.test"})
    assert map_event(retail, both, source_value="S").payload["email"] == "t@b.test"


def test_empty_values_are_omitted_never_null(retail: Blueprint, make_event: EventFactory) -> None:
    """None, "", [] and {} sources leave their targets out of the payload entirely."""
    event = make_event(
        "view_item",
        user_id=None,
        traits={"email": ""},
        context={"page": {"url": None, "path": ""}, "campaign": {}, "geo": {"city": []}},
        properties={"currency": "", "items": []},
    )
    mapped = map_event(retail, event, source_value="S")
    for target in (
        "user_id",
        "email",
        "page_url",
        "page_path",
        "utm_source",
        "geo_city",
        "currency",
        "items",
        "consent",
    ):
        assert target not in mapped.payload
    assert None not in mapped.payload.values()


def test_unmapped_event_passes_through_with_snake_case_type(
    retail: Blueprint, make_event: EventFactory
) -> None:
    """An unknown name keeps the globals and its type is the name in snake_case."""
    mapped = map_event(retail, make_event("Video Ad Clicked"), source_value="S")
    assert mapped.passed_through
    assert mapped.handler is None
    assert mapped.amperity_type == "video_ad_clicked"
    assert mapped.payload["type"] == "video_ad_clicked"
    assert mapped.payload["event_name"] == "Video Ad Clicked"
    assert mapped.payload["cookieid"] == "anon_abc123"


@pytest.mark.parametrize(
    ("name", "message_type", "expected"),
    [
        ("videoAdClicked", "track", "video_ad_clicked"),
        ("OTP Sent!", "track", "otp_sent"),
        ("already_snake", "track", "already_snake"),
        (None, "screen", "screen"),
        ("!!!", "group", "group"),
        ("Café Visité", "track", "café_visité"),
        ("購入完了", "track", "購入完了"),
    ],
)
def test_pass_through_type_normalisation(
    retail: Blueprint, make_event: EventFactory, name: str | None, message_type: str, expected: str
) -> None:
    """CamelCase and punctuation normalise to snake_case; a nameless event uses its type."""
    mapped = map_event(retail, make_event(name, message_type=message_type), source_value="S")
    assert mapped.amperity_type == expected


def test_pass_through_flattens_properties(retail: Blueprint, make_event: EventFactory) -> None:
    """Nested dicts join with _, lists stay lists, colliding keys get prop_, empties vanish."""
    properties = {
        "productId": "P1",
        "guide": {"region": "UK", "size": {"eu": 42.0, "uk": 8}},
        "a": {"b": {"c": {"d": 1}}},
        "tags": ["x", "y"],
        "variants": [{"sku": "A", "note": None}, {"sku": "B"}],
        "email": "custom@x.test",
        "page_url": "https://custom",
        "blank": "",
        "nothing": None,
    }
    payload = map_event(
        retail, make_event("Size Guide Opened", properties=properties), source_value="S"
    ).payload
    assert payload["product_id"] == "P1"
    assert payload["guide_region"] == "UK"
    assert payload["guide_size_eu"] == 42.0
    assert payload["a_b_c"] == {"d": 1}
    assert payload["tags"] == ["x", "y"]
    assert payload["variants"] == [{"sku": "A"}, {"sku": "B"}]
    assert payload["prop_email"] == "custom@x.test"
    assert payload["prop_page_url"] == "https://custom"
    assert payload["email"] == "custom@x.test"  # the global email falls back to properties
    assert "blank" not in payload
    assert "nothing" not in payload


def test_pass_through_keeps_property_keys_written_in_any_script(
    retail: Blueprint, make_event: EventFactory
) -> None:
    """Keys in German or Japanese keep their letters: none dropped, none colliding."""
    properties = {"größe": 42, "grüße": "hallo", "名前": "太郎", "Farbe Wählen": "rot"}
    mapped = map_event(retail, make_event("Custom", properties=properties), source_value="S")
    assert {k: mapped.payload.get(k) for k in ("größe", "grüße", "名前", "farbe_wählen")} == {
        "größe": 42,
        "grüße": "hallo",
        "名前": "太郎",
        "farbe_wählen": "rot",
    }
    assert mapped.warnings == ()


def test_mapped_events_do_not_pass_properties_through_by_default(
    retail: Blueprint, make_event: EventFactory
) -> None:
    """A handler without include_properties sends only its mapped fields."""
    event = make_event("view_item", properties={"currency": "GBP", "custom_flag": True})
    payload = map_event(retail, event, source_value="S").payload
    assert payload["currency"] == "GBP"
    assert "custom_flag" not in payload


def test_nan_and_infinity_are_dropped_with_a_warning(
    retail: Blueprint, make_event: EventFactory
) -> None:
    """Non-finite numbers never reach the payload; each one is reported as a warning."""
    event = make_event(
        "Custom",
        properties={"score": float("nan"), "deep": {"x": [1.0, float("inf")]}, "ok": 1.5},
    )
    mapped = map_event(retail, event, source_value="S")
    json.dumps(mapped.payload, allow_nan=False)
    assert "score" not in mapped.payload
    assert mapped.payload["deep_x"] == [1.0]
    assert mapped.payload["ok"] == 1.5
    assert any("properties.score" in w for w in mapped.warnings)
    assert any("properties.deep.x.1" in w for w in mapped.warnings)


def test_a_failed_transform_omits_the_target_and_warns(
    retail: Blueprint, make_event: EventFactory
) -> None:
    """A value the transform cannot convert is left out and named in the warnings."""
    mapped = map_event(
        retail, make_event("purchase", properties={"value": "lots"}), source_value="S"
    )
    assert "value" not in mapped.payload
    assert any(w.startswith("value: transform to_number failed") for w in mapped.warnings)


@pytest.mark.parametrize("created_at", [1e30, -1e15, "0001-01-01T00:00:00+01:00"])
def test_a_timestamp_outside_the_datetime_range_is_omitted_with_a_warning(
    retail: Blueprint, make_event: EventFactory, created_at: Any
) -> None:
    """An iso8601 value beyond years 1-9999 is left out and warned, never raised."""
    event = make_event(None, message_type="identify", traits={"created_at": created_at})
    mapped = map_event(retail, event, source_value="S")
    assert mapped.amperity_type == "identify"
    assert "user_created_at" not in mapped.payload
    assert any(w.startswith("user_created_at: transform iso8601 failed") for w in mapped.warnings)


def test_numbers_beyond_64_bits_never_make_the_body_unwritable(
    retail: Blueprint, make_event: EventFactory
) -> None:
    """A 20-digit value goes as a float; an item quantity of 1e20 is left out of the item."""
    properties = {
        "value": "99999999999999999999",
        "items": [{"item_id": "A", "quantity": 1e20}],
    }
    mapped = map_event(retail, make_event("purchase", properties=properties), source_value="S")
    encode_event(mapped.payload)
    assert mapped.payload["value"] == 1e20
    assert mapped.payload["items"] == [{"item_id": "A"}]
    assert "item_quantity" not in mapped.payload
    assert any(w.startswith("item_quantity: transform to_int failed") for w in mapped.warnings)


def test_fired_lists_every_target_written(retail: Blueprint, make_event: EventFactory) -> None:
    """The fired set holds the payload's keys, built-ins included."""
    mapped = map_event(
        retail, make_event("view_item", properties={"currency": "GBP"}), source_value="S"
    )
    assert {"source", "type", "currency", "cookieid"} <= mapped.fired
    assert "coupon" not in mapped.fired


def test_datetimes_become_iso_strings_and_non_json_values_are_dropped(
    retail: Blueprint, make_event: EventFactory
) -> None:
    """A datetime property is sent as ISO 8601 UTC; bytes and objects are dropped, warned."""
    from datetime import UTC, datetime

    event = make_event(
        "Custom",
        properties={"at": datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC), "raw": b"x", "obj": object()},
    )
    mapped = map_event(retail, event, source_value="S")
    assert mapped.payload["at"] == "2026-01-02T03:04:05.000Z"
    assert "raw" not in mapped.payload
    assert "obj" not in mapped.payload
    assert len(mapped.warnings) == 2
