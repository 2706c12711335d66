"""The page's visitor against a real redis-server: round trips, counts and outages."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import pytest
import redis.asyncio as redis
from redis.exceptions import ConnectionError as RedisConnectionError

from amperity_signal.browser import BrowserProfiles, ConsentLedger
from amperity_signal.config import CacheSettings, IntegrationSettings
from amperity_signal.enrich import CacheBackend, Enricher, MemoryStore, build_cache
from amperity_signal.enrich.cache import DEFAULT_RETRY_INTERVAL
from amperity_signal.enrich.stores import COPY_OBJECT_SCRIPT
from amperity_signal.errors import AmperityRejected
from amperity_signal.metrics import Metrics

from .enrich_fakes import FakeClock, FakeProfileClient, event, integration
from .redis_support import ANSWER_SECONDS, RedisProcess
from .test_enrich_redis import redis_enricher

ALICE = {"email": "alice@example.com"}
BOB = "anon_bob"
"""A visitor known by its cookie alone: the identity map has no entry for it."""


def personalised() -> IntegrationSettings:
    """An integration whose events' category picks the personalised attributes."""
    return integration(
        personalisation_enabled=True,
        personalisation_context_mappings=[
            {"source": "properties.category", "target": "pageCategory"}
        ],
    )


async def reads(inspector: redis.Redis) -> tuple[int, int]:
    """How many GET and MGET commands Redis has served so far."""
    stats: dict[str, Any] = await inspector.info("commandstats")
    get, mget = (stats.get(f"cmdstat_{name}", {}).get("calls", 0) for name in ("get", "mget"))
    return get, mget


async def reads_since(inspector: redis.Redis, before: tuple[int, int]) -> tuple[int, int]:
    """The (GET, MGET) commands Redis has served since ``reads`` gave ``before``."""
    get, mget = await reads(inspector)
    return get - before[0], mget - before[1]


@pytest.fixture
def enricher(
    backend: CacheBackend, client: FakeProfileClient, metrics: Metrics, clock: FakeClock
) -> Enricher:
    """The enricher on Redis, its partner knowing alice (by email) and bob (by cookie)."""
    return redis_enricher(backend, with_bob(client), metrics, clock)


def memory_enricher(
    client: FakeProfileClient, clock: FakeClock
) -> tuple[CacheBackend, Enricher, Metrics]:
    """An enricher of ``client`` with the memory store as its cache; the cache, its metrics."""
    metrics = Metrics()
    backend = CacheBackend(MemoryStore(1000, clock=clock), metrics=metrics, clock=clock)
    enricher = Enricher(
        CacheSettings(jitter=0),
        client_for=lambda _id: client,
        cache=backend,
        metrics=metrics,
        clock=clock,
    )
    return backend, enricher, metrics


def cache_counts(metrics: Metrics) -> dict[tuple[str, str], float]:
    """Every ``amperity_signal_cache_total`` sample, by (kind, result)."""
    return {
        (sample.labels["cache"], sample.labels["result"]): sample.value
        for family in metrics.registry.collect()
        if family.name == "amperity_signal_cache"
        for sample in family.samples
        if sample.name == "amperity_signal_cache_total"
    }


def counted_since(before: dict[tuple[str, str], float], metrics: Metrics) -> dict[Any, float]:
    """The cache counts that grew since ``before``, by how much."""
    after = cache_counts(metrics)
    grown = {label: value - before.get(label, 0.0) for label, value in after.items()}
    return {label: value for label, value in grown.items() if value}


def with_bob(client: FakeProfileClient) -> FakeProfileClient:
    """``client`` also knowing bob, through his cookie."""
    client.add("p-bob", {"Persona": "Browser", "LifetimeTier": "Silver"}, device_cookie=BOB)
    return client


Page = Callable[[Enricher], Awaitable[tuple[dict[str, Any], dict[str, Any]]]]


async def memory_page(
    client: FakeProfileClient,
    clock: FakeClock,
    prepare: Callable[[Enricher], Awaitable[None]],
    page: Page,
) -> tuple[Any, dict[Any, float]]:
    """``page``'s answer and the cache counts it adds, with the memory store as the cache.

    ``prepare`` runs first (filling the cache), uncounted. What Redis counts must match.
    """
    _, enricher, metrics = memory_enricher(client, clock)
    await prepare(enricher)
    before = cache_counts(metrics)
    answer = await page(enricher)
    return answer, counted_since(before, metrics)


