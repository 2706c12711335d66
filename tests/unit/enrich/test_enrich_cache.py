"""The cache layer: bounded LRU memory store, TTL jitter, and cache-less mode during outages."""

from __future__ import annotations

import logging
import random

import pytest

from amperity_signal.browser import ConsentLedger
from amperity_signal.config import CacheSettings
from amperity_signal.enrich import CacheBackend, Jitter, MemoryStore, build_cache
from amperity_signal.enrich.stores import ENTRY_OVERHEAD
from amperity_signal.errors import CacheUnavailable
from amperity_signal.metrics import Metrics
from tests.support import OutageStore

from .enrich_fakes import EnricherFactory, FakeClock, FakeProfileClient, event, integration


async def test_memory_store_evicts_the_least_recently_used_beyond_max_entries(
    clock: FakeClock,
) -> None:
    """The memory backend is bounded: the least recently used entry goes first."""
    store = MemoryStore(3, clock=clock)
    for key in ("a", "b", "c"):
        await store.set(key, b"1", ttl=60)
    await store.get("a")
    await store.set("d", b"1", ttl=60)
    assert store.keys() == ["c", "a", "d"]
    assert store.size() == 3


def cost(key: str, value: bytes) -> int:
    """What an entry counts against ``max_bytes``."""
    return len(key) + len(value) + ENTRY_OVERHEAD


async def test_memory_store_evicts_the_least_recently_used_beyond_max_bytes(
    clock: FakeClock,
) -> None:
    """Under max_bytes (not max_entries) the least recently used go until the bytes fit."""
    ten = b"0123456789"
    store = MemoryStore(100, max_bytes=3 * cost("a", ten), clock=clock)
    for key in ("a", "b", "c"):
        await store.set(key, ten, ttl=60)
    await store.get("a")
    await store.set("d", ten, ttl=60)
    assert store.keys() == ["c", "a", "d"]
    assert store.held_bytes() == 3 * cost("a", ten)
    # Two entries' worth in one value: the two least recently used make room for it.
    double = b"x" * (len(ten) + cost("a", ten))
    await store.set("e", double, ttl=60)
    assert store.keys() == ["d", "e"]
    assert store.held_bytes() == cost("d", ten) + cost("e", double)


async def test_a_personalised_result_copied_as_the_latest_counts_against_max_bytes(
    clock: FakeClock,
) -> None:
    """``get_copying_now`` (a personalised hit made the browser's latest) is an entry too.

    It placed the entry without counting it: the store held more than max_bytes, and its
    count went wrong once the copy was evicted or replaced.
    """
    value = b'{"Persona":"' + b"x" * 40 + b'"}'
    bound = 3 * cost("pers:a", value)
    store = MemoryStore(100, max_bytes=bound, clock=clock)
    await store.set("pers:a", value, ttl=60)
    await store.set("pers:b", value, ttl=60)
    assert store.get_copying_now("pers:a", "last:a") == value
    assert store.keys() == ["pers:b", "pers:a", "last:a"]
    assert store.held_bytes() == bound
    await store.set("pers:c", value, ttl=60)  # one over: the least recently used goes
    assert store.keys() == ["pers:a", "last:a", "pers:c"]
    assert store.held_bytes() == bound


async def test_replacing_an_entry_counts_its_new_value_not_both(clock: FakeClock) -> None:
    """A set over an existing key takes the old value's bytes off; a bigger one may evict."""
    store = MemoryStore(100, max_bytes=cost("a", b"x" * 100) + cost("k", b"x" * 10), clock=clock)
    await store.set("a", b"x" * 10, ttl=60)
    await store.set("k", b"x" * 10, ttl=60)
    await store.set("k", b"x" * 5, ttl=60)
    assert store.held_bytes() == cost("a", b"x" * 10) + cost("k", b"x" * 5)
    await store.set("k", b"x" * 100, ttl=60)  # fits beside "a" only if "k" counts once
    assert store.keys() == ["a", "k"]
    await store.set("a", b"x" * 11, ttl=60)  # now one byte over: "k" is the LRU, it goes
    assert store.keys() == ["a"]
    assert store.held_bytes() == cost("a", b"x" * 11)


