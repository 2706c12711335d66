"""Every vertical preset, as the spec's "Pick a vertical preset" table lists it, end to end.

Each event is delivered through the service process and checked on what the sandbox
process received: the Amperity ``type``, the global fields every preset shares, and the
domain properties the preset pulls off ``event.properties``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
import pytest_asyncio
from google.protobuf import struct_pb2, timestamp_pb2

from datafly.amperity.v1 import amperity_service_pb2 as pb
from tests.e2e.stack import Sandbox, Service, Stack
from tests.support import integration_dict, message_id, mint_keys

# One sandbox and one service (an integration per preset) serve the whole module: every
# check looks its event up by message_id, so the tests cannot see each other's traffic.
pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

SENT_AT = datetime(2026, 4, 17, 15, 37, 10, 484_000, tzinfo=UTC)

# One row per event of the spec's preset table: (Datafly event name, properties sent,
# fields the preset must pull out of them). The Amperity type is the event name, except
# where the row's name is an alias (retail's Segment names).
Row = tuple[str, dict[str, Any], dict[str, Any]]
PRESETS: dict[str, list[Row]] = {
    "retail": [
        (
            "view_item_list",
            {"item_list_id": "L1", "item_list_name": "Boots"},
            {"item_list_id": "L1", "item_list_name": "Boots"},
        ),
        (
            "view_item",
            {
                "currency": "usd",
                "value": 120,
                "items": [
                    {
                        "item_id": "SKU-1",
                        "item_name": "Trail Boot",
                        "item_brand": "Summit",
                        "item_category": "Shoes",
                        "price": 120,
                        "quantity": 1,
                    }
                ],
            },
            {
                "currency": "USD",
                "value": 120,
                "item_id": "SKU-1",
                "item_name": "Trail Boot",
                "item_brand": "Summit",
                "item_category": "Shoes",
                "item_price": 120,
                "item_quantity": 1,
            },
        ),
        (
            "add_to_cart",
            {
                "currency": "EUR",
                "value": 60,
                "cart_id": "C9",
                "items": [{"item_id": "SKU-2", "price": 30, "quantity": 2}],
            },
            {
                "currency": "EUR",
                "value": 60,
                "cart_id": "C9",
                "item_id": "SKU-2",
                "item_quantity": 2,
                "items": [{"item_id": "SKU-2", "price": 30, "quantity": 2}],
            },
        ),
        (
            "view_cart",
            {"currency": "EUR", "value": 60, "cart_id": "C9"},
            {"currency": "EUR", "value": 60, "cart_id": "C9"},
        ),
        (
            "begin_checkout",
            {"currency": "GBP", "value": 99.5, "checkout_id": "K1"},
            {"currency": "GBP", "value": 99.5, "checkout_id": "K1"},
        ),
        (
            "purchase",
            {
                "transaction_id": "T-100",
                "currency": "USD",
                "value": 750,
                "tax": 50,
                "shipping": 10,
                "coupon": "SPRING",
                "items": [
                    {"item_id": "SKU-3", "item_brand": "Summit Gear", "price": 750, "quantity": 1}
                ],
            },
            {
                "order_id": "T-100",
                "currency": "USD",
                "value": 750,
                "tax": 50,
                "shipping": 10,
                "coupon": "SPRING",
                "item_brand": "Summit Gear",
            },
        ),
        (
            "remove_from_cart",
            {
                "currency": "USD",
                "value": 20,
                "items": [{"item_id": "SKU-4", "price": 20, "quantity": 1}],
            },
            {"value": 20, "item_id": "SKU-4"},
        ),
    ],
    "travel": [
        (
            "flight_searched",
            {
                "origin": "lhr",
                "destination": "jfk",
                "departure_date": "2026-06-01",
                "passengers": 2,
            },
            {
                "origin": "LHR",
                "destination": "JFK",
                "departure_date": "2026-06-01",
                "passengers": 2,
            },
        ),
        (
            "hotel_searched",
            {"city": "Paris", "check_in_date": "2026-06-01", "nights": 3},
            {"destination": "Paris", "check_in_date": "2026-06-01", "nights": 3},
        ),
        (
            "car_searched",
            {"pickup_location": "NCE", "pickup_date": "2026-06-02", "car_class": "compact"},
            {"pickup_location": "NCE", "pickup_date": "2026-06-02", "car_class": "compact"},
        ),
        (
            "flight_viewed",
            {
                "origin": "LHR",
                "destination": "JFK",
                "flight_number": "ba117",
                "value": 540,
                "currency": "gbp",
            },
            {"flight_number": "BA117", "value": 540, "currency": "GBP"},
        ),
        (
            "hotel_viewed",
            {"hotel_id": 77, "hotel_name": "Le Grand", "value": 300, "currency": "EUR"},
            {"hotel_id": "77", "hotel_name": "Le Grand", "value": 300},
        ),
        (
            "booking_started",
            {"booking_id": "B-1", "origin": "LHR", "value": 540},
            {"booking_id": "B-1", "origin": "LHR", "value": 540},
        ),
        (
            "booking_completed",
            {
                "booking_id": "B-1",
                "departure_date": "2026-06-01",
                "return_date": "2026-06-08",
                "value": 540,
                "currency": "GBP",
            },
            {
                "booking_id": "B-1",
                "departure_date": "2026-06-01",
                "return_date": "2026-06-08",
                "value": 540,
                "currency": "GBP",
            },
        ),
        (
            "booking_cancelled",
            {"booking_id": "B-1", "reason": "illness", "refund_amount": 400},
            {"booking_id": "B-1", "cancellation_reason": "illness", "refund_amount": 400},
        ),
        (
            "booking_modified",
            {"booking_id": "B-1", "change_type": "dates", "return_date": "2026-06-09"},
            {"booking_id": "B-1", "modification_type": "dates", "return_date": "2026-06-09"},
        ),
        (
            "check_in_completed",
            {"booking_id": "B-1", "seat": "12A", "flight_number": "BA117"},
            {"booking_id": "B-1", "seat": "12A", "flight_number": "BA117"},
        ),
        (
            "check_out_completed",
            {"booking_id": "B-2", "hotel_id": "H1", "value": 900},
            {"booking_id": "B-2", "hotel_id": "H1", "value": 900},
        ),
        (
            "loyalty_points_earned",
            {"points": 540, "loyalty_program": "Avios", "booking_id": "B-1"},
            {"points": 540, "loyalty_program": "Avios", "booking_id": "B-1"},
        ),
        (
            "loyalty_points_redeemed",
            {"points": 1000, "points_balance": 2000},
            {"points": 1000, "points_balance": 2000},
        ),
        (
            "review_submitted",
            {"booking_id": "B-2", "rating": 4.5, "review_id": 31},
            {"booking_id": "B-2", "rating": 4.5, "review_id": "31"},
        ),
    ],
    "finance": [
        (
            "account_opened",
            {"account_id": "A1", "account_type": "checking"},
            {"account_id": "A1", "account_type": "checking"},
        ),
        ("account_closed", {"account_id": "A1"}, {"account_id": "A1"}),
        ("kyc_started", {"kyc_provider": "Onfido"}, {"kyc_provider": "Onfido"}),
        (
            "kyc_completed",
            {"kyc_provider": "Onfido", "verification_method": "document"},
            {"kyc_provider": "Onfido", "verification_method": "document"},
        ),
        (
            "kyc_failed",
            {"kyc_provider": "Onfido", "failure_reason": "blurry"},
            {"kyc_provider": "Onfido", "failure_reason": "blurry"},
        ),
        ("login_succeeded", {"login_method": "password"}, {"login_method": "password"}),
        (
            "login_failed",
            {"login_method": "password", "failure_reason": "bad password"},
            {"login_method": "password", "failure_reason": "bad password"},
        ),
        (
            "transaction_initiated",
            {"transaction_id": "X1", "amount": 25, "currency": "USD"},
            {"transaction_id": "X1", "amount": 25, "currency": "USD"},
        ),
        (
            "transaction_completed",
            {"transaction_id": "X1", "amount": 25, "account_id": "A1"},
            {"transaction_id": "X1", "amount": 25, "account_id": "A1"},
        ),
        (
            "transaction_failed",
            {"transaction_id": "X2", "failure_reason": "insufficient funds"},
            {"transaction_id": "X2", "failure_reason": "insufficient funds"},
        ),
        (
            "payment_made",
            {"transaction_id": "X3", "amount": 80, "payment_method": "card"},
            {"transaction_id": "X3", "amount": 80, "payment_method": "card"},
        ),
        (
            "transfer_completed",
            {"amount": 500, "currency": "EUR"},
            {"amount": 500, "currency": "EUR"},
        ),
        (
            "card_applied",
            {"card_type": "credit", "application_id": "AP1"},
            {"card_type": "credit", "application_id": "AP1"},
        ),
        (
            "card_approved",
            {"card_type": "credit", "credit_limit": 5000},
            {"card_type": "credit", "credit_limit": 5000},
        ),
        (
            "card_activated",
            {"card_type": "debit", "account_id": "A1"},
            {"card_type": "debit", "account_id": "A1"},
        ),
        (
            "loan_applied",
            {"loan_type": "mortgage", "loan_amount": 250000, "term_months": 300},
            {"loan_type": "mortgage", "loan_amount": 250000, "term_months": 300},
        ),
        (
            "loan_approved",
            {"loan_type": "mortgage", "interest_rate": 4.1},
            {"loan_type": "mortgage", "interest_rate": 4.1},
        ),
        (
            "loan_funded",
            {"loan_type": "auto", "account_id": "A2"},
            {"loan_type": "auto", "account_id": "A2"},
        ),
        ("statement_viewed", {"account_id": "A1"}, {"account_id": "A1"}),
    ],
    "b2b_saas": [
        (
            "signed_up",
            {"account_id": "acc-1", "plan": "pro"},
            {"account_id": "acc-1", "plan": "pro"},
        ),
        (
            "logged_in",
            {"account_id": "acc-1", "login_method": "sso"},
            {"account_id": "acc-1", "login_method": "sso"},
        ),
        ("logged_out", {"account_id": "acc-1"}, {"account_id": "acc-1"}),
        ("password_reset_requested", {"account_id": "acc-1"}, {"account_id": "acc-1"}),
        (
            "trial_started",
            {"account_id": "acc-1", "plan": "pro", "trial_days": 14},
            {"plan": "pro", "trial_days": 14},
        ),
        (
            "trial_converted",
            {"account_id": "acc-1", "plan": "pro", "subscription_id": "sub-1"},
            {"plan": "pro", "subscription_id": "sub-1"},
        ),
        ("trial_expired", {"account_id": "acc-1", "plan": "pro"}, {"plan": "pro"}),
        (
            "subscription_started",
            {"subscription_id": "sub-1", "plan": "team", "seats": 5, "mrr": 250},
            {"subscription_id": "sub-1", "plan": "team", "seats": 5, "mrr": 250},
        ),
        (
            "subscription_upgraded",
            {"subscription_id": "sub-1", "plan": "enterprise", "previous_plan": "team"},
            {"plan": "enterprise", "previous_plan": "team"},
        ),
        (
            "subscription_downgraded",
            {"subscription_id": "sub-1", "plan": "team", "previous_plan": "enterprise"},
            {"plan": "team", "previous_plan": "enterprise"},
        ),
        (
            "subscription_cancelled",
            {"subscription_id": "sub-1", "plan": "team"},
            {"subscription_id": "sub-1", "plan": "team"},
        ),
        (
            "subscription_renewed",
            {"subscription_id": "sub-1", "plan": "team"},
            {"subscription_id": "sub-1", "plan": "team"},
        ),
        (
            "feature_used",
            {"account_id": "acc-1", "feature_name": "export"},
            {"account_id": "acc-1", "feature_name": "export"},
        ),
        (
            "invitation_sent",
            {"account_id": "acc-1", "invitation_id": "inv-1", "invitee_role": "admin"},
            {"invitation_id": "inv-1", "invitee_role": "admin"},
        ),
        (
            "invitation_accepted",
            {"account_id": "acc-1", "invitation_id": "inv-1"},
            {"invitation_id": "inv-1"},
        ),
        (
            "seat_added",
            {"account_id": "acc-1", "seat_role": "editor", "seats": 6},
            {"seat_role": "editor", "seats": 6},
        ),
        ("seat_removed", {"account_id": "acc-1", "seats": 5}, {"seats": 5}),
        (
            "integration_connected",
            {"account_id": "acc-1", "integration_name": "Slack"},
            {"account_id": "acc-1", "integration_name": "Slack"},
        ),
    ],
    "media": [
        (
            "video_playback_started",
            {"session_id": "ps-1", "video_id": "v1", "video_title": "Pilot"},
            {"playback_session_id": "ps-1", "video_id": "v1", "video_title": "Pilot"},
        ),
        (
            "video_playback_paused",
            {"session_id": "ps-1", "video_id": "v1"},
            {"playback_session_id": "ps-1", "video_id": "v1"},
        ),
        ("video_playback_resumed", {"session_id": "ps-1", "video_id": "v1"}, {"video_id": "v1"}),
        ("video_playback_completed", {"session_id": "ps-1", "video_id": "v1"}, {"video_id": "v1"}),
        (
            "video_content_started",
            {"video_id": "v1", "program": "Show", "season": "1", "episode": "1"},
            {"video_id": "v1", "program": "Show"},
        ),
        (
            "video_content_completed",
            {"video_id": "v1", "genre": "drama"},
            {"video_id": "v1", "genre": "drama"},
        ),
        (
            "video_content_milestone",
            {"video_id": "v1", "video_percent": 50},
            {"video_id": "v1", "video_percent": 50},
        ),
        (
            "video_ad_started",
            {"ad_id": "ad-1", "advertiser": "Acme"},
            {"ad_id": "ad-1", "advertiser": "Acme"},
        ),
        ("video_ad_completed", {"ad_id": "ad-1"}, {"ad_id": "ad-1"}),
        ("video_ad_skipped", {"ad_id": "ad-1"}, {"ad_id": "ad-1"}),
        (
            "audio_playback_started",
            {"audio_id": "a1", "artist": "Band"},
            {"audio_id": "a1", "artist": "Band"},
        ),
        ("audio_playback_paused", {"audio_id": "a1"}, {"audio_id": "a1"}),
        ("audio_playback_resumed", {"audio_id": "a1"}, {"audio_id": "a1"}),
        (
            "audio_playback_completed",
            {"audio_id": "a1", "album": "LP"},
            {"audio_id": "a1", "album": "LP"},
        ),
        ("podcast_subscribed", {"podcast_id": "pod-1"}, {"podcast_id": "pod-1"}),
    ],
    "gaming": [
        ("game_started", {"game_id": "g1", "level": 1}, {"game_id": "g1", "level": 1}),
        ("game_ended", {"game_id": "g1", "score": 1200}, {"game_id": "g1", "score": 1200}),
        ("level_started", {"level": 3, "level_name": "Caves"}, {"level": 3, "level_name": "Caves"}),
        ("level_completed", {"level": 3, "score": 300}, {"level": 3, "score": 300}),
        ("level_failed", {"level": 4, "score": 10}, {"level": 4, "score": 10}),
        (
            "achievement_unlocked",
            {"achievement_id": "ach-1", "name": "First Blood"},
            {"achievement_id": "ach-1", "achievement_name": "First Blood"},
        ),
        (
            "tutorial_started",
            {"tutorial_id": "t1", "step": 1},
            {"tutorial_id": "t1", "tutorial_step": 1},
        ),
        ("tutorial_completed", {"tutorial_id": "t1"}, {"tutorial_id": "t1"}),
        ("tutorial_skipped", {"tutorial_id": "t1"}, {"tutorial_id": "t1"}),
        (
            "item_purchased",
            {"item_id": "sword", "virtual_currency_name": "gems", "value": 50},
            {"item_id": "sword", "currency_type": "gems", "currency_amount": 50},
        ),
        (
            "item_equipped",
            {"item_id": "sword", "slot": "hand"},
            {"item_id": "sword", "slot": "hand"},
        ),
        (
            "currency_earned",
            {"virtual_currency_name": "gold", "value": 100},
            {"currency_type": "gold", "currency_amount": 100},
        ),
        (
            "currency_spent",
            {"virtual_currency_name": "gold", "value": 30, "item_id": "potion"},
            {"currency_type": "gold", "currency_amount": 30, "item_id": "potion"},
        ),
        ("friend_invited", {"method": "link"}, {"invite_method": "link"}),
        (
            "match_started",
            {"match_id": "m1", "match_type": "ranked"},
            {"match_id": "m1", "match_type": "ranked"},
        ),
        (
            "match_completed",
            {"match_id": "m1", "rank": 2, "score": 20},
            {"match_id": "m1", "rank": 2, "score": 20},
        ),
        ("leaderboard_viewed", {"leaderboard_id": "weekly"}, {"leaderboard_id": "weekly"}),
    ],
    "publishing": [
        (
            "article_viewed",
            {"article_id": "art-1", "title": "Hello", "author": "Ann"},
            {"article_id": "art-1", "article_title": "Hello", "author": "Ann"},
        ),
        (
            "article_read",
            {"article_id": "art-1", "read_percent": 80},
            {"article_id": "art-1", "read_percent": 80},
        ),
        (
            "article_shared",
            {"article_id": "art-1", "share_method": "Twitter"},
            {"article_id": "art-1", "share_method": "twitter"},
        ),
        ("article_bookmarked", {"article_id": "art-1"}, {"article_id": "art-1"}),
        ("category_viewed", {"category": "Science"}, {"article_category": "Science"}),
        ("search_performed", {"query": " mars "}, {"search_term": "mars"}),
        ("newsletter_subscribed", {"newsletter_id": "daily"}, {"newsletter_id": "daily"}),
        (
            "newsletter_unsubscribed",
            {"newsletter_id": "daily", "reason": "too many"},
            {"newsletter_id": "daily", "unsubscribe_reason": "too many"},
        ),
        (
            "paywall_viewed",
            {"article_id": "art-2", "paywall_type": "Metered"},
            {"article_id": "art-2", "paywall_type": "metered"},
        ),
        (
            "subscription_started",
            {"subscription_id": "s1", "plan": "digital", "value": 9.99},
            {"subscription_id": "s1", "plan": "digital", "value": 9.99},
        ),
        (
            "subscription_cancelled",
            {"subscription_id": "s1", "reason": "price"},
            {"subscription_id": "s1", "cancellation_reason": "price"},
        ),
        (
            "comment_posted",
            {"comment_id": 5, "article_id": "art-1"},
            {"comment_id": "5", "article_id": "art-1"},
        ),
        (
            "author_followed",
            {"author_id": "au-1", "author": "Ann"},
            {"author_id": "au-1", "author": "Ann"},
        ),
    ],
}

# What the spec's Event ingest example and the global mappings put on every event.
GLOBAL_FIELDS = {
    "source": "DATAFLY",
    "cookieid": "anon_abc123",
    "user_id": "user-123",
    "email": "jane.doe@example.com",
    "phone": "+447700900123",
    "ip_address": "203.0.113.7",
    "user_agent": "Mozilla/5.0 (test)",
    "locale": "en-GB",
    "timezone": "Europe/London",
    "timestamp": "2026-04-17T15:37:10.484Z",
    "page_url": "https://shop.example.com/p/1?utm_source=news",
    "page_path": "/p/1",
    "page_title": "Product",
    "page_referrer": "https://google.com/",
    "session_id": "sess-9",
    "utm_source": "news",
    "utm_medium": "email",
    "utm_campaign": "spring",
    "gclid": "gclid-1",
    "fbp": "fb.1.123.456",
    "geo_country": "GB",
    "geo_city": "London",
    "device_type": "mobile",
    "os_name": "iOS",
    "browser_name": "Safari",
    "consent": {"analytics": True, "marketing": False},
}


def datafly_event(
    name: str, properties: dict[str, Any], *, message_type: str = "track"
) -> pb.Event:
    """A Datafly event carrying every context field the global mappings read."""
    sent_at = timestamp_pb2.Timestamp()
    sent_at.FromDatetime(SENT_AT)
    props = struct_pb2.Struct()
    props.update(properties)
    traits = struct_pb2.Struct()
    traits.update({"email": " Jane.Doe@Example.com ", "phone": "+44 7700 900123"})
    return pb.Event(
        message_id=message_id(),
        type=message_type,
        event=name,
        anonymous_id="anon_abc123",
        user_id="user-123",
        timestamp=sent_at,
        properties=props,
        traits=traits,
        context=pb.Context(
            ip="203.0.113.7",
            user_agent="Mozilla/5.0 (test)",
            locale="en-GB",
            timezone="Europe/London",
            page=pb.Page(
                url="https://shop.example.com/p/1?utm_source=news",
                path="/p/1",
                title="Product",
                referrer="https://google.com/",
            ),
            campaign=pb.Campaign(source="news", medium="email", name="spring"),
            session=pb.Session(id="sess-9"),
            geo=pb.Geo(country="gb", city="London"),
            device=pb.Device(type="Mobile", os="iOS", browser="Safari"),
            vendor_ids={"gclid": "gclid-1", "fbp": "fb.1.123.456"},
            consent=pb.Consent(analytics=True, marketing=False),
        ),
    )


@dataclass(frozen=True)
class World:
    """The module's sandbox and service; integration ``{vertical}`` uses that preset."""

    sandbox: Sandbox
    service: Service


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    """A sandbox and a service with one integration per preset (no enrichment)."""
    stack = Stack(workdir=tmp_path_factory.mktemp("presets"))
    try:
        sandbox = await stack.sandbox()
        keys = mint_keys()
        tables = []
        for vertical in PRESETS:
            table = integration_dict(
                sandbox.url, keys, integration_id=vertical, enrichment=False, vertical=vertical
            )
            tables.append(table)
        yield World(sandbox, await stack.service(sandbox, *tables, keys=keys))
    finally:
        await stack.close()


