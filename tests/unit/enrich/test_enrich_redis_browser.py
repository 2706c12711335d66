"""The page's visitor against a real redis-server: round trips, counts and outages."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
import redis.asyncio as redis
from redis.exceptions import ConnectionError as RedisConnectionError

from amperity_signal.config import IntegrationSettings
from amperity_signal.enrich import CacheBackend
from amperity_signal.metrics import Metrics

from .enrich_fakes import FakeClock, FakeProfileClient, event, integration
from .redis_support import RedisProcess
from .test_enrich_redis import redis_enricher

ALICE = {"email": "alice@example.com"}


def personalised() -> IntegrationSettings:
    """An integration whose events' category picks the personalised attributes."""
    return integration(
        personalisation_enabled=True,
        personalisation_context_mappings=[
            {"source": "properties.category", "target": "pageCategory"}
        ],
    )


async def reads(inspector: redis.Redis) -> dict[str, int]:
    """How many GET and MGET commands Redis has served so far."""
    stats: dict[str, Any] = await inspector.info("commandstats")
    return {name: stats.get(f"cmdstat_{name}", {}).get("calls", 0) for name in ("get", "mget")}


def cache_count(metrics: Metrics, kind: str, result: str) -> float:
    """``amperity_signal_cache_total`` for one kind and result, as a scrape reads it."""
    labels = {"cache": kind, "result": result}
    return metrics.registry.get_sample_value("amperity_signal_cache_total", labels) or 0.0


async def test_a_page_reads_attributes_and_latest_personalised_in_one_round_trip(
    backend: CacheBackend,
    inspector: redis.Redis,
    client: FakeProfileClient,
    metrics: Metrics,
    clock: FakeClock,
) -> None:
    """A cached visitor costs three round trips, four before.

    The identity map (GET), the resolutions of its candidates (email and cookie: one
    MGET), then one MGET for both the attributes and the latest personalised entry (those
    two were a GET each).
    """
    enricher = redis_enricher(backend, client, metrics, clock)
    settings = personalised()
    event_of_alice = event(traits=ALICE, properties={"category": "bags"})
    await enricher.enrich(settings, event_of_alice, deadline=None)
    before = await reads(inspector)
    hits = cache_count(metrics, "perslast", "hit"), cache_count(metrics, "attrs", "hit")
    attributes, latest = await enricher.browser_attributes(settings, "anon_abc123", deadline=None)
    after = await reads(inspector)
    assert attributes["Persona"] == "Value Hunter"
    assert latest == {"Offer": "bags-promo"}
    assert (after["get"] - before["get"], after["mget"] - before["mget"]) == (1, 2)
    # Each entry read is counted once, as a hit of its own kind.
    assert cache_count(metrics, "perslast", "hit") == hits[0] + 1
    assert cache_count(metrics, "attrs", "hit") == hits[1] + 1


async def test_a_page_without_a_personalised_entry_gets_none_counted_as_a_miss(
    backend: CacheBackend,
    inspector: redis.Redis,
    client: FakeProfileClient,
    metrics: Metrics,
    clock: FakeClock,
) -> None:
    """No personalisation yet: ``{}``, the entry's read a miss, in the same round trips."""
    enricher = redis_enricher(backend, client, metrics, clock)
    await enricher.enrich(integration(), event(traits=ALICE), deadline=None)
    before = await reads(inspector)
    misses = cache_count(metrics, "perslast", "miss")
    attributes, latest = await enricher.browser_attributes(
        integration(), "anon_abc123", deadline=None
    )
    after = await reads(inspector)
    assert attributes["Persona"] == "Value Hunter"
    assert latest == {}
    assert (after["get"] - before["get"], after["mget"] - before["mget"]) == (1, 2)
    assert cache_count(metrics, "perslast", "miss") == misses + 1


async def test_a_page_read_during_an_outage_answers_nothing_and_counts_lost_reads(
    backend: CacheBackend,
    redis_server: RedisProcess,
    client: FakeProfileClient,
    metrics: Metrics,
    clock: FakeClock,
) -> None:
    """Redis gone after the visitor was cached: the page gets ({}, {}), never an error.

    The lost reads are counted as errors (the enrichment as degraded).
    """
    enricher = redis_enricher(backend, client, metrics, clock)
    await enricher.enrich(integration(), event(traits=ALICE), deadline=None)
    redis_server.kill()
    assert await enricher.browser_attributes(integration(), "anon_abc123", deadline=None) == (
        {},
        {},
    )
    assert not backend.available
    assert cache_count(metrics, "ident", "error") >= 1


async def test_a_page_whose_attributes_read_fails_answers_as_without_a_cache(
    backend: CacheBackend,
    client: FakeProfileClient,
    metrics: Metrics,
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Redis failing at the attributes' read: the page is answered as with no cache.

    The visitor's profile comes from the partner; the enrichment counts as degraded, each
    lost read once as an error.
    """
    enricher = redis_enricher(backend, client, metrics, clock)
    await enricher.enrich(integration(), event(traits=ALICE), deadline=None)
    store = backend.store
    get, multi_get = store.get, store.multi_get

    def failing_at_attributes(keys: Sequence[str]) -> None:
        if any(":attrs:" in key for key in keys):
            raise RedisConnectionError("connection refused")

    async def failing_get(key: str) -> bytes | None:
        failing_at_attributes([key])
        return await get(key)

    async def failing_multi_get(keys: Sequence[str]) -> list[bytes | None]:
        failing_at_attributes(keys)
        return await multi_get(keys)

    monkeypatch.setattr(store, "get", failing_get)
    monkeypatch.setattr(store, "multi_get", failing_multi_get)
    calls = len(client.lookups), len(client.gets)
    attributes, latest = await enricher.browser_attributes(
        integration(), "anon_abc123", deadline=None
    )
    # Resolved again through the partner (the resolution entries are read past the outage).
    assert (attributes, latest) == ({"Persona": "Value Hunter", "LifetimeTier": "Gold"}, {})
    assert (len(client.lookups), len(client.gets)) == (calls[0] + 1, calls[1])
    # Each entry the page read (or skipped) counts one lost read.
    assert cache_count(metrics, "perslast", "error") == 1
    assert not backend.available
    assert cache_count(metrics, "attrs", "error") == 1
    degraded = {"integration": "acme", "cause": "cache_unavailable"}
    assert metrics.registry.get_sample_value("amperity_signal_enrichment_degraded_total", degraded)