async def redis_page(
    enricher: Enricher,
    inspector: redis.Redis,
    metrics: Metrics,
    prepare: Callable[[Enricher], Awaitable[None]],
    page: Page,
) -> tuple[Any, tuple[int, int], dict[Any, float]]:
    """``page``'s answer, its (GET, MGET) commands and the cache counts it adds, on Redis.

    ``metrics`` are the enricher's; ``prepare`` runs first, uncounted.
    """
    await prepare(enricher)
    before, counted = await reads(inspector), cache_counts(metrics)
    answer = await page(enricher)
    return answer, await reads_since(inspector, before), counted_since(counted, metrics)


def fail_reads(
    monkeypatch: pytest.MonkeyPatch,
    backend: CacheBackend,
    fails: Callable[[Sequence[str]], bool],
) -> None:
    """Make the store's GET and MGET of the keys ``fails`` picks refuse the connection."""
    store = backend.store
    get, multi_get = store.get, store.multi_get

    def check(keys: Sequence[str]) -> None:
        if fails(keys):
            raise RedisConnectionError("connection refused")

    async def failing_get(key: str) -> bytes | None:
        check([key])
        return await get(key)

    async def failing_multi_get(keys: Sequence[str]) -> list[bytes | None]:
        check(keys)
        return await multi_get(keys)

    monkeypatch.setattr(store, "get", failing_get)
    monkeypatch.setattr(store, "multi_get", failing_multi_get)


def cache_count(metrics: Metrics, kind: str, result: str) -> float:
    """``amperity_signal_cache_total`` for one kind and result, as a scrape reads it."""
    labels = {"cache": kind, "result": result}
    return metrics.registry.get_sample_value("amperity_signal_cache_total", labels) or 0.0


async def test_a_page_reads_attributes_and_latest_personalised_in_one_round_trip(
    enricher: Enricher,
    inspector: redis.Redis,
    metrics: Metrics,
) -> None:
    """A cached visitor costs three round trips, four before.

    The identity map with the cookie's resolution (one MGET), the remembered email's
    resolution (one GET; the cookie's was read with the map), then one MGET for both the
    attributes and the latest personalised entry (those two were a GET each).
    """
    settings = personalised()
    event_of_alice = event(traits=ALICE, properties={"category": "bags"})
    await enricher.enrich(settings, event_of_alice, deadline=None)
    before = await reads(inspector)
    hits = cache_count(metrics, "perslast", "hit"), cache_count(metrics, "attrs", "hit")
    attributes, latest = await enricher.browser_attributes(settings, "anon_abc123", deadline=None)
    trips = await reads_since(inspector, before)
    assert attributes["Persona"] == "Value Hunter"
    assert latest == {"Offer": "bags-promo"}
    assert trips == (1, 2)
    # Each entry read is counted once, as a hit of its own kind.
    assert cache_count(metrics, "perslast", "hit") == hits[0] + 1
    assert cache_count(metrics, "attrs", "hit") == hits[1] + 1


async def test_a_page_without_a_personalised_entry_gets_none_counted_as_a_miss(
    enricher: Enricher,
    inspector: redis.Redis,
    metrics: Metrics,
) -> None:
    """No personalisation yet: ``{}``, the entry's read a miss, in the same round trips."""
    await enricher.enrich(integration(), event(traits=ALICE), deadline=None)
    before = await reads(inspector)
    misses = cache_count(metrics, "perslast", "miss")
    attributes, latest = await enricher.browser_attributes(
        integration(), "anon_abc123", deadline=None
    )
    trips = await reads_since(inspector, before)
    assert attributes["Persona"] == "Value Hunter"
    assert latest == {}
    assert trips == (1, 2)
    assert cache_count(metrics, "perslast", "miss") == misses + 1


