"""Every vertical preset loads and maps every event of the spec's preset table.

The table below is written from the spec ("Pick a vertical preset" and "Event name
mappings"), not read from the YAML, so a handler dropped from a preset fails here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from amperity_signal import config_checks
from amperity_signal.blueprint import BLUEPRINTS_DIR, VERTICALS, load_blueprint, map_event

EventFactory = Callable[..., dict[str, Any]]

# Domain property samples, shared by the events of one family: (properties, expected).
TRIP = (
    {
        "origin": "lhr",
        "destination": "jfk",
        "departure_date": "2026-06-01",
        "return_date": "2026-06-08",
        "passengers": 2.0,
    },
    {
        "origin": "LHR",
        "destination": "JFK",
        "departure_date": "2026-06-01",
        "return_date": "2026-06-08",
        "passengers": 2,
    },
)
HOTEL = (
    {"hotel_id": 881.0, "nights": "3", "destination": "Paris"},
    {"hotel_id": "881", "nights": 3},
)
BOOKING = (
    {"booking_id": "B-1", "value": 420.5, "currency": "eur", "hotel_id": "H1"},
    {"booking_id": "B-1", "value": 420.5, "currency": "EUR", "hotel_id": "H1"},
)
LOYALTY = (
    {"points": 500.0, "loyalty_program": "Miles"},
    {"points": 500, "loyalty_program": "Miles"},
)
ACCOUNT = (
    {"account_id": 9001.0, "account_type": "Checking"},
    {"account_id": "9001", "account_type": "checking"},
)
KYC = ({"provider": "Onfido", "status": "Passed"}, {"kyc_provider": "Onfido"})
LOGIN = ({"method": "password", "mfa": "true"}, {"login_method": "password", "mfa_used": True})
TXN = (
    {"transaction_id": "T1", "amount": "99.90", "currency": "usd"},
    {"transaction_id": "T1", "amount": 99.9, "currency": "USD"},
)
CARD = (
    {"card_type": "Credit", "credit_limit": 5000},
    {"card_type": "credit", "credit_limit": 5000},
)
LOAN = (
    {"loan_type": "Mortgage", "loan_amount": 250000, "term_months": 360.0},
    {"loan_type": "mortgage", "loan_amount": 250000, "term_months": 360},
)
SAAS = (
    {"account_id": "acme", "plan": "Pro", "seats": 25.0, "mrr": 499},
    {"account_id": "acme", "plan": "Pro", "seats": 25, "mrr": 499},
)
VIDEO = (
    {"video_id": "v1", "title": "Pilot", "position": 12.5, "total_length": 1800},
    {"video_id": "v1", "video_title": "Pilot", "video_position": 12.5, "video_duration": 1800},
)
VIDEO_AD = (
    {"ad_id": "ad-7", "pod_id": "pod-1", "total_length": 30},
    {"ad_id": "ad-7", "ad_pod_id": "pod-1", "ad_duration": 30},
)
AUDIO = (
    {"track_id": "t-9", "title": "Song", "artist": "Band"},
    {"audio_id": "t-9", "audio_title": "Song", "artist": "Band"},
)
GAME = ({"level": "4", "game_mode": "Ranked"}, {"level": 4, "game_mode": "ranked"})
LEVEL_END = (
    {"level": 4, "score": 1200, "success": "yes"},
    {"level": 4, "score": 1200, "success": True},
)
TUTORIAL = ({"tutorial_id": "basics", "step": 3.0}, {"tutorial_id": "basics", "tutorial_step": 3})
ITEM = (
    {"item_id": "sword", "item_name": "Sword", "virtual_currency_name": "gems", "value": 50},
    {"item_id": "sword", "item_name": "Sword"},
)
CURRENCY = (
    {"virtual_currency_name": "gems", "value": 50},
    {"currency_type": "gems", "currency_amount": 50},
)
MATCH = ({"match_id": "m-1", "rank": 2.0}, {"match_id": "m-1", "rank": 2})
ARTICLE = (
    {
        "article_id": "a-1",
        "title": "Headline",
        "author": "Ann",
        "category": "News",
        "word_count": "850",
    },
    {
        "article_id": "a-1",
        "article_title": "Headline",
        "author": "Ann",
        "article_category": "News",
        "word_count": 850,
    },
)
NEWSLETTER = (
    {"newsletter_id": "daily", "newsletter_name": "The Daily"},
    {"newsletter_id": "daily", "newsletter_name": "The Daily"},
)
PUB_SUB = (
    {"subscription_id": "s-1", "plan": "Digital", "value": 9.99, "currency": "gbp"},
    {"subscription_id": "s-1", "plan": "Digital", "value": 9.99, "currency": "GBP"},
)

SPEC_TABLE: dict[str, dict[str, tuple[dict[str, Any], dict[str, Any]]]] = {
    "travel": {
        "flight_searched": TRIP,
        "hotel_searched": HOTEL,
        "car_searched": (
            {"pickup_location": "LAX", "pickup_date": "2026-06-01"},
            {"pickup_location": "LAX", "pickup_date": "2026-06-01"},
        ),
        "flight_viewed": TRIP,
        "hotel_viewed": HOTEL,
        "booking_started": BOOKING,
        "booking_completed": BOOKING,
        "booking_cancelled": (
            {"booking_id": "B-1", "cancellation_reason": "illness"},
            {"booking_id": "B-1", "cancellation_reason": "illness"},
        ),
        "booking_modified": (
            {"booking_id": "B-1", "modification_type": "dates"},
            {"booking_id": "B-1", "modification_type": "dates"},
        ),
        "check_in_completed": (
            {"booking_id": "B-1", "seat": "14C"},
            {"booking_id": "B-1", "seat": "14C"},
        ),
        "check_out_completed": BOOKING,
        "loyalty_points_earned": LOYALTY,
        "loyalty_points_redeemed": LOYALTY,
        "review_submitted": (
            {"review_id": "r1", "rating": "4.5"},
            {"review_id": "r1", "rating": 4.5},
        ),
    },
    "finance": {
        "account_opened": ACCOUNT,
        "account_closed": ACCOUNT,
        "kyc_started": KYC,
        "kyc_completed": (KYC[0], {**KYC[1], "kyc_status": "passed"}),
        "kyc_failed": (
            {"provider": "Onfido", "reason": "document_expired"},
            {"kyc_status": "failed", "failure_reason": "document_expired"},
        ),
        "login_succeeded": LOGIN,
        "login_failed": (
            {**LOGIN[0], "reason": "bad_password"},
            {**LOGIN[1], "failure_reason": "bad_password"},
        ),
        "transaction_initiated": TXN,
        "transaction_completed": TXN,
        "transaction_failed": ({**TXN[0], "reason": "nsf"}, {**TXN[1], "failure_reason": "nsf"}),
        "payment_made": (
            {"payment_id": "pay-1", "amount": 50, "payee": "Energy Co"},
            {"payment_id": "pay-1", "amount": 50, "payee": "Energy Co"},
        ),
        "transfer_completed": (
            {"transfer_id": "tr-1", "amount": 10, "to_account_id": 2.0},
            {"transfer_id": "tr-1", "amount": 10, "to_account_id": "2"},
        ),
        "card_applied": CARD,
        "card_approved": CARD,
        "card_activated": CARD,
        "loan_applied": LOAN,
        "loan_approved": LOAN,
        "loan_funded": LOAN,
        "statement_viewed": (
            {"account_id": "9001", "statement_id": "st-4"},
            {"account_id": "9001", "statement_id": "st-4"},
        ),
    },
    "b2b_saas": {
        "signed_up": SAAS,
        "logged_in": (
            {"account_id": "acme", "method": "sso"},
            {"account_id": "acme", "login_method": "sso"},
        ),
        "logged_out": ({"account_id": "acme"}, {"account_id": "acme"}),
        "password_reset_requested": ({"account_id": "acme"}, {"account_id": "acme"}),
        "trial_started": ({**SAAS[0], "trial_days": 14}, {**SAAS[1], "trial_days": 14}),
        "trial_converted": SAAS,
        "trial_expired": SAAS,
        "subscription_started": SAAS,
        "subscription_upgraded": SAAS,
        "subscription_downgraded": SAAS,
        "subscription_cancelled": SAAS,
        "subscription_renewed": SAAS,
        "feature_used": ({"feature": "export"}, {"feature_name": "export"}),
        "invitation_sent": (
            {"invitation_id": "inv-1", "role": "admin"},
            {"invitation_id": "inv-1", "invitee_role": "admin"},
        ),
        "invitation_accepted": ({"invitation_id": "inv-1"}, {"invitation_id": "inv-1"}),
        "seat_added": ({"seats": 26}, {"seats": 26}),
        "seat_removed": ({"seats": 24}, {"seats": 24}),
        "integration_connected": (
            {"integration_name": "Salesforce"},
            {"integration_name": "Salesforce"},
        ),
    },
    "media": {
        "video_playback_started": VIDEO,
        "video_playback_paused": VIDEO,
        "video_playback_resumed": VIDEO,
        "video_playback_completed": VIDEO,
        "video_content_started": VIDEO,
        "video_content_completed": VIDEO,
        "video_content_milestone": ({**VIDEO[0], "percent": 50}, {**VIDEO[1], "video_percent": 50}),
        "video_ad_started": VIDEO_AD,
        "video_ad_completed": VIDEO_AD,
        "video_ad_skipped": VIDEO_AD,
        "audio_playback_started": AUDIO,
        "audio_playback_paused": AUDIO,
        "audio_playback_resumed": AUDIO,
        "audio_playback_completed": AUDIO,
        "podcast_subscribed": (
            {"podcast_id": "pod-9", "podcast_name": "Tech Talk"},
            {"podcast_id": "pod-9", "podcast_name": "Tech Talk"},
        ),
    },
    "gaming": {
        "game_started": GAME,
        "game_ended": LEVEL_END,
        "level_started": GAME,
        "level_completed": LEVEL_END,
        "level_failed": LEVEL_END,
        "achievement_unlocked": (
            {"achievement_id": "first_blood"},
            {"achievement_id": "first_blood"},
        ),
        "tutorial_started": TUTORIAL,
        "tutorial_completed": TUTORIAL,
        "tutorial_skipped": TUTORIAL,
        "item_purchased": ITEM,
        "item_equipped": ITEM,
        "currency_earned": CURRENCY,
        "currency_spent": CURRENCY,
        "friend_invited": ({"method": "link"}, {"invite_method": "link"}),
        "match_started": MATCH,
        "match_completed": MATCH,
        "leaderboard_viewed": ({"leaderboard_id": "weekly"}, {"leaderboard_id": "weekly"}),
    },
    "publishing": {
        "article_viewed": ARTICLE,
        "article_read": ARTICLE,
        "article_shared": ARTICLE,
        "article_bookmarked": ARTICLE,
        "category_viewed": ({"category": "Sport"}, {"article_category": "Sport"}),
        "search_performed": (
            {"query": " elections ", "results_count": 12.0},
            {"search_term": "elections", "search_results_count": 12},
        ),
        "newsletter_subscribed": NEWSLETTER,
        "newsletter_unsubscribed": NEWSLETTER,
        "paywall_viewed": (
            {"article_id": "a-1", "paywall_type": "Hard"},
            {"article_id": "a-1", "paywall_type": "hard"},
        ),
        "subscription_started": PUB_SUB,
        "subscription_cancelled": PUB_SUB,
        "comment_posted": (
            {"comment_id": "c-1", "article_id": "a-1"},
            {"comment_id": "c-1", "article_id": "a-1"},
        ),
        "author_followed": (
            {"author_id": "au-1", "author": "Ann"},
            {"author_id": "au-1", "author": "Ann"},
        ),
    },
    "retail": {
        "view_item_list": (
            {"item_list_id": "shoes", "items": [{"item_id": "S1"}]},
            {"item_list_id": "shoes", "items": [{"item_id": "S1"}]},
        ),
        "view_item": (
            {"currency": "gbp", "value": 120, "items": [{"item_id": "S1"}]},
            {"currency": "GBP", "value": 120, "item_id": "S1"},
        ),
        "add_to_cart": (
            {"currency": "GBP", "items": [{"item_id": "S1", "quantity": 2}]},
            {"currency": "GBP", "item_id": "S1", "item_quantity": 2},
        ),
        "view_cart": ({"value": 145, "items": [{"item_id": "S1"}]}, {"value": 145}),
        "begin_checkout": (
            {"value": 145, "coupon": "SPRING10"},
            {"value": 145, "coupon": "SPRING10"},
        ),
        "purchase": (
            {"transaction_id": "T-1", "value": 145, "tax": 24.17, "shipping": 0},
            {"order_id": "T-1", "value": 145, "tax": 24.17, "shipping": 0},
        ),
    },
}
ROWS = [
    pytest.param(vertical, event, props, expected, id=f"{vertical}-{event}")
    for vertical, events in SPEC_TABLE.items()
    for event, (props, expected) in events.items()
]


def test_the_seven_presets_are_the_spec_ones() -> None:
    """VERTICALS lists exactly the spec's seven presets."""
    assert set(VERTICALS) == set(SPEC_TABLE)


