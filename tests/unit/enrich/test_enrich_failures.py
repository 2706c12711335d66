"""Partner failures: stale attributes, the breaker, auth advice, and the log line."""

from __future__ import annotations

import hashlib
import logging

import pytest

from amperity_signal.enrich import Enricher
from amperity_signal.errors import AmperityAuthError, AmperityMisconfigured, AmperityUnavailable
from amperity_signal.metrics import Metrics

from .enrich_fakes import FakeClock, FakeProfileClient, event, integration

ALICE = {"email": "alice@example.com"}
FORBIDDEN = (
    "Amperity answered 403 to a Profile API call: the Profile API key lacks Profile Read "
    "Access. Generate a key with Profile Read Access (not the Streaming Ingest key)."
)


def unavailable() -> AmperityUnavailable:
    """A 503 after retries ran out, as the client raises it."""
    return AmperityUnavailable(
        "Amperity answered 503", reason="AMPERITY_UNAVAILABLE", status_code=503
    )


async def test_failing_refresh_serves_stale_and_the_breaker_stops_calls(
    enricher: Enricher, client: FakeProfileClient, clock: FakeClock, metrics: Metrics
) -> None:
    """After a visitor was enriched, failures serve the last attributes; N failures open it."""
    await enricher.enrich(integration(), event(traits=ALICE), deadline=None)
    clock.advance(61)
    client.error = unavailable()
    results = [
        await enricher.enrich(integration(), event(traits=ALICE), deadline=None) for _ in range(10)
    ]
    assert len(client.gets) == 3  # breaker_failures = 3
    assert {r.cache_status for r in results} == {"stale"}
    assert all(r.event["partner_attrs"]["amperity"]["Persona"] == "Value Hunter" for r in results)
    assert all(r.warnings[0].startswith("partner resolve failed") for r in results)
    gauge = metrics.registry.get_sample_value(
        "amperity_signal_breaker_open", {"integration": "acme"}
    )
    assert gauge == 1
    stale = metrics.registry.get_sample_value(
        "amperity_signal_cache_total", {"cache": "good", "result": "stale"}
    )
    assert stale == 10
    clock.advance(30)
    client.error = None
    recovered = await enricher.enrich(integration(), event(traits=ALICE), deadline=None)
    assert recovered.cache_status == "miss"
    assert len(client.gets) == 4


async def test_failed_lookup_is_dampened_for_the_error_ttl(
    enricher: Enricher, client: FakeProfileClient, clock: FakeClock
) -> None:
    """A 5xx on lookup is remembered for error_ttl, separately from not-found dampening."""
    client.error = unavailable()
    first = await enricher.enrich(integration(), event(traits=ALICE), deadline=None)
    second = await enricher.enrich(integration(), event(traits=ALICE), deadline=None)
    assert len(client.lookups) == 1
    assert not first.resolved
    assert second.cache_status == "dampened"
    client.error = None
    clock.advance(30)
    third = await enricher.enrich(integration(), event(traits=ALICE), deadline=None)
    assert third.resolved
    assert len(client.lookups) == 2


async def test_forbidden_profile_key_returns_the_403_advice(
    enricher: Enricher, client: FakeProfileClient
) -> None:
    """A 403 is reported with the error's own fix, and later keys are not tried."""
    client.error = AmperityAuthError(FORBIDDEN, reason="PROFILE_KEY_FORBIDDEN", status_code=403)
    result = await enricher.enrich(integration(), event(traits=ALICE), deadline=None)
    assert not result.resolved
    assert any(FORBIDDEN in warning for warning in result.warnings)
    assert len(client.lookups) == 1
    dampened = await enricher.enrich(integration(), event(traits=ALICE), deadline=None)
    assert any(FORBIDDEN in warning for warning in dampened.warnings)
    assert len(client.lookups) == 1


