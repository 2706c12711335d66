"""Redis is never sent an expiry it refuses, whatever TTL reaches the store.

A TTL past Redis's integer range (``attribute_ttl = 1e300`` passed check-config) failed
every cache write with ``ERR value is not an integer or out of range``, and the service
logged that Redis could not be reached while it was up.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import orjson
import pytest
import redis.asyncio as redis

from amperity_signal.enrich import RedisStore
from amperity_signal.enrich.expiry import MAX_EXPIRY_MS, expiry_ms
from amperity_signal.limits import MAX_TTL_SECONDS

from .redis_support import ANSWER_SECONDS, RedisProcess

NOW = 1_790_000_000.0
HUGE = (1e300, float("inf"), 3.0 * MAX_TTL_SECONDS)


@pytest.fixture
async def store(redis_server: RedisProcess) -> AsyncIterator[RedisStore]:
    """The service's Redis store on a real redis-server."""
    store = RedisStore.from_url(redis_server.url, timeout=ANSWER_SECONDS)
    yield store
    await store.close()


@pytest.fixture
async def peek(redis_server: RedisProcess) -> AsyncIterator[redis.Redis]:
    """A plain client to read what the store left in Redis."""
    client = redis.Redis.from_url(redis_server.url, socket_timeout=ANSWER_SECONDS)
    yield client
    await client.aclose()


async def assert_expires_within_the_ceiling(peek: redis.Redis, key: str) -> None:
    life = await peek.pttl(key)
    assert MAX_EXPIRY_MS - 60_000 < life <= MAX_EXPIRY_MS, life


@pytest.mark.parametrize("ttl", HUGE)
async def test_a_set_with_a_ttl_past_the_ceiling_is_written_for_the_ceiling(
    store: RedisStore, peek: redis.Redis, ttl: float
) -> None:
    """``SET ... PX`` takes the longest expiry instead of failing the write."""
    await store.set("attributes:web:p-1", b'{"Persona": "Gold"}', ttl)
    assert await store.get("attributes:web:p-1") == b'{"Persona": "Gold"}'
    await assert_expires_within_the_ceiling(peek, "attributes:web:p-1")


@pytest.mark.parametrize("ttl", HUGE)
async def test_an_identity_merge_with_a_ttl_past_the_ceiling_is_written(
    store: RedisStore, peek: redis.Redis, ttl: float
) -> None:
    """The merge script's ``SET ... PX`` gets the capped expiry too."""
    merge = await store.merge_identifiers("identity:web:a-1", {"email": "a@x"}, now=NOW, ttl=ttl)
    assert merge.changed and merge.fields == {"email": "a@x"}
    await assert_expires_within_the_ceiling(peek, "identity:web:a-1")


@pytest.mark.parametrize("ttl", HUGE)
async def test_a_consent_write_with_a_ttl_past_the_ceiling_is_written(
    store: RedisStore, peek: redis.Redis, ttl: float
) -> None:
    """The keep-newer script's ``SET ... PX`` gets the capped expiry too."""
    value = orjson.dumps({"at": NOW, "analytics": True})
    assert await store.keep_newer("consent:web:a-1", value, NOW, ttl, now=NOW) is None
    assert await store.get("consent:web:a-1") == value
    await assert_expires_within_the_ceiling(peek, "consent:web:a-1")


def test_an_ordinary_ttl_is_sent_to_the_millisecond() -> None:
    """Within the ceiling the expiry is the TTL itself, at least 1 ms."""
    assert [expiry_ms(t) for t in (60, 0.25, 0.0001, 0, -5, float("nan"))] == [
        60_000,
        250,
        1,
        1,
        1,
        1,
    ]
    assert expiry_ms(MAX_TTL_SECONDS) == MAX_EXPIRY_MS