async def test_a_page_of_a_visitor_the_identity_map_does_not_know_costs_two_round_trips(
    enricher: Enricher,
    inspector: redis.Redis,
    client: FakeProfileClient,
    metrics: Metrics,
    clock: FakeClock,
) -> None:
    """No identity-map entry (the common anonymous page): two round trips, three before.

    The identity map is read with the cookie's resolution (one MGET, was a GET each),
    then the attributes with the latest personalised entry (one MGET). Answers and cache
    counts are the memory store's: each entry read once, as a hit or a miss of its kind.
    """
    settings = personalised()

    async def prepare(enricher: Enricher) -> None:
        await enricher.enrich(settings, event(BOB, properties={"category": "shoes"}), deadline=None)

    async def page(enricher: Enricher) -> tuple[dict[str, Any], dict[str, Any]]:
        return await enricher.browser_attributes(settings, BOB, deadline=None)

    answer, trips, counted = await redis_page(enricher, inspector, metrics, prepare, page)
    assert answer == ({"Persona": "Browser", "LifetimeTier": "Silver"}, {"Offer": "shoes-promo"})
    assert trips == (0, 2)
    assert counted == {
        ("ident", "miss"): 1,
        ("res", "hit"): 1,
        ("attrs", "hit"): 1,
        ("perslast", "hit"): 1,
    }
    assert (answer, counted) == await memory_page(client, clock, prepare, page)


async def test_a_page_of_a_visitor_the_identity_map_knows_counts_each_read_once(
    enricher: Enricher,
    inspector: redis.Redis,
    client: FakeProfileClient,
    metrics: Metrics,
    clock: FakeClock,
) -> None:
    """An identity-map entry: the cookie's resolution, read ahead, is counted once.

    The visitor resolves through the remembered email, with the answer and the cache
    counts of the memory store, in the round trips it took before.
    """

    async def prepare(enricher: Enricher) -> None:
        await enricher.enrich(integration(), event(traits=ALICE), deadline=None)

    async def page(enricher: Enricher) -> tuple[dict[str, Any], dict[str, Any]]:
        return await enricher.browser_attributes(integration(), "anon_abc123", deadline=None)

    answer, trips, counted = await redis_page(enricher, inspector, metrics, prepare, page)
    assert answer == ({"Persona": "Value Hunter", "LifetimeTier": "Gold"}, {})
    assert trips == (1, 2)  # three round trips, as before (one GET is now an MGET)
    assert counted == {
        ("ident", "hit"): 1,
        ("res", "hit"): 1,  # the email's
        ("res", "miss"): 1,  # the cookie's, never looked up (the email matched first)
        ("attrs", "hit"): 1,
        ("perslast", "miss"): 1,
    }
    assert (answer, counted) == await memory_page(client, clock, prepare, page)


async def test_a_page_of_an_unknown_cookie_counts_each_lost_read_once_in_an_outage(
    enricher: Enricher,
    redis_server: RedisProcess,
    client: FakeProfileClient,
    metrics: Metrics,
) -> None:
    """Redis gone: each read the page makes counts one lost read, the read-ahead's too.

    One for the identity map, one for the cookie's resolution (read ahead, counted when
    the cache's walk is handed it; the partner's walk re-reads it uncounted: it counted
    twice before), one for the latest personalised entry; bob is resolved through the
    partner.
    """
    redis_server.kill()
    counted = cache_counts(metrics)
    answer = await enricher.browser_attributes(integration(), BOB, deadline=None)
    assert answer == ({"Persona": "Browser", "LifetimeTier": "Silver"}, {})
    assert client.lookups == [("device_cookie", BOB)]
    lost = {label: n for label, n in counted_since(counted, metrics).items() if "error" in label}
    assert lost == {("ident", "error"): 1, ("res", "error"): 1, ("perslast", "error"): 1}
    degraded = {"integration": "acme", "cause": "cache_unavailable"}
    assert metrics.registry.get_sample_value("amperity_signal_enrichment_degraded_total", degraded)