def test_the_preset_files_are_the_verticals_the_config_takes() -> None:
    """One ``<vertical>.yaml`` per vertical, and the config check reads this very list.

    ``[[integrations]] vertical`` is checked against ``config_checks.VERTICALS``: the same
    tuple, not a copy that could drift from the files (as it could until session 18).
    """
    files = {path.stem for path in BLUEPRINTS_DIR.glob("*.yaml")} - {"global"}
    assert set(VERTICALS) == files
    assert vars(config_checks)["VERTICALS"] is VERTICALS  # vars(): an import, not an export


@pytest.mark.parametrize("vertical", VERTICALS)
def test_every_preset_loads(vertical: str) -> None:
    """Each shipped preset file validates and compiles with the global mappings."""
    blueprint = load_blueprint(vertical)
    assert blueprint.vertical == vertical
    assert blueprint.version == "1.8.0"
    assert len(blueprint.global_mappings) >= 40


@pytest.mark.parametrize(("vertical", "event", "properties", "expected"), ROWS)
def test_spec_event_maps_to_its_type_with_domain_properties(
    make_event: EventFactory,
    vertical: str,
    event: str,
    properties: dict[str, Any],
    expected: dict[str, Any],
) -> None:
    """Every event of the spec's preset table maps to its own type and domain fields."""
    mapped = map_event(
        load_blueprint(vertical), make_event(event, properties=properties), source_value="DATAFLY"
    )
    assert not mapped.passed_through
    assert mapped.amperity_type == event
    assert {k: mapped.payload.get(k) for k in expected} == expected


@pytest.mark.parametrize("vertical", VERTICALS)
def test_every_preset_maps_page_to_pageview_and_identify_to_identify(
    make_event: EventFactory, vertical: str
) -> None:
    """Page messages become pageview and identify messages identify, in every preset."""
    blueprint = load_blueprint(vertical)
    page = map_event(blueprint, make_event(None, message_type="page"), source_value="S")
    identify = map_event(
        blueprint,
        make_event(None, message_type="identify", traits={"address": {"country": "gb"}}),
        source_value="S",
    )
    assert page.amperity_type == "pageview"
    assert identify.amperity_type == "identify"
    assert identify.payload["address_country"] == "GB"


def test_title_case_names_match_ga4_style_handlers(make_event: EventFactory) -> None:
    """Non-retail presets also match the Title Case form of their names ("Booking Completed")."""
    mapped = map_event(load_blueprint("travel"), make_event("Booking Completed"), source_value="S")
    assert mapped.amperity_type == "booking_completed"