async def deliver_all(
    world: World, vertical: str, events: list[pb.Event]
) -> list[pb.DeliverResponse]:
    """Deliver every event at once through the ``vertical`` integration."""
    stub = world.service.stub
    return list(
        await asyncio.gather(
            *(stub.Deliver(pb.DeliverRequest(integration_id=vertical, event=e)) for e in events)
        )
    )


async def received(sandbox: Sandbox) -> dict[str, dict[str, Any]]:
    """Bodies the sandbox received, by message_id."""
    return {e["body"]["message_id"]: e for e in await sandbox.events()}


@pytest.mark.parametrize("vertical", sorted(PRESETS))
async def test_every_event_of_a_preset_reaches_amperity_with_type_globals_and_properties(
    world: World, vertical: str
) -> None:
    """Each event the spec lists for a preset lands with its type, globals and properties."""
    rows = PRESETS[vertical]
    events = [datafly_event(name, properties) for name, properties, _ in rows]
    responses = await deliver_all(world, vertical, events)
    bodies = await received(world.sandbox)
    assert [r.amperity_type for r in responses] == [name for name, _, _ in rows]
    for event, (name, _, expected) in zip(events, rows, strict=True):
        got = bodies[event.message_id]
        body = got["body"]
        assert got["status"] == 202
        assert got["routed_to"] == "DataflyEvent"
        assert body["type"] == name
        assert body["event_name"] == name
        assert body["message_id"] == event.message_id
        assert {k: body.get(k) for k in GLOBAL_FIELDS} == GLOBAL_FIELDS, name
        assert {k: body.get(k) for k in expected} == expected, name