async def test_a_page_whose_remembered_resolutions_read_fails_counts_both_lost(
    enricher: Enricher,
    backend: CacheBackend,
    metrics: Metrics,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Redis failing after the identity map's read: the cookie's read-ahead is lost too.

    As when both resolutions were one read: each counted as one lost read (at the cache's
    walk; the partner's walk re-reads them uncounted: 4 before, each twice), and the
    visitor resolved through the partner.
    """
    await enricher.enrich(integration(), event(traits=ALICE), deadline=None)
    fail_reads(monkeypatch, backend, lambda keys: all(":res:" in key for key in keys))
    counted = cache_counts(metrics)
    answer = await enricher.browser_attributes(integration(), "anon_abc123", deadline=None)
    assert answer == ({"Persona": "Value Hunter", "LifetimeTier": "Gold"}, {})
    lost = {label: n for label, n in counted_since(counted, metrics).items() if "error" in label}
    assert lost[("res", "error")] == 2
    assert ("ident", "error") not in lost


async def test_a_page_read_during_an_outage_answers_nothing_and_counts_lost_reads(
    enricher: Enricher,
    backend: CacheBackend,
    redis_server: RedisProcess,
    metrics: Metrics,
) -> None:
    """Redis gone after the visitor was cached: the page gets ({}, {}), never an error.

    The lost reads are counted as errors (the enrichment as degraded).
    """
    await enricher.enrich(integration(), event(traits=ALICE), deadline=None)
    redis_server.kill()
    assert await enricher.browser_attributes(integration(), "anon_abc123", deadline=None) == (
        {},
        {},
    )
    assert not backend.available
    assert cache_count(metrics, "ident", "error") >= 1


async def test_a_page_whose_attributes_read_fails_answers_as_without_a_cache(
    enricher: Enricher,
    backend: CacheBackend,
    client: FakeProfileClient,
    metrics: Metrics,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Redis failing at the attributes' read: the page is answered as with no cache.

    The visitor's profile comes from the partner; the enrichment counts as degraded, each
    lost read once as an error.
    """
    await enricher.enrich(integration(), event(traits=ALICE), deadline=None)
    fail_reads(monkeypatch, backend, lambda keys: any(":attrs:" in key for key in keys))
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


CONSENTING = integration(browser_consent="functional", browser_attribute_allowlist=["Persona"])
"""An integration whose page sees a visitor's Persona only with functional consent."""


COOKIE_CONSENTING = integration(
    linking_keys=[{"source": "canonical_id", "key": "device_cookie"}],
    browser_consent="functional",
    browser_attribute_allowlist=["Persona"],
)
"""``CONSENTING`` with linking keys the identity map never fills in: the page's cookie alone."""


async def consent_page(
    backend: CacheBackend,
    enricher: Enricher,
    metrics: Metrics,
    visitor: str,
    consent: dict[str, Any] | None,
    *,
    inspector: redis.Redis | None = None,
    settings: IntegrationSettings = CONSENTING,
) -> tuple[dict[str, Any], tuple[int, int], dict[Any, float]]:
    """A page of ``visitor`` (after an event, ``consent`` recorded unless None), as served.

    Its answer, its (GET, MGET) commands (with an ``inspector``; else (0, 0)) and the cache
    counts it adds; the consent ledger shares the enricher's cache, as ``build_server``
    wires them. ``metrics`` are the enricher's.
    """
    profiles = BrowserProfiles(enricher, ConsentLedger(backend))
    traits = ALICE if visitor == "anon_abc123" else {}
    await enricher.enrich(settings, event(visitor, traits=traits), deadline=None)
    if consent is not None:
        await profiles.record_consent(settings, visitor, consent)
    before = await reads(inspector) if inspector is not None else (0, 0)
    counted = cache_counts(metrics)
    answer = await profiles.attributes(settings, visitor, deadline=1e9)
    trips = await reads_since(inspector, before) if inspector is not None else (0, 0)
    return answer, trips, counted_since(counted, metrics)


async def memory_consent_page(
    client: FakeProfileClient,
    clock: FakeClock,
    visitor: str,
    consent: dict[str, Any] | None,
    settings: IntegrationSettings = CONSENTING,
) -> tuple[dict[str, Any], dict[Any, float]]:
    """``consent_page``'s answer and counts with the memory store as the cache."""
    backend, enricher, metrics = memory_enricher(client, clock)
    page = await consent_page(backend, enricher, metrics, visitor, consent, settings=settings)
    return page[0], page[2]


@pytest.mark.parametrize(
    ("settings", "visitor", "trips", "answer", "reads"),
    [
        # The identity map, the cookie's resolution and the consent in one MGET; then the
        # attributes with the latest personalised entry. Three round trips before.
        (
            CONSENTING,
            BOB,
            (0, 2),
            {"Persona": "Browser"},
            {("ident", "miss"): 1, ("res", "hit"): 1},
        ),
        # The same, then the remembered email's resolution (a GET). Four before.
        (
            CONSENTING,
            "anon_abc123",
            (1, 2),
            {"Persona": "Value Hunter"},
            {("ident", "hit"): 1, ("res", "hit"): 1, ("res", "miss"): 1},
        ),
        # No identity map to read: the consent with the cookie's resolution, then the
        # attributes with the latest entry. Three before (two GETs, then the MGET).
        (COOKIE_CONSENTING, BOB, (0, 2), {"Persona": "Browser"}, {("res", "hit"): 1}),
    ],
    ids=["map-anonymous", "map-identified", "cookie"],
)
async def test_a_consented_page_reads_its_consent_with_its_first_read(  # noqa: PLR0917 - fixtures and parameters
    enricher: Enricher,
    backend: CacheBackend,
    inspector: redis.Redis,
    client: FakeProfileClient,
    metrics: Metrics,
    clock: FakeClock,
    settings: IntegrationSettings,
    visitor: str,
    trips: tuple[int, int],
    answer: dict[str, Any],
    reads: dict[Any, float],
) -> None:
    """A page of a consenting visitor costs no round trip for its consent on Redis.

    Its answer and cache counts are the memory store's: each entry read counted once (the
    consent's read is never counted as a hit or a miss, as before).
    """
    granted = {"functional": True}
    page = await consent_page(
        backend, enricher, metrics, visitor, granted, inspector=inspector, settings=settings
    )
    assert page[:2] == (answer, trips)
    assert page[2] == {**reads, ("attrs", "hit"): 1, ("perslast", "miss"): 1}
    memory = await memory_consent_page(client, clock, visitor, granted, settings)
    assert (page[0], page[2]) == memory


@pytest.mark.parametrize("consent", [{"functional": False}, {"marketing": True}, None])
@pytest.mark.parametrize("settings", [CONSENTING, COOKIE_CONSENTING], ids=["map", "cookie"])
async def test_a_page_without_consent_reads_nothing_past_it(  # noqa: PLR0917 - fixtures and parameters
    enricher: Enricher,
    backend: CacheBackend,
    inspector: redis.Redis,
    client: FakeProfileClient,
    metrics: Metrics,
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
    consent: dict[str, Any] | None,
    settings: IntegrationSettings,
) -> None:
    """Withdrawn, other, no or unreadable consent: ``{}``, one read, nothing else counted.

    The identity map (when the linking keys use it) and the cookie's resolution, read with
    the consent in one ``MGET`` (a ``GET`` of the consent alone before), are left unused
    and uncounted, as the memory store leaves them unread. A failed read fails closed, its
    lost read counted as the consent's alone, with no partner call.
    """
    answer, trips, counted = await consent_page(
        backend, enricher, metrics, "anon_abc123", consent, inspector=inspector, settings=settings
    )
    assert (answer, trips, counted) == ({}, (0, 1), {})
    memory = await memory_consent_page(client, clock, "anon_abc123", consent, settings)
    assert memory == ({}, {})
    # Granted now, but unreadable: the page fails closed.
    profiles = BrowserProfiles(enricher, ConsentLedger(backend))
    await profiles.record_consent(settings, "anon_abc123", {"functional": True})
    fail_reads(monkeypatch, backend, lambda keys: any(key.startswith("consent:") for key in keys))
    calls = len(client.lookups), len(client.gets)
    before = cache_counts(metrics)
    assert await profiles.attributes(settings, "anon_abc123", deadline=1e9) == {}
    assert counted_since(before, metrics) == {("consent", "error"): 1}
    assert (len(client.lookups), len(client.gets)) == calls


async def test_a_page_without_map_keys_fails_closed_counting_each_lost_read_once(  # noqa: PLR0917 - fixtures
    enricher: Enricher,
    backend: CacheBackend,
    redis_server: RedisProcess,
    client: FakeProfileClient,
    metrics: Metrics,
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A consented visitor's page whose read fails gets ``{}``: its consent is unreadable.

    The resolution's read is the consent's (one ``MGET``), so its failure fails the page
    closed, with no partner call, counting the consent's lost read alone (before: the
    consent's ``GET`` answered, the resolution's failed and the partner was asked). A page
    during the outage that follows (the store not tried), then one after its retry
    interval with Redis gone, count one lost read each all the same.
    """
    profiles = BrowserProfiles(enricher, ConsentLedger(backend))
    await enricher.enrich(COOKIE_CONSENTING, event(BOB), deadline=None)
    await profiles.record_consent(COOKIE_CONSENTING, BOB, {"functional": True})
    fail_reads(monkeypatch, backend, lambda keys: any(":res:" in key for key in keys))
    calls = len(client.lookups), len(client.gets)

    async def fails_closed() -> None:
        counted = cache_counts(metrics)
        assert await profiles.attributes(COOKIE_CONSENTING, BOB, deadline=1e9) == {}
        assert counted_since(counted, metrics) == {("consent", "error"): 1}
        assert (len(client.lookups), len(client.gets)) == calls

    await fails_closed()  # the MGET fails
    await fails_closed()  # the outage: the store is not tried
    monkeypatch.undo()
    redis_server.kill()
    clock.advance(DEFAULT_RETRY_INTERVAL + 1)
    await fails_closed()  # tried again: Redis is gone


class ArrivalClient(FakeProfileClient):
    """A Profile API that sets ``arrived`` when a lookup reaches it (then waits on ``gate``)."""

    def __init__(self) -> None:
        super().__init__()
        self.arrived = asyncio.Event()

    async def lookup(self, key: str, value: str, *, deadline: float | None) -> Any:
        self.arrived.set()
        return await super().lookup(key, value, deadline=deadline)


async def withdraw_during_the_pages_lookup(
    backend: CacheBackend, enricher: Enricher, client: ArrivalClient
) -> None:
    """A page whose lookup answers after a withdrawal gets ``{}``; after a grant, the profile."""
    profiles = BrowserProfiles(enricher, ConsentLedger(backend))
    await profiles.record_consent(COOKIE_CONSENTING, BOB, {"functional": True})
    client.gate = asyncio.Event()  # Amperity answers once the test says so
    page = asyncio.create_task(profiles.attributes(COOKIE_CONSENTING, BOB, deadline=1e9))
    await client.arrived.wait()  # the page's consent was read; its lookup is in flight
    assert not await profiles.record_consent(COOKIE_CONSENTING, BOB, {"functional": False})
    client.gate.set()
    assert await page == {}  # before: {"Persona": "Browser"}, after the withdrawal
    await profiles.record_consent(COOKIE_CONSENTING, BOB, {"functional": True})
    answer = await profiles.attributes(COOKIE_CONSENTING, BOB, deadline=1e9)
    assert answer == {"Persona": "Browser"}
    assert client.lookups == [("device_cookie", BOB)]  # the hidden answer was cached


async def test_consent_withdrawn_during_the_pages_lookup_hides_its_answer(
    backend: CacheBackend, metrics: Metrics, clock: FakeClock
) -> None:
    """A withdrawal kept while the page waits for Amperity hides that page's answer too.

    The page's consent was read before its lookup, which answers after ``RecordConsent``
    said the withdrawal was kept: the answer must not carry the profile.
    """
    client = ArrivalClient()
    enricher = redis_enricher(backend, with_bob(client), metrics, clock)
    await withdraw_during_the_pages_lookup(backend, enricher, client)


async def test_consent_withdrawn_during_the_pages_lookup_hides_it_in_memory(
    clock: FakeClock,
) -> None:
    """The same with the memory store."""
    client = ArrivalClient()
    backend, enricher, _ = memory_enricher(with_bob(client), clock)
    await withdraw_during_the_pages_lookup(backend, enricher, client)


def offer_unless_hats(_profile_id: str, context: Mapping[str, str]) -> dict[str, Any]:
    """A category's offer; Amperity refuses the hats page (a failure cached for error_ttl)."""
    if context["pageCategory"] == "hats":
        raise AmperityRejected("Amperity answered 400", reason="AMPERITY_REJECTED")
    return {"Offer": f"{context['pageCategory']}-promo"}


async def visit(enricher: Enricher, category: str) -> dict[str, Any]:
    """Alice's event on a category page; its personalised attributes."""
    page = event(traits=ALICE, properties={"category": category})
    return (await enricher.enrich(personalised(), page, deadline=None)).personalized_attributes


async def page_offer(enricher: Enricher) -> dict[str, Any]:
    """What the page is shown as alice's latest personalised attributes."""
    _, latest = await enricher.browser_attributes(personalised(), "anon_abc123", deadline=None)
    return latest


async def evalshas(inspector: redis.Redis) -> int:
    """How many EVALSHA commands Redis has served so far."""
    stats: dict[str, Any] = await inspector.info("commandstats")
    calls: int = stats.get("cmdstat_evalsha", {}).get("calls", 0)
    return calls


async def test_a_cached_personalised_result_becomes_the_pages_latest_across_replicas(
    backend: CacheBackend,
    redis_server: RedisProcess,
    inspector: redis.Redis,
    client: FakeProfileClient,
    clock: FakeClock,
) -> None:
    """Shoes, bags (on another replica), shoes again (a hit): the page shows shoes.

    Before session 23 only a fetch wrote the latest entry: the page showed bags. The hit
    reads the result with the latest entry (one MGET) and copies it (one EVALSHA) only
    when the latest entry holds another; the copy lives as long as the result. A cached
    failure (hats, dampened) is never copied.
    """
    client.personalise = offer_unless_hats
    other = build_cache(
        CacheSettings(backend="redis", redis_url=redis_server.url, jitter=0),
        Metrics(),
        clock=clock,
        redis_timeout=ANSWER_SECONDS,
    )
    first = redis_enricher(backend, client, Metrics(), clock)
    replicas = (first, first, redis_enricher(other, client, Metrics(), clock))
    try:
        for replica, category in zip(replicas, ("shoes", "hats", "bags"), strict=True):
            await visit(replica, category)
    finally:
        await other.close()
    first = replicas[0]
    assert await page_offer(first) == {"Offer": "bags-promo"}
    await inspector.script_load(COPY_OBJECT_SCRIPT)  # as serve does at start: no NOSCRIPT
    scripts = await evalshas(inspector)
    assert await visit(first, "shoes") == {"Offer": "shoes-promo"}
    assert len(client.personalised_gets) == 3  # a hit
    assert await page_offer(first) == {"Offer": "shoes-promo"}
    assert await evalshas(inspector) == scripts + 1  # the copy
    keys = await inspector.keys("amperity_signal:v1:pers*")  # pers and perslast
    shoes = [key for key in keys if await inspector.get(key) == b'{"Offer":"shoes-promo"}']
    life = [await inspector.pttl(key) for key in shoes]
    assert len(shoes) == 2 and abs(life[0] - life[1]) < 1000  # the copy expires with it
    # A repeated hit finds its result latest already: no copy, and as many round trips as
    # before (2 GETs and 2 MGETs: the result's GET became an MGET with the latest entry).
    before = await reads(inspector)
    await visit(first, "shoes")
    assert await reads_since(inspector, before) == (2, 2)
    await visit(first, "hats")  # hats' remembered failure: a dampened hit, never copied
    assert await evalshas(inspector) == scripts + 1
    assert len(client.personalised_gets) == 3
    assert await page_offer(first) == {"Offer": "shoes-promo"}


async def test_a_latest_entry_redis_refuses_to_copy_leaves_the_hit_answered(
    enricher: Enricher,
    backend: CacheBackend,
    client: FakeProfileClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Redis failing at the copy: the event still gets its cached result, no error raised."""
    for category in ("shoes", "bags"):
        await visit(enricher, category)

    async def refuse(_source: str, _destination: str) -> None:
        raise RedisConnectionError("connection refused")

    monkeypatch.setattr(backend.store, "copy_object", refuse)
    assert await visit(enricher, "shoes") == {"Offer": "shoes-promo"}
    assert len(client.personalised_gets) == 2
    assert not backend.available  # the outage is noticed, as for any failed write


async def test_copy_object_copies_a_json_object_only_on_both_stores(
    backend: CacheBackend, clock: FakeClock
) -> None:
    """An attributes object is copied with its remaining life; a failure entry, or nothing, not.

    The check is the store's own, atomic with the copy: a failure written after the hit's
    read is not copied by Redis either.
    """
    memory = MemoryStore(10, clock=clock)
    for store in (memory, backend.store):
        await store.set("latest", b'{"Offer":"bags-promo"}', 60)
        for absent_or_failure in (None, b'["error","AMPERITY_REJECTED",null]'):
            if absent_or_failure is not None:
                await store.set("result", absent_or_failure, 60)
            await store.copy_object("result", "latest")
            assert await store.get("latest") == b'{"Offer":"bags-promo"}'
        await store.set("result", b'{"Offer":"shoes-promo"}', 30)
        await store.copy_object("result", "latest")
        assert await store.get("latest") == b'{"Offer":"shoes-promo"}'
    clock.advance(29.9)
    assert await memory.get("latest") == b'{"Offer":"shoes-promo"}'
    clock.advance(0.1)  # the copy expires with its source (Redis: the PTTL, pinned above)
    assert await memory.get("latest") is None
