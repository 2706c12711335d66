"""The identity map's sliding expiry: an entry lives identity_ttl after its last use."""

from __future__ import annotations

import asyncio
import hashlib

from amperity_signal.config import CacheSettings
from amperity_signal.enrich import CacheBackend, Enricher, MemoryStore
from amperity_signal.enrich.keys import kind_of
from amperity_signal.metrics import Metrics

from .enrich_fakes import EnricherFactory, FakeClock, event, integration

DAY = 86_400.0
ALICE = {"email": "alice@example.com"}
ALICE_SHA = hashlib.sha256(b"alice@example.com").hexdigest()


class CountingStore(MemoryStore):
    """The memory store, counting writes per cache kind."""

    def __init__(self, max_entries: int, *, clock: FakeClock) -> None:
        super().__init__(max_entries, clock=clock)
        self.writes: dict[str, int] = {}

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        self.writes[kind_of(key)] = self.writes.get(kind_of(key), 0) + 1
        await super().set(key, value, ttl)


def counted(
    make_enricher: EnricherFactory,
    cache_settings: CacheSettings,
    clock: FakeClock,
    metrics: Metrics,
) -> tuple[Enricher, CountingStore]:
    """An Enricher over a write-counting store, its wall clock the fake clock."""
    store = CountingStore(cache_settings.max_entries, clock=clock)
    cache = CacheBackend(store, metrics=metrics, clock=clock)
    return make_enricher(cache=cache, wall_clock=clock), store


async def test_a_visitor_active_every_day_keeps_their_identity(
    make_enricher: EnricherFactory, clock: FakeClock
) -> None:
    """Daily cookie-only events keep resolving through the email learned 40 days before."""
    enricher = make_enricher(wall_clock=clock)
    await enricher.enrich(integration(), event(type="identify", traits=ALICE), deadline=None)
    for _ in range(40):  # identity_ttl is 30 days
        clock.advance(DAY)
        result = await enricher.enrich(integration(), event(), deadline=None)
        assert result.matched_key == "email_sha256"
    assert await enricher.identity_map.identifiers("acme", "anon_abc123") == {
        "email:sha256": ALICE_SHA
    }


async def test_reading_the_identity_map_rewrites_it_only_past_half_its_ttl(
    make_enricher: EnricherFactory,
    cache_settings: CacheSettings,
    clock: FakeClock,
    metrics: Metrics,
) -> None:
    """A use costs no write while more than half the TTL remains; one write renews it."""
    enricher, store = counted(make_enricher, cache_settings, clock, metrics)
    await enricher.enrich(integration(), event(type="identify", traits=ALICE), deadline=None)
    assert store.writes["ident"] == 1
    for _ in range(3):
        clock.advance(4 * DAY)
        await enricher.enrich(integration(), event(), deadline=None)
        await enricher.enrich(integration(), event(traits=ALICE), deadline=None)
    assert store.writes["ident"] == 1  # 12 days in: more than half of 30 days remains
    clock.advance(4 * DAY)
    await enricher.enrich(integration(), event(), deadline=None)
    await enricher.enrich(integration(), event(), deadline=None)
    assert store.writes["ident"] == 2


async def test_an_unused_identity_is_forgotten_after_the_identity_ttl(
    make_enricher: EnricherFactory, clock: FakeClock
) -> None:
    """Without use, an entry still expires identity_ttl after it was written."""
    enricher = make_enricher(wall_clock=clock)
    await enricher.remember(integration(), event(traits=ALICE))
    clock.advance(30 * DAY + 1)
    assert await enricher.identity_map.identifiers("acme", "anon_abc123") == {}


async def test_an_entry_written_before_renewals_existed_is_renewed_at_its_next_use(
    make_enricher: EnricherFactory,
    cache_settings: CacheSettings,
    clock: FakeClock,
    metrics: Metrics,
) -> None:
    """An entry without a renewal time (an older release's) is rewritten once, then kept."""
    enricher, store = counted(make_enricher, cache_settings, clock, metrics)
    await enricher.remember(integration(), event(traits=ALICE))
    (key,) = store.keys()
    await store.set(key, ('{"email:sha256":"' + ALICE_SHA + '"}').encode(), 30 * DAY)
    clock.advance(20 * DAY)
    before = store.writes["ident"]
    assert await enricher.identity_map.identifiers("acme", "anon_abc123") == {
        "email:sha256": ALICE_SHA
    }
    await enricher.identity_map.identifiers("acme", "anon_abc123")
    assert store.writes["ident"] == before + 1
    clock.advance(20 * DAY)
    assert await enricher.identity_map.identifiers("acme", "anon_abc123") == {
        "email:sha256": ALICE_SHA
    }


async def test_concurrent_merges_of_one_visitor_on_the_memory_store_both_land(
    make_enricher: EnricherFactory,
) -> None:
    """Two events teaching different identifiers at once: neither is lost (memory store)."""
    enricher = make_enricher()
    keys = integration()
    await asyncio.gather(
        enricher.remember(keys, event(traits=ALICE)),
        enricher.remember(keys, event(user_id="cust-1")),
    )
    assert await enricher.identity_map.identifiers("acme", "anon_abc123") == {
        "email:sha256": ALICE_SHA,
        "user_id": "cust-1",
    }
