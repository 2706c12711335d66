"""Context-sensitive personalisation: context from the event, one call per context hash."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

import pytest
from pydantic import ValidationError

from amperity_signal.browser import BrowserProfiles, ConsentLedger
from amperity_signal.config import IntegrationSettings
from amperity_signal.enrich import Enricher, MemoryStore
from amperity_signal.enrich.messages import SHARED_CALL_LATE
from amperity_signal.enrich.personalise import context_for
from amperity_signal.errors import AmperityRejected, AmperityUnavailable

from .enrich_fakes import FakeClock, FakeProfileClient, event, integration

ALICE = {"email": "alice@example.com"}


def personalised_integration() -> IntegrationSettings:
    """The integration with the spec's example context mappings."""
    return integration(
        personalisation_enabled=True,
        personalisation_context_mappings=[
            {"source": "properties.category", "target": "pageCategory"},
            {"source": "properties.value", "target": "cartValue"},
            {"source": "context.page.path", "target": "pagePath"},
            {"source": "partner_attrs.amperity.LifetimeTier", "target": "tierHint"},
        ],
    )


def shoe_event(category: str = "shoes", **properties: Any) -> dict[str, Any]:
    """An event of alice on a category page."""
    return event(traits=ALICE, properties={"category": category, **properties})


async def test_same_context_costs_one_personalised_call(
    enricher: Enricher, client: FakeProfileClient
) -> None:
    """Equal context values share a cached personalised result."""
    settings = personalised_integration()
    first = await enricher.enrich(settings, shoe_event(), deadline=None)
    second = await enricher.enrich(settings, shoe_event(), deadline=None)
    assert client.personalised_gets == [("p-alice", {"pageCategory": "shoes", "tierHint": "Gold"})]
    assert first.personalized_attributes == {"Offer": "shoes-promo"}
    assert second.event["partner_attrs"]["amperity_personalized"] == {"Offer": "shoes-promo"}


async def test_a_different_category_makes_a_new_call(
    enricher: Enricher, client: FakeProfileClient
) -> None:
    """A new context hash is a cache miss and a new Profile API call."""
    settings = personalised_integration()
    await enricher.enrich(settings, shoe_event("shoes"), deadline=None)
    result = await enricher.enrich(settings, shoe_event("bags"), deadline=None)
    assert len(client.personalised_gets) == 2
    assert result.personalized_attributes == {"Offer": "bags-promo"}


async def test_personalised_results_expire_after_two_minutes(
    enricher: Enricher, client: FakeProfileClient, clock: FakeClock
) -> None:
    """After personalized_ttl the same context is fetched again."""
    settings = personalised_integration()
    await enricher.enrich(settings, shoe_event(), deadline=None)
    clock.advance(119)
    await enricher.enrich(settings, shoe_event(), deadline=None)
    assert len(client.personalised_gets) == 1
    clock.advance(1)
    await enricher.enrich(settings, shoe_event(), deadline=None)
    assert len(client.personalised_gets) == 2


async def test_browser_gets_the_latest_personalised_result(
    enricher: Enricher, client: FakeProfileClient
) -> None:
    """The browser sends no context; it receives the visitor's latest personalised result."""
    settings = personalised_integration()
    await enricher.enrich(settings, shoe_event("bags"), deadline=None)
    calls = len(client.gets) + len(client.lookups)
    attributes, personalised = await enricher.browser_attributes(
        settings, "anon_abc123", deadline=None
    )
    assert attributes["Persona"] == "Value Hunter"
    assert personalised == {"Offer": "bags-promo"}
    assert len(client.gets) + len(client.lookups) == calls


async def page_offer(enricher: Enricher) -> dict[str, Any]:
    """What the browser is shown as alice's latest personalised attributes."""
    _, personalised = await enricher.browser_attributes(
        personalised_integration(), "anon_abc123", deadline=None
    )
    return personalised


async def test_the_browser_gets_the_context_last_requested_even_from_the_cache(
    enricher: Enricher, client: FakeProfileClient
) -> None:
    """Shoes, bags, shoes again (a cache hit): the page shows shoes; a cached failure never.

    Before session 23 only a fetch wrote the latest entry, so the page showed bags.
    """

    def offer(_profile_id: str, context: Mapping[str, str]) -> dict[str, Any]:
        if context["pageCategory"] == "hats":
            raise AmperityRejected("Amperity answered 400", reason="AMPERITY_REJECTED")
        return {"Offer": f"{context['pageCategory']}-promo"}

    client.personalise = offer
    settings = personalised_integration()
    for category in ("shoes", "bags", "hats", "shoes"):
        await enricher.enrich(settings, shoe_event(category), deadline=None)
    assert len(client.personalised_gets) == 3  # the second shoes was a hit
    assert await page_offer(enricher) == {"Offer": "shoes-promo"}
    # hats' remembered failure (a dampened hit) does not replace it.
    dampened = await enricher.enrich(settings, shoe_event("hats"), deadline=None)
    assert dampened.cache_status == "hit" and dampened.personalized_attributes == {}
    assert len(client.personalised_gets) == 3
    assert await page_offer(enricher) == {"Offer": "shoes-promo"}


