"""The identity map on a real redis-server: atomic merges, sliding expiry, NOSCRIPT, outages."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
import redis.asyncio as redis
from redis.exceptions import RedisError

from amperity_signal.config import LinkingKey
from amperity_signal.enrich import (
    CacheBackend,
    IdentityMap,
    Jitter,
    JsonCache,
)
from amperity_signal.enrich.identity import RENEW_AFTER
from amperity_signal.enrich.keys import cache_key
from amperity_signal.enrich.stores import RedisStore
from amperity_signal.metrics import Metrics

from .enrich_fakes import FakeClock, event, integration
from .redis_support import CountingRedis, RedisProcess, ReplyLosingRedis, memory_or_redis

DAY = 86_400.0
TTL = 30 * DAY
VISITOR = "anon_abc123"
KEY = cache_key("ident", "acme", "anonymous_id", VISITOR)
LINKING_KEYS: tuple[LinkingKey, ...] = tuple(integration().linking_keys)
ALICE = {"email:sha256": "a" * 64}
CUSTOMER = {"user_id": "cust-1"}


def counted_backend(
    server: RedisProcess, metrics: Metrics, clock: FakeClock
) -> tuple[CacheBackend, CountingRedis]:
    """A ``CacheBackend`` over a ``RedisStore`` whose client counts its commands."""
    client = CountingRedis(server.port)
    backend = CacheBackend(
        RedisStore(client),
        metrics=metrics,
        clock=clock,
        unavailable_errors=(RedisError, OSError),
    )
    return backend, client


def identity_map(backend: CacheBackend, metrics: Metrics, clock: FakeClock) -> IdentityMap:
    """The identity map as the Enricher builds it: no jitter, the fake clock as wall clock."""
    return IdentityMap(JsonCache(backend, metrics), ttl=TTL, expiry=Jitter(0), wall_clock=clock)


async def merge(identity: IdentityMap, learned: Mapping[str, str]) -> tuple[dict[str, str], bool]:
    """Merge ``learned`` into the test visitor's entry."""
    return await identity.learn("acme", VISITOR, learned)


async def stored_entry(inspector: redis.Redis) -> dict[str, Any]:
    """The visitor's entry as stored in Redis (fields and renewal time)."""
    raw = await inspector.get(KEY)
    assert raw is not None
    entry: dict[str, Any] = orjson.loads(raw)
    return entry


async def test_concurrent_merges_from_two_replicas_keep_every_identifier(
    redis_server: RedisProcess, metrics: Metrics, clock: FakeClock
) -> None:
    """320 merges of disjoint fields into one entry, 32 in flight from two clients: all land.

    A read-merge-write across round trips lost most of them: each merge read the entry
    before the others had written it, then wrote back its own field over theirs.
    """
    replicas = [counted_backend(redis_server, metrics, clock)[0] for _ in range(2)]
    maps = [identity_map(cache, metrics, clock) for cache in replicas]
    fields = {f"field_{number}": f"value_{number}" for number in range(320)}
    names = iter(fields)

    async def merger(identity: IdentityMap) -> None:
        for name in names:
            await merge(identity, {name: fields[name]})

    try:
        await asyncio.gather(*(merger(maps[number % 2]) for number in range(32)))
        assert all(cache.available for cache in replicas)
        remembered = await maps[0].identifiers("acme", VISITOR)
        assert len(fields.keys() - remembered.keys()) == 0
        assert remembered == fields
    finally:
        for cache in replicas:
            await cache.close()


async def test_a_merge_reads_once_and_writes_only_through_the_script(
    redis_server: RedisProcess, metrics: Metrics, clock: FakeClock
) -> None:
    """Unchanged entry: one GET. New or grown entry: the GET, then one EVALSHA, never a SET."""
    cache, client = counted_backend(redis_server, metrics, clock)
    identity = identity_map(cache, metrics, clock)
    try:
        await identity.learn("acme", "anon_warm_up", ALICE)
        client.commands.clear()
        assert await merge(identity, ALICE) == (ALICE, True)
        assert await merge(identity, ALICE) == (ALICE, False)
        assert await merge(identity, CUSTOMER) == ({**ALICE, **CUSTOMER}, True)
        assert client.commands == ["GET", "EVALSHA", "GET", "GET", "EVALSHA"]
    finally:
        await cache.close()