async def test_a_page_message_is_a_pageview_in_every_preset(world: World) -> None:
    """A ``page`` message becomes ``type: pageview`` (the retail table's first row)."""
    event = datafly_event("", {"name": "Home"}, message_type="page")
    (response,) = await deliver_all(world, "retail", [event])
    body = (await received(world.sandbox))[event.message_id]["body"]
    assert response.amperity_type == "pageview"
    assert body["type"] == "pageview"
    assert body["page_name"] == "Home"
    assert body["page_path"] == "/p/1"


GA4_ITEM = {
    "item_id": "SKU-1",
    "item_name": "Boot",
    "item_brand": "Summit",
    "item_category": "Shoes",
    "price": 42,
    "quantity": 1,
}
SEGMENT_PRODUCT = {
    "product_id": "SKU-1",
    "name": "Boot",
    "brand": "Summit",
    "category": "Shoes",
    "price": 42,
    "quantity": 1,
}
MONEY = {"currency": "USD", "value": 42}
# (GA4 name, GA4-shaped properties, Segment name, Segment-shaped properties) per action:
# GA4 sends items[]; Segment sends products[], or the one product's fields in properties.
RETAIL_PAIRS: list[tuple[str, dict[str, Any], str, dict[str, Any]]] = [
    ("view_item", {**MONEY, "items": [GA4_ITEM]}, "Product Viewed", {**MONEY, **SEGMENT_PRODUCT}),
    (
        "view_item_list",
        {"item_list_id": "L1", "item_list_name": "Boots", "items": [GA4_ITEM]},
        "Product List Viewed",
        {"list_id": "L1", "category": "Boots", "products": [SEGMENT_PRODUCT]},
    ),
    (
        "add_to_cart",
        {**MONEY, "cart_id": "C1", "items": [GA4_ITEM]},
        "Product Added",
        {**MONEY, "cart_id": "C1", **SEGMENT_PRODUCT},
    ),
    (
        "remove_from_cart",
        {**MONEY, "cart_id": "C1", "items": [GA4_ITEM]},
        "Product Removed",
        {**MONEY, "cart_id": "C1", **SEGMENT_PRODUCT},
    ),
    (
        "view_cart",
        {**MONEY, "cart_id": "C1", "items": [GA4_ITEM]},
        "Cart Viewed",
        {**MONEY, "cart_id": "C1", "products": [SEGMENT_PRODUCT]},
    ),
    (
        "begin_checkout",
        {**MONEY, "coupon": "SPRING", "items": [GA4_ITEM]},
        "Checkout Started",
        {**MONEY, "coupon": "SPRING", "products": [SEGMENT_PRODUCT]},
    ),
    (
        "purchase",
        {"transaction_id": "T-9", **MONEY, "tax": 3, "shipping": 5, "items": [GA4_ITEM]},
        "Order Completed",
        {
            "order_id": "T-9",
            "currency": "USD",
            "total": 42,
            "tax": 3,
            "shipping": 5,
            "products": [SEGMENT_PRODUCT],
        },
    ),
]


