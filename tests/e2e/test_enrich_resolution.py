"""Enrichment against the sandbox process: lookup order, caching, dampening, single flight."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import pytest
import yaml

from amperity_signal.sandbox.data import DEFAULT_DATA_PATH
from amperity_signal.service.convert import struct_to_dict
from datafly.amperity.v1 import amperity_service_pb2 as pb
from tests.e2e.enrich_support import (
    PERSONALISATION,
    RPC_TIMEOUT,
    deliver,
    enrich,
    event,
    partner_calls,
    serve,
)
from tests.e2e.stack import Stack
from tests.support import ALICE_PROFILE, COLLECTION, integration_dict, mint_keys

pytestmark = pytest.mark.e2e

CAROL_PROFILE = "p-ca7001000003"


async def test_lookups_stop_at_the_first_match_and_the_email_is_normalised_before_hashing(
    stack: Stack,
) -> None:
    """A messy email matches alice's sha256(lowercase) link in one POST; later keys untried."""
    sandbox = await stack.sandbox()
    service = await serve(stack, sandbox)
    # user_id is carol's: had customer_id been tried, or tried first, carol would have matched.
    sent = event("anon_order_1", user_id="cust-1003", traits={"email": " Alice@Example.COM "})
    response = await enrich(service, sent)

    assert (response.resolved, response.amperity_id) == (True, ALICE_PROFILE)
    assert response.matched_key == "email_sha256"
    # The first resolution already attaches the enriched map, not a lesser one until refresh.
    attached = struct_to_dict(response.event.partner_attrs)["amperity"]
    assert "PredictedLifetimeValue" in attached
    lookups = await sandbox.requests(path_prefix="/prof/lookup")
    assert [(r["method"], r["path"], r["query"] or "") for r in lookups] == [
        ("POST", f"/prof/lookup/{COLLECTION}/keychain", "")
    ]
    profiles = (await sandbox.inspector.get("/_sandbox/profiles")).json()["profiles"]
    alice = next(p for p in profiles if p["profile_id"] == ALICE_PROFILE)
    assert alice["links"]["email_sha256"] == [hashlib.sha256(b"alice@example.com").hexdigest()]


async def test_sources_empty_on_the_visitor_cost_no_lookup(stack: Stack) -> None:
    """Only non-empty sources are looked up, in linking-key order, up to the first match."""
    sandbox = await stack.sandbox()
    service = await serve(stack, sandbox)

    cookie_only = await enrich(service, event("anon_nobody_1"))
    assert not cookie_only.resolved
    assert await partner_calls(sandbox) == (1, 0)  # device_cookie only: no email, no user_id

    carol = await enrich(service, event("anon_nobody_2", user_id="cust-1003"))
    assert (carol.amperity_id, carol.matched_key) == (CAROL_PROFILE, "customer_id")
    assert await partner_calls(sandbox) == (3, 0)  # device_cookie 404, then customer_id


async def test_a_second_event_of_a_resolved_visitor_costs_no_partner_call(stack: Stack) -> None:
    """While the caches are fresh a resolved visitor's next event is a HIT with zero calls."""
    sandbox = await stack.sandbox()
    service = await serve(stack, sandbox)
    first = await enrich(service, event("anon_second_1", traits={"email": "alice@example.com"}))
    assert first.cache_status == pb.CACHE_STATUS_MISS
    calls = await partner_calls(sandbox)
    assert calls == (1, 0)

    second = await enrich(service, event("anon_second_1", traits={"email": "alice@example.com"}))
    assert second.cache_status == pb.CACHE_STATUS_HIT
    assert second.amperity_id == ALICE_PROFILE
    assert struct_to_dict(second.attributes)["Persona"] == "Value Hunter"
    assert struct_to_dict(second.event.partner_attrs)["amperity"]["Persona"] == "Value Hunter"
    assert await partner_calls(sandbox) == calls


async def test_an_unknown_visitor_costs_one_round_of_lookups_inside_the_dampening_window(
    stack: Stack,
) -> None:
    """50 events of a visitor nobody knows cost one round (3 lookups), then are dampened."""
    sandbox = await stack.sandbox()
    service = await serve(stack, sandbox)
    nobody = {"email": "nobody@example.com"}
    statuses = [
        await enrich(service, event("anon_unknown", user_id="cust-none", traits=nobody))
        for _ in range(50)
    ]

    assert await partner_calls(sandbox) == (3, 0)
    assert not any(r.resolved for r in statuses)
    assert statuses[0].cache_status == pb.CACHE_STATUS_MISS
    assert {r.cache_status for r in statuses[1:]} == {pb.CACHE_STATUS_DAMPENED}
    # No lookup of this fresh service has matched: the misses carry the linking-keys advice.
    assert any("linking_keys" in w for w in statuses[-1].warnings)


