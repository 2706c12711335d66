"""Enrichment when the Profile API fails: stale attributes, the breaker, advice, and Deliver."""

from __future__ import annotations

import asyncio

import pytest

from amperity_signal.sandbox import STREAM_WRITE, default_data, mint_token
from amperity_signal.service.convert import struct_to_dict
from datafly.amperity.v1 import amperity_service_pb2 as pb
from tests.e2e.enrich_support import deliver, enrich, event, partner_calls, serve
from tests.e2e.stack import Stack
from tests.support import ALICE_PROFILE, integration_dict, mint_keys

pytestmark = pytest.mark.e2e

ALICE = {"traits": {"email": "alice@example.com"}}


async def test_a_failing_profile_api_serves_the_last_attributes_stale_and_the_breaker_stops_calls(
    stack: Stack,
) -> None:
    """After the attribute TTL, 503s serve alice's last attributes STALE; 3 failures stop calls."""
    sandbox = await stack.sandbox()
    cache = {"backend": "memory", "attribute_ttl": 0.5, "jitter": 0, "breaker_failures": 3}
    service = await serve(stack, sandbox, cache=cache, max_retries=0)
    fresh = await enrich(service, event("anon_stale", **ALICE))
    assert fresh.cache_status == pb.CACHE_STATUS_MISS
    await sandbox.fault(status=503, kind="profile")
    await sandbox.fault(status=503, kind="lookup")
    await asyncio.sleep(0.6)  # past attribute_ttl: the next event needs a refresh

    stale = [await enrich(service, event("anon_stale", **ALICE)) for _ in range(10)]

    assert {r.cache_status for r in stale} == {pb.CACHE_STATUS_STALE}
    assert {r.amperity_id for r in stale} == {ALICE_PROFILE}
    for response in stale:
        assert struct_to_dict(response.attributes) == struct_to_dict(fresh.attributes)
        assert struct_to_dict(response.event.partner_attrs)["amperity"]["Persona"] == (
            "Value Hunter"
        )
        assert any("partner resolve failed" in w and "stale" in w for w in response.warnings)
    assert any("paused" in w for w in stale[-1].warnings)
    failed = [r["status"] for r in await sandbox.requests(path_prefix="/prof/profiles")]
    assert failed == [503, 503, 503]
    assert await partner_calls(sandbox) == (1, 3)
    assert "partner resolve failed: integration=web endpoint=profile" in stack.logs()


async def test_a_403_from_the_profile_api_reports_the_ingest_key_advice(stack: Stack) -> None:
    """An ingest-scope JWT as profile_api_key: the warning says to use a Profile Read key."""
    sandbox = await stack.sandbox()
    keys = mint_keys()
    ingest_scoped = mint_token(default_data().signing_secret, "acme", [STREAM_WRITE], 3_600)
    table = integration_dict(sandbox.url, keys, profile_api_key=ingest_scoped)
    service = await serve(stack, sandbox, table, keys=keys)

    response = await enrich(service, event("anon_403", **ALICE))

    assert not response.resolved
    assert [r["status"] for r in await sandbox.requests(path_prefix="/prof/lookup")] == [403]
    advice = [w for w in response.warnings if w.startswith("partner resolve failed")]
    assert advice, response.warnings
    assert "Streaming Ingest JWT used instead of the Profile API JWT" in advice[0]
    assert "Profile Read Access" in advice[0]
    assert ingest_scoped not in stack.logs()


async def test_a_collection_without_linking_keys_reports_the_linking_keys_advice(
    stack: Stack,
) -> None:
    """Every lookup 404s on apc-Kx3nNoLnk: the warning tells to add keys to linking_keys."""
    sandbox = await stack.sandbox()
    service = await serve(stack, sandbox, profile_collection_id="apc-Kx3nNoLnk")

    response = await enrich(service, event("anon_alice_01", user_id="cust-1001", **ALICE))

    assert not response.resolved
    assert [r["status"] for r in await sandbox.requests(path_prefix="/prof/lookup")] == [404] * 3
    assert any(
        "linking_keys" in w and "ask your Amperity admin to add email_sha256" in w
        for w in response.warnings
    ), response.warnings


async def test_failing_enrichment_never_blocks_delivery(stack: Stack) -> None:
    """Lookups answering 503: Deliver still posts the event, without amperity_id, with a warning."""
    sandbox = await stack.sandbox()
    service = await serve(stack, sandbox, max_retries=0)
    await sandbox.fault(status=503, kind="lookup")
    sent = event("anon_blocked", **ALICE)

    response = await deliver(service, sent)

    assert response.vendor_request.status_code == 202
    assert not response.enrichment.resolved
    assert any(w.startswith("partner resolve failed") for w in response.warnings)
    assert "amperity_id" not in struct_to_dict(response.payload)
    received = [e["body"] for e in await sandbox.events()]
    assert [b["message_id"] for b in received] == [sent.message_id]
    assert "amperity_id" not in received[0]


async def test_a_resolved_visitor_is_delivered_with_its_amperity_id(stack: Stack) -> None:
    """Deliver enriches first: the body the sandbox received carries alice's amperity_id."""
    sandbox = await stack.sandbox()
    service = await serve(stack, sandbox)
    sent = event("anon_delivered", **ALICE)

    response = await deliver(service, sent)

    assert response.enrichment.amperity_id == ALICE_PROFILE
    assert response.enrichment.matched_key == "email_sha256"
    received = [e["body"] for e in await sandbox.events()]
    assert [(b["message_id"], b.get("amperity_id")) for b in received] == [
        (sent.message_id, ALICE_PROFILE)
    ]