async def test_a_cached_result_is_the_latest_for_its_own_remaining_life(
    enricher: Enricher, client: FakeProfileClient, clock: FakeClock
) -> None:
    """A hit's result stays the page's until that result expires (personalized_ttl, 120 s).

    Shoes at 0 s, bags at 60 s, shoes (a hit) at 100 s: shoes is shown until 120 s, when
    the shoes result expires, and nothing after it (not bags, which lives until 180 s).
    """
    settings = personalised_integration()
    await enricher.enrich(settings, shoe_event("shoes"), deadline=None)
    clock.advance(60)
    await enricher.enrich(settings, shoe_event("bags"), deadline=None)
    clock.advance(40)
    await enricher.enrich(settings, shoe_event("shoes"), deadline=None)
    clock.advance(19.5)
    assert await page_offer(enricher) == {"Offer": "shoes-promo"}
    clock.advance(0.5)
    assert await page_offer(enricher) == {}
    assert len(client.personalised_gets) == 2


async def test_the_page_sees_allowlisted_names_a_personalised_value_first(
    enricher: Enricher, client: FakeProfileClient, store: MemoryStore
) -> None:
    """A personalised value wins over the profile's own of that name; unlisted names stay out."""
    client.personalise = lambda _p, ctx: {"LifetimeTier": "Platinum", "Offer": "bags-promo"}
    settings = personalised_integration().model_copy(
        update={"browser_attribute_allowlist": ("Offer", "LifetimeTier", "Unknown")}
    )
    await enricher.enrich(settings, shoe_event("bags"), deadline=None)
    profiles = BrowserProfiles(enricher, ConsentLedger(store))
    page = await profiles.attributes(settings, "anon_abc123", deadline=1e9)
    assert page == {"Offer": "bags-promo", "LifetimeTier": "Platinum"}
    assert list(page) == ["Offer", "LifetimeTier"]  # the allowlist's order


async def test_disabled_personalisation_makes_no_context_call(
    enricher: Enricher, client: FakeProfileClient
) -> None:
    """Without personalisation_enabled no personalised call is made."""
    result = await enricher.enrich(integration(), shoe_event(), deadline=None)
    assert client.personalised_gets == []
    assert "amperity_personalized" not in result.event["partner_attrs"]


def test_context_values_skip_empty_and_stringify() -> None:
    """Empty values are skipped; numbers and booleans become query-parameter text."""
    settings = personalised_integration()
    enriched = {
        "properties": {"category": "", "value": 120},
        "context": {"page": {"path": "/cart"}},
        "partner_attrs": {"amperity": {"LifetimeTier": True}},
    }
    assert context_for(settings.personalisation_context_mappings, enriched) == {
        "cartValue": "120",
        "pagePath": "/cart",
        "tierHint": "true",
    }


async def test_a_huge_number_in_a_list_context_value_is_sent_not_raised(
    enricher: Enricher, client: FakeProfileClient
) -> None:
    """A number past 64 bits in a mapped list is sent as JSON writes it (``1e+30``).

    Before: converted to an int orjson cannot write, the ``TypeError`` failed the event's
    whole enrichment (and its Deliver, ``INTERNAL``).
    """
    settings = integration(
        personalisation_enabled=True,
        personalisation_context_mappings=[{"source": "properties.ids", "target": "ids"}],
    )
    result = await enricher.enrich(
        settings, event(traits=ALICE, properties={"ids": [1e30, -1e19, 7.0]}), deadline=None
    )
    assert result.resolved
    assert client.personalised_gets == [("p-alice", {"ids": "[1e+30,-1e+19,7]"})]


async def test_a_refused_personalised_call_is_dampened_for_the_error_ttl(
    enricher: Enricher, client: FakeProfileClient, clock: FakeClock
) -> None:
    """A context Amperity refuses costs one call per error_ttl, not one per event."""

    def refuse(_profile_id: str, _context: Mapping[str, str]) -> dict[str, Any]:
        raise AmperityRejected(
            "Amperity answered 400 to a Profile API call", reason="AMPERITY_REJECTED"
        )

    client.personalise = refuse
    settings = personalised_integration()
    results = [await enricher.enrich(settings, shoe_event(), deadline=None) for _ in range(5)]
    assert len(client.personalised_gets) == 1
    assert all(r.resolved and r.personalized_attributes == {} for r in results)
    assert all(any("400" in w for w in r.warnings) for r in results)
    clock.advance(30)
    await enricher.enrich(settings, shoe_event(), deadline=None)
    assert len(client.personalised_gets) == 2