async def test_a_wrong_tenant_subdomain_returns_its_fix_and_stops_the_walk(
    enricher: Enricher, client: FakeProfileClient
) -> None:
    """No such host: the warning is the spec's fix, not "Signal retries it shortly"."""
    fix = (
        "no such host acmee.amperity.com: tenant_subdomain is wrong — it's the URL host, not "
        "the Amperity-Tenant header value. Use the subdomain portion of your Amperity "
        "dashboard URL."
    )
    client.error = AmperityMisconfigured(fix, reason="TENANT_HOST_NOT_FOUND")
    visitor = event(traits=ALICE, user_id="cust-1")  # two linking keys could be tried
    result = await enricher.enrich(integration(), visitor, deadline=None)
    assert f"partner resolve failed: {fix}" in result.warnings
    assert not any("retries it shortly" in warning for warning in result.warnings)
    assert len(client.lookups) == 1
    dampened = await enricher.enrich(integration(), visitor, deadline=None)
    assert any(fix in warning for warning in dampened.warnings)


async def test_a_success_that_is_no_profile_says_what_was_wrong_with_it(
    enricher: Enricher, client: FakeProfileClient
) -> None:
    """A 200 whose body is no profile: the warning carries the client's own description."""
    problem = "its body is not a profile (the profile answer has no profile_id)"
    client.error = AmperityUnavailable(
        f"Amperity answered 200 to the lookup request but {problem}.",
        reason="AMPERITY_BAD_RESPONSE",
        status_code=200,
        metadata={"problem": problem},
    )
    result = await enricher.enrich(integration(), event(traits=ALICE), deadline=None)
    expected = (
        f"partner resolve failed: Amperity Profile API error AMPERITY_BAD_RESPONSE (HTTP 200: "
        f"{problem}); Signal retries it shortly"
    )
    assert result.warnings == (expected,)


async def test_failures_log_partner_resolve_failed_without_identifiers(
    enricher: Enricher, client: FakeProfileClient, caplog: pytest.LogCaptureFixture
) -> None:
    """The log line names the integration and reason, never the email, cookie or token."""
    client.error = unavailable()
    with caplog.at_level(logging.WARNING, logger="amperity_signal.enrich"):
        await enricher.enrich(integration(), event("anon_secret", traits=ALICE), deadline=None)
    records = [r for r in caplog.records if r.name == "amperity_signal.enrich"]
    assert records
    text = " ".join(r.getMessage() for r in records)
    assert "partner resolve failed" in text
    assert "acme" in text
    assert "AMPERITY_UNAVAILABLE" in text
    for secret in ("alice", "anon_secret", "profile-jwt"):
        assert secret not in text


async def test_a_failure_log_line_carries_the_fix_its_warning_carries(
    enricher: Enricher, client: FakeProfileClient, caplog: pytest.LogCaptureFixture
) -> None:
    """The line had the reason code alone; the fix reached only the RPC's warnings."""
    client.error = AmperityAuthError(FORBIDDEN, reason="PROFILE_KEY_FORBIDDEN", status_code=403)
    with caplog.at_level(logging.WARNING, logger="amperity_signal.enrich"):
        result = await enricher.enrich(integration(), event(traits=ALICE), deadline=None)
    assert f"partner resolve failed: {FORBIDDEN}" in result.warnings
    assert caplog.messages == [
        "partner resolve failed: integration=acme endpoint=lookup "
        f"reason=PROFILE_KEY_FORBIDDEN: {FORBIDDEN}"
    ]


async def test_a_page_only_visitors_failure_logs_the_fix_it_has_no_warning_for(
    enricher: Enricher, client: FakeProfileClient, caplog: pytest.LogCaptureFixture
) -> None:
    """BrowserProfile returns no warnings: the log line is where its operator finds the fix."""
    client.error = AmperityAuthError(FORBIDDEN, reason="PROFILE_KEY_FORBIDDEN", status_code=403)
    with caplog.at_level(logging.WARNING, logger="amperity_signal.enrich"):
        shown = await enricher.browser_attributes(integration(), "anon_page", deadline=None)
    assert shown == ({}, {})
    [line] = caplog.messages
    assert line.endswith(f"reason=PROFILE_KEY_FORBIDDEN: {FORBIDDEN}")