async def test_ga4_and_segment_names_of_a_retail_action_send_the_same_payload(
    world: World,
) -> None:
    """GA4 and Segment shapes of one retail action send one payload but for event_name/ids."""
    pairs = [
        (datafly_event(ga4, ga4_props), datafly_event(segment, segment_props))
        for ga4, ga4_props, segment, segment_props in RETAIL_PAIRS
    ]
    await deliver_all(world, "retail", [event for pair in pairs for event in pair])
    bodies = await received(world.sandbox)
    per_message = {"event_name", "message_id", "event_id"}
    for ga4, segment in pairs:
        ga4_body = bodies[ga4.message_id]["body"]
        segment_body = bodies[segment.message_id]["body"]
        assert ga4_body["type"] == ga4.event
        assert segment_body["event_name"] == segment.event
        assert ga4_body["items"] == [GA4_ITEM], ga4.event
        assert ga4_body["item_id"] == "SKU-1"
        same = {k: v for k, v in ga4_body.items() if k not in per_message}
        assert {k: v for k, v in segment_body.items() if k not in per_message} == same, ga4.event


async def test_a_custom_event_passes_through_with_globals_and_flattened_properties(
    world: World,
) -> None:
    """An event no handler knows is delivered anyway, its name snake_cased as the type."""
    event = datafly_event("Wishlist Shared", {"wishlistId": "w-1", "share": {"channel": "sms"}})
    (response,) = await deliver_all(world, "retail", [event])
    got = (await received(world.sandbox))[event.message_id]
    body = got["body"]
    assert response.amperity_type == "wishlist_shared"
    assert got["routed_to"] == "DataflyEvent"
    assert body["type"] == "wishlist_shared"
    assert body["event_name"] == "Wishlist Shared"
    assert body["wishlist_id"] == "w-1"
    assert body["share_channel"] == "sms"
    assert {k: body.get(k) for k in GLOBAL_FIELDS} == GLOBAL_FIELDS