def test_a_struct_number_is_sent_without_a_trailing_point_zero() -> None:
    """properties.value 120.0 (every Struct number is a float) is sent as "120"; 19.5 as is."""
    settings = personalised_integration()
    mappings = settings.personalisation_context_mappings
    assert context_for(mappings, {"properties": {"value": 120.0}}) == {"cartValue": "120"}
    assert context_for(mappings, {"properties": {"value": 19.5}}) == {"cartValue": "19.5"}


def test_a_context_target_named_enrich_is_refused_at_load() -> None:
    """Target "enrich" (the Profile API's own parameter) is a config error naming the field."""
    with pytest.raises(ValidationError) as refused:
        integration(
            personalisation_enabled=True,
            personalisation_context_mappings=[
                {"source": "properties.category", "target": "enrich"}
            ],
        )
    (error,) = refused.value.errors()
    assert error["loc"] == ("personalisation_context_mappings", 0, "target")
    assert "rename the target" in error["msg"]


def test_a_list_or_object_context_value_is_sent_as_json() -> None:
    """A list or object source value is sent as compact JSON, never as Python's repr."""
    mappings = integration(
        personalisation_context_mappings=[
            {"source": "properties.categories", "target": "categories"},
            {"source": "properties.cart", "target": "cart"},
        ]
    ).personalisation_context_mappings
    enriched = {
        "properties": {"categories": ["shoes", "bags"], "cart": {"items": 2.0, "gift": True}}
    }
    assert context_for(mappings, enriched) == {
        "categories": '["shoes","bags"]',
        "cart": '{"gift":true,"items":2}',
    }


async def test_personalised_failures_that_open_the_breaker_log_breaker_open(
    enricher: Enricher, client: FakeProfileClient, caplog: pytest.LogCaptureFixture
) -> None:
    """The personalised call that opens the breaker logs reason=BREAKER_OPEN, as lookups do."""

    def unavailable(_profile_id: str, _context: Mapping[str, str]) -> dict[str, Any]:
        raise AmperityUnavailable(
            "Amperity answered 503", reason="AMPERITY_UNAVAILABLE", status_code=503
        )

    client.personalise = unavailable
    settings = personalised_integration()
    with caplog.at_level(logging.WARNING, logger="amperity_signal.enrich"):
        for category in ("shoes", "bags", "hats"):  # breaker_failures = 3
            await enricher.enrich(settings, shoe_event(category), deadline=None)
    lines = [r.getMessage() for r in caplog.records]
    assert sum("reason=BREAKER_OPEN" in line for line in lines) == 1
    assert "endpoint=personalised reason=BREAKER_OPEN" in lines[-1]


async def test_a_joiner_with_more_time_gets_the_personalised_attributes(
    enricher: Enricher, client: FakeProfileClient, clock: FakeClock
) -> None:
    """A shared personalised call that ran out of its starter's deadline is made again."""
    settings = personalised_integration()
    await enricher.enrich(settings, shoe_event("bags"), deadline=None)  # resolved and cached
    client.gate = asyncio.Event()
    client.clock = clock
    short = asyncio.create_task(enricher.enrich(settings, shoe_event(), deadline=clock.now + 1))
    for _ in range(5):
        await asyncio.sleep(0)  # yield so the short caller starts the flight first
    patient = asyncio.create_task(enricher.enrich(settings, shoe_event(), deadline=clock.now + 30))
    for _ in range(5):
        await asyncio.sleep(0)  # yield so the patient caller joins it
    clock.advance(2)  # the partner answers after the short deadline
    client.gate.set()
    first, second = await asyncio.gather(short, patient)
    assert first.personalized_attributes == {}
    assert second.personalized_attributes == {"Offer": "shoes-promo"}
    assert len(client.personalised_gets) == 3  # bags, then shoes twice


async def test_a_joiner_with_less_time_stops_waiting_for_the_personalised_call(
    enricher: Enricher, client: FakeProfileClient, clock: FakeClock
) -> None:
    """A joiner whose deadline comes first gives up its wait; the shared call goes on."""
    settings = personalised_integration()
    await enricher.enrich(settings, shoe_event("bags"), deadline=None)  # resolved and cached
    client.gate = asyncio.Event()
    patient = asyncio.create_task(enricher.enrich(settings, shoe_event(), deadline=clock.now + 30))
    for _ in range(5):
        await asyncio.sleep(0)  # yield so the patient caller starts the flight
    hurried = asyncio.create_task(enricher.enrich(settings, shoe_event(), deadline=clock.now))
    done, _ = await asyncio.wait({hurried}, timeout=5)
    assert done == {hurried}  # before: it waited for the patient caller's call
    assert hurried.result().personalized_attributes == {}
    assert hurried.result().warnings == (SHARED_CALL_LATE,)
    client.gate.set()
    assert (await patient).personalized_attributes == {"Offer": "shoes-promo"}
    assert len(client.personalised_gets) == 2  # bags, then shoes once