async def test_the_failure_that_opens_the_breaker_logs_the_breakers_advice(
    enricher: Enricher, client: FakeProfileClient, caplog: pytest.LogCaptureFixture
) -> None:
    """reason=BREAKER_OPEN says for how long calls stop and what to check, as its warning."""
    client.error = unavailable()
    with caplog.at_level(logging.WARNING, logger="amperity_signal.enrich"):
        for number in range(3):  # breaker_failures = 3
            await enricher.enrich(integration(), event(f"anon_{number}"), deadline=None)
    assert caplog.messages[-2] == (
        "partner resolve failed: integration=acme endpoint=lookup reason=AMPERITY_UNAVAILABLE: "
        "Amperity Profile API error AMPERITY_UNAVAILABLE (HTTP 503); Signal retries it shortly"
    )
    assert caplog.messages[-1] == (
        "partner resolve failed: integration=acme endpoint=lookup reason=BREAKER_OPEN: "
        "Profile API calls paused for 30 s after 3 consecutive failures (5xx/timeouts); check "
        "Amperity's status or cache.breaker_cooldown"
    )


async def test_a_failure_without_a_last_good_copy_attaches_nothing(
    enricher: Enricher, client: FakeProfileClient, clock: FakeClock
) -> None:
    """With stale_ttl elapsed there is nothing to serve: resolved, but no partner_attrs."""
    await enricher.enrich(integration(), event(traits=ALICE), deadline=None)
    clock.advance(60 + 3_600)
    client.error = unavailable()
    result = await enricher.enrich(integration(), event(traits=ALICE), deadline=None)
    assert result.resolved
    assert result.cache_status == "miss"
    assert "amperity" not in result.event.get("partner_attrs", {})


async def test_a_lookup_never_sent_is_neither_dampened_nor_counted_by_the_breaker(
    enricher: Enricher, client: FakeProfileClient, metrics: Metrics
) -> None:
    """A caller whose deadline passed before sending leaves no error entry and no breaker count."""
    client.error = AmperityUnavailable(
        "the call's deadline passed before a request could be sent, so nothing was sent",
        reason="AMPERITY_UNAVAILABLE",
        attempts=0,
    )
    for number in range(5):  # breaker_failures = 3
        late = await enricher.enrich(integration(), event(f"anon_{number}"), deadline=None)
        assert not late.resolved
        assert late.cache_status == "miss"
    assert len(client.lookups) == 5
    gauge = metrics.registry.get_sample_value(
        "amperity_signal_breaker_open", {"integration": "acme"}
    )
    assert gauge == 0
    client.error = None
    client.add("p-anon", {"Persona": "Browser"}, device_cookie="anon_0")
    result = await enricher.enrich(integration(), event("anon_0"), deadline=None)
    assert result.resolved
    assert result.cache_status == "miss"
    assert client.lookups[-1] == ("device_cookie", "anon_0")


async def test_a_refused_attribute_refresh_is_dampened_for_the_error_ttl(
    enricher: Enricher, client: FakeProfileClient, clock: FakeClock
) -> None:
    """A 403 on a known visitor's refresh costs one call per error_ttl; the rest serve stale."""
    await enricher.enrich(integration(), event(traits=ALICE), deadline=None)
    clock.advance(61)
    client.error = AmperityAuthError(FORBIDDEN, reason="PERMISSION_DENIED", status_code=403)
    results = [
        await enricher.enrich(integration(), event(traits=ALICE), deadline=None) for _ in range(5)
    ]
    assert len(client.gets) == 1
    assert {r.cache_status for r in results} == {"stale"}
    assert all(r.attributes["Persona"] == "Value Hunter" for r in results)
    assert all(FORBIDDEN in r.warnings[0] for r in results)
    clock.advance(30)
    client.error = None
    recovered = await enricher.enrich(integration(), event(traits=ALICE), deadline=None)
    assert recovered.cache_status == "miss"
    assert len(client.gets) == 2