async def test_100_concurrent_enrich_calls_for_one_new_visitor_cost_one_round(
    stack: Stack,
) -> None:
    """Concurrent calls for one new visitor share one round of lookups (single flight)."""
    sandbox = await stack.sandbox()
    service = await serve(stack, sandbox)
    responses = await asyncio.gather(
        *(enrich(service, event("anon_crowd", user_id="cust-1003")) for _ in range(100))
    )

    assert {r.amperity_id for r in responses} == {CAROL_PROFILE}
    assert await partner_calls(sandbox) == (2, 0)  # device_cookie 404, customer_id match


async def test_an_identify_lets_later_cookie_only_events_resolve_through_the_email(
    stack: Stack,
) -> None:
    """Anonymous events, an identify with email, a cookie-only event: email_sha256 via the map."""
    sandbox = await stack.sandbox()
    service = await serve(stack, sandbox)
    cookie = "anon_identity_1"
    for _ in range(3):
        anonymous = await deliver(service, event(cookie, event="Page Viewed"))
        assert not anonymous.enrichment.resolved
    identify = event(cookie, type="identify", event="", traits={"email": "Alice@Example.com"})
    assert (await deliver(service, identify)).enrichment.amperity_id == ALICE_PROFILE
    calls = await partner_calls(sandbox)

    later = await enrich(service, event(cookie))
    assert (later.resolved, later.amperity_id) == (True, ALICE_PROFILE)
    assert later.matched_key == "email_sha256"
    assert later.cache_status == pb.CACHE_STATUS_HIT
    assert await partner_calls(sandbox) == calls


async def test_the_same_context_costs_one_personalised_call_and_a_new_category_another(
    stack: Stack,
) -> None:
    """properties.category → pageCategory: one GET per distinct context, result attached."""
    sandbox = await stack.sandbox()
    service = await serve(stack, sandbox, **PERSONALISATION)
    alice = {"traits": {"email": "alice@example.com"}}

    shoes = [
        await enrich(service, event("anon_pers", properties={"category": "Shoes"}, **alice))
        for _ in range(3)
    ]
    boots = await enrich(service, event("anon_pers", properties={"category": "boots"}, **alice))

    gets = await sandbox.requests(path_prefix=f"/prof/profiles/{COLLECTION}/{ALICE_PROFILE}")
    assert ["pageCategory=Shoes" in r["query"] for r in gets] == [True, False]
    assert "pageCategory=boots" in gets[1]["query"]
    for response, category in ((shoes[-1], "shoes"), (boots, "boots")):
        personalized = struct_to_dict(response.personalized_attributes)
        assert personalized["RecommendedCategory"] == category
        partner_attrs = struct_to_dict(response.event.partner_attrs)
        assert partner_attrs["amperity_personalized"] == personalized
    assert (await partner_calls(sandbox))[0] == 1


async def test_a_collection_hashed_upper_case_is_matched_by_sha256_upper(
    stack: Stack, tmp_path: Path
) -> None:
    """A collection built with Amperity's upper-case hashing resolves through sha256_upper.

    The sandbox's collection stores upper-case email hashes (``hash: sha256_upper``). An
    identify event delivered by an ingest-only integration creates the profile; an
    integration looking up with ``sha256_upper`` finds it from a differently written email,
    one with the default ``sha256`` does not.
    """
    data = yaml.safe_load(DEFAULT_DATA_PATH.read_text(encoding="utf-8"))
    data["tenants"][0]["collections"][0]["hash"] = "sha256_upper"
    data_file = tmp_path / "upper.yaml"
    data_file.write_text(yaml.safe_dump(data), encoding="utf-8")
    sandbox = await stack.sandbox("--data", str(data_file))
    keys = mint_keys()
    upper_keys = [{"source": "email", "key": "email_sha256", "hash": "sha256_upper"}]
    lower_keys = [{"source": "email", "key": "email_sha256", "hash": "sha256"}]
    ingest_only = integration_dict(sandbox.url, keys, integration_id="ingest", enrichment=False)
    ingest_only["browser_attribute_allowlist"] = ""
    tables = [
        ingest_only,
        integration_dict(sandbox.url, keys, linking_keys=upper_keys),
        integration_dict(sandbox.url, keys, integration_id="lower", linking_keys=lower_keys),
    ]
    service = await serve(stack, sandbox, *tables, keys=keys)

    identify = event("anon_upper_1", type="identify", traits={"email": "Dana@Example.com"})
    delivered = await service.stub.Deliver(
        pb.DeliverRequest(integration_id="ingest", event=identify), timeout=RPC_TIMEOUT
    )
    assert delivered.vendor_request.status_code == 202
    await sandbox.flush()
    digest = hashlib.sha256(b"DANA@EXAMPLE.COM").hexdigest().upper()
    profiles = (await sandbox.inspector.get("/_sandbox/profiles")).json()["profiles"]
    [dana] = [p for p in profiles if digest in p["links"].get("email_sha256", [])]

    later = event("anon_upper_2", traits={"email": " dana@example.COM "})
    upper = await enrich(service, later)
    assert (upper.resolved, upper.amperity_id) == (True, dana["profile_id"])
    assert upper.matched_key == "email_sha256"
    lower = await service.stub.Enrich(
        pb.EnrichRequest(integration_id="lower", event=later), timeout=RPC_TIMEOUT
    )
    assert not lower.resolved