async def test_a_merge_whose_script_reply_was_lost_still_answers_changed_and_a_miss(
    redis_server: RedisProcess, metrics: Metrics, clock: FakeClock
) -> None:
    """The first EVALSHA runs but its reply is lost; redis-py's retry runs it again.

    The second run finds the fields the first one wrote. The answer used to come from it
    alone: "unchanged" (remember() returned False for an event that taught a new email)
    and "found" (a lookup that missed was counted as a hit).
    """
    client = ReplyLosingRedis(redis_server.port)
    cache = CacheBackend(
        RedisStore(client), metrics=metrics, clock=clock, unavailable_errors=(RedisError, OSError)
    )
    identity = identity_map(cache, metrics, clock)
    try:
        await merge(identity, CUSTOMER)  # the script loaded, the entry there
        client.commands.clear()
        client.lose = "EVALSHA"
        assert await merge(identity, {**CUSTOMER, **ALICE}) == ({**CUSTOMER, **ALICE}, True)
        assert client.lost == ["EVALSHA"]
        assert client.commands == ["GET", "EVALSHA"]  # the retry is redis-py's, inside
        assert cache.available

        client.lose = "EVALSHA"
        other = event("anon_new_visitor", traits={"email": "new@example.com"})
        assert await identity.remember("acme", other, LINKING_KEYS)
        assert client.lost == ["EVALSHA", "EVALSHA"]
        misses = metrics.registry.get_sample_value(
            "amperity_signal_cache_total", {"cache": "ident", "result": "miss"}
        )
        assert misses == 2  # the warm-up's, and the new visitor's although retried
    finally:
        await cache.close()


async def test_a_merge_renews_the_entry_only_past_half_its_ttl(
    backend: CacheBackend, inspector: redis.Redis, metrics: Metrics, clock: FakeClock
) -> None:
    """An unchanged merge costs no write until half the TTL passed, then writes a full TTL.

    Redis's own clock does not follow the fake one, so the test ages the key by hand.
    """
    identity = identity_map(backend, metrics, clock)
    await merge(identity, ALICE)
    written = await stored_entry(inspector)
    assert written == {**ALICE, RENEW_AFTER: pytest.approx(clock() + TTL / 2)}
    assert await inspector.pttl(KEY) > (TTL - DAY) * 1000

    clock.advance(12 * DAY)
    await inspector.pexpire(KEY, int(18 * DAY * 1000))
    assert await merge(identity, ALICE) == (ALICE, False)
    assert await stored_entry(inspector) == written
    assert await inspector.pttl(KEY) <= 18 * DAY * 1000

    clock.advance(4 * DAY)
    await inspector.pexpire(KEY, int(14 * DAY * 1000))
    assert await merge(identity, ALICE) == (ALICE, False)
    assert await stored_entry(inspector) == {**ALICE, RENEW_AFTER: pytest.approx(clock() + TTL / 2)}
    assert await inspector.pttl(KEY) > (TTL - DAY) * 1000


async def test_a_read_past_half_the_ttl_renews_the_entry(
    backend: CacheBackend, inspector: redis.Redis, metrics: Metrics, clock: FakeClock
) -> None:
    """A cookie-only use past half the TTL rewrites the entry with a full TTL."""
    identity = identity_map(backend, metrics, clock)
    await merge(identity, ALICE)
    clock.advance(16 * DAY)
    await inspector.pexpire(KEY, int(14 * DAY * 1000))
    assert await identity.identifiers("acme", VISITOR) == ALICE
    assert await stored_entry(inspector) == {**ALICE, RENEW_AFTER: pytest.approx(clock() + TTL / 2)}
    assert await inspector.pttl(KEY) > (TTL - DAY) * 1000


async def test_a_renewing_read_keeps_a_field_merged_after_it_read_the_entry(
    redis_server: RedisProcess, inspector: redis.Redis, metrics: Metrics, clock: FakeClock
) -> None:
    """A renewal rewrites the entry as Redis holds it, not as the read saw it.

    Another replica merges a field between the read's GET and its renewal; a SET of what
    the read had seen wrote that field away.
    """
    reader_cache, reader_client = counted_backend(redis_server, metrics, clock)
    writer_cache, _ = counted_backend(redis_server, metrics, clock)
    reader = identity_map(reader_cache, metrics, clock)
    writer = identity_map(writer_cache, metrics, clock)
    try:
        await merge(writer, ALICE)
        clock.advance(16 * DAY)
        reader_client.after_get = lambda: merge(writer, CUSTOMER)
        assert await reader.identifiers("acme", VISITOR) == ALICE
        assert reader_client.after_get is None  # the other replica's merge did run
        assert await reader.identifiers("acme", VISITOR) == {**ALICE, **CUSTOMER}
        renewed = {**ALICE, **CUSTOMER, RENEW_AFTER: pytest.approx(clock() + TTL / 2)}
        assert await stored_entry(inspector) == renewed
    finally:
        await reader_cache.close()
        await writer_cache.close()


