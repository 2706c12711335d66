"""The Redis backend against a real redis-server: sharing across Enrichers, outage, restart."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as redis

from amperity_signal.amperity import RedisRateLimiter
from amperity_signal.config import CacheSettings
from amperity_signal.enrich import CacheBackend, Enricher, build_cache
from amperity_signal.metrics import Metrics
from amperity_signal.service.app import build_rate_limiter

from .enrich_fakes import FakeClock, FakeProfileClient, event, integration
from .redis_support import ANSWER_SECONDS, RedisProcess

ALICE = {"email": "alice@example.com"}


@pytest.fixture
async def redis_cache(redis_server: RedisProcess, clock: FakeClock) -> AsyncIterator[CacheBackend]:
    """A Redis-backed cache (closed after the test)."""
    settings = CacheSettings(backend="redis", redis_url=redis_server.url, jitter=0)
    cache = build_cache(settings, Metrics(), clock=clock, redis_timeout=ANSWER_SECONDS)
    yield cache
    await cache.close()


def redis_enricher(
    cache: CacheBackend, client: FakeProfileClient, metrics: Metrics, clock: FakeClock
) -> Enricher:
    """An Enricher over a Redis-backed cache (one service replica)."""
    return Enricher(
        CacheSettings(backend="redis", jitter=0),
        client_for=lambda _id: client,
        cache=cache,
        metrics=metrics,
        clock=clock,
    )


async def assert_next_enrich_is_a_hit(enricher: Enricher, client: FakeProfileClient) -> None:
    """Alice's next enrichment comes from the Redis cache, with no partner call."""
    lookups = len(client.lookups)
    after = await enricher.enrich(integration(), event(traits=ALICE), deadline=None)
    assert after.cache_status == "hit"
    assert len(client.lookups) == lookups


async def test_two_enrichers_sharing_redis_make_one_lookup(
    redis_server: RedisProcess, client: FakeProfileClient, metrics: Metrics, clock: FakeClock
) -> None:
    """A visitor resolved by one replica costs the other replica no lookup."""
    settings = CacheSettings(backend="redis", redis_url=redis_server.url, jitter=0)
    first_cache = build_cache(settings, metrics, clock=clock, redis_timeout=ANSWER_SECONDS)
    second_cache = build_cache(settings, metrics, clock=clock, redis_timeout=ANSWER_SECONDS)
    try:
        first = redis_enricher(first_cache, client, metrics, clock)
        second = redis_enricher(second_cache, client, metrics, clock)
        await first.enrich(integration(), event(traits=ALICE), deadline=None)
        result = await second.enrich(integration(), event(traits=ALICE), deadline=None)
        assert result.cache_status == "hit"
        assert result.attributes["Persona"] == "Value Hunter"
        assert len(client.lookups) == 1
        # The identity map is shared too: a cookie-only event on replica two resolves by email.
        cookie_only = await second.enrich(integration(), event(), deadline=None)
        assert cookie_only.matched_key == "email_sha256"
        assert len(client.lookups) == 1
    finally:
        await first_cache.close()
        await second_cache.close()


async def test_redis_keys_hold_no_raw_identifiers(
    redis_cache: CacheBackend,
    redis_server: RedisProcess,
    client: FakeProfileClient,
    metrics: Metrics,
    clock: FakeClock,
) -> None:
    """Keys written to Redis are digests under the amperity_signal:v1 prefix."""
    enricher = redis_enricher(redis_cache, client, metrics, clock)
    await enricher.enrich(integration(), event("anon_secret", traits=ALICE), deadline=None)
    inspector = redis.Redis.from_url(redis_server.url)
    try:
        keys = [key.decode() async for key in inspector.scan_iter()]
    finally:
        await inspector.aclose()
    assert keys
    assert all(key.startswith("amperity_signal:v1:") for key in keys)
    assert not any("alice" in key or "anon_secret" in key for key in keys)


async def test_redis_outage_degrades_and_recovers_after_restart(
    redis_cache: CacheBackend,
    redis_server: RedisProcess,
    client: FakeProfileClient,
    metrics: Metrics,
    clock: FakeClock,
) -> None:
    """Redis killed: enrich works, degraded and without raising; restarted: cached again."""
    enricher = redis_enricher(redis_cache, client, metrics, clock)
    await enricher.enrich(integration(), event(traits=ALICE), deadline=None)
    redis_server.kill()
    during = await enricher.enrich(integration(), event(traits=ALICE), deadline=None)
    assert during.resolved
    assert during.attributes["Persona"] == "Value Hunter"
    assert not redis_cache.available
    degraded = metrics.registry.get_sample_value(
        "amperity_signal_enrichment_degraded_total",
        {"integration": "acme", "cause": "cache_unavailable"},
    )
    assert degraded is not None
    assert degraded >= 1

    redis_server.start()
    clock.advance(1)
    await enricher.enrich(integration(), event(traits=ALICE), deadline=None)
    assert redis_cache.available
    await assert_next_enrich_is_a_hit(enricher, client)


async def test_a_redis_restart_between_calls_costs_no_degraded_window(
    redis_cache: CacheBackend,
    redis_server: RedisProcess,
    client: FakeProfileClient,
    metrics: Metrics,
    clock: FakeClock,
) -> None:
    """Pooled connections a restart killed are reconnected once, not taken for an outage.

    Without the retry, the first command on each dead connection failed and the cache was
    skipped for a second although Redis was already back.
    """
    enricher = redis_enricher(redis_cache, client, metrics, clock)
    await enricher.enrich(integration(), event(traits=ALICE), deadline=None)
    redis_server.kill()
    redis_server.start()
    # The restarted Redis is empty: a lookup again, then written back to the cache.
    again = await enricher.enrich(integration(), event(traits=ALICE), deadline=None)
    assert again.resolved
    assert redis_cache.available
    assert again.warnings == ()
    await assert_next_enrich_is_a_hit(enricher, client)


async def test_a_redis_restart_between_slots_is_no_outage_to_the_shared_rate_limit(
    redis_server: RedisProcess, caplog: pytest.LogCaptureFixture
) -> None:
    """The limiter ``serve`` builds reconnects a connection a restart killed, without a warning.

    Its client had no retry: the first slot after a restart failed on the dead pooled
    connection and logged "shared rate limit unavailable" although Redis was back. A Redis
    that is really down is still an outage, and warned of.
    """
    limiter = build_rate_limiter(CacheSettings(backend="redis", redis_url=redis_server.url))
    assert isinstance(limiter, RedisRateLimiter)
    inspector = redis.Redis.from_url(redis_server.url)
    try:
        async with limiter.slot("acme", 10, None):
            pass
        redis_server.kill()
        redis_server.start()
        with caplog.at_level(logging.WARNING):
            async with limiter.slot("acme", 10, None):
                pass
            assert "rate limit unavailable" not in caplog.text
            # Taken in the restarted Redis, not locally: the limit is still shared.
            assert await inspector.zcard(limiter.redis_key("acme")) == 1
            redis_server.kill()
            async with limiter.slot("acme", 10, None):
                pass
            assert "shared rate limit unavailable" in caplog.text
    finally:
        await inspector.aclose()
        await limiter._redis.aclose()  # the limiter has no close: the service keeps it