async def test_expired_and_deleted_entries_stop_counting(clock: FakeClock) -> None:
    """An expired entry dropped by a read, a delete and a close each give their bytes back."""
    store = MemoryStore(100, max_bytes=10_000, clock=clock)
    await store.set("old", b"v" * 50, ttl=5)
    await store.set("gone", b"v" * 20, ttl=60)
    await store.set("kept", b"v" * 30, ttl=60)
    clock.advance(5)
    assert await store.get("old") is None
    await store.delete("gone")
    await store.delete("never-there")
    assert store.held_bytes() == cost("kept", b"v" * 30)
    await store.close()
    assert (store.size(), store.held_bytes()) == (0, 0)


async def test_a_value_bigger_than_max_bytes_is_not_stored_and_replaces_the_old_one(
    clock: FakeClock,
) -> None:
    """It could not fit even alone: stored, it would evict everything and still be over.

    The others stay; an older value under its key goes, as it would be stale.
    """
    store = MemoryStore(100, max_bytes=cost("k", b"x" * 100), clock=clock)
    await store.set("k", b"x" * 10, ttl=60)
    await store.set("other", b"y", ttl=60)
    await store.set("k", b"x" * 101, ttl=60)
    assert await store.get("k") is None
    assert store.keys() == ["other"]
    assert store.held_bytes() == cost("other", b"y")


async def test_the_memory_backend_holds_cache_max_bytes(clock: FakeClock) -> None:
    """``[cache] max_bytes`` reaches the store: two 600 KB values cannot share 1 MiB."""
    backend = build_cache(CacheSettings(max_bytes=1_048_576), Metrics(), clock=clock)
    store = backend.store
    assert isinstance(store, MemoryStore)
    await store.set("first", b"x" * 600_000, ttl=60)
    await store.set("second", b"x" * 600_000, ttl=60)
    assert store.keys() == ["second"]
    assert CacheSettings().max_bytes == 256 * 1024 * 1024


async def test_memory_store_expires_entries_on_the_injected_clock(clock: FakeClock) -> None:
    """An entry is readable until its TTL has passed on the clock, then gone."""
    store = MemoryStore(10, clock=clock)
    await store.set("k", b"v", ttl=5)
    clock.advance(4.9)
    assert await store.multi_get(["k", "missing"]) == [b"v", None]
    clock.advance(0.1)
    assert await store.get("k") is None


async def test_enricher_cache_stays_within_max_entries(
    make_enricher: EnricherFactory, client: FakeProfileClient, metrics: Metrics, clock: FakeClock
) -> None:
    """Many visitors never grow the memory backend past max_entries."""
    settings = CacheSettings(jitter=0, max_entries=100)
    store = MemoryStore(settings.max_entries, clock=clock)
    enricher = make_enricher(settings=settings, cache=CacheBackend(store, metrics=metrics))
    for number in range(200):
        await enricher.enrich(integration(), event(f"anon_{number}"), deadline=None)
    assert store.size() == 100


def test_jitter_spreads_ttls_within_the_fraction() -> None:
    """Expiries vary by at most ±jitter and are reproducible with a seeded rng."""
    jitter = Jitter(0.1, random.Random(1))
    ttls = [jitter(100) for _ in range(200)]
    assert all(90 <= ttl <= 110 for ttl in ttls)
    assert len(set(ttls)) > 1
    assert Jitter(0)(100) == 100


def test_build_cache_chooses_the_backend() -> None:
    """Memory gives the bounded LRU store; redis gives a Redis store (no connection yet)."""
    memory = build_cache(CacheSettings(), Metrics())
    assert isinstance(memory.store, MemoryStore)
    redis_backed = build_cache(CacheSettings(backend="redis"), Metrics())
    assert type(redis_backed.store).__name__ == "RedisStore"