BOB_SHA = hashlib.sha256(b"bob@example.com").hexdigest()
EMAIL_THEN_CUSTOMER_ID = [
    {"source": "email", "key": "email_sha256", "hash": "sha256"},
    {"source": "user_id", "key": "customer_id"},
]


async def test_an_outage_on_the_first_key_serves_a_later_keys_cached_profile(
    enricher: Enricher, client: FakeProfileClient, clock: FakeClock
) -> None:
    """The email lookup fails, the cached customer_id resolution answers, with the warning."""
    keys = integration(linking_keys=EMAIL_THEN_CUSTOMER_ID)
    client.add("p-bob", {"Persona": "Loyalist"}, customer_id="cust-42")
    known = await enricher.enrich(keys, event(user_id="cust-42"), deadline=None)
    assert known.amperity_id == "p-bob"
    client.error = unavailable()
    visitor = event(user_id="cust-42", traits={"email": "bob@example.com"})
    failed = await enricher.enrich(keys, visitor, deadline=None)  # the email lookup fails
    dampened = await enricher.enrich(keys, visitor, deadline=None)  # its failure is remembered
    for result in (failed, dampened):
        assert result.amperity_id == "p-bob"
        assert result.matched_key == "customer_id"
        assert result.cache_status == "hit"
        assert result.event["partner_attrs"]["amperity"] == {"Persona": "Loyalist"}
        assert result.warnings[0].startswith("partner resolve failed")
    assert client.lookups == [("customer_id", "cust-42"), ("email_sha256", BOB_SHA)]
    clock.advance(61)  # attributes and the email's error entry expired; the resolution did not
    stale = await enricher.enrich(keys, visitor, deadline=None)
    assert stale.amperity_id == "p-bob"
    assert stale.cache_status == "stale"
    assert stale.event["partner_attrs"]["amperity"] == {"Persona": "Loyalist"}
    assert client.plain_gets == []  # no call beyond the failed email lookup


async def test_an_open_breaker_still_serves_a_later_keys_cached_profile(
    enricher: Enricher, client: FakeProfileClient
) -> None:
    """With calls paused, a visitor whose email was never looked up resolves from the cache."""
    keys = integration(linking_keys=EMAIL_THEN_CUSTOMER_ID)
    client.add("p-bob", {"Persona": "Loyalist"}, customer_id="cust-42")
    await enricher.enrich(keys, event(user_id="cust-42"), deadline=None)
    client.error = unavailable()
    for number in range(3):  # breaker_failures = 3: other visitors open it
        await enricher.enrich(keys, event(f"anon_{number}", user_id=f"x-{number}"), deadline=None)
    calls = len(client.lookups)
    visitor = event(user_id="cust-42", traits={"email": "bob@example.com"})
    result = await enricher.enrich(keys, visitor, deadline=None)
    assert len(client.lookups) == calls
    assert result.amperity_id == "p-bob"
    assert any("paused" in warning for warning in result.warnings)


async def test_a_later_key_never_beats_an_earlier_key_that_resolves(
    enricher: Enricher, client: FakeProfileClient
) -> None:
    """Key order holds: a cached later key does not answer while the first key can be called."""
    keys = integration(linking_keys=EMAIL_THEN_CUSTOMER_ID)
    client.add("p-bob", {"Persona": "Loyalist"}, customer_id="cust-42")
    await enricher.enrich(keys, event(user_id="cust-42"), deadline=None)
    result = await enricher.enrich(keys, event(user_id="cust-42", traits=ALICE), deadline=None)
    assert result.amperity_id == "p-alice"
    assert result.matched_key == "email_sha256"
