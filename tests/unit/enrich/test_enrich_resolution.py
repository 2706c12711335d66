"""Resolution through linking keys, caching, dampening and single flight."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from amperity_signal.config import CacheSettings
from amperity_signal.enrich import Enricher, EnrichResult, MemoryStore
from amperity_signal.enrich.keys import cache_key, context_digest, rekind, sha256_hex
from amperity_signal.enrich.messages import LINKING_KEYS_404, SHARED_CALL_LATE
from amperity_signal.enrich.resolution import UNMATCHED_LOOKUPS_TO_LOG
from amperity_signal.errors import AmperityUnavailable
from amperity_signal.metrics import Metrics

from .enrich_fakes import EnricherFactory, FakeClock, FakeProfileClient, event, integration

ALICE = {"email": " Alice@Example.COM "}
ALICE_SHA = hashlib.sha256(b"alice@example.com").hexdigest()


def sample(metrics: Metrics, name: str, labels: dict[str, str]) -> float:
    """A metric sample, 0 when never observed."""
    value = metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


async def test_lookups_stop_at_the_first_match(
    enricher: Enricher, client: FakeProfileClient
) -> None:
    """Linking keys are tried in order and later keys are not called after a match."""
    result = await enricher.enrich(
        integration(), event(user_id="cust-1", traits=ALICE), deadline=None
    )
    assert result.resolved
    assert result.amperity_id == "p-alice"
    assert result.matched_key == "email_sha256"
    assert client.lookups == [("email_sha256", ALICE_SHA)]
    assert result.event["partner_attrs"]["amperity"]["Persona"] == "Value Hunter"
    assert result.event["amperity_id"] == "p-alice"
    assert result.cache_status == "miss"


async def test_empty_sources_are_skipped_and_no_source_means_no_lookup(
    enricher: Enricher, client: FakeProfileClient
) -> None:
    """An anonymous visitor is looked up by cookie only; a visitor with no ids costs nothing."""
    client.add("p-anon", {"Persona": "Browser"}, device_cookie="anon_7")
    result = await enricher.enrich(integration(), event("anon_7"), deadline=None)
    assert client.lookups == [("device_cookie", "anon_7")]
    assert result.matched_key == "device_cookie"

    client.lookups.clear()
    nobody = await enricher.enrich(integration(), event("", canonical_id=""), deadline=None)
    assert client.lookups == []
    assert not nobody.resolved
    assert "partner_attrs" not in nobody.event or "amperity" not in nobody.event["partner_attrs"]


async def test_second_event_of_a_resolved_visitor_costs_no_calls(
    enricher: Enricher, client: FakeProfileClient
) -> None:
    """While resolution and attributes are fresh, an event is served from the cache."""
    await enricher.enrich(integration(), event(traits=ALICE), deadline=None)
    result = await enricher.enrich(integration(), event(traits=ALICE), deadline=None)
    assert result.cache_status == "hit"
    assert result.attributes == {"Persona": "Value Hunter", "LifetimeTier": "Gold"}
    assert len(client.lookups) == 1
    assert client.gets == []


async def test_after_the_attribute_ttl_exactly_one_get_profile(
    enricher: Enricher, client: FakeProfileClient, clock: FakeClock
) -> None:
    """Expired attributes are refetched by profile id once; the resolution is still cached."""
    await enricher.enrich(integration(), event(traits=ALICE), deadline=None)
    clock.advance(60)
    client.profiles["p-alice"]["LifetimeTier"] = "Platinum"
    first = await enricher.enrich(integration(), event(traits=ALICE), deadline=None)
    second = await enricher.enrich(integration(), event(traits=ALICE), deadline=None)
    assert client.gets == [("p-alice", None)]
    assert len(client.lookups) == 1
    assert first.cache_status == "miss"
    assert second.cache_status == "hit"
    assert second.attributes["LifetimeTier"] == "Platinum"


async def test_unknown_visitor_is_dampened_for_the_not_found_ttl(
    enricher: Enricher,
    client: FakeProfileClient,
    clock: FakeClock,
    metrics: Metrics,
    cache_settings: CacheSettings,
) -> None:
    """50 events of an unknown visitor in the dampening window cost one round of lookups.

    Each dampened key of each of the 49 dampened events is counted, exactly (a tally). No
    lookup of this integration has matched, so every miss carries the linking-keys advice
    (a healthy integration's misses do not: see the tests below). The window is the
    not-found TTL, not the (shorter) error TTL: a second before it ends the visitor is still
    dampened, and at its end the lookups resume.
    """
    unknown = event("anon_new", user_id="cust-404", traits={"email": "nobody@example.com"})
    results = [await enricher.enrich(integration(), unknown, deadline=None) for _ in range(50)]
    assert len(client.lookups) == 3
    assert results[0].cache_status == "miss"
    assert {r.cache_status for r in results[1:]} == {"dampened"}
    dampened = {"cache": "res", "result": "dampened"}
    assert sample(metrics, "amperity_signal_cache_total", dampened) == 49 * 3
    assert LINKING_KEYS_404 in results[0].warnings
    assert LINKING_KEYS_404 in results[-1].warnings
    assert cache_settings.error_ttl < cache_settings.not_found_ttl - 1
    clock.advance(cache_settings.not_found_ttl - 1)
    held = await enricher.enrich(integration(), unknown, deadline=None)
    assert held.cache_status == "dampened"
    assert len(client.lookups) == 3
    clock.advance(1)
    resumed = await enricher.enrich(integration(), unknown, deadline=None)
    assert resumed.cache_status == "miss"
    assert len(client.lookups) == 6


async def test_a_healthy_integrations_unknown_visitor_gets_no_linking_keys_advice(
    enricher: Enricher,
) -> None:
    """Once a lookup has matched, a miss is a visitor Amperity does not know: no advice.

    The spec's row is "Profile lookups always 404"; a 404 on a collection that matches
    other visitors is most first-touch visitors, not a misconfiguration.
    """
    unknown = event("anon_new", user_id="cust-404", traits={"email": "nobody@example.com"})
    before = await enricher.enrich(integration(), unknown, deadline=None)
    assert LINKING_KEYS_404 in before.warnings  # nothing has matched yet
    await enricher.enrich(integration(), event("anon_alice", traits=ALICE), deadline=None)

    stranger = event("anon_other", user_id="cust-405", traits={"email": "other@example.com"})
    missed = await enricher.enrich(integration(), stranger, deadline=None)
    dampened = await enricher.enrich(integration(), unknown, deadline=None)

    for result in (missed, dampened):
        assert not result.resolved
        assert result.warnings == (
            "partner resolve failed: no profile matched linking keys "
            "email_sha256, device_cookie, customer_id",
        )
    # A match in one collection says nothing of another's linking keys.
    moved = integration(profile_collection_id="apc-Kx3nNoLnk")
    elsewhere = await enricher.enrich(moved, event("anon_moved"), deadline=None)
    assert LINKING_KEYS_404 in elsewhere.warnings


async def test_a_match_another_replica_cached_counts_as_a_match(
    make_enricher: EnricherFactory, client: FakeProfileClient
) -> None:
    """A process whose only matches are cache hits (another replica looked them up) is healthy."""
    await make_enricher().enrich(integration(), event(traits=ALICE), deadline=None)
    replica = make_enricher()  # a fresh process on the same cache
    hit = await replica.enrich(integration(), event(traits=ALICE), deadline=None)
    assert hit.cache_status == "hit"

    unknown = event("anon_new", traits={"email": "nobody@example.com"})
    missed = await replica.enrich(integration(), unknown, deadline=None)

    assert len(client.lookups) == 3  # alice's once, the unknown visitor's two keys
    assert not missed.resolved
    assert LINKING_KEYS_404 not in missed.warnings


async def test_a_collection_that_never_matches_logs_the_advice_once(
    enricher: Enricher, caplog: pytest.LogCaptureFixture
) -> None:
    """Every lookup 404s: each miss advises, and the log says so once, at the Nth lookup.

    The log line names the integration, never a visitor's identifier or a token.
    """
    visitors = [event(f"anon_visitor_{i}") for i in range(UNMATCHED_LOOKUPS_TO_LOG + 50)]
    with caplog.at_level(logging.WARNING, logger="amperity_signal.enrich"):
        results = []
        for index, visitor in enumerate(visitors, 1):
            results.append(await enricher.enrich(integration(), visitor, deadline=None))
            logged = [r for r in caplog.records if "always 404" in r.getMessage()]
            assert len(logged) == (index >= UNMATCHED_LOOKUPS_TO_LOG), index

    assert all(LINKING_KEYS_404 in r.warnings for r in results)
    (line,) = [r.getMessage() for r in caplog.records if "always 404" in r.getMessage()]
    assert line == (
        "Profile lookups always 404: integration=acme: none of the first 1000 Profile API "
        "lookups matched a profile; the collection's linking_keys may not include any key "
        "Signal is sending — ask your Amperity admin to add email_sha256 / device cookie / "
        "etc. to the collection's linking_keys"
    )
    for secret in ("anon_visitor", "profile-jwt", "apc-vPsQheAm"):
        assert secret not in line


def always_404_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The "Profile lookups always 404" log lines captured so far."""
    return [r.getMessage() for r in caplog.records if "always 404" in r.getMessage()]


async def miss_streak(enricher: Enricher, visitors: range) -> list[EnrichResult]:
    """Enrich a new anonymous visitor per number: one lookup each, answered 404."""
    return [
        await enricher.enrich(integration(), event(f"anon_visitor_{i}"), deadline=None)
        for i in visitors
    ]


async def test_a_collection_that_matched_then_always_404s_logs_the_row(
    enricher: Enricher, caplog: pytest.LogCaptureFixture
) -> None:
    """Its linking keys changed after a match: the 1,000th 404 in a row logs the row, once.

    Misses carry the advice from that lookup on (before it, they are a healthy collection's
    unknown visitors), dampened ones included. The line says earlier lookups matched, and
    names the integration, never an identifier or a token.
    """
    await enricher.enrich(integration(), event(traits=ALICE), deadline=None)
    with caplog.at_level(logging.WARNING, logger="amperity_signal.enrich"):
        before = await miss_streak(enricher, range(UNMATCHED_LOOKUPS_TO_LOG - 1))
        assert always_404_lines(caplog) == []
        after = await miss_streak(enricher, range(UNMATCHED_LOOKUPS_TO_LOG - 1, 1_050))
        dampened = await enricher.enrich(integration(), event("anon_visitor_0"), deadline=None)

    assert not any(LINKING_KEYS_404 in r.warnings for r in before)
    assert all(LINKING_KEYS_404 in r.warnings for r in after)
    assert dampened.cache_status == "dampened"
    assert LINKING_KEYS_404 in dampened.warnings
    (line,) = always_404_lines(caplog)
    assert line == (
        "Profile lookups always 404: integration=acme: none of the last 1000 Profile API "
        "lookups matched a profile (earlier ones did); the collection's linking_keys may not "
        "include any key Signal is sending — ask your Amperity admin to add email_sha256 / "
        "device cookie / etc. to the collection's linking_keys"
    )
    for secret in ("anon_visitor", "profile-jwt", "apc-vPsQheAm", "p-alice", ALICE_SHA):
        assert secret not in line


async def test_a_match_ends_the_streak_and_the_next_streak_logs_again(
    enricher: Enricher, caplog: pytest.LogCaptureFixture
) -> None:
    """One line per streak: a match (here a cached resolution) re-arms the warning.

    The match also takes the advice off the misses after it, until the next streak is long.
    """
    await enricher.enrich(integration(), event(traits=ALICE), deadline=None)
    with caplog.at_level(logging.WARNING, logger="amperity_signal.enrich"):
        await miss_streak(enricher, range(UNMATCHED_LOOKUPS_TO_LOG + 10))
        assert len(always_404_lines(caplog)) == 1
        hit = await enricher.enrich(integration(), event(traits=ALICE), deadline=None)
        assert hit.cache_status == "hit"
        second = await miss_streak(enricher, range(2_000, 2_000 + UNMATCHED_LOOKUPS_TO_LOG))

    assert not any(LINKING_KEYS_404 in r.warnings for r in second[:-1])
    assert LINKING_KEYS_404 in second[-1].warnings
    assert len(always_404_lines(caplog)) == 2


async def test_a_streak_broken_before_the_mark_logs_nothing(
    enricher: Enricher, caplog: pytest.LogCaptureFixture
) -> None:
    """A healthy collection's 404s come in short streaks: a match resets the count.

    999 misses, a match, then the next streak logs at its own 1,000th lookup, not at the
    1,000th since the first match (the count starts again from the match).
    """
    await enricher.enrich(integration(), event(traits=ALICE), deadline=None)
    with caplog.at_level(logging.WARNING, logger="amperity_signal.enrich"):
        first = await miss_streak(enricher, range(UNMATCHED_LOOKUPS_TO_LOG - 1))
        await enricher.enrich(integration(), event(traits=ALICE), deadline=None)
        second = await miss_streak(enricher, range(2_000, 2_000 + UNMATCHED_LOOKUPS_TO_LOG - 1))
        assert always_404_lines(caplog) == []
        await miss_streak(enricher, range(3_000, 3_001))

    assert not any(LINKING_KEYS_404 in r.warnings for r in first + second)
    assert len(always_404_lines(caplog)) == 1


async def test_concurrent_events_of_a_new_visitor_share_one_round(
    enricher: Enricher, client: FakeProfileClient, metrics: Metrics
) -> None:
    """100 concurrent enrich calls for one new visitor make one round of partner calls."""
    client.gate = asyncio.Event()
    calls = [
        asyncio.create_task(enricher.enrich(integration(), event(traits=ALICE), deadline=None))
        for _ in range(100)
    ]
    for _ in range(5):
        await asyncio.sleep(0)  # yield to the event loop so every task reaches the flight
    client.gate.set()
    results = await asyncio.gather(*calls)
    assert client.lookups == [("email_sha256", ALICE_SHA)]
    assert all(r.amperity_id == "p-alice" for r in results)
    assert (
        sample(metrics, "amperity_signal_single_flight_joins_total", {"integration": "acme"}) == 99
    )


async def test_identity_map_resolves_a_cookie_only_event_through_email(
    enricher: Enricher, client: FakeProfileClient
) -> None:
    """Anonymous events, then an identify with email, then a cookie-only event: via email."""
    settings = integration(
        linking_keys=[{"source": "email", "key": "email_sha256", "hash": "sha256"}]
    )
    before = await enricher.enrich(settings, event("anon_x"), deadline=None)
    assert not before.resolved
    assert client.lookups == []
    identify = event("anon_x", type="identify", traits={"email": "alice@example.com"})
    assert await enricher.remember(settings, identify)
    after = await enricher.enrich(settings, event("anon_x"), deadline=None)
    assert after.resolved
    assert after.matched_key == "email_sha256"
    assert client.lookups == [("email_sha256", ALICE_SHA)]
    attributes, _ = await enricher.browser_attributes(settings, "anon_x", deadline=None)
    assert attributes["Persona"] == "Value Hunter"
    assert await enricher.identity_map.identifiers("acme", "anon_x") == {"email:sha256": ALICE_SHA}


async def test_enrich_itself_feeds_the_identity_map(
    enricher: Enricher, client: FakeProfileClient
) -> None:
    """An enriched identify teaches the map, so the next cookie-only event resolves by email."""
    await enricher.enrich(integration(), event("anon_y", traits=ALICE), deadline=None)
    result = await enricher.enrich(integration(), event("anon_y"), deadline=None)
    assert result.matched_key == "email_sha256"
    assert result.cache_status == "hit"


async def test_cache_keys_never_hold_raw_identifiers(
    enricher: Enricher, store: MemoryStore
) -> None:
    """Backend keys are digests: no email, cookie or profile id appears in them."""
    await enricher.enrich(integration(), event("anon_secret", traits=ALICE), deadline=None)
    keys = store.keys()
    assert keys
    for key in keys:
        assert "alice" not in key.lower()
        assert "anon_secret" not in key
        assert "p-alice" not in key
        assert ALICE_SHA not in key


@given(scope=st.text(), name=st.text(), value=st.text())
def test_a_key_of_another_kind_shares_the_digest(scope: str, name: str, value: str) -> None:
    """A profile's attrs key names its perslast and good entries too: no second hash."""
    attrs = cache_key("attrs", scope, name, value)
    for kind in ("good", "perslast"):
        assert rekind(attrs, kind) == cache_key(kind, scope, name, value)


@given(data=st.binary(max_size=300))
def test_the_built_in_sha256_gives_hashlibs_digest(data: bytes) -> None:
    """Keys and hashed identifiers keep their digests whichever SHA-256 computes them."""
    assert sha256_hex(data) == hashlib.sha256(data).hexdigest()


def test_keys_keep_their_published_digests() -> None:
    """The key scheme is unchanged: shared Redis entries stay readable across versions."""
    material = b"acme\x1fprofile_id\x1fp-alice"
    digest = hashlib.sha256(material).hexdigest()
    assert (
        cache_key("attrs", "acme", "profile_id", "p-alice") == f"amperity_signal:v1:attrs:{digest}"
    )
    context = {"pageCategory": "shoes", "cartValue": "120"}
    expected = hashlib.sha256(b'[["cartValue","120"],["pageCategory","shoes"]]').hexdigest()
    assert context_digest(context) == expected


async def test_unconfigured_integration_is_disabled_with_the_advice(
    enricher: Enricher, client: FakeProfileClient
) -> None:
    """Without Profile API creds or linking keys enrichment is disabled and says why."""
    result = await enricher.enrich(
        integration(profile_api_key=None), event(traits=ALICE), deadline=None
    )
    assert result.cache_status == "disabled"
    assert result.warnings == (
        "partner resolve failed: partner_attrs.amperity not attached: profile_api_key is not "
        "configured; profile enrichment needs profile_api_key, profile_collection_id and "
        "linking_keys",
    )
    assert client.lookups == []
    assert await enricher.browser_attributes(
        integration(linking_keys=[]), "anon_abc123", deadline=None
    ) == ({}, {})


async def test_a_vanished_profile_is_looked_up_again(
    enricher: Enricher, client: FakeProfileClient, clock: FakeClock
) -> None:
    """When get_profile answers 404 for a cached resolution, the linking key is retried."""
    await enricher.enrich(integration(), event(traits=ALICE), deadline=None)
    client.add("p-merged", {"Persona": "Merged"}, email_sha256=ALICE_SHA)
    del client.profiles["p-alice"]
    clock.advance(61)
    result = await enricher.enrich(integration(), event(traits=ALICE), deadline=None)
    assert result.amperity_id == "p-merged"
    assert client.gets == [("p-alice", None)]
    assert len(client.lookups) == 2


@pytest.mark.parametrize("source", ["user_id", "phone"])
async def test_remember_learns_user_id_and_phone(
    enricher: Enricher, client: FakeProfileClient, source: str
) -> None:
    """user_id and traits.phone are remembered per anonymous id as well as email."""
    keys = [
        {"source": "user_id", "key": "customer_id"},
        {"source": "phone", "key": "phone_sha256", "hash": "sha256"},
    ]
    identify_fields: dict[str, Callable[[], dict[str, Any]]] = {
        "user_id": lambda: {"user_id": "cust-1"},
        "phone": lambda: {"traits": {"phone": "+44 7700 900123"}},
    }
    phone_sha = hashlib.sha256(b"+447700900123").hexdigest()
    client.add("p-bob", {"Persona": "Bob"}, customer_id="cust-1", phone_sha256=phone_sha)
    settings = integration(linking_keys=keys)
    await enricher.remember(settings, event("anon_b", **identify_fields[source]()))
    result = await enricher.enrich(settings, event("anon_b"), deadline=None)
    assert result.amperity_id == "p-bob"


async def test_each_enrichment_counts_its_cache_lookups_once(
    enricher: Enricher, client: FakeProfileClient, metrics: Metrics, clock: FakeClock
) -> None:
    """A miss, then a hit, then an attribute refresh count one res and attrs result each."""

    def counts(cache: str) -> tuple[float, float]:
        hit = sample(metrics, "amperity_signal_cache_total", {"cache": cache, "result": "hit"})
        miss = sample(metrics, "amperity_signal_cache_total", {"cache": cache, "result": "miss"})
        return hit, miss

    client.add("p-anon", {"Persona": "Browser"}, device_cookie="anon_7")
    await enricher.enrich(integration(), event("anon_7"), deadline=None)
    assert counts("res") == (0, 1)
    await enricher.enrich(integration(), event("anon_7"), deadline=None)
    assert counts("res") == (1, 1)
    assert counts("attrs") == (1, 0)
    clock.advance(60)
    refreshed = await enricher.enrich(integration(), event("anon_7"), deadline=None)
    assert refreshed.cache_status == "miss"
    assert client.gets == [("p-anon", None)]
    assert counts("res") == (2, 1)
    assert counts("attrs") == (1, 1)


async def test_each_browser_read_counts_one_lookup_of_each_cache_it_reads(
    enricher: Enricher, client: FakeProfileClient, metrics: Metrics
) -> None:
    """A page's read counts its identity-map, resolution, attribute and latest lookups once."""

    def counts() -> dict[str, tuple[float, float]]:
        return {
            cache: (
                sample(metrics, "amperity_signal_cache_total", {"cache": cache, "result": "hit"}),
                sample(metrics, "amperity_signal_cache_total", {"cache": cache, "result": "miss"}),
            )
            for cache in ("ident", "res", "attrs", "perslast")
        }

    client.add("p-anon", {"Persona": "Browser"}, device_cookie="anon_8")
    await enricher.remember(integration(), event("anon_8", traits={"email": "nobody@example.com"}))
    first, _ = await enricher.browser_attributes(integration(), "anon_8", deadline=None)
    assert first == {"Persona": "Browser"}
    # The identify's merge found no entry (the ident miss); the page's read found it. The
    # remembered email matches nobody: the walk goes on to the cookie, which resolves.
    assert counts() == {"ident": (1, 1), "res": (0, 2), "attrs": (0, 0), "perslast": (0, 1)}
    again, _ = await enricher.browser_attributes(integration(), "anon_8", deadline=None)
    assert again == first
    # The email's cached "not found" is a hit too: the entry answered without a call.
    assert counts() == {"ident": (2, 1), "res": (2, 2), "attrs": (1, 0), "perslast": (0, 2)}


async def test_a_new_login_on_a_shared_browser_forgets_the_previous_users_email(
    enricher: Enricher, client: FakeProfileClient
) -> None:
    """After user B logs in on A's cookie, B resolves as B, never through A's remembered email."""
    client.add("p-bob", {"Persona": "Bob"}, customer_id="cust-bob")
    await enricher.remember(integration(), event("anon_shared", user_id="cust-alice", traits=ALICE))
    bob = await enricher.enrich(
        integration(), event("anon_shared", user_id="cust-bob"), deadline=None
    )
    assert bob.amperity_id == "p-bob"
    assert bob.matched_key == "customer_id"
    remembered = await enricher.identity_map.identifiers("acme", "anon_shared")
    assert remembered == {"user_id": "cust-bob"}
    later = await enricher.enrich(integration(), event("anon_shared"), deadline=None)
    assert later.amperity_id == "p-bob"


@pytest.mark.parametrize(
    "other", [{"tenant_id": "globex"}, {"profile_collection_id": "apc-Other123"}]
)
async def test_a_shared_cache_never_answers_with_another_tenants_or_collections_profile(
    make_enricher: Callable[..., Enricher], client: FakeProfileClient, other: dict[str, str]
) -> None:
    """Same integration id, other tenant or collection, one cache: each resolves on its own."""
    await make_enricher().enrich(integration(), event(traits=ALICE), deadline=None)
    elsewhere = FakeProfileClient()
    enricher = make_enricher(client_for=lambda _id: elsewhere)
    result = await enricher.enrich(integration(**other), event(traits=ALICE), deadline=None)
    assert not result.resolved
    assert "partner_attrs" not in result.event
    assert elsewhere.lookups[0] == ("email_sha256", ALICE_SHA)


@pytest.mark.parametrize("late_attempts", [0, 1], ids=["nothing_sent", "timed_out"])
async def test_a_joiner_with_more_time_than_the_shared_call_calls_again(
    enricher: Enricher, client: FakeProfileClient, clock: FakeClock, late_attempts: int
) -> None:
    """A shared lookup that ran out of its starter's deadline does not fail a joiner with time."""
    client.gate = asyncio.Event()
    client.clock = clock
    client.late_attempts = late_attempts
    short = asyncio.create_task(
        enricher.enrich(integration(), event(traits=ALICE), deadline=clock.now + 1)
    )
    for _ in range(5):
        await asyncio.sleep(0)  # yield so the short caller starts the flight first
    patient = asyncio.create_task(
        enricher.enrich(integration(), event(traits=ALICE), deadline=clock.now + 30)
    )
    for _ in range(5):
        await asyncio.sleep(0)  # yield so the patient caller joins it
    clock.advance(2)  # the partner answers after the short deadline
    client.gate.set()
    first, second = await asyncio.gather(short, patient)
    assert not first.resolved
    assert second.resolved
    assert second.amperity_id == "p-alice"
    assert client.lookups == [("email_sha256", ALICE_SHA)] * 2


async def test_concurrent_callers_with_ample_deadlines_still_share_one_call(
    enricher: Enricher, client: FakeProfileClient, clock: FakeClock
) -> None:
    """Different deadlines alone do not cost extra calls: the shared call had time enough."""
    client.gate = asyncio.Event()
    client.clock = clock
    calls = [
        asyncio.create_task(
            enricher.enrich(integration(), event(traits=ALICE), deadline=clock.now + seconds)
        )
        for seconds in (2, 5, 30)
    ]
    for _ in range(5):
        await asyncio.sleep(0)  # yield to the event loop so every task reaches the flight
    client.gate.set()
    results = await asyncio.gather(*calls)
    assert all(r.amperity_id == "p-alice" for r in results)
    assert client.lookups == [("email_sha256", ALICE_SHA)]


async def test_a_joiner_with_less_time_stops_waiting_at_its_deadline(
    enricher: Enricher, client: FakeProfileClient, clock: FakeClock
) -> None:
    """A Deliver joining a slow Enrich's lookup gives up at its own deadline, not the Enrich's.

    Its POST gets the rest of its time; the shared lookup still answers the Enrich and fills
    the cache for the next event.
    """
    client.gate = asyncio.Event()
    enrich_rpc = asyncio.create_task(
        enricher.enrich(integration(), event(traits=ALICE), deadline=clock.now + 30)
    )
    for _ in range(5):
        await asyncio.sleep(0)  # yield so the Enrich starts the lookup
    deliver = asyncio.create_task(
        enricher.enrich(integration(), event(traits=ALICE), deadline=clock.now)
    )
    done, _ = await asyncio.wait({deliver}, timeout=5)
    assert done == {deliver}  # before: it waited for the Enrich's lookup, 30 s at most
    late = deliver.result()
    assert not late.resolved
    assert late.warnings == (SHARED_CALL_LATE,)
    assert not enrich_rpc.done()
    client.gate.set()
    assert (await enrich_rpc).amperity_id == "p-alice"
    after = await enricher.enrich(integration(), event(traits=ALICE), deadline=clock.now)
    assert after.cache_status == "hit"
    assert client.lookups == [("email_sha256", ALICE_SHA)]


async def test_retries_running_out_within_the_deadline_are_still_dampened(
    enricher: Enricher, client: FakeProfileClient, clock: FakeClock
) -> None:
    """Amperity failing every retry is an answer: remembered for error_ttl, not called again."""
    client.error = AmperityUnavailable(
        "Amperity answered 503", reason="AMPERITY_UNAVAILABLE", attempts=6, retry_after=3.2
    )
    first = await enricher.enrich(integration(), event(traits=ALICE), deadline=clock.now + 2)
    second = await enricher.enrich(integration(), event(traits=ALICE), deadline=clock.now + 30)
    assert not first.resolved
    assert second.cache_status == "dampened"
    assert len(client.lookups) == 1