async def test_cache_outage_degrades_logs_once_and_recovers(
    make_enricher: EnricherFactory,
    client: FakeProfileClient,
    metrics: Metrics,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A failing store means no cache (counted, logged once), and the cache returns after."""
    store = OutageStore(clock)
    enricher = make_enricher(cache=CacheBackend(store, metrics=metrics, clock=clock))
    store.down = True
    with caplog.at_level(logging.INFO, logger="amperity_signal.enrich"):
        for _ in range(3):
            result = await enricher.enrich(
                integration(), event(traits={"email": "alice@example.com"}), deadline=None
            )
            assert result.resolved
        assert store.calls == 1  # the store is skipped for the retry interval
        store.down = False
        clock.advance(1)
        await enricher.enrich(
            integration(), event(traits={"email": "alice@example.com"}), deadline=None
        )
        lookups = len(client.lookups)
        again = await enricher.enrich(
            integration(), event(traits={"email": "alice@example.com"}), deadline=None
        )
    assert again.cache_status == "hit"
    assert len(client.lookups) == lookups == 4
    degraded = metrics.registry.get_sample_value(
        "amperity_signal_enrichment_degraded_total",
        {"integration": "acme", "cause": "cache_unavailable"},
    )
    assert degraded == 3
    messages = [r.getMessage() for r in caplog.records]
    assert sum("cache unavailable" in m for m in messages) == 1
    assert sum("cache available again" in m for m in messages) == 1


async def test_an_enrichment_during_an_outage_counts_each_lost_read_once(
    make_enricher: EnricherFactory, client: FakeProfileClient, metrics: Metrics, clock: FakeClock
) -> None:
    """The store failing its reads: each of the visitor's resolutions counts one lost read.

    The walk that calls the partner re-reads the resolutions the cache-only walk before it
    read (and counted): its lost re-reads are not counted again.
    """
    store = OutageStore(clock)
    enricher = make_enricher(cache=CacheBackend(store, metrics=metrics, clock=clock))
    store.down = True
    result = await enricher.enrich(
        integration(), event(traits={"email": "alice@example.com"}), deadline=None
    )
    assert result.resolved
    assert len(client.lookups) == 1  # the email matched first
    lost = metrics.registry.get_sample_value(
        "amperity_signal_cache_total", {"cache": "res", "result": "error"}
    )
    assert lost == 2  # the email's and the cookie's


async def test_enricher_wraps_a_bare_store_in_a_cache_backend(
    make_enricher: EnricherFactory, client: FakeProfileClient, clock: FakeClock
) -> None:
    """A plain CacheStore (as a test's Deps may pass) works as the Enricher's cache."""
    store = MemoryStore(1000, clock=clock)
    enricher = make_enricher(cache=store)
    await enricher.enrich(
        integration(), event(traits={"email": "alice@example.com"}), deadline=None
    )
    again = await enricher.enrich(
        integration(), event(traits={"email": "alice@example.com"}), deadline=None
    )
    assert again.cache_status == "hit"
    assert store.size() > 0


async def test_consent_reads_during_an_outage_count_under_one_bounded_label(
    metrics: Metrics, clock: FakeClock
) -> None:
    """A lost consent read is counted as cache="consent", never under a per-visitor label."""
    store = OutageStore(clock)
    store.down = True
    ledger = ConsentLedger(CacheBackend(store, metrics=metrics, clock=clock))
    for number in range(3):
        assert not await ledger.allows("acme", f"anon_{number}", "marketing")
    labels = {
        sample.labels["cache"]
        for family in metrics.registry.collect()
        if family.name == "amperity_signal_cache"
        for sample in family.samples
        if sample.name.endswith("_total")
    }
    assert labels == {"consent"}
    errors = metrics.registry.get_sample_value(
        "amperity_signal_cache_total", {"cache": "consent", "result": "error"}
    )
    assert errors == 3


async def test_a_consent_state_recorded_during_an_outage_is_refused_not_pretended_kept(
    metrics: Metrics, clock: FakeClock
) -> None:
    """record() raises CacheUnavailable (nothing kept); an event's state is held instead.

    Before, record() answered the offered grant as if kept, while allows() said no and,
    once the store was back, the withdrawal kept before the outage was still in force.
    """
    store = OutageStore(clock)
    ledger = ConsentLedger(CacheBackend(store, metrics=metrics, clock=clock), now=clock)
    await ledger.record("acme", "anon_1", {"marketing": False})
    store.down = True
    for _ in range(2):  # the store failing, then skipped for the retry interval
        with pytest.raises(CacheUnavailable) as refused:
            await ledger.record("acme", "anon_1", {"marketing": True})
        assert refused.value.reason == "CACHE_UNAVAILABLE"
        assert refused.value.retry_after == 1.0
        assert refused.value.message.startswith("consent not recorded:")
        assert refused.value.metadata == {"retry_after_seconds": "1"}
        assert refused.value.__cause__ is None  # the store's error is logged, not passed on
    grant = {"anonymous_id": "anon_1", "context": {"consent": {"marketing": True}}}
    await ledger.remember("acme", grant)  # held: the event is delivered all the same
    assert not await ledger.allows("acme", "anon_1", "marketing")

    store.down = False
    clock.advance(1)
    assert not await ledger.allows("acme", "anon_1", "marketing")  # the grants not written
    assert await ledger.record("acme", "anon_1", {"marketing": True}) == {"marketing": True}
    assert await ledger.allows("acme", "anon_1", "marketing")