async def test_entries_written_by_the_previous_version_are_read_and_merged(
    backend: CacheBackend, inspector: redis.Redis, metrics: Metrics, clock: FakeClock
) -> None:
    """An entry as the GET/SET version wrote it keeps its fields; one without a time renews."""
    identity = identity_map(backend, metrics, clock)
    previous = orjson.dumps({**ALICE, RENEW_AFTER: clock() + TTL / 2})
    await inspector.set(KEY, previous, px=int(TTL * 1000))
    assert await merge(identity, ALICE) == (ALICE, False)
    assert await inspector.get(KEY) == previous
    assert await merge(identity, CUSTOMER) == ({**ALICE, **CUSTOMER}, True)

    # An older release's entry has no renewal time: its next use rewrites it once.
    await inspector.set(KEY, orjson.dumps(ALICE), px=int(TTL * 1000))
    assert await merge(identity, ALICE) == (ALICE, False)
    assert await stored_entry(inspector) == {**ALICE, RENEW_AFTER: pytest.approx(clock() + TTL / 2)}


async def test_a_flushed_script_cache_is_reloaded_without_an_outage(
    redis_server: RedisProcess, inspector: redis.Redis, metrics: Metrics, clock: FakeClock
) -> None:
    """After SCRIPT FLUSH the next merge answers NOSCRIPT, loads the script and still lands."""
    cache, client = counted_backend(redis_server, metrics, clock)
    identity = identity_map(cache, metrics, clock)
    try:
        await merge(identity, ALICE)
        await inspector.script_flush()
        client.commands.clear()
        assert await merge(identity, CUSTOMER) == ({**ALICE, **CUSTOMER}, True)
        assert cache.available
        assert client.commands == ["GET", "EVALSHA", "SCRIPT LOAD", "EVALSHA"]
        client.commands.clear()
        await merge(identity, {"user_id": "u-2"})
        assert client.commands == ["GET", "EVALSHA"]
    finally:
        await cache.close()


async def test_a_redis_restart_between_merges_reloads_the_script_at_once(
    redis_server: RedisProcess, backend: CacheBackend, metrics: Metrics, clock: FakeClock
) -> None:
    """A restarted Redis has no scripts and dead pooled connections: the next merge lands."""
    identity = identity_map(backend, metrics, clock)
    await merge(identity, ALICE)
    redis_server.kill()
    redis_server.start()
    # The restarted Redis is empty: the merge starts a new entry.
    assert await merge(identity, CUSTOMER) == (CUSTOMER, True)
    assert backend.available
    assert await identity.identifiers("acme", VISITOR) == CUSTOMER


async def test_merges_while_redis_is_down_degrade_then_land_again(
    redis_server: RedisProcess, backend: CacheBackend, metrics: Metrics, clock: FakeClock
) -> None:
    """Redis down: a merge answers the event's own fields, counted as a lost read; back: kept."""
    identity = identity_map(backend, metrics, clock)
    redis_server.kill()
    assert await merge(identity, ALICE) == (ALICE, True)
    assert await merge(identity, ALICE) == (ALICE, True)  # skipped: no second timeout
    assert not backend.available
    lost = metrics.registry.get_sample_value(
        "amperity_signal_cache_total", {"cache": "ident", "result": "error"}
    )
    assert lost == 2

    redis_server.start()
    clock.advance(1)
    assert await merge(identity, ALICE) == (ALICE, True)
    assert backend.available
    assert await merge(identity, CUSTOMER) == ({**ALICE, **CUSTOMER}, True)


@dataclass(frozen=True)
class MergeRule:
    """One case of the merge rule: an entry, what an event teaches, what the entry becomes."""

    before: dict[str, str]
    learned: dict[str, str]
    after: dict[str, str]
    changed: bool


MERGE_RULES = {
    "a new visitor": MergeRule({}, ALICE, ALICE, changed=True),
    "the same identifiers again": MergeRule(ALICE, ALICE, ALICE, changed=False),
    "another identifier": MergeRule(ALICE, CUSTOMER, {**ALICE, **CUSTOMER}, changed=True),
    "nothing learned": MergeRule({**ALICE, **CUSTOMER}, {}, {**ALICE, **CUSTOMER}, changed=False),
    "another user on the same browser": MergeRule(
        {**ALICE, **CUSTOMER}, {"user_id": "cust-2"}, {"user_id": "cust-2"}, changed=True
    ),
    "a value needing JSON escapes": MergeRule(
        {}, {"user_id": 'a/b"c\\d\u00e9'}, {"user_id": 'a/b"c\\d\u00e9'}, changed=True
    ),
}


@pytest.mark.parametrize("case", MERGE_RULES)
@pytest.mark.parametrize("backend_kind", ["memory", "redis"])
async def test_memory_and_redis_merges_follow_the_same_rules(
    request: pytest.FixtureRequest,
    backend_kind: str,
    case: str,
    metrics: Metrics,
    clock: FakeClock,
) -> None:
    """The Lua merge and the memory store's give the same fields and the same 'changed'."""
    rule = MERGE_RULES[case]
    cache = memory_or_redis(request, backend_kind, metrics, clock)
    identity = identity_map(cache, metrics, clock)
    try:
        if rule.before:
            await merge(identity, rule.before)
        assert await merge(identity, rule.learned) == (rule.after, rule.changed)
        assert await identity.identifiers("acme", VISITOR) == rule.after
    finally:
        await cache.close()
