"""Pure rules: identifiers, aggregates, derived and context-dependent attributes."""

from __future__ import annotations

import hashlib

from amperity_signal.sandbox.identity import hash_email, hash_phone, identifiers
from amperity_signal.sandbox.ratelimit import SlidingWindowLimiter
from amperity_signal.sandbox.rules import ProfileStats, context_attributes, derive, tier


def test_identifiers_map_event_fields_to_linking_keys() -> None:
    """cookieid, email, user_id and phone become the four linking keys, hashed where due."""
    event = {"cookieid": "c1", "email": " A@B.com", "user_id": "u1", "phone": "+1 555 0100"}
    assert identifiers(event) == [
        ("device_cookie", "c1"),
        ("email_sha256", hash_email("a@b.com")),
        ("customer_id", "u1"),
        ("phone_sha256", hash_phone("+15550100")),
    ]


def test_prehashed_identifiers_are_kept() -> None:
    """email_sha256 and phone_sha256 fields are used as sent (lowercased)."""
    event = {"email_sha256": "ABC", "phone_sha256": "DEF", "cookieid": ""}
    assert identifiers(event) == [("email_sha256", "abc"), ("phone_sha256", "def")]


def test_an_upper_case_collection_hashes_and_keeps_identifiers_in_upper_case() -> None:
    """sha256_upper: trim, UPPER, SHA-256, UPPER hex; pre-hashed values upper-cased."""
    event = {"cookieid": "c1", "email": " a@B.com ", "phone": "+1 555 0100"}
    assert identifiers(event, "sha256_upper") == [
        ("device_cookie", "c1"),
        ("email_sha256", hashlib.sha256(b"A@B.COM").hexdigest().upper()),
        ("phone_sha256", hash_phone("+15550100").upper()),
    ]
    prehashed = {"email_sha256": "abc", "phone_sha256": "Def"}
    assert identifiers(prehashed, "sha256_upper") == [
        ("email_sha256", "ABC"),
        ("phone_sha256", "DEF"),
    ]


def test_tiers_follow_lifetime_value_thresholds() -> None:
    """Bronze < 250 <= Silver < 1000 <= Gold < 5000 <= Platinum; below zero is Bronze too."""
    assert [tier(v) for v in (-0.01, 249.99, 250, 999, 1000, 4999, 5000)] == [
        "Bronze",
        "Bronze",
        "Silver",
        "Silver",
        "Gold",
        "Gold",
        "Platinum",
    ]


def _derived(events: list[dict[str, object]]) -> dict[str, object]:
    stats = ProfileStats()
    for event in events:
        stats.record(event)
    attributes: dict[str, object] = {}
    derive(stats, attributes)
    return attributes


def test_browsing_without_purchase_makes_a_window_shopper() -> None:
    """Three browsing events and no purchase derive Persona Window Shopper."""
    attributes = _derived([{"type": "view_item"}, {"type": "add_to_cart"}, {"type": "view_item"}])
    assert attributes["Persona"] == "Window Shopper"
    assert attributes["EventCount"] == 3
    assert attributes["LastEventType"] == "view_item"


def test_coupon_purchases_make_a_value_hunter() -> None:
    """A purchase with a coupon derives Value Hunter and counts the order value."""
    attributes = _derived([{"type": "purchase", "value": 300, "coupon": "SAVE10"}])
    assert attributes["Persona"] == "Value Hunter"
    assert (attributes["OrderCount"], attributes["LifetimeOrderValue"]) == (1, 300.0)
    assert attributes["LifetimeTier"] == "Silver"


def test_high_lifetime_value_makes_a_loyal_big_spender() -> None:
    """Revenue summing to 2000 or more derives Loyal Big Spender and Gold."""
    attributes = _derived(
        [{"type": "purchase", "revenue": "1500"}, {"type": "purchase", "value": 600}]
    )
    assert attributes["Persona"] == "Loyal Big Spender"
    assert attributes["LifetimeOrderValue"] == 2100.0
    assert attributes["LifetimeTier"] == "Gold"


def test_favorite_brand_is_the_most_frequent_brand() -> None:
    """FavoriteBrand counts item_brand and brand across events."""
    attributes = _derived([{"item_brand": "A"}, {"brand": "B"}, {"item_brand": "B"}])
    assert attributes["FavoriteBrand"] == "B"


def test_context_attributes_follow_the_documented_rules() -> None:
    """pageCategory, cartValue and tierHint drive the three context attributes."""
    profile = {"Persona": "Value Hunter", "LifetimeTier": "Silver"}
    assert context_attributes(profile, {"pageCategory": "Shoes"}) == {
        "RecommendedCategory": "shoes",
        "NextBestOffer": "shoes-10-off",
        "HeroVariant": "hero-standard",
    }
    shoes_cart = context_attributes(profile, {"pageCategory": "shoes", "cartValue": "120"})
    assert shoes_cart["NextBestOffer"] == "free-shipping"
    assert context_attributes(profile, {"tierHint": "Gold"}) == {
        "RecommendedCategory": "sale",
        "NextBestOffer": "coupon-15-off",
        "HeroVariant": "hero-premium",
    }


def test_limiter_refuses_the_501st_request_in_any_one_second_window() -> None:
    """500 admitted in a window; the next is refused until the oldest is 1 s old."""
    limiter = SlidingWindowLimiter(500)
    assert all(limiter.admit("acme", 10.0 + i * 0.001) for i in range(500))
    assert not limiter.admit("acme", 10.9)
    assert limiter.admit("globex", 10.9)
    assert not limiter.admit("acme", 10.9999)
    assert limiter.admit("acme", 11.0)
    assert not limiter.admit("acme", 11.0)


def test_the_rate_limit_counts_arrivals_processed_out_of_order() -> None:
    """An early arrival processed late does not block later windows, nor escape its own."""
    limiter = SlidingWindowLimiter(2)
    assert limiter.admit("acme", 1.5)
    assert limiter.admit("acme", 1.0)  # arrived first, processed second
    # (1.05, 2.05] holds one admitted arrival (1.5): room for one more.
    assert limiter.admit("acme", 2.05)
    assert not limiter.admit("acme", 2.2)  # (1.2, 2.2] holds 1.5 and 2.05
    # A late-processed arrival at 1.4 sees its own window (0.4, 1.4]: 1.0 only.
    assert limiter.admit("acme", 1.4)
    assert not limiter.admit("acme", 1.45)  # (0.45, 1.45] holds 1.0 and 1.4
