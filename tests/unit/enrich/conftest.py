"""Fixtures for the enrichment tests: fake clock and client, metrics, a memory-backed Enricher."""

from __future__ import annotations

import random
import shutil
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import redis.asyncio as redis

from amperity_signal.config import CacheSettings
from amperity_signal.enrich import CacheBackend, Enricher, MemoryStore, build_cache
from amperity_signal.metrics import Metrics
from tests.support import in_ci

from .enrich_fakes import EnricherFactory, FakeClock, FakeProfileClient
from .redis_support import ANSWER_SECONDS, REDIS_SERVER, RedisProcess, free_port


@pytest.fixture
def clock() -> FakeClock:
    """A clock tests move by hand."""
    return FakeClock()


@pytest.fixture
def client() -> FakeProfileClient:
    """A counting Profile API with one known visitor (alice, cookie anon_abc123)."""
    fake = FakeProfileClient()
    fake.add(
        "p-alice",
        {"Persona": "Value Hunter", "LifetimeTier": "Gold"},
        email_sha256="ff8d9819fc0e12bf0d24892e45987e249a28dce836a85cad60e28eaaa8c6d976",
    )
    return fake


@pytest.fixture
def metrics() -> Metrics:
    """A fresh metrics registry."""
    return Metrics()


@pytest.fixture
def cache_settings() -> CacheSettings:
    """Default TTLs without jitter, so expiries fall exactly on the configured TTLs."""
    return CacheSettings(jitter=0, breaker_failures=3)


@pytest.fixture
def store(cache_settings: CacheSettings, clock: FakeClock) -> MemoryStore:
    """The bounded memory store on the fake clock."""
    return MemoryStore(cache_settings.max_entries, clock=clock)


@pytest.fixture
def make_enricher(
    cache_settings: CacheSettings,
    client: FakeProfileClient,
    metrics: Metrics,
    clock: FakeClock,
    store: MemoryStore,
) -> EnricherFactory:
    """Build an Enricher over the shared memory store; keyword arguments override the wiring."""

    def build(**overrides: Any) -> Enricher:
        settings = overrides.pop("settings", cache_settings)
        cache = (
            overrides.pop("cache")
            if "cache" in overrides
            else CacheBackend(store, metrics=metrics, clock=clock)
        )
        return Enricher(
            settings,
            client_for=overrides.pop("client_for", lambda _id: client),
            cache=cache,
            metrics=metrics,
            clock=clock,
            rng=random.Random(7),
            **overrides,
        )

    return build


@pytest.fixture
def enricher(make_enricher: EnricherFactory) -> Enricher:
    """The default Enricher (memory store, fake clock, counting client)."""
    return make_enricher()


@pytest.fixture
def redis_server() -> Iterator[RedisProcess]:
    """A real redis-server; skipped when missing unless running in CI."""
    if shutil.which(REDIS_SERVER) is None:
        if in_ci():
            pytest.fail(f"{REDIS_SERVER} is required in CI")
        pytest.skip(f"{REDIS_SERVER} is not installed")
    server = RedisProcess(free_port())
    server.start()
    yield server
    server.kill()


@pytest.fixture
async def inspector(redis_server: RedisProcess) -> AsyncIterator[redis.Redis]:
    """A plain client for looking at (and ageing) what the service wrote."""
    client = redis.Redis.from_url(redis_server.url)
    yield client
    await client.aclose()


@pytest.fixture
async def backend(
    redis_server: RedisProcess, metrics: Metrics, clock: FakeClock
) -> AsyncIterator[CacheBackend]:
    """One replica's Redis-backed cache, as the service builds it."""
    settings = CacheSettings(backend="redis", redis_url=redis_server.url, jitter=0)
    cache = build_cache(settings, metrics, clock=clock, redis_timeout=ANSWER_SECONDS)
    yield cache
    await cache.close()
